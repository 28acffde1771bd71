package router_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// testMap is table kv range-sharded by k over s0 (k < 100) and s1.
func testMap(t *testing.T) *shardmap.Map {
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
		kind  router.Kind
		shard string
		code  string
	}{
		{"literal key", router.Query{SQL: "SELECT * FROM kv WHERE k = 150"}, router.KindSingle, "s1", ""},
		{"parameter key", router.Query{SQL: "SELECT * FROM kv WHERE k = $1", Bind: bindBody("7")}, router.KindSingle, "s0", ""},
		{"no table", router.Query{SQL: "SELECT 1"}, router.KindSingle, "s0", ""},
		{"transaction control", router.Query{SQL: "COMMIT"}, router.KindAny, "s0", ""},
		{"empty", router.Query{}, router.KindAny, "s0", ""},
		{"syntax error goes to the server", router.Query{SQL: "SELEC 1"}, router.KindSingle, "s0", ""},
		{"scatter read", router.Query{SQL: "SELECT count(*) FROM kv"}, router.KindScatter, "", ""},
		{"broadcast write", router.Query{SQL: "UPDATE kv SET v = 1"}, 0, "", "0A000"},
		{"DDL on a sharded table", router.Query{SQL: "CREATE INDEX i ON kv (v)"}, router.KindUtility, "", ""},
		{"DROP TABLE", router.Query{SQL: "DROP TABLE IF EXISTS public.kv"}, router.KindUtility, "", ""},
		{"DDL of a table not in the map", router.Query{SQL: "CREATE TABLE other (a int)"}, router.KindUtility, "", ""},
		{"maintenance elsewhere", router.Query{SQL: "VACUUM other"}, router.KindSingle, "s0", ""},
		{"hint statement", router.Query{SQL: "SET pgshard.shard = 's1'"}, router.KindAny, "s0", ""},
		{"session shard hint", router.Query{SQL: "SELECT count(*) FROM kv", HintShard: "s1"}, router.KindSingle, "s1", ""},
		{"session key hint", router.Query{SQL: "SELECT count(*) FROM kv", HintKey: "150"}, router.KindSingle, "s1", ""},
		{"bad Bind", router.Query{SQL: "SELECT * FROM kv WHERE k = $1", Bind: []byte{1}}, 0, "", "08P01"},
	}
	for _, tc := range cases {
		p, err := r.Route(tc.q)
		var re *router.RefusedError
		switch {
		case tc.code != "":
			if !errors.As(err, &re) || re.Code != tc.code {
				t.Errorf("%s: want refusal %s, got %+v %v", tc.name, tc.code, p, err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case p.Kind != tc.kind || (tc.shard != "" && p.Shard != tc.shard):
			t.Errorf("%s: got %+v", tc.name, p)
		case tc.kind == router.KindScatter && (len(p.Shards) != 2 || p.Merge == nil):
			t.Errorf("%s: scatter plan %+v", tc.name, p)
		}
	}
}

// TestPlanRouterAnyShardAndDescribe: a statement without a table of the
// map is marked AnyShard; a Describe query names every shard that can
// describe the statement, the default first.
func TestPlanRouterAnyShardAndDescribe(t *testing.T) {
	m := testMap(t)
	r := router.PlanRouter{Planner: plan.New(m, plan.Options{DefaultShard: "s0"}), Default: "s0"}
	for sql, want := range map[string]bool{"SELECT now()": true, "SELECT * FROM kv WHERE k = 150": false, "CREATE TABLE t (a int)": false} {
		p, err := r.Route(router.Query{SQL: sql})
		if err != nil || p.AnyShard != want || p.DescribeShards != nil {
			t.Errorf("%q: AnyShard %v, DescribeShards %v, %v; want AnyShard %v", sql, p.AnyShard, p.DescribeShards, err, want)
		}
	}
	p, err := r.Route(router.Query{SQL: "INSERT INTO kv (k, v) VALUES ($1, $2)", Describe: true})
	if err != nil || p.Kind != router.KindAny || p.Shard != "s0" || len(p.DescribeShards) != 2 || p.DescribeShards[1] != "s1" {
		t.Fatalf("describe: %+v %v", p, err)
	}
}
