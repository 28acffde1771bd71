// Package failover replaces the primary of a shard: a failover when the
// primary fails its checks, a switchover when a DBA asks for one
// (DESIGN.md section 4). Its [Controller] runs on the leader of the
// metadata (Raft) cluster, as a leader-side controller of
// internal/controlplane, and checks leadership itself before every step.
// It changes servers through an [Admin] (replication/pgadmin) and the
// shard map through a [Store] (shardmap/meta); proxies follow the map.
//
// # Workflow
//
// The state of a switch lives in the shard map, in [shardmap.Shard.Switch],
// not in the controller: every transition below is a map commit by
// compare-and-set on the epoch (re-applied to the new map when an
// unrelated change won the race), and every action on a server is
// idempotent, so any leader can resume a switch from the last committed
// step. While a shard has a Switch, proxies hold its writes and no longer
// use its old primary.
//
// Failover. Every CheckInterval the leader asks the primary of each shard
// that has no switch and is not offline for its state. When a primary has
// failed every check for FailAfter (and at least two checks), and enough
// proxies report it unreachable too (Config.Observers), the leader
// commits Switch{Kind: failover, From: primary, Step: "fence"}. It waits
// until every live proxy has applied that epoch, calls Admin.Fence on the
// old primary (best effort: it is probably dead), and chooses the
// reachable replica in recovery with the highest replay LSN (the first in
// map order on a tie). With none reachable it stays at "fence" and tries
// again every CheckInterval, the shard held. Then it commits Step
// "promote" with To, promotes To, repoints every other replica to it (one
// that cannot be repointed is logged and stays in Replicas), and commits
// the final map: Primary = To, Replicas without To, Fenced with the old
// primary, no Switch.
//
// Switchover ([Controller.Switchover]). It chooses To up front and
// commits Switch{Kind: switchover, From, To, Step: "drain"}, waits for the
// proxies, quiesces the old primary (no new writes; open transactions get
// DrainGrace, then are terminated), which returns the LSN of its last
// write, waits until To has replayed that LSN, commits "promote" and ends
// like a failover. No committed write is lost: the proxies hold writes
// before the quiesce, and To has replayed all the old primary committed
// before it is promoted.
//
// # Steps
//
// Switch.Step holds one of:
//
//   - "fence" (failover, To zero): the proxies are told to drop the old
//     primary; next: wait for them, fence, choose To.
//   - "drain" (switchover): next: wait for the proxies, quiesce From,
//     wait until To replayed its LSN. To is zero only after the replica
//     chosen first was found down; a new one is then chosen.
//   - "promote" (both kinds, To set): next: promote To, repoint the
//     others, commit the final map.
//
// A server the workflow needs is "found down" by the same rule as a
// failed primary (every check for FailAfter, observers agree). An old
// primary found down while it drains turns the switchover into a
// failover (Step "fence"). A To found down while it is promoted may have
// been promoted: it is moved to Fenced and the switch goes back to "fence"
// (failover) or "drain" (switchover, whose old primary is still quiesced,
// so the next To catches up and nothing is lost).
//
// # Safety
//
//   - No two primaries get writes through pgshard: a new primary is
//     promoted only after every live proxy acknowledged the epoch that
//     took the old one out of use, and the old primary is fenced, in the
//     map for good (a DBA re-joins it) and on the server when it can be
//     reached. A proxy whose lease expired stops blocking the wait; that
//     is safe only if such a proxy stops writing to a primary it cannot
//     confirm (it cannot renew its lease, so it must assume it missed a
//     map): the proxies must hold the shard's writes once their lease
//     has run out.
//   - As little as possible is lost in a failover: the replica with the
//     highest replayed LSN is promoted; nothing in a switchover.
//   - A primary is failed over only when the leader's checks failed for
//     FailAfter, never on one missed probe, and when proxies that report
//     health agree (the second observer), so a leader cut off from a
//     healthy primary does not fail it over. When no proxy reports, none
//     can write either, and the leader's view decides.
//   - Only a replica listed in the map is ever promoted, only a switch
//     committed in the map is ever acted on, and a controller never starts
//     a failover of a shard whose Switch is already set: it resumes it.
//
// # Replicas
//
// Every ReplicaCheckInterval the leader also checks that each replica of a
// shard whose primary answers streams from that primary. One that streams
// from another server, or has not streamed for five intervals (a replica
// that was down during a failover comes back configured for the old
// primary), is repointed. The shard is claimed meanwhile, like a
// workflow, so a repoint never races a failover of the same shard. A
// replica whose repoint fails three rounds in a row cannot follow its
// primary (it replayed past the fork of the primary's timeline, following
// a former primary): it is moved to Fenced, so no proxy reads what the
// primary never had, until a DBA rebuilds it.
//
// # Fenced servers
//
// Every FenceCheckInterval the leader also checks every server the map
// fences (each shard's Fenced, and the old primary of a failover past its
// fence step) and fences it again (Admin.Fence) when it answers as a
// writable primary: a former primary that was down when its failover
// fenced it, or restarted since, comes back fenced. It stays fenced until
// pgshard shards rejoin rebuilds it.
//
// # Leader change
//
// Only the leader acts: every step checks Store.IsLeader first, and Run
// cancels the work in flight when this member stops leading. A step cut
// short left either nothing or a committed step behind; its actions are
// idempotent and the commits compare-and-set, so a former leader that has
// not noticed yet can neither commit nor do anything the map does not
// already say. The new leader's Run resumes every switch it finds in the
// map from its Step: "fence" waits for the proxies and chooses, "drain"
// quiesces again (the same LSN comes back) and waits, "promote" promotes
// again (a no-op on a primary) and repoints. Failed checks are counted
// per leader: a new leader needs FailAfter of its own before it starts a
// failover.
package failover
