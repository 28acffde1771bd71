package merge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgshard/pgshard/integration"
)

func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaks(m)) }

// pgTable creates table t with random rows and returns a connection.
func pgTable(t *testing.T) (*pgconn.PgConn, context.Context) {
	t.Helper()
	srv := integration.StartPostgres(t)
	ctx := t.Context()
	conn, err := pgconn.Connect(ctx, srv.SuperDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })

	rng := rand.New(rand.NewPCG(7, 11))
	var b strings.Builder
	b.WriteString(`CREATE TABLE t (id int, g int, n numeric, m numeric, s text COLLATE "C", i int4, b8 int8, f float8, ok bool);
INSERT INTO t VALUES `)
	orNull := func(p float64, v string) string {
		if rng.Float64() < p {
			return "NULL"
		}
		return v
	}
	letters := "abcXYZ_ é"
	for id := 0; id < 600; id++ {
		if id > 0 {
			b.WriteString(",\n")
		}
		scale := rng.IntN(5)
		n := fmt.Sprintf("%d", rng.IntN(200000)-100000)
		if scale > 0 {
			n = fmt.Sprintf("round(%s / 10^%d::numeric, %d)", n, scale, scale)
		}
		// m: tiny to huge magnitudes with varying scales.
		e := rng.IntN(24) - 10
		m := fmt.Sprintf("round((%d::numeric * 10^(%d::numeric)), %d)", rng.IntN(999)+1, e, max(0, -e+rng.IntN(3)))
		var s strings.Builder
		for k := rng.IntN(4); k > 0; k-- {
			s.WriteString(string([]rune(letters)[rng.IntN(len([]rune(letters)))]))
		}
		fmt.Fprintf(&b, "(%d, %s, %s, %s, %s, %s, %s, %s, %s)", id,
			orNull(0.05, fmt.Sprint(rng.IntN(8))), orNull(0.1, n), orNull(0.1, m),
			orNull(0.1, "'"+s.String()+"'"), orNull(0.1, fmt.Sprint(rng.Int32()-1<<30)),
			orNull(0.1, fmt.Sprint(rng.Int64()>>4)), orNull(0.1, fmt.Sprint(float64(rng.IntN(4000)-2000)/4)),
			orNull(0.1, fmt.Sprint(rng.IntN(5) > 0)))
	}
	b.WriteString(`;
CREATE TABLE u (id int, g int, x numeric, f float8);
INSERT INTO u VALUES (0, 1, 'NaN', 'NaN'), (1, 1, 1.5, 1), (2, 2, 'Infinity', 'Infinity'), (3, 2, 2, 2),
  (4, 3, 'Infinity', 'Infinity'), (5, 3, '-Infinity', '-Infinity'), (6, 4, '-Infinity', '-Infinity'), (7, 4, NULL, NULL),
  (8, 5, 0.000, -0), (9, 5, 0, 0), (10, 5, -0.5, 1e100), (11, 6, NULL, NULL), (12, 7, 1e-20, 1e-300), (13, 7, 3, 2.5e-300),
  (14, 8, 123456789012345678901234567890.123456789, 1.5), (15, 8, -0.000000001, 2.25), (16, 8, 7, 3)`)
	if _, err := conn.Exec(ctx, b.String()).ReadAll(); err != nil {
		t.Fatal(err)
	}
	return conn, ctx
}

// pgResult is one query's result as frames.
type pgResult struct {
	desc []byte
	rows [][]byte
	vals [][][]byte
}

func toResult(t *testing.T, res *pgconn.Result) pgResult {
	t.Helper()
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	var rd pgproto3.RowDescription
	for _, f := range res.FieldDescriptions {
		rd.Fields = append(rd.Fields, pgproto3.FieldDescription{
			Name: []byte(f.Name), TableOID: f.TableOID, TableAttributeNumber: f.TableAttributeNumber,
			DataTypeOID: f.DataTypeOID, DataTypeSize: f.DataTypeSize, TypeModifier: f.TypeModifier, Format: f.Format,
		})
	}
	desc, err := rd.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := pgResult{desc: desc, vals: res.Rows}
	for _, v := range res.Rows {
		r.rows = append(r.rows, appendDataRow(nil, v))
	}
	return r
}

func pgQuery(t *testing.T, ctx context.Context, conn *pgconn.PgConn, sql string, binary bool) pgResult {
	t.Helper()
	if binary {
		return toResult(t, conn.ExecParams(ctx, sql, nil, nil, nil, []int16{1}).Read())
	}
	rs, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return toResult(t, rs[0])
}

