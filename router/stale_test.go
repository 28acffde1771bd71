package router_test

import (
	"strings"
	"testing"

	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/shardmap"
)

// TestStaleRowsRoute: while s1 holds a copy of kv [50, 100) (owned by
// s0), a scatter read keeps its merge, a COPY TO and an UPDATE without a
// key keep s1's rewritten statement, and the other shard gets the
// client's.
func TestStaleRowsRoute(t *testing.T) {
	m, err := testMap(t).WithStale("kv", shardmap.StaleRows{ID: "mv1", Lo: shardmap.Int64Bound(50), Hi: shardmap.Int64Bound(100), Shard: "s1"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	r := router.PlanRouter{Planner: plan.New(m, plan.Options{DefaultShard: "s0"}), Default: "s0", AllowBroadcast: true}
	const live = "(k >= 50::int8 AND k < 100::int8) IS NOT TRUE"
	for _, c := range []struct {
		sql  string
		kind plan.Kind
		want string // s1's statement
	}{
		{"SELECT v, count(*) FROM kv GROUP BY v ORDER BY v", plan.Scatter, "SELECT v, count(*) FROM (SELECT * FROM kv WHERE " + live + ") kv GROUP BY v ORDER BY v"},
		{"COPY kv TO STDOUT", plan.CopyOut, "COPY (SELECT * FROM kv WHERE " + live + ") TO STDOUT"},
		{"UPDATE kv SET v = v || 'x'", plan.Scatter, "UPDATE kv SET v = v || 'x' WHERE (kv.k >= 50::int8 AND kv.k < 100::int8) IS NOT TRUE"},
		{"DELETE FROM kv WHERE v = 'a'", plan.Scatter, "DELETE FROM kv WHERE v = 'a' AND (kv.k >= 50::int8 AND kv.k < 100::int8) IS NOT TRUE"},
	} {
		p, err := r.Route(router.Query{SQL: c.sql})
		if err != nil {
			t.Fatalf("%s: %v", c.sql, err)
		}
		if p.Kind != c.kind || !p.PerShardStale || len(p.PerShardSQL) != 1 || p.PerShardSQL["s1"] != c.want {
			t.Errorf("%s: kind %s stale %v per-shard %q, want %s with s1: %s", c.sql, p.Kind, p.PerShardStale, p.PerShardSQL, c.kind, c.want)
		}
		if c.kind == plan.Scatter && strings.HasPrefix(c.sql, "SELECT") && (p.Merge == nil || !p.Merge.Group) {
			t.Errorf("%s: merge lost: %+v", c.sql, p.Merge)
		}
	}
	p, err := r.Route(router.Query{SQL: "EXPLAIN (pgshard) SELECT count(*) FROM kv"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.SQL, "('s1', 'scatter', 'SELECT count(*) FROM (SELECT * FROM kv WHERE "+live+") kv', ") ||
		!strings.Contains(p.SQL, "stale rows of a moving interval left out") {
		t.Fatalf("EXPLAIN (pgshard): %s", p.SQL)
	}
}
