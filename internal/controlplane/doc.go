// Package controlplane assembles a member of the meta cluster, once, for
// every place that runs one: `pgshard meta run`, the embedded single-node
// cluster of `pgshard demo` and `pgshard proxy`, and the tests
// (integration/metacluster).
//
// [New] builds a [Member] from a [Config]: the Raft node holding the
// shard map (shardmap/meta), its gRPC API (shardmap/metarpc), the health
// monitor whose view ListShards reports (replication/health), the
// member's Prometheus metrics, and the leader-side controllers. [Member.Close]
// stops all of it. With a PostgreSQL role ([Config.PG], else the failover
// role) the API's ApplyMap counts, on the old owner's primary, the rows of
// every key interval a new map gives to another shard, and refuses the map
// while any remain (metarpc ServerOptions.CountRows).
//
// A leader-side controller ([Controller]) is a loop that drives the
// cluster and runs on the leader only: the member starts it when it
// becomes the leader and stops it (cancels its context and waits) when it
// stops leading or closes. Its state lives in the replicated state, not in
// the controller, so the next leader resumes it. Today there are three: the
// failover controller (replication/failover, with its fence supervision),
// the resharding controller (replication/reshard: moves of key intervals
// as workflow records, which also serves the API's resharding RPCs) and
// two-phase recovery (replication/twophase: it resolves the prepared
// transactions of dead proxies from their decisions, and its report is
// what ListTransactions serves), both when the member knows a PostgreSQL
// role; a new one is registered in [New], in one place.
//
// The package is the only one that joins shardmap/... and replication/...:
// it adapts the meta node to the failover controller's Store, pgadmin to
// its Admin, and the health monitor's statuses to metarpc's
// [metarpc.EndpointHealth], so that neither family imports the other.
package controlplane
