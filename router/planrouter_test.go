package router_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// testMap is table kv range-sharded by k over s0 (k < 100) and s1.
func testMap(t testing.TB) *shardmap.Map {
	return shardmaptest.KV([]int64{100}, "127.0.0.1:5432", "127.0.0.1:5433").Map(t)
}

// bindBody builds a Bind body with text parameters.
func bindBody(params ...string) []byte {
	b := []byte("\x00\x00") // portal "", statement ""
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(params)))
	for _, p := range params {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return binary.BigEndian.AppendUint16(b, 0)
}

func TestPlanRouter(t *testing.T) {
	m := testMap(t)
	r := router.PlanRouter{Planner: plan.New(m, plan.Options{DefaultShard: "s0"}), Default: "s0"}
	cases := []struct {
		name  string
		q     router.Query
		kind  plan.Kind
		shard string
		code  string
	}{
		{"literal key", router.Query{SQL: "SELECT * FROM kv WHERE k = 150"}, plan.Single, "s1", ""},
		{"parameter key", router.Query{SQL: "SELECT * FROM kv WHERE k = $1", Bind: bindBody("7")}, plan.Single, "s0", ""},
		{"no table", router.Query{SQL: "SELECT 1"}, plan.Single, "s0", ""},
		{"transaction control", router.Query{SQL: "COMMIT"}, plan.Any, "s0", ""},
		{"empty", router.Query{}, plan.Any, "s0", ""},
		{"syntax error goes to the server", router.Query{SQL: "SELEC 1"}, plan.Single, "s0", ""},
		{"scatter read", router.Query{SQL: "SELECT count(*) FROM kv"}, plan.Scatter, "", ""},
		{"broadcast write", router.Query{SQL: "UPDATE kv SET v = 1"}, 0, "", "0A000"},
		{"DDL on a sharded table", router.Query{SQL: "CREATE INDEX i ON kv (v)"}, plan.Utility, "", ""},
		{"DROP TABLE", router.Query{SQL: "DROP TABLE IF EXISTS public.kv"}, plan.Utility, "", ""},
		{"DDL of a table not in the map", router.Query{SQL: "CREATE TABLE other (a int)"}, plan.Utility, "", ""},
		{"maintenance elsewhere", router.Query{SQL: "VACUUM other"}, plan.Single, "s0", ""},
		{"hint statement", router.Query{SQL: "SET pgshard.shard = 's1'"}, plan.Any, "s0", ""},
		{"session shard hint", router.Query{SQL: "SELECT count(*) FROM kv", HintShard: "s1"}, plan.Single, "s1", ""},
		{"session key hint", router.Query{SQL: "SELECT count(*) FROM kv", HintKey: "150"}, plan.Single, "s1", ""},
		{"bad Bind", router.Query{SQL: "SELECT * FROM kv WHERE k = $1", Bind: []byte{1}}, 0, "", "08P01"},
	}
	for _, tc := range cases {
		p, err := r.Route(tc.q)
		var re *plan.RefusalError
		switch {
		case tc.code != "":
			if !errors.As(err, &re) || re.Code != tc.code {
				t.Errorf("%s: want refusal %s, got %+v %v", tc.name, tc.code, p, err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case p.Kind != tc.kind || (tc.shard != "" && p.Shard != tc.shard):
			t.Errorf("%s: got %+v", tc.name, p)
		case tc.kind == plan.Scatter && (len(p.Shards) != 2 || p.Merge == nil):
			t.Errorf("%s: scatter plan %+v", tc.name, p)
		}
	}
}

// TestPlanRouterAnywhereAndDescribe: a statement without a table of the
// map is marked Anywhere; a Describe query names every shard that can
// describe the statement, the default first.
func TestPlanRouterAnywhereAndDescribe(t *testing.T) {
	m := testMap(t)
	r := router.PlanRouter{Planner: plan.New(m, plan.Options{DefaultShard: "s0"}), Default: "s0"}
	for sql, want := range map[string]bool{"SELECT now()": true, "SELECT * FROM kv WHERE k = 150": false, "CREATE TABLE t (a int)": false} {
		p, err := r.Route(router.Query{SQL: sql})
		if err != nil || p.Anywhere != want || p.DescribeShards != nil {
			t.Errorf("%q: Anywhere %v, DescribeShards %v, %v; want Anywhere %v", sql, p.Anywhere, p.DescribeShards, err, want)
		}
	}
	p, err := r.Route(router.Query{SQL: "INSERT INTO kv (k, v) VALUES ($1, $2)", Describe: true})
	if err != nil || p.Kind != plan.Any || p.Shard != "s0" || len(p.DescribeShards) != 2 || p.DescribeShards[1] != "s1" {
		t.Fatalf("describe: %+v %v", p, err)
	}
}

// BenchmarkPlanRouterRoute is the router's entry point on a cached plan:
// a simple query and a Bind with its parameter.
func BenchmarkPlanRouterRoute(b *testing.B) {
	m := testMap(b)
	r := router.PlanRouter{Planner: plan.New(m, plan.Options{DefaultShard: "s0"}), Default: "s0"}
	for _, bc := range []struct {
		name string
		q    router.Query
	}{
		{"simple", router.Query{SQL: "SELECT k, v FROM kv WHERE k = 150"}},
		{"bind", router.Query{SQL: "SELECT k, v FROM kv WHERE k = $1", Bind: bindBody("150")}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := r.Route(bc.q)
				if err != nil || p.Kind != plan.Single || p.Shard != "s1" {
					b.Fatal(p.Kind, err)
				}
			}
		})
	}
}

