// Package replication is the root of the package family that deals with
// each shard's primary and its streaming replicas (DESIGN.md section 4).
// It holds no code of its own; its subpackages are:
//
//   - replication/health: probes every endpoint of every shard and knows,
//     for each replica, whether it is up and how far it lags behind its
//     primary in bytes and seconds, and which WAL position it has replayed
//     (for read-your-writes). It exports Prometheus metrics.
//
// Read splitting, read-your-writes routing, failover and switchover build
// on health later; the router and the proxy consult them, and the meta
// leader drives failover through the shard map.
package replication
