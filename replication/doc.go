// Package replication is the root of the package family that deals with
// each shard's primary and its streaming replicas (DESIGN.md section 4).
// It holds no code of its own; its subpackages are:
//
//   - replication/health: probes every endpoint of every shard and knows,
//     for each replica, whether it is up and how far it lags behind its
//     primary in bytes and seconds, and which WAL position it has replayed
//     (for read-your-writes). It exports Prometheus metrics. The proxy
//     routes reads by it; meta members run one for pgshard shards list.
//   - replication/pgadmin: the actions on a PostgreSQL server that a
//     failover needs (state, promote, repoint, wait for replay, quiesce,
//     fence) and the rebuild of a fenced primary as a replica (pgshard
//     shards rejoin). Every action is idempotent.
//   - replication/failover: the failover and switchover workflow the meta
//     leader runs, with the supervision of fenced servers and replicas.
//     Its state lives in the shard map (shardmap.Switch); it acts on
//     servers and on the map through two small interfaces (Admin, Store).
//
// The family imports shardmap (the map's types) and nothing above it;
// shardmap imports nothing of it. internal/controlplane wires failover to
// pgadmin and to the meta node, and runs it on the meta leader.
package replication
