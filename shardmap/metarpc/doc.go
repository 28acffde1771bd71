// Package metarpc is the gRPC API of "pgshard meta", the Raft-replicated
// metadata cluster that holds the shard map: a [Server] that serves the
// MetaService of package metapb over a [Store] (the Raft node of package
// shardmap/meta, or a fake in tests), and a [Client] for proxies and the
// CLI.
//
// The wire format is metapb (pgshard.meta.v1); maps travel as the YAML of
// package shardmap ([shardmap.Map.YAML], [shardmap.ParseYAML]), so the
// bytes a DBA reads are the bytes that are replicated. This package turns
// them back into Go values: the client hands out [*shardmap.Map].
//
// Errors cross the wire as gRPC status codes. A Store says what went wrong
// through small interfaces its errors implement, found with errors.As, so
// that it needs no import of this package: [LeaderRedirect] (not the
// leader: codes.Unavailable naming the leader, which the client follows),
// [EpochConflict] (a lost compare-and-set: codes.FailedPrecondition) and
// [InvalidInput] (codes.InvalidArgument). The client gives them back as
// [*NotLeaderError], [*StaleEpochError] and [*InvalidArgumentError], which
// also carry their gRPC status for status.Code. Other codes are chosen by
// wrapping a sentinel ([ErrNotFound], [ErrFailedPrecondition],
// [ErrAborted], [ErrInvalidArgument]); the client's errors match the
// sentinel of the code the server answered with.
//
// Two optional hooks of [ServerOptions] plug in what the meta cluster
// does beyond its Raft state: Switchover (a failover controller, package
// replication/failover) serves the Switchover RPC on the leader, and
// Health ([EndpointHealth], from a health monitor) tells ListShards
// whether each endpoint is up and how far replicas lag. internal/controlplane
// plugs them in: this package imports nothing of replication/. ListShards also
// counts, per endpoint, the proxies that report it unreachable in their
// heartbeats ([Store].Reports; kept by the leader only).
//
// Every RPC is authenticated ([ServerOptions]): a bearer token, a client
// certificate verified by mutual TLS, or both; serving without either must
// be asked for and then only answers loopback clients.
package metarpc
