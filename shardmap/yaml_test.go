package shardmap_test

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/pgshard/pgshard/shardmap"
)

func TestParseYAMLExample(t *testing.T) {
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := shardmap.ParseYAML(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	want := &shardmap.Map{
		Epoch: 7,
		Shards: []shardmap.Shard{
			{Name: "s1", Primary: shardmap.Endpoint{Host: "10.0.0.1", Port: 5432}, Replicas: []shardmap.Endpoint{{Host: "10.0.0.2", Port: 5432}}, State: shardmap.StateActive},
			{Name: "s2", Primary: shardmap.Endpoint{Host: "10.0.0.3", Port: 5432}, State: shardmap.StateActive},
			{Name: "s3", Primary: shardmap.Endpoint{Host: "fd00::5", Port: 6432}, State: shardmap.StateReadOnly},
		},
		Distributions: []shardmap.Distribution{
			{Name: "users", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range, DefaultShard: "s1",
				Intervals: []shardmap.Interval{iv(ninf, i64(1000000), "s1"), iv(i64(1000000), pinf, "s2")}},
			{Name: "events", KeyType: shardmap.KeyUUID, Strategy: shardmap.Hash,
				Intervals: shardmap.EvenHashIntervals([]string{"s1", "s2", "s3"})},
			{Name: "tenants", KeyType: shardmap.KeyText, Strategy: shardmap.Range,
				Intervals: []shardmap.Interval{iv(ninf, txt("m"), "s1"), iv(txt("m"), txt("tz"), "s2"), iv(txt("tz"), pinf, "s3")}},
			{Name: "sessions", KeyType: shardmap.KeyText, Strategy: shardmap.Hash,
				Intervals: []shardmap.Interval{iv(ninf, i64(0), "s1"), iv(i64(0), pinf, "s2")}},
		},
		Tables: []shardmap.Table{
			{Name: "public.users", Kind: shardmap.Sharded, KeyColumn: "id", Distribution: "users"},
			{Name: "public.orders", Kind: shardmap.Sharded, KeyColumn: "user_id", Distribution: "users"},
			{Name: "public.settings", Kind: shardmap.Unsharded, Distribution: "users"},
			{Name: "public.events", Kind: shardmap.Sharded, KeyColumn: "id", Distribution: "events"},
		},
	}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("parsed\n%+v\nwant\n%+v", m, want)
	}
	roundTrip(t, m)
}

