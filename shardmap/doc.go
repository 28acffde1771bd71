// Package shardmap is the shard map: which shards exist, how the rows of
// each table are spread over them, and the hash functions that decide it.
// It is pure data and functions, with no I/O; the router consults a Map to
// plan statements, the control plane (later an FSM on raft) stores and
// versions it, and resharding workflows edit it one interval at a time.
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
// in recovery made primary.
package shardmap
