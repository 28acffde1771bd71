package shardmap_test

import (
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// validMap returns a fresh valid map for tests to break.
func validMap() *shardmap.Map {
	return &shardmap.Map{
		Epoch: 3,
		Shards: []shardmap.Shard{
			{Name: "s1", Primary: shardmap.Endpoint{Host: "10.0.0.1", Port: 5432}, Replicas: []shardmap.Endpoint{{Host: "10.0.0.2", Port: 5432}}, State: shardmap.StateActive},
			{Name: "s2", Primary: shardmap.Endpoint{Host: "10.0.0.3", Port: 5432}, State: shardmap.StateReadOnly},
		},
		Distributions: []shardmap.Distribution{
			{Name: "users", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range, DefaultShard: "s1",
				Intervals: []shardmap.Interval{iv(ninf, i64(1000), "s1"), iv(i64(1000), i64(5000), "s2"), iv(i64(5000), pinf, "s1")}},
			{Name: "tenants", KeyType: shardmap.KeyText, Strategy: shardmap.Range,
				Intervals: []shardmap.Interval{iv(ninf, txt("m"), "s1"), iv(txt("m"), pinf, "s2")}},
			{Name: "events", KeyType: shardmap.KeyUUID, Strategy: shardmap.Hash,
				Intervals: shardmap.EvenHashIntervals([]string{"s1", "s2"})},
		},
		Tables: []shardmap.Table{
			{Name: "public.users", Kind: shardmap.Sharded, KeyColumn: "id", Distribution: "users"},
			{Name: "public.orders", Kind: shardmap.Sharded, KeyColumn: "user_id", Distribution: "users"},
			{Name: "public.settings", Kind: shardmap.Unsharded, Distribution: "users"},
			{Name: "app.events", Kind: shardmap.Sharded, KeyColumn: "id", Distribution: "events"},
		},
	}
}

func TestValidateValid(t *testing.T) {
	if err := validMap().Validate(); err != nil {
		t.Fatal(err)
	}
	// Starting at the smallest value is as good as -inf.
	m := validMap()
	m.Distributions[0].Intervals[0].Lo = i64(-1 << 63)
	m.Distributions[1].Intervals[0].Lo = txt("")
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	users := func(m *shardmap.Map) *shardmap.Distribution { return &m.Distributions[0] }
	for _, c := range []struct {
		name   string
		change func(m *shardmap.Map)
		want   []string // each a substring of one problem, in order
	}{
		{"epoch 0", func(m *shardmap.Map) { m.Epoch = 0 },
			[]string{"the map has epoch 0"}},
		{"no shards", func(m *shardmap.Map) { m.Shards = nil },
			[]string{"the map has no shards",
				"distribution users: default shard s1 is not a shard of the map",
				"distribution users: intervals #1 [-inf, 1000), #3 [5000, +inf) are on shard s1, which is not a shard of the map",
				"distribution users: interval #2 [1000, 5000) is on shard s2, which is not a shard of the map",
				"distribution tenants: interval #1 [-inf, \"m\") is on shard s1",
				"distribution tenants: interval #2 [\"m\", +inf) is on shard s2",
				"distribution events: interval #1 [-inf, 0) is on shard s1",
				"distribution events: interval #2 [0, +inf) is on shard s2",
			}},
		{"fenced primary", func(m *shardmap.Map) { m.Shards[0].Fenced = []shardmap.Endpoint{m.Shards[0].Primary} },
			[]string{"shard s1 lists 10.0.0.1:5432 as fenced and as primary or replica"}},
		{"switch from a replica", func(m *shardmap.Map) {
			m.Shards[0].Switch = &shardmap.Switch{Kind: shardmap.Failover, From: m.Shards[0].Replicas[0]}
		}, []string{"shard s1: switch from 10.0.0.2:5432 is not the shard's primary 10.0.0.1:5432"}},
		{"switch to a stranger", func(m *shardmap.Map) {
			m.Shards[0].Switch = &shardmap.Switch{Kind: shardmap.Switchover, From: m.Shards[0].Primary, To: shardmap.Endpoint{Host: "x", Port: 1}}
		}, []string{"shard s1: switch to x:1 is not one of the shard's replicas"}},
		{"switch kind", func(m *shardmap.Map) { m.Shards[0].Switch = &shardmap.Switch{Kind: "jump", From: m.Shards[0].Primary} },
			[]string{`shard s1: switch has unknown kind "jump"`}},
		{"gap", func(m *shardmap.Map) { users(m).Intervals[1].Lo = i64(2000) },
			[]string{"distribution users: key values from 1000 up to (not including) 2000 are not on any shard: gap between interval #1 [-inf, 1000) on s1 and interval #2 [2000, 5000) on s2"}},
		{"overlap", func(m *shardmap.Map) { users(m).Intervals[1].Lo = i64(500) },
			[]string{"distribution users: key values from 500 up to (not including) 1000 are in two intervals: interval #1 [-inf, 1000) on s1 overlaps interval #2 [500, 5000) on s2"}},
		{"overlap inside", func(m *shardmap.Map) {
			users(m).Intervals = []shardmap.Interval{iv(ninf, pinf, "s1"), iv(i64(5), i64(7), "s2")}
		}, []string{"key values from 5 up to (not including) 7 are in two intervals"}},
		{"start not covered", func(m *shardmap.Map) { users(m).Intervals[0].Lo = i64(0) },
			[]string{"distribution users: key values below 0 are not on any shard: the first interval must start at -inf, but interval #1 [0, 1000) on s1 does not"}},
		{"end not covered", func(m *shardmap.Map) { users(m).Intervals[2].Hi = i64(9223372036854775807) },
			[]string{"distribution users: key values from 9223372036854775807 up are not on any shard: the last interval must end at +inf"}},
		{"hash space end not covered", func(m *shardmap.Map) { m.Distributions[2].Intervals[1].Hi = i64(100) },
			[]string{"distribution events: hash values from 100 up are not on any shard"}},
		{"text gap", func(m *shardmap.Map) { m.Distributions[1].Intervals[1].Lo = txt("n") },
			[]string{`distribution tenants: key values from "m" up to (not including) "n" are not on any shard`}},
		{"out of order", func(m *shardmap.Map) {
			ivs := users(m).Intervals
			ivs[0], ivs[2] = ivs[2], ivs[0]
		}, []string{"distribution users: intervals must be listed in ascending order of lo (that is #3, #2, #1)"}},
		{"unknown shard", func(m *shardmap.Map) { users(m).Intervals[1].Shard = "s9" },
			[]string{"distribution users: interval #2 [1000, 5000) is on shard s9, which is not a shard of the map"}},
		{"no shard", func(m *shardmap.Map) { users(m).Intervals[1].Shard = "" },
			[]string{"distribution users: interval #2 [1000, 5000) has no shard"}},
		{"bound type", func(m *shardmap.Map) { users(m).Intervals[1].Lo = txt("1000") },
			[]string{`distribution users: interval #2 ["1000", 5000): lo "1000" is a text value, but the distribution's keys are bigint`}},
		{"hash bound type", func(m *shardmap.Map) {
			m.Distributions[2].Intervals[0].Hi = uid("00000000-0000-0000-0000-000000000001")
		}, []string{"hi 00000000-0000-0000-0000-000000000001 is a uuid value, but the intervals of a hash distribution are over the bigint hash of the key"}},
		{"missing bound", func(m *shardmap.Map) { users(m).Intervals[1].Hi = shardmap.Bound{} },
			[]string{"distribution users: interval #2 [1000, (missing)) has no hi"}},
		{"empty interval", func(m *shardmap.Map) { users(m).Intervals[1].Hi = i64(1000) },
			[]string{"distribution users: interval #2 [1000, 1000) is empty: lo must be below hi"}},
		{"reversed interval", func(m *shardmap.Map) { users(m).Intervals[1].Hi = i64(10) },
			[]string{"interval #2 [1000, 10) is empty"}},
		{"inf reversed", func(m *shardmap.Map) { users(m).Intervals = []shardmap.Interval{iv(pinf, ninf, "s1")} },
			[]string{"interval #1 [+inf, -inf) is empty"}},
		{"below min", func(m *shardmap.Map) {
			users(m).Intervals = []shardmap.Interval{iv(ninf, i64(-1<<63), "s1"), iv(i64(-1<<63), pinf, "s2")}
		}, []string{"interval #1 [-inf, -9223372036854775808) is empty"}},
		{"NUL in text", func(m *shardmap.Map) { m.Distributions[1].Intervals[0].Hi = txt("m\x00") },
			[]string{"contains a NUL byte"}},
		{"invalid UTF-8 in text", func(m *shardmap.Map) { m.Distributions[1].Intervals[0].Hi = txt("m\xff") },
			[]string{`hi "m\xff" is not valid UTF-8`}},
		{"no intervals", func(m *shardmap.Map) { users(m).Intervals = nil },
			[]string{"distribution users has no intervals; it needs at least one, from -inf to +inf"}},
		{"unknown key type", func(m *shardmap.Map) { users(m).KeyType = "int" },
			[]string{`distribution users has unknown key type "int" (want bigint, text or uuid)`}},
		{"unknown strategy", func(m *shardmap.Map) { users(m).Strategy = "list" },
			[]string{`distribution users has unknown strategy "list" (want range or hash)`}},
		{"duplicate distribution", func(m *shardmap.Map) { m.Distributions[1].Name = "users" },
			[]string{"distribution users is defined more than once"}},
		{"unnamed distribution", func(m *shardmap.Map) { m.Distributions[1].Name = "" },
			[]string{"distribution #2 has no name"}},
		{"duplicate shard", func(m *shardmap.Map) { m.Shards[1].Name = "s1" },
			[]string{"shard s1 is defined more than once", "users: interval #2 [1000, 5000) is on shard s2", "tenants: interval #2", "events: interval #2"}},
		{"unnamed shard", func(m *shardmap.Map) { m.Shards[1].Name = "" },
			[]string{"shard #2 has no name", "users: interval #2 [1000, 5000) is on shard s2", "tenants: interval #2", "events: interval #2"}},
		{"shard name with space", func(m *shardmap.Map) { m.Shards[1].Name = "s 2" },
			[]string{`shard name "s 2" has spaces or unprintable characters`, "users: interval #2 [1000, 5000) is on shard s2", "tenants: interval #2", "events: interval #2"}},
		{"shared primary", func(m *shardmap.Map) { m.Shards[1].Primary = m.Shards[0].Primary },
			[]string{"shard s2 has the same primary 10.0.0.1:5432 as shard s1"}},
		{"replica is primary", func(m *shardmap.Map) { m.Shards[0].Replicas[0] = m.Shards[0].Primary },
			[]string{"shard s1 lists 10.0.0.1:5432 twice"}},
		{"bad port", func(m *shardmap.Map) { m.Shards[1].Primary.Port = 70000 },
			[]string{"shard s2: primary 10.0.0.3:70000 has port 70000; ports go from 1 to 65535"}},
		{"no primary", func(m *shardmap.Map) { m.Shards[1].Primary = shardmap.Endpoint{} },
			[]string{"shard s2: primary is missing (want host:port)"}},
		{"bad replica", func(m *shardmap.Map) { m.Shards[0].Replicas[0].Host = "" },
			[]string{"shard s1: replica #1 :5432 has no host"}},
		{"bad state", func(m *shardmap.Map) { m.Shards[1].State = "" },
			[]string{`shard s2 has unknown state "" (want active, readonly or offline)`}},
		{"unknown default shard", func(m *shardmap.Map) { users(m).DefaultShard = "s7" },
			[]string{"distribution users: default shard s7 is not a shard of the map"}},
		{"unknown distribution", func(m *shardmap.Map) { m.Tables[1].Distribution = "orders" },
			[]string{"table public.orders uses distribution orders, which is not defined"}},
		{"table without distribution", func(m *shardmap.Map) { m.Tables[1].Distribution = "" },
			[]string{"table public.orders has no distribution"}},
		{"duplicate table", func(m *shardmap.Map) { m.Tables[1].Name = "public.users" },
			[]string{"table public.users is listed more than once"}},
		{"unqualified table", func(m *shardmap.Map) { m.Tables[1].Name = "orders" },
			[]string{`table name "orders" must be schema-qualified, like public.users`}},
		{"upper-case table", func(m *shardmap.Map) { m.Tables[1].Name = "public.Orders" },
			[]string{`table name "public.Orders" must be lower-case, as PostgreSQL folds unquoted names (public.orders)`}},
		{"sharded without key", func(m *shardmap.Map) { m.Tables[1].KeyColumn = "" },
			[]string{"table public.orders is sharded but has no key column"}},
		{"unsharded with key", func(m *shardmap.Map) { m.Tables[2].KeyColumn = "id" },
			[]string{"table public.settings is unsharded but has key column id"}},
		{"unsharded without default shard", func(m *shardmap.Map) { users(m).DefaultShard = "" },
			[]string{"table public.settings is unsharded, so it lives on the default shard of distribution users, but users has no default shard"}},
		{"unknown table kind", func(m *shardmap.Map) { m.Tables[1].Kind = "" },
			[]string{`table public.orders has unknown kind "" (want sharded or unsharded)`}},
		{"many problems at once", func(m *shardmap.Map) {
			m.Epoch = 0
			users(m).Intervals[1].Lo = i64(2000)
			m.Distributions[1].Intervals[1].Shard = "nope"
			m.Tables[0].Distribution = "x"
		}, []string{"epoch 0", "from 1000 up to (not including) 2000", "interval #2 [\"m\", +inf) is on shard nope", "uses distribution x"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := validMap()
			c.change(m)
			err := m.Validate()
			if err == nil {
				t.Fatal("no error")
			}
			problems := strings.Split(err.Error(), "\n")
			next := 0
			for _, w := range c.want {
				for next < len(problems) && !strings.Contains(problems[next], w) {
					next++
				}
				if next == len(problems) {
					t.Fatalf("no problem (in order) containing %q in:\n%v", w, err)
				}
				next++
			}
			if len(problems) != len(c.want) {
				t.Errorf("got %d problems, want %d:\n%v", len(problems), len(c.want), err)
			}
			if again := m.Validate(); again.Error() != err.Error() {
				t.Errorf("Validate is not deterministic:\n%v\n---\n%v", err, again)
			}
		})
	}
}

func TestClone(t *testing.T) {
	m := validMap()
	c := m.Clone()
	c.Shards[0].Replicas[0].Port = 1
	m.Shards[0].Switch = &shardmap.Switch{Kind: shardmap.Failover, From: m.Shards[0].Primary}
	c = m.Clone()
	c.Shards[0].Switch.Step = "changed"
	if m.Shards[0].Switch.Step != "" {
		t.Fatal("changing the clone's switch changed the original")
	}
	m.Shards[0].Switch = nil
	c.Distributions[0].Intervals[0].Shard = "s2"
	c.Tables[0].Name = "x.y"
	if err := m.Validate(); err != nil {
		t.Fatalf("changing the clone changed the original: %v", err)
	}
	if m.Shard("s1").Replicas[0].Port != 5432 || m.Distribution("users").Intervals[0].Shard != "s1" || m.Table("public.users") == nil {
		t.Fatal("changing the clone changed the original")
	}
	if m.Shard("nope") != nil || m.Distribution("nope") != nil || m.Table("nope") != nil {
		t.Fatal("finders found a missing name")
	}
}
