package proxy_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestInListPerShard: a read whose key IN list (or = ANY(ARRAY[...]))
// spans several shards sends each shard only its own keys, in both
// protocols and when the rows are merged. Each shard holds a stray row
// under a key of the other shard's, which a shard sent the whole list
// would return: the answers must equal the reference's, which has no
// stray rows. EXPLAIN (pgshard) shows each shard's statement.
func TestInListPerShard(t *testing.T) {
	c, direct, _ := kvShards(t)
	p := startProxy(t, kvMapConfig(t, c))
	ctx := ctxT(t)
	if _, err := direct[0].Exec(ctx, `INSERT INTO kv (k, v, n) VALUES (150, 'stray', 1), (250, 'stray', 2)`); err != nil {
		t.Fatal(err)
	}
	if _, err := direct[1].Exec(ctx, `INSERT INTO kv (k, v, n) VALUES (7, 'stray', 3), (-3, 'stray', 4)`); err != nil {
		t.Fatal(err)
	}
	queries := []struct {
		sql  string
		args []any
	}{
		{`SELECT k, v FROM kv WHERE k IN (7, 150, 3) ORDER BY k`, nil},
		{`SELECT count(*), sum(n), avg(n), min(v), max(f) FROM kv WHERE k IN (7, 150, 3, 250, -3)`, nil},
		{`SELECT v, count(*) FROM kv WHERE k = ANY(ARRAY[7, 150, 250, 8]) GROUP BY v ORDER BY v NULLS FIRST`, nil},
		{`SELECT k, n FROM kv WHERE k IN (7, 150, 3, 250, -3, 12) AND n IS NOT NULL ORDER BY k DESC LIMIT $1 OFFSET 1`, []any{3}},
		{`SELECT DISTINCT v FROM kv WHERE k = ANY(ARRAY[-3, 7, 150, 250]::bigint[]) ORDER BY v`, nil},
	}
	for _, mode := range []string{"simple_protocol", "cache_statement", "exec"} {
		conn := connect(t, p.dsn("default_query_exec_mode="+mode))
		refConn := connect(t, c.Shards[0].SuperDSN("ref")+"&default_query_exec_mode="+mode)
		for _, q := range queries {
			for round := range 2 { // the second run uses cached statements
				want, err := queryRaw(ctx, refConn, q.sql, q.args...)
				if err != nil {
					t.Fatalf("%s: reference %s: %v", mode, q.sql, err)
				}
				if len(want.rows) == 0 {
					t.Fatalf("%s: %s: the reference returned no rows; the test is vacuous", mode, q.sql)
				}
				got, err := queryRaw(ctx, conn, q.sql, q.args...)
				if err != nil {
					t.Fatalf("%s (run %d): %s: %v", mode, round, q.sql, err)
				}
				if !slices.Equal(got.cols, want.cols) || !slices.Equal(got.rows, want.rows) {
					t.Fatalf("%s (run %d): %s\n got  %v %v\n want %v %v", mode, round, q.sql, got.cols, got.rows, want.cols, want.rows)
				}
			}
		}
	}
	conn := connect(t, p.dsn("default_query_exec_mode=simple_protocol"))
	rows, err := conn.Query(ctx, `EXPLAIN (pgshard) SELECT count(*) FROM kv WHERE k IN (7, 150, 3)`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var shard, route, stmt, detail string
		if err := rows.Scan(&shard, &route, &stmt, &detail); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s|%s|%s|%s", shard, route, stmt, detail))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := "s0|multi|SELECT count(*) FROM kv WHERE k IN (7, 3)|aggregates combined per group; only this shard's keys in the list;" +
		"s1|multi|SELECT count(*) FROM kv WHERE k IN (150)|aggregates combined per group; only this shard's keys in the list"
	if g := strings.Join(got, ";"); g != want {
		t.Fatalf("EXPLAIN (pgshard)\n got  %s\n want %s", g, want)
	}
}
