package reshard

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/shardmap"
)

// TestFilterAgreesWithShardMap checks, for every key type and strategy,
// that PostgreSQL accepts the interval's filter as a publication row
// filter and that it selects exactly the keys the shard map routes to the
// interval (shardmap's Go lookup, which the proxy runs).
func TestFilterAgreesWithShardMap(t *testing.T) {
	ctx := testCtx(t)
	src := integration.StartPostgres(t, integration.Name("filters"))
	conn := connect(t, src)
	uuidAt := func(s string) shardmap.Bound { return shardmap.UUIDBound(shardmap.MustParseUUID(s)) }
	for i, c := range []struct {
		kt       shardmap.KeyType
		st       shardmap.Strategy
		lo, hi   shardmap.Bound
		colType  string
		keysExpr string // 1000 keys of the column type from g
	}{
		{shardmap.KeyBigint, shardmap.Range, shardmap.Int64Bound(-100), shardmap.Int64Bound(300), "bigint", "g - 500"},
		{shardmap.KeyText, shardmap.Range, shardmap.TextBound("B"), shardmap.TextBound("b"), "text", "chr(40 + g % 80) || g"},
		{shardmap.KeyUUID, shardmap.Range, uuidAt("30000000-0000-0000-0000-000000000000"), uuidAt("c0000000-0000-0000-0000-000000000000"), "uuid", "md5(g::text)::uuid"},
		{shardmap.KeyBigint, shardmap.Hash, shardmap.Int64Bound(-1 << 62), shardmap.Int64Bound(1 << 61), "bigint", "g * 7919"},
		{shardmap.KeyText, shardmap.Hash, shardmap.NegInf(), shardmap.Int64Bound(0), "text", "'k' || g"},
		{shardmap.KeyUUID, shardmap.Hash, shardmap.Int64Bound(1 << 62), shardmap.PosInf(), "uuid", "md5(g::text)::uuid"},
	} {
		name := fmt.Sprintf("public.f%d", i)
		tbl := Table{Name: name, KeyColumn: "k"}
		mv := Move{ID: fmt.Sprintf("f%d", i), KeyType: c.kt, Strategy: c.st, Lo: c.lo, Hi: c.hi, Tables: []Table{tbl}}
		if err := mv.Validate(); err != nil {
			t.Fatal(err)
		}
		d := shardmap.Distribution{Name: "d", KeyType: c.kt, Strategy: c.st}
		first := shardmap.NegInf()
		if c.kt == shardmap.KeyText && c.st == shardmap.Range {
			first = shardmap.TextBound("")
		}
		if c.lo.IsNegInf() {
			d.Intervals = []shardmap.Interval{{Lo: c.lo, Hi: c.hi, Shard: "in"}, {Lo: c.hi, Hi: shardmap.PosInf(), Shard: "out"}}
		} else if c.hi.IsPosInf() {
			d.Intervals = []shardmap.Interval{{Lo: first, Hi: c.lo, Shard: "out"}, {Lo: c.lo, Hi: c.hi, Shard: "in"}}
		} else {
			d.Intervals = []shardmap.Interval{{Lo: first, Hi: c.lo, Shard: "out"}, {Lo: c.lo, Hi: c.hi, Shard: "in"}, {Lo: c.hi, Hi: shardmap.PosInf(), Shard: "out2"}}
		}
		e := newEngine(t, mv, src, src)
		if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE TABLE %s (k %s PRIMARY KEY); INSERT INTO %s SELECT DISTINCT %s FROM generate_series(1, 1000) g",
			name, c.colType, name, c.keysExpr)); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, e.publicationDDL()); err != nil {
			t.Errorf("%s %s: row filter refused: %v", c.st, c.kt, err)
		}
		rows, err := conn.Query(ctx, "SELECT k::text, "+mv.Filter(tbl)+" FROM "+name+" ORDER BY 1")
		if err != nil {
			t.Fatal(err)
		}
		type kv struct {
			k  string
			in bool
		}
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (kv, error) {
			var x kv
			return x, r.Scan(&x.k, &x.in)
		})
		if err != nil {
			t.Fatal(err)
		}
		var wrong []string
		nIn := 0
		for _, x := range got {
			var key any = x.k
			if c.kt == shardmap.KeyBigint {
				var v int64
				_, _ = fmt.Sscan(x.k, &v)
				key = v
			}
			sh, err := d.ShardForKey(key)
			if err != nil {
				t.Fatal(err)
			}
			if (sh == "in") != x.in {
				wrong = append(wrong, fmt.Sprintf("%s (map: %s, filter: %t)", x.k, sh, x.in))
			}
			if x.in {
				nIn++
			}
		}
		if len(wrong) > 0 {
			t.Errorf("%s %s [%s, %s): filter and shard map disagree on %d keys, e.g. %v", c.st, c.kt, c.lo, c.hi, len(wrong), wrong[:min(5, len(wrong))])
		}
		if nIn == 0 || nIn == len(got) {
			t.Errorf("%s %s: %d of %d keys inside: the case tests nothing", c.st, c.kt, nIn, len(got))
		}
	}
}
