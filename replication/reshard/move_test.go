package reshard

import (
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

func TestMoveValidate(t *testing.T) {
	good := Move{ID: "m_1", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
		Lo: shardmap.Int64Bound(1), Hi: shardmap.PosInf(), Tables: []Table{{Name: "public.a", KeyColumn: "id"}}}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid move refused: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*Move)
		want string
	}{
		{"bad id", func(m *Move) { m.ID = "Move-1" }, `move id "Move-1"`},
		{"long id", func(m *Move) { m.ID = strings.Repeat("a", 41) }, "1 to 40 characters"},
		{"empty interval", func(m *Move) { m.Hi = shardmap.Int64Bound(1) }, "empty interval [1, 1)"},
		{"text bound for bigint", func(m *Move) { m.Lo = shardmap.TextBound("a") }, `lo bound "a": not a bigint value`},
		{"hash takes int64 bounds", func(m *Move) { m.Strategy = shardmap.Hash; m.KeyType = shardmap.KeyText }, ""},
		{"missing bound", func(m *Move) { m.Hi = shardmap.Bound{} }, "hi bound missing"},
		{"no tables", func(m *Move) { m.Tables = nil }, "no tables"},
		{"unqualified table", func(m *Move) { m.Tables = []Table{{Name: "a", KeyColumn: "id"}} }, `table "a": want schema.table`},
		{"no key column", func(m *Move) { m.Tables = []Table{{Name: "public.a"}} }, "table public.a: no key column"},
		{"table twice", func(m *Move) { m.Tables = append(m.Tables, m.Tables[0]) }, "table public.a listed twice"},
		{"unknown strategy", func(m *Move) { m.Strategy = "list" }, `unknown strategy "list"`},
	} {
		m := good
		m.Tables = append([]Table(nil), good.Tables...)
		c.edit(&m)
		err := m.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want it to say %q", c.name, err, c.want)
		}
	}
}

func TestFilter(t *testing.T) {
	u := shardmap.MustParseUUID("00112233-4455-6677-8899-aabbccddeeff")
	tbl := Table{Name: "public.t", KeyColumn: `We"ird`}
	for _, c := range []struct {
		m    Move
		want string
	}{
		{Move{KeyType: shardmap.KeyBigint, Strategy: shardmap.Range, Lo: shardmap.Int64Bound(-5), Hi: shardmap.Int64Bound(10)},
			`("We""ird" >= -5::int8 AND "We""ird" < 10::int8)`},
		{Move{KeyType: shardmap.KeyText, Strategy: shardmap.Range, Lo: shardmap.NegInf(), Hi: shardmap.TextBound("o'k")},
			`(("We""ird")::text COLLATE "C" < 'o''k'::text COLLATE "C")`},
		{Move{KeyType: shardmap.KeyUUID, Strategy: shardmap.Range, Lo: shardmap.UUIDBound(u), Hi: shardmap.PosInf()},
			`("We""ird" >= '00112233-4455-6677-8899-aabbccddeeff'::uuid)`},
		{Move{KeyType: shardmap.KeyBigint, Strategy: shardmap.Hash, Lo: shardmap.Int64Bound(0), Hi: shardmap.PosInf()},
			`(hashint8extended(("We""ird")::int8, 8099569346997806113) >= 0::int8)`},
		{Move{KeyType: shardmap.KeyText, Strategy: shardmap.Hash, Lo: shardmap.NegInf(), Hi: shardmap.PosInf()},
			`(("We""ird") IS NOT NULL)`},
	} {
		if got := c.m.Filter(tbl); got != c.want {
			t.Errorf("%s %s [%s, %s):\n got %s\nwant %s", c.m.Strategy, c.m.KeyType, c.m.Lo, c.m.Hi, got, c.want)
		}
	}
}

func TestNames(t *testing.T) {
	id := strings.Repeat("z", 40)
	for _, rev := range []bool{false, true} {
		n := NamesFor(id, rev)
		for _, s := range []string{n.Publication, n.Subscription, n.Slot, n.Trigger + "_truncate", n.Function("public.a_table_with_a_long_name")} {
			if len(s) > 63 {
				t.Errorf("name %q is longer than PostgreSQL's 63 bytes", s)
			}
		}
		if n.Function("public.a") == n.Function("public.b") {
			t.Errorf("two tables share a fence function name")
		}
	}
	if f, r := NamesFor("x", false), NamesFor("x", true); f.Slot == r.Slot || f.Publication == r.Publication {
		t.Errorf("forward and reverse share names: %+v %+v", f, r)
	}
}