// roundTrip checks that m marshals to YAML that parses back to m, and
// that yaml.Marshal gives the same text as Map.YAML.
func roundTrip(t *testing.T, m *shardmap.Map) []byte {
	t.Helper()
	out, err := m.YAML()
	if err != nil {
		t.Fatal(err)
	}
	back, err := shardmap.ParseYAML(out)
	if err != nil {
		t.Fatalf("parse marshaled map: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, m) {
		t.Fatalf("round trip changed the map:\n%+v\n%+v\n%s", m, back, out)
	}
	// Map implements yaml.Marshaler, so it can sit inside other YAML.
	viaYAML, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := shardmap.ParseYAML(viaYAML); err != nil || !reflect.DeepEqual(back, m) {
		t.Fatalf("yaml.Marshal output does not parse back: %v\n%s", err, viaYAML)
	}
	return out
}

func TestYAMLRoundTrip(t *testing.T) {
	m := validMap()
	// Bounds that need care in YAML.
	m.Distributions[1].Intervals = []shardmap.Interval{
		iv(ninf, txt("-inf"), "s1"), iv(txt("-inf"), txt("123"), "s2"), iv(txt("123"), txt("null"), "s1"),
		iv(txt("null"), txt("yes: no # \"'\\\t\u00e9🙂"), "s2"), iv(txt("yes: no # \"'\\\t\u00e9🙂"), pinf, "s1"),
	}
	m.Distributions = append(m.Distributions, shardmap.Distribution{
		Name: "things", KeyType: shardmap.KeyUUID, Strategy: shardmap.Range,
		Intervals: []shardmap.Interval{iv(ninf, uid("80000000-0000-0000-0000-000000000000"), "s1"), iv(uid("80000000-0000-0000-0000-000000000000"), pinf, "s2")},
	}, shardmap.Distribution{
		Name: "uneven", KeyType: shardmap.KeyBigint, Strategy: shardmap.Hash,
		Intervals: []shardmap.Interval{iv(ninf, i64(-5), "s1"), iv(i64(-5), pinf, "s2")},
	})
	m.Shards[0].Name = "true"
	m.Shards[1].Primary = shardmap.Endpoint{Host: "::1", Port: 1}
	for i := range m.Distributions {
		for j := range m.Distributions[i].Intervals {
			if m.Distributions[i].Intervals[j].Shard == "s1" {
				m.Distributions[i].Intervals[j].Shard = "true"
			}
		}
	}
	m.Distributions[0].DefaultShard = "true"
	m.Shards[1].Replicas = []shardmap.Endpoint{{Host: "10.0.0.4", Port: 5432}}
	m.Shards[1].Fenced = []shardmap.Endpoint{{Host: "10.0.0.9", Port: 5432}}
	m.Shards[1].Switch = &shardmap.Switch{Kind: shardmap.Failover, From: m.Shards[1].Primary,
		To: shardmap.Endpoint{Host: "10.0.0.4", Port: 5432}, Step: "promote", Reason: "down: 3s"}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	out := roundTrip(t, m)
	for _, want := range []string{
		`{name: "true", primary: '10.0.0.1:5432', replicas: ['10.0.0.2:5432']}`,
		`'[::1]:1'`,
		`{lo: -inf, hi: "-inf", shard: "true"}`,
		`{lo: "123", hi: "null", shard: "true"}`,
		"shards_even: [\"true\", s2]",
		`{lo: -inf, hi: -5, shard: "true"}`,
		`{name: public.settings, unsharded: true, distribution: users}`,
		`state: readonly`,
		`fenced: ['10.0.0.9:5432']`,
		`switch: {kind: failover, from: '[::1]:1', to: '10.0.0.4:5432', step: promote, reason: 'down: 3s'}`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("marshaled map has no %s:\n%s", want, out)
		}
	}
	// A map that does not validate still round-trips.
	bad := &shardmap.Map{Shards: []shardmap.Shard{{}}, Distributions: []shardmap.Distribution{{Name: "d", KeyType: shardmap.KeyText, Strategy: shardmap.Range, Intervals: []shardmap.Interval{iv(txt("b"), txt("a"), "")}}}}
	bad.Shards[0].State = shardmap.StateActive
	bad.Tables = []shardmap.Table{{Kind: shardmap.Sharded}}
	out, err := bad.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shardmap.ParseYAML(out); err == nil || !strings.Contains(err.Error(), "primary") {
		t.Errorf("a shard without primary parsed: %v\n%s", err, out)
	}
}

