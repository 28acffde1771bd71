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
