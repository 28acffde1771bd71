package shardmaptest

import "fmt"

// KV is the map of the proxy's tests: shards s0, s1, ... on primaries,
// and table public.kv sharded by column k in distribution kv, a bigint
// range over the shards split at splits (see Builder.Range; none: the
// whole key space on s0), default shard s0.
func KV(splits []int64, primaries ...string) *Builder {
	b := New()
	for i, p := range primaries {
		b.Shard(fmt.Sprintf("s%d", i), p)
	}
	return b.Range("kv", splits...).Table("public.kv", "k")
}

// Users is the map of the meta cluster's tests: shard s1 on 10.0.0.1:5432
// with replica 10.0.0.2:5432, read-only shard s2 on 10.0.0.3:5432, and
// table public.users sharded by id in distribution users, a bigint range
// with [-inf, 1000) on s1 and [1000, +inf) on s2, default shard s1.
func Users() *Builder {
	return New().
		Shard("s1", "10.0.0.1:5432", "10.0.0.2:5432").
		Shard("s2", "10.0.0.3:5432").ReadOnly().
		Range("users", 1000).
		Table("public.users", "id")
}
