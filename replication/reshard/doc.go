// Package reshard is the data-movement engine of online resharding: it
// moves one key interval [lo, hi) of a distribution from a source shard to
// a target shard for every table of the distribution, with PostgreSQL 15's
// native logical replication, and checks, fences, reverses and cleans up
// the move. It knows nothing of workflows, epochs or proxies: a controller
// (the meta leader's) calls its steps in order and keeps the workflow
// state; this package only talks to the two PostgreSQL servers.
//
// # Steps
//
// Every step is idempotent and resumable: it may be repeated after a crash
// or a timeout, and a repeat of a finished step is a no-op. Every object a
// move creates is named after its [Move.ID] (see [Names]), so a resumed
// workflow finds the objects of an earlier attempt:
//
//  1. [Engine.PrepareTarget]: create the tables on the target (pg_dump
//     --schema-only of those tables) when they are absent.
//  2. [Engine.StartCopy]: a publication with a row filter for the interval
//     on the source, a subscription (initial copy, then streaming) on the
//     target; [Engine.Progress] and [Engine.WaitCopied] follow it.
//  3. [Engine.Verify]: per table, row count and an order-independent
//     checksum of the interval's rows on both sides, and the differing keys
//     (bounded) on a mismatch.
//  4. [Engine.Fence] / [Engine.Unfence]: a trigger on the source rejects
//     writes to the interval's rows with SQLSTATE [wire.SQLStateIntervalFenced].
//  5. [Engine.WaitCaughtUp]: after the fence, wait until the target has
//     applied everything up to the source's current WAL position.
//  6. [Engine.AdvanceSequences]: the target's sequences of the moved tables
//     (serial and identity columns) continue past the source's values.
//  7. [Engine.StopForward], [Engine.StartReverse]: at cutover the forward
//     replication is dropped and a reverse one (target to source, no copy)
//     started, so a rollback loses nothing; [Engine.Reverse] is the engine
//     of the opposite direction (fence the target, wait for the source to
//     catch up). [Engine.Cleanup] drops every replication object of both
//     directions and deletes the moved rows from the source in throttled
//     batches, keeping the fence; [Engine.Cancel] undoes a move before
//     cutover.
//
// # Order of the steps
//
// Copy: PrepareTarget, StartCopy, WaitCopied (Progress for a bar), then
// Verify while traffic flows if wanted. Cutover, while the proxies hold
// the interval's statements: Fence, WaitCaughtUp, Verify (exact, since
// fenced), StopForward, AdvanceSequences, StartReverse, then the new epoch.
// Rollback after cutover, with r := e.Reverse(): r.Fence, r.WaitCaughtUp,
// r.Verify, r.AdvanceSequences, e.Unfence (still held), the old epoch
// back, r.DropReplication, r.DeleteMoved. Cleanup after a kept cutover:
// Cleanup. Cancel before cutover: Cancel.
//
// # The workflow
//
// [Controller] drives moves as replicated workflow records (kind
// [WorkflowKind], a JSON [State] each) on the meta leader, over three
// ports: [Records] (the records, compare-and-set on a version), [Maps]
// (the shard map and the proxies' acknowledgements) and [Steps] (this
// engine, or a fake). Each step is one engine step or one map epoch; the
// record's [Phase] is the last one committed, so a new leader repeats at
// most the step in progress (all are idempotent, and the map edits check
// whether the map already is as wanted). Operators' requests
// ([Controller.Act]) are written into the record and taken by the driver.
//
// Phases: prepare, copy, copying (progress written every
// ProgressEvery), copied; then, on cutover (auto or asked for, refused
// while the lag is above MaxLagBytes or after a failed verify unless
// forced): hold (an epoch with a [shardmap.Moving] marker for the
// interval), held (every live proxy acknowledged it), fenced, caughtup,
// verified (exact, fenced; a mismatch aborts unless forced), stopped
// (forward replication dropped), advanced (sequences), reversed (reverse
// replication started), switched (the epoch with the target as owner and
// no marker), cutover (proxies acknowledged). A cutover that is not at
// switched within CutoverTimeout of its hold aborts: reverse replication
// dropped, forward restarted without a copy if it was stopped, source
// unfenced, an epoch without the marker; the move is copied again and
// waits for the operator. Rollback (from cutover) mirrors it with the
// reverse engine (rollback-hold ... rollback-switched; past the timeout
// it aborts back to cutover, the source fenced again; the source is
// unfenced just before the epoch, while the proxies hold the interval),
// then drops the reverse replication (rollback-dropped), deletes the interval from the
// fenced target (rollback-deleted) and unfences it; cleanup (from
// cutover) is [Engine.Cleanup]; cancel (before the new owner) aborts a
// running cutover first, then [Engine.Cancel].
//
// The DSNs must name a superuser: CREATE SUBSCRIPTION, replication slots,
// session_replication_role and pg_terminate_backend need one on
// PostgreSQL 15.
package reshard
