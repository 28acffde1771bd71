// Package health watches every endpoint of every shard: a [Monitor] keeps
// one connection to each primary and replica of the shard map and probes it
// on an interval, and [Monitor.Snapshot] reports per endpoint whether it is
// up, whether it is in recovery, its WAL position and, for replicas, how far
// they lag behind their shard's primary.
//
// The monitor observes; it decides nothing. The router later picks replicas
// within a lag bound with [Monitor.HealthyReplicas] ([Status.Healthy]) and serves read-your-writes with
// [Monitor.ReplayedAtLeast]; failover (driven by the meta leader) reads
// ConsecutiveFailures to confirm a primary is gone. [Collector] exports the
// same state as Prometheus metrics for the proxy to register.
//
// # Lag
//
// A probe runs one query on the endpoint and records pg_is_in_recovery(),
// its WAL position ([LSN]) — pg_current_wal_lsn() on a primary,
// pg_last_wal_replay_lsn() on a replica — and, on a replica, the seconds
// since the last replayed transaction committed, measured on the replica
// (clock_timestamp() - pg_last_xact_replay_timestamp(), so there is no
// clock skew between hosts). A replica's lag is derived from the latest
// successful probes when [Monitor.Snapshot] is called:
//
//   - LagBytes = primary LSN − replica replay LSN, or 0 when the replica is
//     ahead (the two probes are not taken at the same instant). The primary
//     LSN is the one of the latest successful probe of the shard's
//     configured primary, kept while the primary is down, so the result is
//     a lower bound of the true lag. The lag is unknown (LagKnown false)
//     while that primary has never been reached or was in recovery at that
//     probe, and when the replica itself was not in recovery.
//   - LagSeconds = 0 when LagBytes is 0: a caught-up replica of an idle
//     primary replays no transactions, so the usual
//     now() − pg_last_xact_replay_timestamp() would grow forever. Otherwise
//     it is that usual value, which overstates the lag when the primary was
//     idle before the writes the replica has not replayed yet. When the
//     replica has replayed no transaction since it started it is +Inf.
package health
