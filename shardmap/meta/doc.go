// Package meta is the replicated metadata store of pgshard ("pgshard
// meta"): a hashicorp/raft group of 1, 3 or 5 voters that holds the shard
// map with its epoch and a bounded history of earlier epochs, and the
// registrations of the proxies that apply it (address, applied epoch,
// liveness by lease). The state of a failover lives in the map (a shard's
// Switch); long-running workflows whose state proxies do not route by
// (resharding, two-phase commit) keep records here, one per workflow,
// changed by compare-and-set on the record's version ([Node.PutWorkflow],
// [Node.DeleteWorkflow]), so that a new leader resumes them (README,
// "Long-running workflow state"). The controllers that drive them run on
// the leader, assembled by internal/controlplane.
//
// A [Node] is one member of the group. [Open] starts it from a data
// directory (a bbolt log and stable store, file snapshots) and a TCP
// address for raft traffic; [Node.Bootstrap] starts a new cluster and
// [Node.Join] / [Node.Remove] change its membership. Changes go through the
// leader only: on a follower they fail with a [*NotLeaderError] naming the
// leader, which the RPC layer (shardmap/metarpc) forwards to or reports.
// Reads ([Node.Map], [Node.History], [Node.Proxies], [Node.Status]) are
// served from the node's own applied state, so a follower may lag the
// leader by the replication delay.
//
// The shard map changes by compare-and-set ([Node.ApplyMap]): the caller
// names the epoch it edited, the map is validated ([shardmap.Map.Validate])
// and committed as epoch + 1, or refused with a [*StaleEpochError].
// Subscribers learn new epochs with [Node.Watch]. Proxies report the epoch
// they apply with [Node.Heartbeat]; [Node.WaitApplied] waits until every
// live proxy has applied an epoch, which is what a workflow does before it
// moves data. A heartbeat also carries the endpoints the proxy cannot
// reach; the leader keeps these reports in memory only, not in the log
// (they change often and are stale a lease later), and [Node.Reports]
// counts them per endpoint: the second observer a failover asks.
//
// Determinism: every log entry carries the leader's clock at proposal
// time, and the replicated state only ever reads time from entries, never
// from the local clock, so all replicas agree on which proxy is alive. Log
// entries are versioned JSON envelopes ({"v", "type", "at", "payload"}, see
// command.go); a binary reads every version it ever wrote and refuses,
// loudly (it stops applying), an entry of a type or version it does not
// know, rather than skip it and diverge from the other replicas.
// Snapshots carry a format version too.
package meta