func TestMoveFromMap(t *testing.T) {
	m := &shardmap.Map{
		Distributions: []shardmap.Distribution{{Name: "d", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range, Intervals: []shardmap.Interval{
			{Lo: shardmap.NegInf(), Hi: shardmap.Int64Bound(100), Shard: "s1"}, {Lo: shardmap.Int64Bound(100), Hi: shardmap.PosInf(), Shard: "s2"}}}},
		Tables: []shardmap.Table{{Name: "public.a", Kind: shardmap.Sharded, KeyColumn: "id", Distribution: "d"},
			{Name: "public.u", Kind: shardmap.Unsharded, Distribution: "d"},
			{Name: "public.b", Kind: shardmap.Sharded, KeyColumn: "a_id", Distribution: "d"}},
	}
	mv, err := MoveFromMap(m, "d", shardmap.Int64Bound(50), shardmap.Int64Bound(100), "m1")
	if err != nil {
		t.Fatal(err)
	}
	if len(mv.Tables) != 2 || mv.Tables[0] != (Table{"public.a", "id"}) || mv.Tables[1] != (Table{"public.b", "a_id"}) {
		t.Errorf("tables %+v", mv.Tables)
	}
	if _, err := MoveFromMap(m, "d", shardmap.Int64Bound(50), shardmap.Int64Bound(150), "m1"); err == nil || !strings.Contains(err.Error(), "split it first") {
		t.Errorf("interval across two intervals: %v", err)
	}
	if _, err := MoveFromMap(m, "x", shardmap.Int64Bound(50), shardmap.Int64Bound(150), "m1"); err == nil {
		t.Errorf("unknown distribution accepted")
	}
}

func TestStripMetaCommands(t *testing.T) {
	in := "\\restrict abc\nSET x = 1;\nCREATE TABLE t (a text DEFAULT '\\x');\n\\unrestrict abc\n"
	want := "SET x = 1;\nCREATE TABLE t (a text DEFAULT '\\x');\n"
	if got := stripMetaCommands(in); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestPublisherConninfo(t *testing.T) {
	got, err := publisherConninfo(Endpoint{DSN: "postgres://u:p%27w@127.0.0.1:5433/db?sslmode=disable"})
	if err != nil {
		t.Fatal(err)
	}
	want := `host='127.0.0.1' port=5433 user='u' dbname='db' password='p\'w' sslmode=disable`
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if got, _ := publisherConninfo(Endpoint{DSN: "postgres://x@h/db", Conninfo: "service=a"}); got != "service=a" {
		t.Errorf("explicit conninfo replaced: %s", got)
	}
}

func TestShardEndpoint(t *testing.T) {
	ep := ShardEndpoint(shardmap.Shard{Name: "s2", Primary: shardmap.Endpoint{Host: "db.example", Port: 6543}}, "admin", `p w'\`, "app", "disable", "")
	if ep.Shard != "s2" {
		t.Errorf("shard %q", ep.Shard)
	}
	got, err := publisherConninfo(ep)
	if err != nil {
		t.Fatal(err)
	}
	want := `host='db.example' port=6543 user='admin' dbname='app' password='p w\'\\' sslmode=disable`
	if got != want {
		t.Errorf("conninfo %s, want %s", got, want)
	}
	// The engine's own sessions verify the server with the CA file.
	ep = ShardEndpoint(shardmap.Shard{Name: "s2", Primary: shardmap.Endpoint{Host: "db.example", Port: 6543}}, "admin", "pw", "app", "verify-full", "/etc/pgshard/ca.pem")
	if want := `host='db.example' port=6543 user='admin' dbname='app' password='pw' sslmode='verify-full' sslrootcert='/etc/pgshard/ca.pem'`; ep.DSN != want {
		t.Errorf("DSN %s, want %s", ep.DSN, want)
	}
}