// TestPlanRouterKinds: what the session needs of each kind of plan the
// entry point returns.
func TestPlanRouterKinds(t *testing.T) {
	m := testMap(t)
	r := router.PlanRouter{Planner: plan.New(m, plan.Options{DefaultShard: "s0"}), Default: "s0"}
	route := func(sql string) plan.Plan {
		t.Helper()
		p, err := r.Route(router.Query{SQL: sql})
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return p
	}
	if p := route("INSERT INTO kv (k, v) VALUES (1, 'a'), (150, 'b')"); p.Kind != plan.Scatter || !p.Atomic || len(p.PerShardSQL) != 2 ||
		len(p.PerShardRows["s1"]) != 1 || p.PerShardRows["s1"][0] != 1 || p.ReadOnly || p.Table != "public.kv" || p.Stmt != plan.StmtInsert {
		t.Errorf("split INSERT: %+v", p)
	}
	if p := route("COPY kv TO STDOUT"); p.Kind != plan.CopyOut || len(p.Shards) != 2 || p.ShardSQL != "" || p.ReplicaSafe {
		t.Errorf("COPY TO: %+v", p)
	}
	if p := route("COPY kv (k, v) FROM STDIN"); p.Kind != plan.CopyIn || len(p.Shards) != 2 || p.Copy == nil || p.Copy.KeyColumn != 0 {
		t.Errorf("COPY FROM: %+v", p)
	}
	if p := route("EXPLAIN (pgshard) SELECT * FROM kv WHERE k = 150"); p.Kind != plan.Any || p.Shard != "s0" || !p.Explain || p.SQL == "" {
		t.Errorf("EXPLAIN (pgshard): %+v", p)
	}
	if p := route("EXPLAIN (pgshard) DROP INDEX kv_v_ix"); p.Kind != plan.Any || !p.Explain || !strings.Contains(p.SQL, "'utility'") {
		t.Errorf("EXPLAIN (pgshard) of DDL: %+v", p)
	}
	if p := route("explain(PGSHARD)create table t2 (a int)"); p.Kind != plan.Any || !p.Explain || !strings.Contains(p.SQL, "'utility'") {
		t.Errorf("EXPLAIN (pgshard) of DDL: %+v", p)
	}
	if p := route("SHOW pgshard.shards"); p.Kind != plan.Any || p.Shard != "s0" || p.SQL == "" {
		t.Errorf("SHOW pgshard.shards: %+v", p)
	}
	if p := route("SET pgshard.key = '150'"); p.Kind != plan.Any || p.Hint == nil || p.Hint.Name != "key" || p.Hint.Value != "150" {
		t.Errorf("SET pgshard.key: %+v", p)
	}
	if p := route("BEGIN"); p.Kind != plan.Any || p.Stmt != plan.StmtTx || p.Tx != plan.TxBegin || p.Shard != "s0" {
		t.Errorf("BEGIN: %+v", p)
	}
	if p := route("DO $$ BEGIN END $$"); p.Kind != plan.Single || !p.InTx || p.Err == nil || p.Err.Code != "0A000" || p.Shard != "s0" {
		t.Errorf("DO: %+v", p)
	}
	if p := route("SELECT * FROM kv WHERE k = 150"); p.Kind != plan.Single || p.Shard != "s1" || p.Reach != plan.ReachKey || !p.ReplicaSafe || p.Table != "public.kv" {
		t.Errorf("keyed read: %+v", p)
	}
	// Over several shards, only what the proxy runs there.
	for _, sql := range []string{"SELECT * FROM kv FOR UPDATE", "UPDATE kv SET v = 'x' WHERE k IN (1, 150)"} {
		p, err := r.Route(router.Query{SQL: sql})
		var re *plan.RefusalError
		if !errors.As(err, &re) || re.Code != "0A000" || p.Kind != plan.Refused || p.Err != re {
			t.Errorf("%s: %+v, %v; want a 0A000 refusal", sql, p, err)
		}
	}
	r.AllowBroadcast = true
	if p := route("UPDATE kv SET v = 'x'"); p.Kind != plan.Scatter || !p.Broadcast || len(p.Shards) != 2 || p.Atomic {
		t.Errorf("broadcast UPDATE allowed: %+v", p)
	}
}
