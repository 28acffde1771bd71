package shardmap_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/shardmap"
)

// predicateValues is how many generated keys of each type the predicate
// test places.
const predicateValues = 5_000

// TestIntervalPredicateMatchesLookup evaluates IntervalPredicate on a real
// server for every interval of range (bigint, text, uuid) and hash
// distributions over generated keys, and compares the keys it selects with
// the keys shardmap's own lookup places in that interval (each interval
// has its own shard): the rows map apply counts are exactly the rows the
// proxy would route there.
func TestIntervalPredicateMatchesLookup(t *testing.T) {
	s := integration.StartPostgres(t, integration.Name("predicate"))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.SuperDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rng := rand.New(rand.NewPCG(3, 4))

	ints := int64Values(rng, predicateValues)
	texts := textValues(rng, predicateValues)
	texts = append(texts, "", "m", "m\x01", "ma", "M", "é", "z", "it's", `back\slash`)
	uuids := make([]string, 0, predicateValues)
	for _, u := range uuidValues(rng, predicateValues) {
		uuids = append(uuids, shardmap.UUID(u).String())
	}
	intParams := make([]string, len(ints))
	for i, v := range ints {
		intParams[i] = strconv.FormatInt(v, 10)
	}
	sorted := func(vals []string) []string { // a few bounds from the data itself
		c := slices.Clone(vals)
		slices.Sort(c)
		return []string{c[len(c)/5], c[len(c)/2], c[len(c)*4/5]}
	}
	textBounds := append(sorted(texts), "m")
	slices.Sort(textBounds)
	textBounds = slices.Compact(textBounds)
	uuidBounds := sorted(uuids)

	ranged := func(bounds ...shardmap.Bound) []shardmap.Interval {
		var out []shardmap.Interval
		lo := shardmap.NegInf()
		for i, hi := range append(bounds, shardmap.PosInf()) {
			out = append(out, shardmap.Interval{Lo: lo, Hi: hi, Shard: "s" + strconv.Itoa(i)})
			lo = hi
		}
		return out
	}
	even := func(n int) []shardmap.Interval {
		names := make([]string, n)
		for i := range names {
			names[i] = "s" + strconv.Itoa(i)
		}
		return shardmap.EvenHashIntervals(names)
	}
	for _, tc := range []struct {
		name      string
		d         shardmap.Distribution
		sqlType   string
		vals      []string
		intervals []shardmap.Interval
	}{
		{"range bigint", shardmap.Distribution{KeyType: shardmap.KeyBigint, Strategy: shardmap.Range}, "int8", intParams,
			ranged(shardmap.Int64Bound(-1000), shardmap.Int64Bound(0), shardmap.Int64Bound(401), shardmap.Int64Bound(501), shardmap.Int64Bound(1<<40))},
		{"range text", shardmap.Distribution{KeyType: shardmap.KeyText, Strategy: shardmap.Range}, "text", texts,
			ranged(textBoundsOf(textBounds)...)},
		{"range uuid", shardmap.Distribution{KeyType: shardmap.KeyUUID, Strategy: shardmap.Range}, "uuid", uuids,
			ranged(shardmap.UUIDBound(shardmap.MustParseUUID(uuidBounds[0])), shardmap.UUIDBound(shardmap.MustParseUUID(uuidBounds[1])))},
		{"hash bigint", shardmap.Distribution{KeyType: shardmap.KeyBigint, Strategy: shardmap.Hash}, "int8", intParams, even(3)},
		{"hash text", shardmap.Distribution{KeyType: shardmap.KeyText, Strategy: shardmap.Hash}, "text", texts, even(4)},
		{"hash uuid", shardmap.Distribution{KeyType: shardmap.KeyUUID, Strategy: shardmap.Hash}, "uuid", uuids, even(2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.d
			d.Name, d.Intervals = "d", tc.intervals
			// Where the lookup puts each key.
			want := make(map[string][]int64)
			for i, v := range tc.vals {
				var key any = v
				if d.KeyType == shardmap.KeyBigint {
					key = ints[i]
				}
				shard, err := d.ShardForKey(key)
				if err != nil {
					t.Fatal(err)
				}
				want[shard] = append(want[shard], int64(i+1))
			}
			total := 0
			for _, iv := range d.Intervals {
				pred := shardmap.IntervalPredicate(d.KeyType, d.Strategy, shardmap.QuoteIdent("v"), iv.Lo, iv.Hi)
				q := `SELECT coalesce(array_agg(i ORDER BY i), '{}') FROM unnest($1::text[]::` + tc.sqlType + `[]) WITH ORDINALITY AS t(v, i) WHERE ` + pred
				var got []int64
				if err := conn.QueryRow(ctx, q, tc.vals).Scan(&got); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				if !slices.Equal(got, want[iv.Shard]) {
					t.Errorf("[%s, %s): PostgreSQL selects %d keys, the lookup places %d there (predicate %s)",
						iv.Lo, iv.Hi, len(got), len(want[iv.Shard]), pred)
				}
				total += len(got)
			}
			if total != len(tc.vals) {
				t.Errorf("the intervals' predicates select %d keys in all, want %d", total, len(tc.vals))
			}
		})
	}
}

// textBoundsOf makes sorted strings bounds.
func textBoundsOf(vals []string) []shardmap.Bound {
	out := make([]shardmap.Bound, len(vals))
	for i, v := range vals {
		out[i] = shardmap.TextBound(v)
	}
	return out
}
