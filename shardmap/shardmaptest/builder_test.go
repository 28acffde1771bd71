package shardmaptest

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// parse parses and validates y.
func parse(t *testing.T, y string) *shardmap.Map {
	t.Helper()
	m, err := shardmap.ParseYAML([]byte(y))
	if err == nil {
		err = m.Validate()
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	return m
}

// TestBuilderMatchesYAML: what the builder makes is what ParseYAML makes
// of the text a test would have written, and its YAML reads back to it.
func TestBuilderMatchesYAML(t *testing.T) {
	for _, c := range []struct {
		name string
		b    *Builder
		yaml string
	}{
		{"KV", KV([]int64{100}, "127.0.0.1:5432", "127.0.0.1:5433"), `epoch: 1
shards:
  - {name: s0, primary: "127.0.0.1:5432"}
  - {name: s1, primary: "127.0.0.1:5433"}
distributions:
  - name: kv
    key_type: bigint
    strategy: range
    default_shard: s0
    intervals:
      - {lo: -inf, hi: 100, shard: s0}
      - {lo: 100, hi: +inf, shard: s1}
tables:
  - {name: public.kv, distribution: kv, key: k}
`},
		{"one-shard KV at epoch 7", KV(nil, "db:5432").Epoch(7), `epoch: 7
shards:
  - {name: s0, primary: "db:5432"}
distributions:
  - {name: kv, key_type: bigint, strategy: range, default_shard: s0, intervals: [{lo: -inf, hi: +inf, shard: s0}]}
tables:
  - {name: public.kv, distribution: kv, key: k}
`},
		{"switch, fenced, hash, unsharded, no default",
			New().
				Shard("s1", "10.0.0.1:5432", "10.0.0.2:5432", "10.0.0.4:5432").Fenced("10.0.0.9:5432").
				Switch(shardmap.Failover, "10.0.0.2:5432", "promote", "primary down").
				Shard("s2", "10.0.0.3:5432").
				Hash("acct").Table("public.acct", "id").Unsharded("public.plans").
				Range("d").Default("").Table("public.t", "id"),
			`epoch: 1
shards:
  - name: s1
    primary: "10.0.0.1:5432"
    replicas: ["10.0.0.2:5432", "10.0.0.4:5432"]
    fenced: ["10.0.0.9:5432"]
    switch: {kind: failover, from: "10.0.0.1:5432", to: "10.0.0.2:5432", step: promote, reason: "primary down"}
  - {name: s2, primary: "10.0.0.3:5432"}
distributions:
  - {name: acct, key_type: bigint, strategy: hash, default_shard: s1, shards_even: [s1, s2]}
  - {name: d, key_type: bigint, strategy: range, intervals: [{lo: -inf, hi: +inf, shard: s1}]}
tables:
  - {name: public.acct, distribution: acct, key: id}
  - {name: public.plans, unsharded: true, distribution: acct}
  - {name: public.t, distribution: d, key: id}
`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := c.b.Map(t)
			if want := parse(t, c.yaml); !reflect.DeepEqual(got, want) {
				t.Errorf("built %+v\nparsed %+v", got, want)
			}
			if back := parse(t, c.b.YAML(t)); !reflect.DeepEqual(back, got) {
				t.Errorf("YAML reads back as %+v, want %+v", back, got)
			}
		})
	}
}

// TestBuilderMistakes: a builder used wrongly fails instead of making a
// map the test did not mean.
func TestBuilderMistakes(t *testing.T) {
	for _, c := range []struct {
		name string
		b    *Builder
		want string
	}{
		{"bad address", New().Shard("s0", "nowhere").Range("kv").Table("public.kv", "k"), "primary of s0"},
		{"too few shards", New().Shard("s0", "a:1").Range("kv", 10), "2 intervals but the map 1 shards"},
		{"modifier first", New().ReadOnly(), "ReadOnly before any shard"},
		{"table first", New().Shard("s0", "a:1").Table("public.t", "k"), "before any distribution"},
		{"invalid map", New().Shard("s0", "a:1").Range("kv").Default("s9"), "s9"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.b.Build()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Build: %v, want an error with %q", err, c.want)
			}
		})
	}
}
