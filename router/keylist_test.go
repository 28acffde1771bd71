package router_test

import (
	"maps"
	"testing"

	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/router/plan"
)

// TestInListPerShardRoute: a read whose key IN list spans several shards
// is a Scatter that keeps its merge and gives each shard its own keys;
// EXPLAIN (pgshard) shows each shard's statement.
func TestInListPerShardRoute(t *testing.T) {
	r := router.PlanRouter{Planner: plan.New(testMap(t), plan.Options{DefaultShard: "s0"}), Default: "s0"}
	p, err := r.Route(router.Query{SQL: "SELECT v, count(*) FROM kv WHERE k IN (7, 150, 8) GROUP BY v"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"s0": "SELECT v, count(*) FROM kv WHERE k IN (7, 8) GROUP BY v",
		"s1": "SELECT v, count(*) FROM kv WHERE k IN (150) GROUP BY v",
	}
	if p.Kind != plan.Scatter || p.Merge == nil || !p.Merge.Group || !p.PerShardKeys || !maps.Equal(p.PerShardSQL, want) {
		t.Fatalf("got %+v", p)
	}
	p, err = r.Route(router.Query{SQL: "EXPLAIN (pgshard) SELECT * FROM kv WHERE k IN (7, 150)"})
	if err != nil {
		t.Fatal(err)
	}
	wantSQL := "SELECT * FROM (VALUES ('s0', 'multi', 'SELECT * FROM kv WHERE k IN (7)', 'results concatenated; only this shard''s keys in the list'), " +
		"('s1', 'multi', 'SELECT * FROM kv WHERE k IN (150)', 'results concatenated; only this shard''s keys in the list')) AS route(shard, route, statement, detail)"
	if !p.Explain || p.SQL != wantSQL {
		t.Fatalf("EXPLAIN (pgshard):\n got  %s\n want %s", p.SQL, wantSQL)
	}
}
