package router_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/router/plan"
)

func TestHintRouter(t *testing.T) {
	r := router.HintRouter{Default: "s0", Shards: map[string]bool{"s0": true, "s1": true}}
	for sql, want := range map[string]string{
		"SELECT 1":                               "s0",
		"/* pgshard: shard=s1 */ SELECT 1":       "s1",
		"  /*pgshard: shard=s1*/SELECT 1":        "s1",
		"/* pgshard: key=4 shard=s1 */ SELECT 1": "s1",
		"/* other comment */ SELECT 1":           "s0",
		"SELECT /* pgshard: shard=s1 */ 1":       "s0",
		"/* pgshard: shard= */ SELECT 1":         "s0",
		"/* pgshard: shard=s1":                   "s0",
	} {
		p, err := r.Route(router.Query{SQL: sql})
		if err != nil || p.Shard != want {
			t.Errorf("Route(%q) = %q, %v; want %q", sql, p.Shard, err, want)
		}
	}
	for _, sql := range []string{"COMMIT", "rollback to savepoint a", "SAVEPOINT a", "SET x = 1", "SHOW work_mem"} {
		if p, _ := r.Route(router.Query{SQL: sql}); p.Kind != plan.Any || p.Shard != "s0" {
			t.Errorf("Route(%q) = %+v, want an Any plan", sql, p)
		}
	}
	if p, _ := r.Route(router.Query{SQL: "/* pgshard: shard=s1 */ COMMIT"}); p.Kind != plan.Single || p.Shard != "s1" {
		t.Errorf("a hint wins: %+v", p)
	}
	_, err := r.Route(router.Query{SQL: "/* pgshard: shard=s9 */ SELECT 1"})
	var re *plan.RefusalError
	if !errors.As(err, &re) || re.Code != "22023" || !strings.Contains(re.Message, `"s9"`) {
		t.Errorf("unknown shard: %v", err)
	}
}
