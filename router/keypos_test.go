package router_test

import (
	"errors"
	"testing"

	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/router/plan"
)

// TestPlanRouterKeyPosition: an INSERT without a column list is refused
// with the table, key column and a shard to ask; once told the key's
// position it is routed by it, until DDL routed through the planner
// drops the position. A UNION ALL over several shards is a scatter with
// per-shard statements.
func TestPlanRouterKeyPosition(t *testing.T) {
	m := testMap(t)
	r := router.PlanRouter{Planner: plan.New(m, plan.Options{DefaultShard: "s0"}), Default: "s0"}
	var kp router.KeyPositioner = r
	insert := router.Query{SQL: "INSERT INTO kv VALUES ('x', 150)"}
	needs := func(when string) {
		t.Helper()
		p, err := r.Route(insert)
		var re *plan.RefusalError
		if !errors.As(err, &re) || re.Code != "0A000" || p.Kind != plan.Refused || p.NeedKeyPosition != "public.kv" || p.NeedKeyColumn != "k" || p.Shard != "s0" {
			t.Fatalf("%s: plan = %+v, err = %#v, want a refusal naming public.kv, k, s0", when, p, err)
		}
	}
	needs("before")
	kp.SetKeyPosition("public.kv", 1)
	p, err := r.Route(insert)
	if err != nil || p.Kind != plan.Single || p.Shard != "s1" {
		t.Fatalf("with the position: %+v, %v", p, err)
	}
	if _, err := r.Route(router.Query{SQL: "ALTER TABLE kv ADD COLUMN z int"}); err != nil {
		t.Fatal(err)
	}
	needs("after DDL")

	p, err = r.Route(router.Query{SQL: "SELECT k FROM kv WHERE k = 5 UNION ALL SELECT k FROM kv WHERE k = 500"})
	if err != nil || p.Kind != plan.Scatter || len(p.PerShardSQL) != 2 || !p.ReadOnly || p.Merge != nil {
		t.Fatalf("UNION ALL over two shards: %+v, %v", p, err)
	}
	if got, want := p.PerShardSQL["s1"], "(SELECT k FROM kv WHERE k = 5 LIMIT 0) UNION ALL (SELECT k FROM kv WHERE k = 500 LIMIT ALL)"; got != want {
		t.Errorf("s1 gets %q, want %q", got, want)
	}
}
