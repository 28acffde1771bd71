package pgshardtest

import (
	"errors"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/internal/pgcluster"
)

var testShards = []mapShard{
	{name: "shard0", primary: "127.0.0.1:5001", replicas: []string{"127.0.0.1:5002"}},
	{name: "shard1", primary: "127.0.0.1:5003"},
	{name: "shard2", primary: "127.0.0.1:5004"},
}

func TestBuildMap(t *testing.T) {
	c := buildConfig([]Option{
		RangeSharded([]int64{100, 200}, Table{Name: "Users", Key: "ID"}, Table{Name: "app.orders", Key: "user_id"}),
		Distribute(Distribution{Name: "tenants", KeyType: "text", Strategy: Range, Splits: []string{"h", "p"}, Tables: []Table{{Name: "docs", Key: "tenant"}}}),
		Distribute(Distribution{KeyType: "uuid", Tables: []Table{{Name: "events", Key: "id"}}}),
	})
	m, err := buildMap(&c, testShards)
	if err != nil {
		t.Fatal(err)
	}
	if m.Epoch != 1 || len(m.Shards) != 3 || m.Shards[0].Primary.String() != "127.0.0.1:5001" ||
		len(m.Shards[0].Replicas) != 1 || m.Shards[0].Replicas[0].String() != "127.0.0.1:5002" {
		t.Errorf("shards: %+v", m.Shards)
	}
	for _, tc := range []struct {
		table string
		key   any
		shard string
	}{
		{"public.users", 99, "shard0"}, {"public.users", 100, "shard1"}, {"public.users", 199, "shard1"}, {"public.users", 200, "shard2"},
		{"app.orders", -5, "shard0"}, {"public.docs", "alpha", "shard0"}, {"public.docs", "h", "shard1"}, {"public.docs", "zed", "shard2"},
	} {
		tb := m.Table(tc.table)
		if tb == nil {
			t.Errorf("no table %s in %+v", tc.table, m.Tables)
			continue
		}
		got, err := m.Distribution(tb.Distribution).ShardForKey(tc.key)
		if err != nil || got != tc.shard {
			t.Errorf("%s key %v: %s, %v; want %s", tc.table, tc.key, got, err, tc.shard)
		}
	}
	if tb := m.Table("public.users"); tb.KeyColumn != "id" || tb.Distribution != "users" || m.Table("app.orders").Distribution != "users" {
		t.Errorf("users %+v, orders %+v: want key id, both in distribution users", tb, m.Table("app.orders"))
	}
	if d := m.Distribution("events"); d == nil || d.Strategy != Hash || len(d.Intervals) != 3 {
		t.Errorf("events: %+v, want a hash distribution over the three shards", d)
	}
}

func TestBuildMapRefusesMistakes(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  Option
		want string
	}{
		{"too few splits", RangeSharded([]int64{100}, Table{Name: "users", Key: "id"}), "1 splits for 3 shards"},
		{"splits not ascending", RangeSharded([]int64{200, 100}, Table{Name: "users", Key: "id"}), "users"},
		{"bad split", Distribute(Distribution{Strategy: Range, Splits: []string{"a", "b"}, Tables: []Table{{Name: "t", Key: "k"}}}), `split "a": not a bigint`},
		{"hash with splits", Distribute(Distribution{Splits: []string{"1", "2"}, Tables: []Table{{Name: "t", Key: "k"}}}), "splits are for range distributions"},
		{"no tables", HashSharded(), "no tables"},
		{"no key", HashSharded(Table{Name: "t"}), "table t has no key column"},
		{"key type", Distribute(Distribution{KeyType: "int", Tables: []Table{{Name: "t", Key: "k"}}}), `key type "int"`},
		{"strategy", Distribute(Distribution{Strategy: "list", Tables: []Table{{Name: "t", Key: "k"}}}), `strategy "list"`},
		{"map with shards", ShardMap("shards: []\n"), `leave out "shards"`},
		{"map with epoch", ShardMap("epoch: 3\n"), `leave out "epoch"`},
		{"map naming a missing shard", ShardMap("distributions:\n  - {name: d, key_type: bigint, strategy: hash, shards_even: [shard0, shard9]}\n"), "shard9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := buildConfig([]Option{tc.opt})
			if _, err := buildMap(&c, testShards); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestShardMapYAML(t *testing.T) {
	c := buildConfig([]Option{ShardMap(`distributions:
  - name: tenants
    key_type: text
    strategy: hash
    shards_even: [shard0, shard1, shard2]
tables:
  - {name: public.accounts, distribution: tenants, key: tenant_id}
`)})
	m, err := buildMap(&c, testShards)
	if err != nil {
		t.Fatal(err)
	}
	if m.Epoch != 1 || len(m.Shards) != 3 || len(m.Shards[0].Replicas) != 1 || m.Table("public.accounts") == nil {
		t.Errorf("map: %+v", m)
	}
}

// Without PostgreSQL a test skips, saying how to install it, except in
// CI, where it fails unless PGSHARD_ALLOW_SKIP=1.
func TestMissingPostgres(t *testing.T) {
	err := error(&pgcluster.ErrNoPostgres{Searched: []string{"$PGSHARD_PG_BIN", "/usr/lib/postgresql/*/bin"}})
	for _, tc := range []struct {
		env  map[string]string
		skip bool
	}{
		{nil, true},
		{map[string]string{"CI": "false"}, true},
		{map[string]string{"CI": "0"}, true},
		{map[string]string{"CI": "true"}, false},
		{map[string]string{"CI": "1"}, false},
		{map[string]string{"CI": "yes"}, false},
		{map[string]string{"CI": "true", "PGSHARD_ALLOW_SKIP": "1"}, true},
	} {
		skip, msg := missingPostgres(fmtErr(err), func(k string) string { return tc.env[k] })
		if skip != tc.skip {
			t.Errorf("env %v: skip %v, want %v (%s)", tc.env, skip, tc.skip, msg)
		}
		for _, want := range []string{"apt-get install -y postgresql", "PGSHARD_PG_BIN", "/usr/lib/postgresql/*/bin"} {
			if !strings.Contains(msg, want) {
				t.Errorf("env %v: message lacks %q: %s", tc.env, want, msg)
			}
		}
	}
}

// fmtErr wraps err as callers do.
func fmtErr(err error) error { return errors.Join(errors.New("start"), err) }
