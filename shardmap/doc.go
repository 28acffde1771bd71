// Package shardmap is the shard map: which shards exist, how the rows of
// each table are spread over them, and the hash functions that decide it.
// This package is pure data and functions, with no I/O; the router
// consults a Map to plan statements, and the meta cluster stores and
// versions it. Its subpackages are that meta cluster: shardmap/meta (the
// Raft node whose FSM holds the map, its epochs and history, and the
// proxies' registrations), shardmap/metarpc (its gRPC server and client)
// and shardmap/metapb (the generated wire format). None of them imports
// replication/...: internal/controlplane joins the two.
//
// A [Map] has shards ([Shard]: a primary and replicas), distributions and
// tables. A [Distribution] has a key type (bigint, text, uuid), a strategy
// and ordered half-open intervals [lo, hi) that cover the whole key space,
// each owned by a shard. With strategy range the intervals are over key
// values; with strategy hash they are over the signed 64-bit hash of the
// key, so that growing a hash cluster is also "split an interval, move an
// interval". Sharded tables of one distribution are colocated; unsharded
// tables live on the distribution's default shard. Every map has an epoch
// that grows with every change.
//
// The hash is PostgreSQL's own (hashint8extended, hashtextextended,
// uuid_hash_extended, with the fixed [Seed]), reproduced bit for bit, so
// SQL on the shards can compute where a row belongs: see [HashInt64],
// [HashText], [HashUUID] and [KeyType.HashSQL].
//
// Maps are built in Go or parsed from YAML ([ParseYAML], [Map.YAML]), then
// checked with [Map.Validate], which lists every problem. Lookups such as
// [Distribution.ShardForInt64] are binary searches over the intervals and
// assume a valid map.
//
// [CheckSuccessor] says what is dangerous in replacing one map by another
// ([Hazard]): a fenced server made primary or no longer fenced, a server
// in recovery made primary. [Diff] says what changes, by meaning: shards,
// distributions and tables added, removed or changed, and the key ranges
// that move from shard to shard ([IntervalMove]). [DataMoves] lists those
// moves with the tables whose rows would have to follow, and
// [IntervalPredicate] is the SQL condition that selects an interval's
// rows on a server (what map apply counts before it lets an interval go).
//
// A shard's [Switch] is the state of a failover or switchover in progress,
// kept in the map because proxies route by it (replication/failover
// drives it). Likewise a distribution's [Moving] markers hold an interval
// during a resharding cutover, and its [StaleRows] markers name the rows a
// shard holds without owning them while a move runs (the target's copy
// before the cutover, the source's rows until cleanup), which keyless
// statements leave out there; replication/reshard sets and drops both.
package shardmap