// TestAgainstPostgres runs each query on the whole table and, as the
// proxy would, its shard form on three row partitions merged by the
// merger, and requires byte-identical rows and the same column types.
func TestAgainstPostgres(t *testing.T) {
	conn, ctx := pgTable(t)
	all := int64(-1)
	tests := []struct {
		name  string
		whole string
		shard string // $PART is replaced by the partition predicate
		spec  Spec
		// unordered: compare as sets (DISTINCT without ORDER BY)
		unordered bool
		// set runs before the queries, RESET after (a session setting)
		set string
	}{
		{
			name:  "float sums and averages under extra_float_digits = 0",
			set:   "SET extra_float_digits = 0",
			whole: `SELECT g, sum(f), avg(f), sum(f::float4) AS s4 FROM t GROUP BY g ORDER BY g`,
			shard: `SELECT g, sum(f), count(f), avg(f), sum(f::float4) AS s4, current_setting('extra_float_digits') FROM t WHERE $PART GROUP BY g`,
			spec: Spec{
				Combine: []Combine{CombineNone, CombineSum, CombineCount, CombineCheck, CombineSum, CombineFloatDigits},
				Final:   []FinalColumn{{Source: 0}, {Source: 1}, {Kind: FinalAvg, Source: 1, CountSource: 2, Name: "avg"}, {Source: 4}},
				OrderBy: []SortKey{{Column: 0}},
				Limit:   all,
			},
		},
		{
			name:  "special float values under extra_float_digits = -3",
			set:   "SET extra_float_digits = -3",
			whole: `SELECT g, sum(f), avg(f), sum(f * 2) AS s2 FROM u GROUP BY g ORDER BY g`,
			shard: `SELECT g, sum(f), count(f), avg(f), sum(f * 2) AS s2, current_setting('extra_float_digits') FROM u WHERE $PART GROUP BY g`,
			spec: Spec{
				Combine: []Combine{CombineNone, CombineSum, CombineCount, CombineCheck, CombineSum, CombineFloatDigits},
				Final:   []FinalColumn{{Source: 0}, {Source: 1}, {Kind: FinalAvg, Source: 1, CountSource: 2, Name: "avg"}, {Source: 4}},
				OrderBy: []SortKey{{Column: 0}},
				Limit:   all,
			},
		},
		{
			name:  "group by with aggregates",
			whole: `SELECT g, count(*), sum(n), min(s), max(s), avg(n), sum(i), avg(i), avg(b8), sum(b8), bool_and(ok), bool_or(ok), sum(f), avg(f), min(n), max(i) FROM t GROUP BY g ORDER BY g`,
			shard: `SELECT g, count(*), sum(n), min(s), max(s), count(n), sum(i), count(i), sum(b8), count(b8), bool_and(ok), bool_or(ok), sum(f), count(f), min(n), max(i) FROM t WHERE $PART GROUP BY g ORDER BY g`,
			spec: Spec{
				Combine: []Combine{CombineNone, CombineCount, CombineSum, CombineMin, CombineMax, CombineCount, CombineSum, CombineCount, CombineSum, CombineCount, CombineBoolAnd, CombineBoolOr, CombineSum, CombineCount, CombineMin, CombineMax},
				Final: []FinalColumn{{Source: 0}, {Source: 1}, {Source: 2}, {Source: 3}, {Source: 4}, {Kind: FinalAvg, Source: 2, CountSource: 5, Name: "avg"},
					{Source: 6}, {Kind: FinalAvg, Source: 6, CountSource: 7, Name: "avg"}, {Kind: FinalAvg, Source: 8, CountSource: 9, Name: "avg"}, {Source: 8},
					{Source: 10}, {Source: 11}, {Source: 12}, {Kind: FinalAvg, Source: 12, CountSource: 13, Name: "avg"}, {Source: 14}, {Source: 15}},
				OrderBy: []SortKey{{Column: 0}},
				Limit:   all,
			},
		},
		{
			name:  "avg over many small groups of mixed magnitudes",
			whole: `SELECT id % 97 AS k, avg(m), sum(m), avg(n), count(*) FROM t GROUP BY 1 ORDER BY 1`,
			shard: `SELECT id % 97 AS k, sum(m), count(m), sum(n), count(n), count(*) FROM t WHERE $PART GROUP BY 1 ORDER BY 1`,
			spec: Spec{
				Combine: []Combine{CombineNone, CombineSum, CombineCount, CombineSum, CombineCount, CombineCount},
				Final:   []FinalColumn{{Source: 0}, {Kind: FinalAvg, Source: 1, CountSource: 2, Name: "avg"}, {Source: 1}, {Kind: FinalAvg, Source: 3, CountSource: 4, Name: "avg"}, {Source: 5}},
				OrderBy: []SortKey{{Column: 0}},
				Limit:   all,
			},
		},
		{
			name:  "aggregates without group by",
			whole: `SELECT count(*), sum(n), avg(n), avg(i), min(n), max(n), avg(m), min(s), max(s) FROM t`,
			shard: `SELECT count(*), sum(n), count(n), sum(i), count(i), min(n), max(n), sum(m), count(m), min(s), max(s) FROM t WHERE $PART`,
			spec: Spec{
				Combine: []Combine{CombineCount, CombineSum, CombineCount, CombineSum, CombineCount, CombineMin, CombineMax, CombineSum, CombineCount, CombineMin, CombineMax},
				Final: []FinalColumn{{Source: 0}, {Source: 1}, {Kind: FinalAvg, Source: 1, CountSource: 2, Name: "avg"}, {Kind: FinalAvg, Source: 3, CountSource: 4, Name: "avg"},
					{Source: 5}, {Source: 6}, {Kind: FinalAvg, Source: 7, CountSource: 8, Name: "avg"}, {Source: 9}, {Source: 10}},
				Limit: all,
			},
		},
		{
			name:  "order by an aggregate with limit",
			whole: `SELECT g, sum(i) FROM t GROUP BY g ORDER BY sum(i) DESC, g LIMIT 4 OFFSET 1`,
			shard: `SELECT g, sum(i) FROM t WHERE $PART GROUP BY g`,
			spec:  Spec{Combine: []Combine{CombineNone, CombineSum}, OrderBy: []SortKey{{Column: 1, Desc: true, NullsFirst: true}, {Column: 0}}, Offset: 1, Limit: 4},
		},
		{
			name:  "streaming merge on numeric desc with offset and limit",
			whole: `SELECT id, n, s FROM t ORDER BY n DESC NULLS LAST, id LIMIT 50 OFFSET 10`,
			shard: `SELECT id, n, s FROM t WHERE $PART ORDER BY n DESC NULLS LAST, id LIMIT 60`,
			spec:  Spec{OrderBy: []SortKey{{Column: 1, Desc: true}, {Column: 0}}, Offset: 10, Limit: 50},
		},
		{
			name:  "streaming merge on text nulls first with a hidden key",
			whole: `SELECT s, i FROM t ORDER BY s NULLS FIRST, id`,
			shard: `SELECT s, i, id FROM t WHERE $PART ORDER BY s NULLS FIRST, id`,
			spec:  Spec{Final: []FinalColumn{{Source: 0}, {Source: 1}, {Source: 2, Hidden: true}}, OrderBy: []SortKey{{Column: 0, NullsFirst: true}, {Column: 2}}, Limit: all},
		},
		{
			name:  "streaming merge on float and bool",
			whole: `SELECT f, ok, id FROM t ORDER BY f, ok DESC, id`,
			shard: `SELECT f, ok, id FROM t WHERE $PART ORDER BY f, ok DESC, id`,
			spec:  Spec{OrderBy: []SortKey{{Column: 0}, {Column: 1, Desc: true, NullsFirst: true}, {Column: 2}}, Limit: all},
		},
		{
			name:  "order by a hidden avg",
			whole: `SELECT g FROM t GROUP BY g ORDER BY avg(n) DESC, g`,
			shard: `SELECT g, sum(n), count(n) FROM t WHERE $PART GROUP BY g`,
			spec: Spec{
				Combine: []Combine{CombineNone, CombineSum, CombineCount},
				Final:   []FinalColumn{{Source: 0}, {Kind: FinalAvg, Source: 1, CountSource: 2, Hidden: true}},
				OrderBy: []SortKey{{Column: 1, Desc: true, NullsFirst: true}, {Column: 0}},
				Limit:   all,
			},
		},
		{
			name:  "special values",
			whole: `SELECT g, sum(x), avg(x), min(x), max(x), sum(f), min(f), max(f), avg(f) FROM u GROUP BY g ORDER BY g`,
			shard: `SELECT g, sum(x), count(x), min(x), max(x), sum(f), min(f), max(f), count(f) FROM u WHERE $PART GROUP BY g`,
			spec: Spec{
				Combine: []Combine{CombineNone, CombineSum, CombineCount, CombineMin, CombineMax, CombineSum, CombineMin, CombineMax, CombineCount},
				Final: []FinalColumn{{Source: 0}, {Source: 1}, {Kind: FinalAvg, Source: 1, CountSource: 2, Name: "avg"}, {Source: 3}, {Source: 4},
					{Source: 5}, {Source: 6}, {Source: 7}, {Kind: FinalAvg, Source: 5, CountSource: 8, Name: "avg"}},
				OrderBy: []SortKey{{Column: 0}},
				Limit:   all,
			},
		},
		{
			name:  "streaming special values",
			whole: `SELECT x, f, id FROM u ORDER BY x NULLS FIRST, f DESC, id`,
			shard: `SELECT x, f, id FROM u WHERE $PART ORDER BY x NULLS FIRST, f DESC, id`,
			spec:  Spec{OrderBy: []SortKey{{Column: 0, NullsFirst: true}, {Column: 1, Desc: true, NullsFirst: true}, {Column: 2}}, Limit: all},
		},
		{
			name:  "distinct with order",
			whole: `SELECT DISTINCT g, s FROM t ORDER BY s, g`,
			shard: `SELECT DISTINCT g, s FROM t WHERE $PART`,
			spec:  Spec{Distinct: true, OrderBy: []SortKey{{Column: 1}, {Column: 0}}, Limit: all},
		},
		{
			name:      "distinct without order",
			whole:     `SELECT DISTINCT g, i % 3 FROM t`,
			shard:     `SELECT DISTINCT g, i % 3 FROM t WHERE $PART`,
			spec:      Spec{Distinct: true, Limit: all},
			unordered: true,
		},
	}
	for _, binary := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/binary=%v", tt.name, binary), func(t *testing.T) {
				if tt.spec.Limit >= 0 && len(tt.spec.OrderBy) == 0 {
					t.Fatal("test bug: a limit needs an order")
				}
				if tt.set != "" {
					if _, err := conn.Exec(ctx, tt.set).ReadAll(); err != nil {
						t.Fatal(err)
					}
					defer func() {
						if _, err := conn.Exec(ctx, "RESET extra_float_digits").ReadAll(); err != nil {
							t.Error(err)
						}
					}()
				}
				want := pgQuery(t, ctx, conn, tt.whole, binary)
				var descs [][]byte
				var shards [][][]byte
				for k := 0; k < 3; k++ {
					p := pgQuery(t, ctx, conn, strings.ReplaceAll(tt.shard, "$PART", fmt.Sprintf("id %% 3 = %d", k)), binary)
					descs = append(descs, p.desc)
					shards = append(shards, p.rows)
				}
				if err := CheckRowDescriptions(descs); err != nil {
					t.Fatal(err)
				}
				m, err := New(&tt.spec, descs[0])
				if err != nil {
					t.Fatal(err)
				}
				checkDesc(t, m, want.desc)
				got, err := merge(t, &tt.spec, descs[0], shards)
				if err != nil {
					t.Fatal(err)
				}
				w := want.vals
				if len(w) == 0 {
					t.Fatal("test bug: no rows")
				}
				if tt.unordered {
					got, w = sortedRows(got), sortedRows(w)
				}
				if len(got) != len(w) {
					t.Fatalf("got %d rows, want %d", len(got), len(w))
				}
				for i := range w {
					if !reflect.DeepEqual(got[i], w[i]) {
						t.Fatalf("row %d:\n got  %q\n want %q", i, got[i], w[i])
					}
				}
			})
		}
	}
}

// checkDesc compares the merger's RowDescription with PostgreSQL's, except
// table OIDs and attribute numbers.
func checkDesc(t *testing.T, m *Merger, want []byte) {
	t.Helper()
	wf, err := decodeRowDescription(want)
	if err != nil {
		t.Fatal(err)
	}
	gf, err := decodeRowDescription(m.RowDescription(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(gf) != len(wf) {
		t.Fatalf("%d columns, want %d", len(gf), len(wf))
	}
	for i := range wf {
		g, w := gf[i], wf[i]
		if string(g.Name) != string(w.Name) || g.DataTypeOID != w.DataTypeOID || g.DataTypeSize != w.DataTypeSize || g.TypeModifier != w.TypeModifier || g.Format != w.Format {
			t.Errorf("column %d: got %+v, want %+v", i, g, w)
		}
	}
}

func sortedRows(rs [][][]byte) [][][]byte {
	keys := make([]string, len(rs))
	idx := make(map[string][][]byte)
	for i, r := range rs {
		keys[i] = fmt.Sprintf("%q", r)
		idx[keys[i]] = r
	}
	sortStrings(keys)
	out := make([][][]byte, len(rs))
	for i, k := range keys {
		out[i] = idx[k]
	}
	return out
}