func TestParseYAMLErrors(t *testing.T) {
	const head = "epoch: 1\nshards:\n  - {name: s1, primary: \"h:5432\"}\n"
	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"empty", "", []string{"the YAML is empty"}},
		{"not yaml", "epoch: [", []string{"shard map: yaml: line 1"}},
		{"two documents", head + "---\nepoch: 2\n", []string{"line 4: a second YAML document"}},
		{"not a mapping", "- 1\n", []string{"line 1: the shard map must be a mapping"}},
		{"no epoch", "shards: []\n", []string{"line 1: the shard map has no epoch"}},
		{"bad epoch", "epoch: -1\n", []string{`line 1: epoch "-1" must be a whole number from 1 up`}},
		{"unknown field", head + "shard: []\n", []string{`line 4: the shard map has no field "shard" (known: epoch, shards, distributions, tables)`}},
		{"repeated field", head + "epoch: 2\n", []string{`line 4: the shard map has field "epoch" twice`}},
		{"shard typo", "epoch: 1\nshards:\n  - {name: s1, primary: \"h:1\", replica: [\"h:2\"]}\n",
			[]string{`line 3: shard s1 has no field "replica" (known: name, primary, replicas, state, fenced, switch)`}},
		{"no primary", "epoch: 1\nshards:\n  - {name: s1}\n", []string{"line 3: shard s1 has no primary (host:port)"}},
		{"bad primary", "epoch: 1\nshards:\n  - name: s1\n    primary: h\n", []string{`line 4: shard s1 primary "h" must be host:port`}},
		{"bad port", "epoch: 1\nshards:\n  - {name: s1, primary: \"h:0\"}\n", []string{`line 3: shard s1 primary "h:0" must be host:port: address h:0: port must be a number from 1 to 65535`}},
		{"bad replica", "epoch: 1\nshards:\n  - {name: s1, primary: \"h:1\", replicas: [\"h:2\", x]}\n", []string{`line 3: shard s1 replica #2 "x" must be host:port`}},
		{"bad state", "epoch: 1\nshards:\n  - {name: s1, primary: \"h:1\", state: up}\n", []string{`line 3: shard s1 has unknown state "up"`}},
		{"shards not a list", "epoch: 1\nshards: {a: 1}\n", []string{"line 2: shards must be a list"}},
		{"alias", "epoch: 1\nshards:\n  - &s {name: s1, primary: \"h:1\"}\n  - *s\n", []string{"line 4: shards[1] is an alias; anchors and aliases are not supported"}},
		{"no key type", head + "distributions:\n  - name: d\n    strategy: range\n    intervals: []\n", []string{"line 5: distribution d has no key_type (bigint, text or uuid)"}},
		{"bad key type", head + "distributions:\n  - {name: d, key_type: int, strategy: range}\n", []string{`line 5: distribution d has unknown key_type "int" (want bigint, text or uuid)`}},
		{"bad strategy", head + "distributions:\n  - {name: d, key_type: text, strategy: list}\n", []string{`line 5: distribution d has unknown strategy "list" (want range or hash)`}},
		{"bad bigint bound", head + "distributions:\n  - name: d\n    key_type: bigint\n    strategy: range\n    intervals:\n      - {lo: -inf, hi: 1e6, shard: s1}\n",
			[]string{`line 9: distribution d interval #1 hi "1e6" must be -inf, +inf or a bigint`}},
		{"hash bound not bigint", head + "distributions:\n  - name: d\n    key_type: text\n    strategy: hash\n    intervals:\n      - {lo: -inf, hi: abc, shard: s1}\n",
			[]string{`line 9: distribution d interval #1 hi "abc" must be -inf, +inf or a bigint hash value`}},
		{"bad uuid bound", head + "distributions:\n  - name: d\n    key_type: uuid\n    strategy: range\n    intervals:\n      - {lo: -inf, hi: 1234, shard: s1}\n",
			[]string{`line 9: distribution d interval #1 hi must be -inf, +inf or a uuid: invalid uuid "1234"`}},
		{"quoted inf is not infinity", head + "distributions:\n  - name: d\n    key_type: bigint\n    strategy: range\n    intervals:\n      - {lo: \"-inf\", hi: +inf, shard: s1}\n",
			[]string{`line 9: distribution d interval #1 lo "-inf" must be -inf, +inf or a bigint`}},
		{"null bound", head + "distributions:\n  - name: d\n    key_type: bigint\n    strategy: range\n    intervals:\n      - {lo: , hi: +inf, shard: s1}\n",
			[]string{`line 9: distribution d interval #1 lo is empty`}},
		{"missing bound and shard", head + "distributions:\n  - name: d\n    key_type: bigint\n    strategy: range\n    intervals:\n      - {lo: -inf}\n",
			[]string{"line 9: distribution d interval #1 has no shard", "line 9: distribution d interval #1 has no hi"}},
		{"even and intervals", head + "distributions:\n  - {name: d, key_type: text, strategy: hash, shards_even: [s1], intervals: []}\n",
			[]string{"line 5: distribution d has both intervals and shards_even; use one"}},
		{"even on range", head + "distributions:\n  - {name: d, key_type: text, strategy: range, shards_even: [s1]}\n",
			[]string{"line 5: distribution d: shards_even is only for strategy hash"}},
		{"even empty", head + "distributions:\n  - {name: d, key_type: text, strategy: hash, shards_even: []}\n",
			[]string{"line 5: distribution d: shards_even lists no shards"}},
		{"bad unsharded", head + "tables:\n  - {name: public.t, distribution: d, unsharded: yes}\n",
			[]string{`line 5: table public.t unsharded must be true or false, not "yes"`}},
		{"table field typo", head + "tables:\n  - {name: public.t, distribution: d, key_column: id}\n",
			[]string{`line 5: table public.t has no field "key_column" (known: name, distribution, key, unsharded, cache)`}},
		{"several problems", "epoch: x\nshards:\n  - {name: s1, primary: \"h\"}\ntables:\n  - {name: t, distribution: d, unsharded: 2}\n",
			[]string{"line 1: epoch", "line 3: shard s1 primary", "line 5: table t unsharded"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := shardmap.ParseYAML([]byte(c.yaml))
			if err == nil {
				t.Fatalf("no error; parsed %+v", m)
			}
			if m != nil {
				t.Errorf("a map with an error: %+v", m)
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
			if len(problems) != len(c.want) && !strings.Contains(c.name, "yaml") {
				t.Errorf("got %d problems, want %d:\n%v", len(problems), len(c.want), err)
			}
		})
	}
}

