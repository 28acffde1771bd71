// Package twophase commits a transaction over several shards atomically
// with PostgreSQL's two-phase commit, and recovers the transactions a
// coordinator left prepared.
//
// # Commit
//
// A session that wrote on two or more shards commits with
// [Coordinator.Commit], passing its server connections as [Participant]s:
//
//  1. Phase 1, in parallel: PREPARE TRANSACTION gid on every writer;
//     COMMIT on every read-only participant (one phase: it wrote nothing).
//     The first writer is the decision participant: its transaction also
//     inserts the commit record (gid) into pgshard.commit_decisions, in the
//     same round trip as its PREPARE.
//  2. The decision: COMMIT PREPARED on the decision participant. Once it
//     returns, its commit record is committed (durable, and on the
//     synchronous replica): the transaction is committed.
//  3. Phase 2, in parallel: COMMIT PREPARED on the other writers, retried
//     on a server error; a participant that cannot be reached is left to
//     recovery (Outcome.Pending), which commits it from the record.
//
// Any failure before the decision rolls every writer back (ROLLBACK
// PREPARED, or ROLLBACK where PREPARE failed): [AbortError], with the
// server's SQLSTATE. A writer whose PREPARE or rollback got no answer may
// hold a prepared transaction: the coordinator leaves it to recovery and
// writes a let-go record (see Recovery), as it does when the decision's
// outcome is unknown. The commit record's INSERT runs under a savepoint:
// where the decision table does not exist yet (the meta leader creates it
// within a round after a map or a database appears) it is rolled back to
// the savepoint and retried for up to Options.TableWait (10 s), so the
// first commits in a new database wait instead of failing with 42P01. If the decision's own outcome is unknown (the
// decision shard's connection broke during COMMIT PREPARED) the commit
// returns [InDoubtError] (SQLSTATE 08007) and recovery resolves it. A
// transaction with one writer commits in one phase: its readers first,
// then the writer.
//
// The GID format ([GID]) names the proxy, a unique transaction id and the
// decision shard, so recovery needs nothing but the prepared transactions
// themselves, the map and the proxies' leases.
//
// # Where the decision lives
//
// Two places were measured on this machine (2 cores; PostgreSQL 15 with
// fsync and synchronous_commit on; BenchmarkCommit* and
// BenchmarkDecisionMetaPut in this package):
//
//   - the meta Raft log: one workflow record put (meta.Node.PutWorkflow,
//     compare-and-set) per transaction;
//   - a commit record in the decision participant's prepared transaction
//     (Citus's approach).
//
// The commit record wins, and is what [RecordStore] implements. Both put
// one durable write between phase 1 and the remaining commits: the
// commit record's is the COMMIT PREPARED its participant needs anyway
// (1.8–4.0 ms here), the Raft put's a log fsync on a quorum (1.4–3.1 ms
// with one voter, 3.3–10 ms with three, in one process) plus, in
// production, the network and a gRPC hop from the proxy to the leader
// (see README "Architecture" for the whole-commit numbers).
// It also keeps commits independent of meta: transactions commit while
// the meta cluster elects a leader, and meta's log does not grow with the
// application's write rate. It survives the loss of the proxy (recovery
// reads the record) and of any one server when the shards run with
// synchronous replication (the record is in the decision shard's
// replicated WAL; after a failover recovery reads it on the new primary).
//
// # Recovery
//
// [Recoverer] runs on the meta leader (internal/controlplane). Every round
// (Interval, 2 s) it lists pg_prepared_xacts on each shard's primary (from
// the current map, so after a failover the new primary's) and creates the
// decision table where it is missing.
//
// How a transaction is resolved (its decision shard's state decides):
//
//   - prepared on its decision shard: undecided. ROLLBACK PREPARED there
//     first (that decides the abort), then on the others. If it is gone
//     from there meanwhile (its coordinator finished it), as below;
//   - not prepared there: the decision shard's record says. Recovery
//     inserts an abort record unless a record exists (INSERT … ON CONFLICT
//     DO NOTHING, waiting on a record being written, under lock_timeout)
//     and reads it back: commit → COMMIT PREPARED everywhere, abort →
//     ROLLBACK PREPARED. An abort recorded first makes a late coordinator's
//     own INSERT fail (unique violation), so its PREPARE fails: the abort
//     is final without trusting clocks or leases.
//
// This is safe whenever it runs: the commit record lives inside the
// decision participant's prepared transaction and becomes visible only
// when that one commits, which only its coordinator does; recovery never
// commits it, so no rollback above can undo a commit. When it runs only
// spares live coordinators needless aborts. A transaction is resolved:
//
//   - at once when its proxy is dead: its lease ran out, or the proxy
//     runs as a new instance (restarted under the same ID: the GID's
//     incarnation is not the one the lease names);
//   - at once when its decision shard's primary was replaced after it was
//     prepared (Shard.PrimarySince, from the map history): its
//     coordinator's connection there is gone, so the decision shard's
//     state is final;
//   - from 1 s of age when its coordinator wrote a let-go record
//     (LetGoKey, on any participant: it gave up — aborted with a
//     participant whose state it does not know, or lost the decision
//     shard during COMMIT PREPARED), or the decision shard holds an abort
//     record;
//   - when a participant was prepared on a primary replaced since: at
//     once if its decision shard is decided (committed or no record, then
//     aborted as above), after DecidedAge (5 s) if still undecided;
//   - a decided commit after DecidedAge (5 s): the coordinator lost a
//     participant after the decision;
//   - anything after MaxAge (30 s).
//
// Add a round (Interval) to each bound: a prepared transaction of a dead
// proxy holds its locks for the lease plus a round, one its live
// coordinator let go of for about 1 s plus a round, one caught by a
// failover for a round after the new map (a few rounds while the
// decision shard is unreachable), anything else at most MaxAge plus a
// round.
//
// A transaction whose decision shard cannot be scanned waits for a later
// round. Records are deleted KeepDecisions after no shard holds their
// transaction prepared, and only in rounds that scanned every shard.
// A shard with max_prepared_transactions = 0 is reported as a problem
// (Report.Problems): multi-shard transactions that write there fail at
// PREPARE with SQLSTATE 55000.
package twophase
