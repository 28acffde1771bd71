package shardmap_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// dataMoves formats DataMoves as "d [lo, hi) from->to tables".
func dataMoves(cur, next *shardmap.Map) []string {
	var out []string
	for _, m := range shardmap.DataMoves(cur, next) {
		var tables []string
		for _, t := range m.Tables {
			tables = append(tables, t.Name+"("+t.KeyColumn+")")
		}
		out = append(out, fmt.Sprintf("%s %s %s->%s %v", m.Distribution, m.Interval(), m.From, m.To, tables))
	}
	return out
}

// TestDataMoves: only intervals that change owner move data; splitting an
// interval on its owner, adding a shard without intervals, removing an
// unused one, or changing endpoints move nothing.
func TestDataMoves(t *testing.T) {
	cur := diffMap(t, diffRange)
	for _, tc := range []struct {
		name string
		next *shardmap.Map
		want []string
	}{
		{"same", diffMap(t, diffRange), nil},
		{"boundary moves down", diffMap(t, `    key_type: bigint
    strategy: range
    intervals:
      - {lo: -inf, hi: 100, shard: s1}
      - {lo: 100, hi: 150, shard: s2}
      - {lo: 150, hi: +inf, shard: s3}
`), []string{"d [150, 200) s2->s3 [public.t(id)]"}},
		{"split on the same owner", diffMap(t, `    key_type: bigint
    strategy: range
    intervals:
      - {lo: -inf, hi: 50, shard: s1}
      - {lo: 50, hi: 100, shard: s1}
      - {lo: 100, hi: 200, shard: s2}
      - {lo: 200, hi: +inf, shard: s3}
`), nil},
		{"interval to an unused shard", diffMap(t, `    key_type: bigint
    strategy: range
    intervals:
      - {lo: -inf, hi: 100, shard: s1}
      - {lo: 100, hi: 200, shard: s4}
      - {lo: 200, hi: +inf, shard: s3}
`), []string{"d [100, 200) s2->s4 [public.t(id)]"}},
		{"strategy changes", diffMap(t, `    key_type: bigint
    strategy: hash
    shards_even: [s1, s2]
`), []string{"d [-inf, 100) s1-> [public.t(id)]", "d [100, 200) s2-> [public.t(id)]", "d [200, +inf) s3-> [public.t(id)]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := dataMoves(cur, tc.next); !slices.Equal(got, tc.want) {
				t.Errorf("DataMoves = %q, want %q", got, tc.want)
			}
		})
	}

	// Shards added and removed without intervals move nothing.
	next := cur.Clone()
	next.Shards = append(next.Shards, shardmap.Shard{Name: "s5", Primary: shardmap.Endpoint{Host: "10.0.0.9", Port: 5432}, State: shardmap.StateActive})
	if got := dataMoves(cur, next); got != nil {
		t.Errorf("a shard added: DataMoves = %q, want none", got)
	}
	next = cur.Clone()
	next.Shards = slices.DeleteFunc(next.Shards, func(s shardmap.Shard) bool { return s.Name == "s4" })
	if got := dataMoves(cur, next); got != nil {
		t.Errorf("an unused shard removed: DataMoves = %q, want none", got)
	}
	// A default shard that changes moves the unsharded tables whole.
	withUnsharded := func(def string) *shardmap.Map {
		m := cur.Clone()
		m.Distributions[0].DefaultShard = def
		m.Tables = append(m.Tables, shardmap.Table{Name: "public.config", Kind: shardmap.Unsharded, Distribution: "d"})
		if err := m.Validate(); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if got, want := dataMoves(withUnsharded("s1"), withUnsharded("s2")), []string{"d (its unsharded tables, default shard) s1->s2 [public.config()]"}; !slices.Equal(got, want) {
		t.Errorf("default shard changed: DataMoves = %q, want %q", got, want)
	}
	if mv := shardmap.DataMoves(withUnsharded("s1"), withUnsharded("s2")); len(mv) != 1 || mv[0].Predicate(mv[0].Tables[0]) != "true" {
		t.Errorf("default shard changed: %+v, want one move whose predicate is true", mv)
	}
	// One shard owning everything in both maps: nothing moves even when
	// the strategy changes.
	one := diffMap(t, "    key_type: bigint\n    strategy: range\n    intervals:\n      - {lo: -inf, hi: +inf, shard: s1}\n")
	if got := dataMoves(one, diffMap(t, "    key_type: bigint\n    strategy: hash\n    shards_even: [s1]\n")); got != nil {
		t.Errorf("one owner, strategy changed: DataMoves = %q, want none", got)
	}
}

// TestIntervalPredicate pins the SQL of each kind of interval.
func TestIntervalPredicate(t *testing.T) {
	for _, tc := range []struct {
		kt     shardmap.KeyType
		st     shardmap.Strategy
		lo, hi shardmap.Bound
		want   string
	}{
		{shardmap.KeyBigint, shardmap.Range, shardmap.Int64Bound(401), shardmap.Int64Bound(501), `("id" >= (401)::int8 AND "id" < (501)::int8)`},
		{shardmap.KeyBigint, shardmap.Range, shardmap.NegInf(), shardmap.Int64Bound(-5), `("id" < (-5)::int8)`},
		{shardmap.KeyBigint, shardmap.Range, shardmap.NegInf(), shardmap.PosInf(), `(("id") IS NOT NULL)`},
		{shardmap.KeyText, shardmap.Range, shardmap.TextBound(`it's \`), shardmap.PosInf(), `(("id")::text COLLATE "C" >= E'it''s \\'::text COLLATE "C")`},
		{shardmap.KeyBigint, shardmap.Hash, shardmap.Int64Bound(0), shardmap.PosInf(), `(hashint8extended(("id")::int8, 8099569346997806113) >= (0)::int8)`},
	} {
		if got := shardmap.IntervalPredicate(tc.kt, tc.st, shardmap.QuoteIdent("id"), tc.lo, tc.hi); got != tc.want {
			t.Errorf("%s %s [%s, %s): got %s, want %s", tc.kt, tc.st, tc.lo, tc.hi, got, tc.want)
		}
	}
	if got, want := shardmap.QuoteTable(`public.we"ird`), `"public"."we""ird"`; got != want {
		t.Errorf("QuoteTable = %s, want %s", got, want)
	}
}