// TestParseYAMLThenValidate shows the split: ParseYAML checks the form,
// Validate the content.
func TestParseYAMLThenValidate(t *testing.T) {
	m, err := shardmap.ParseYAML([]byte(`
epoch: 1
shards:
  - {name: s1, primary: "10.0.0.1:5432"}
distributions:
  - name: users
    key_type: bigint
    strategy: range
    intervals:
      - {lo: -inf, hi: 100, shard: s1}
      - {lo: 200, hi: +inf, shard: s2}
tables:
  - {name: public.settings, unsharded: true, distribution: users}
`))
	if err != nil {
		t.Fatal(err)
	}
	err = m.Validate()
	want := `distribution users: interval #2 [200, +inf) is on shard s2, which is not a shard of the map
distribution users: key values from 100 up to (not including) 200 are not on any shard: gap between interval #1 [-inf, 100) on s1 and interval #2 [200, +inf) on s2
table public.settings is unsharded, so it lives on the default shard of distribution users, but users has no default shard`
	if err == nil || err.Error() != want {
		t.Fatalf("got\n%v\nwant\n%s", err, want)
	}
}

// FuzzParseYAML checks that parsing never panics and that a map that
// parses validates deterministically and survives marshal → parse.
func FuzzParseYAML(f *testing.F) {
	if data, err := os.ReadFile("testdata/example.yaml"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := shardmap.ParseYAML(data)
		if err != nil {
			return
		}
		v1, v2 := m.Validate(), m.Validate()
		if (v1 == nil) != (v2 == nil) || (v1 != nil && v1.Error() != v2.Error()) {
			t.Fatalf("Validate is not deterministic:\n%v\n---\n%v", v1, v2)
		}
		out, err := m.YAML()
		if err != nil {
			t.Fatalf("marshal a parsed map: %v", err)
		}
		back, err := shardmap.ParseYAML(out)
		if err != nil {
			t.Fatalf("parse a marshaled map: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, m) {
			t.Fatalf("round trip changed the map:\n%+v\n%+v\n%s", m, back, out)
		}
		if v3 := back.Validate(); (v1 == nil) != (v3 == nil) || (v1 != nil && v1.Error() != v3.Error()) {
			t.Fatalf("Validate changed after a round trip:\n%v\n---\n%v", v1, v3)
		}
	})
}

// A map file given to the meta cluster needs no epoch line: the cluster
// assigns the epoch. A bad epoch is still an error.
func TestParseYAMLWithoutEpoch(t *testing.T) {
	const noEpoch = "shards:\n  - {name: s1, primary: \"10.0.0.1:5432\"}\n"
	if _, err := shardmap.ParseYAML([]byte(noEpoch)); err == nil || !strings.Contains(err.Error(), "has no epoch") {
		t.Fatalf("ParseYAML without epoch: %v", err)
	}
	m, err := shardmap.ParseYAMLWithoutEpoch([]byte(noEpoch))
	if err != nil || m.Epoch != 0 || len(m.Shards) != 1 {
		t.Fatalf("ParseYAMLWithoutEpoch = %+v, %v", m, err)
	}
	if m, err = shardmap.ParseYAMLWithoutEpoch([]byte("epoch: 7\n" + noEpoch)); err != nil || m.Epoch != 7 {
		t.Fatalf("ParseYAMLWithoutEpoch with an epoch = %+v, %v", m, err)
	}
	if _, err := shardmap.ParseYAMLWithoutEpoch([]byte("epoch: x\n" + noEpoch)); err == nil {
		t.Fatal("ParseYAMLWithoutEpoch accepted epoch x")
	}
}

func TestSameContent(t *testing.T) {
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a, err := shardmap.ParseYAML(data)
	if err != nil {
		t.Fatal(err)
	}
	b := a.Clone()
	b.Epoch = a.Epoch + 5
	if !shardmap.SameContent(a, b) {
		t.Fatal("maps differing only in epoch: not the same content")
	}
	c := a.Clone()
	c.Shards[0].Primary.Port++
	if shardmap.SameContent(a, c) {
		t.Fatal("maps with different primaries: the same content")
	}
	d := a.Clone()
	d.Distributions[0].Intervals[0].Shard = "s2"
	if shardmap.SameContent(a, d) {
		t.Fatal("maps with different interval owners: the same content")
	}
	if shardmap.SameContent(a, nil) || !shardmap.SameContent(nil, nil) {
		t.Fatal("nil maps")
	}
}
