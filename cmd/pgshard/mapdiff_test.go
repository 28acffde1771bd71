package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// ctlDistMap is a one-distribution map with shards s1..s4 and the given
// distribution YAML.
func ctlDistMap(t *testing.T, dist string) *shardmap.Map {
	t.Helper()
	return ctlParseMap(t, `epoch: 1
shards:
  - {name: s1, primary: "10.0.0.1:5432"}
  - {name: s2, primary: "10.0.0.2:5432"}
  - {name: s3, primary: "10.0.0.3:5432"}
  - {name: s4, primary: "10.0.0.4:5432"}
distributions:
  - name: d
`+dist+`
tables: []
`)
}

func TestDiffDistributions(t *testing.T) {
	const rangeBigint = `    key_type: bigint
    strategy: range
    intervals:
      - {lo: -inf, hi: 100, shard: s1}
      - {lo: 100, hi: 200, shard: s2}
      - {lo: 200, hi: +inf, shard: s3}
`
	for _, tc := range []struct {
		name     string
		old, new string
		want     []string // lines of the distribution's entry
	}{
		{
			name: "equal",
			old:  rangeBigint, new: rangeBigint,
		},
		{
			name: "split point moves",
			old:  rangeBigint,
			new: `    key_type: bigint
    strategy: range
    intervals:
      - {lo: -inf, hi: 150, shard: s1}
      - {lo: 150, hi: 200, shard: s2}
      - {lo: 200, hi: +inf, shard: s3}
`,
			want: []string{"  ~ d:", "      [100, 150) moves from s2 to s1"},
		},
		{
			name: "adjacent moves to the same shard merge",
			old:  rangeBigint,
			new: `    key_type: bigint
    strategy: range
    intervals:
      - {lo: -inf, hi: 50, shard: s1}
      - {lo: 50, hi: 100, shard: s4}
      - {lo: 100, hi: 300, shard: s4}
      - {lo: 300, hi: +inf, shard: s3}
`,
			want: []string{"  ~ d:", "      [50, 100) moves from s1 to s4", "      [100, 200) moves from s2 to s4", "      [200, 300) moves from s3 to s4"},
		},
		{
			name: "re-split without moves",
			old:  rangeBigint,
			new: `    key_type: bigint
    strategy: range
    intervals:
      - {lo: -inf, hi: 50, shard: s1}
      - {lo: 50, hi: 100, shard: s1}
      - {lo: 100, hi: 200, shard: s2}
      - {lo: 200, hi: +inf, shard: s3}
`,
			want: []string{"  ~ d:", "      intervals re-split, no key changes shard: 3 -> 4 intervals ([-inf, 50) on s1, [50, 100) on s1, [100, 200) on s2, [200, +inf) on s3)"},
		},
		{
			name: "hash",
			old: `    key_type: uuid
    strategy: hash
    shards_even: [s1, s2]
`,
			new: `    key_type: uuid
    strategy: hash
    intervals:
      - {lo: -inf, hi: -100, shard: s1}
      - {lo: -100, hi: +inf, shard: s2}
`,
			want: []string{"  ~ d:", "      hash [-100, 0) moves from s1 to s2"},
		},
		{
			name: "text",
			old: `    key_type: text
    strategy: range
    intervals:
      - {lo: -inf, hi: "m", shard: s1}
      - {lo: "m", hi: +inf, shard: s2}
`,
			new: `    key_type: text
    strategy: range
    default_shard: s2
    intervals:
      - {lo: -inf, hi: "-inf", shard: s1}
      - {lo: "-inf", hi: +inf, shard: s2}
`,
			want: []string{"  ~ d:", "      default_shard - -> s2", `      ["-inf", "m") moves from s1 to s2`},
		},
		{
			name: "key type change",
			old:  rangeBigint,
			new: `    key_type: text
    strategy: range
    intervals:
      - {lo: -inf, hi: +inf, shard: s1}
`,
			want: []string{"  ~ d:", "      key_type bigint -> text", "      intervals [-inf, 100) on s1, [100, 200) on s2, [200, +inf) on s3 -> [-inf, +inf) on s1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := diffMaps(ctlDistMap(t, tc.old), ctlDistMap(t, tc.new), "old", "new")
			var b bytes.Buffer
			if err := d.writeTable(&b); err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if !d.Equal {
					t.Fatalf("not equal:\n%s", b.String())
				}
				return
			}
			want := "--- old\n+++ new\ndistributions:\n" + strings.Join(tc.want, "\n") + "\n"
			if d.Equal || !strings.HasPrefix(b.String(), want) {
				t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
			}
		})
	}
}

func TestDiffShardsAndTablesIgnoreOrder(t *testing.T) {
	a := ctlParseMap(t, ctlMapYAML)
	b := a.Clone()
	b.Epoch = 7
	b.Shards[0], b.Shards[1] = b.Shards[1], b.Shards[0]
	if d := diffMaps(a, b, "a", "b"); !d.Equal {
		t.Errorf("reordered shards and another epoch differ: %+v", d)
	}
	b.Shards[0].Replicas = []shardmap.Endpoint{{Host: "10.0.0.8", Port: 5432}}
	b.Shards[0].State = shardmap.StateOffline
	b.Tables[0].KeyColumn = "uid"
	b.Tables = append(b.Tables, shardmap.Table{Name: "public.settings", Kind: shardmap.Unsharded, Distribution: "users"})
	var out bytes.Buffer
	d := diffMaps(a, b, "a", "b")
	if err := d.writeTable(&out); err != nil {
		t.Fatal(err)
	}
	want := `--- a
+++ b
shards:
  ~ s2:
      replicas [] -> [10.0.0.8:5432]
      state readonly -> offline
tables:
  + public.settings: unsharded, on the default shard of distribution users
  ~ public.users:
      key id -> uid
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestDiffShardSwitchAndFenced(t *testing.T) {
	a := ctlParseMap(t, ctlMapYAML)
	b := a.Clone()
	s1 := &b.Shards[0]
	s1.Switch = &shardmap.Switch{Kind: shardmap.Failover, From: s1.Primary, Step: "hold", Reason: "primary down"}
	var out bytes.Buffer
	if err := diffMaps(a, b, "a", "b").writeTable(&out); err != nil {
		t.Fatal(err)
	}
	want := "--- a\n+++ b\nshards:\n  ~ s1:\n      switch - -> failover 10.0.0.1:5432 -> (not chosen yet) at step hold\n"
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}

	// The switch ends: the replica is the primary, the old one fenced.
	c := b.Clone()
	s1 = &c.Shards[0]
	s1.Primary, s1.Replicas, s1.Fenced, s1.Switch = s1.Replicas[0], nil, []shardmap.Endpoint{s1.Primary}, nil
	out.Reset()
	if err := diffMaps(b, c, "b", "c").writeTable(&out); err != nil {
		t.Fatal(err)
	}
	want = `--- b
+++ c
shards:
  ~ s1:
      primary 10.0.0.1:5432 -> 10.0.0.2:5432
      replicas [10.0.0.2:5432] -> []
      fenced [] -> [10.0.0.1:5432]
      switch failover 10.0.0.1:5432 -> (not chosen yet) at step hold -> -
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
	// A new shard is described with its fenced endpoints.
	d := &shardJSON{Primary: "h:1", State: "active", Fenced: []string{"h:2"}, Switch: &switchJSON{Kind: "switchover", From: "h:1", To: "h:3"}}
	if got := describeShardJSON(d); got != "primary h:1, active, fenced h:2, switchover h:1 -> h:3" {
		t.Errorf("describeShardJSON = %q", got)
	}
}
