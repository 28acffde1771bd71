package shardmap_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// diffMap parses a valid map with shards s1..s4 and one distribution d.
func diffMap(t *testing.T, dist string) *shardmap.Map {
	t.Helper()
	m, err := shardmap.ParseYAML([]byte(`epoch: 1
shards:
  - {name: s1, primary: "10.0.0.1:5432", replicas: ["10.0.0.5:5432"]}
  - {name: s2, primary: "10.0.0.2:5432"}
  - {name: s3, primary: "10.0.0.3:5432"}
  - {name: s4, primary: "10.0.0.4:5432"}
distributions:
  - name: d
` + dist + `
tables:
  - {name: public.t, distribution: d, key: id}
`))
	if err == nil {
		err = m.Validate()
	}
	if err != nil {
		t.Fatal(err)
	}
	return m
}

const diffRange = `    key_type: bigint
    strategy: range
    intervals:
      - {lo: -inf, hi: 100, shard: s1}
      - {lo: 100, hi: 200, shard: s2}
      - {lo: 200, hi: +inf, shard: s3}
`

// moves formats a distribution diff's moves as "[lo, hi) from->to".
func moves(d shardmap.DistributionDiff) []string {
	var out []string
	for _, m := range d.Moves {
		out = append(out, fmt.Sprintf("[%s, %s) %s->%s", m.Lo, m.Hi, m.From, m.To))
	}
	return out
}

// TestDiffMoves: the key ranges that change shard, in key order, adjacent
// ranges with the same move merged; a re-split that moves no key has no
// move but says so.
func TestDiffMoves(t *testing.T) {
	for _, tc := range []struct {
		name    string
		new     string
		moves   []string
		details []string
	}{
		{"equal", diffRange, nil, nil},
		{"split point moves", `    key_type: bigint
    strategy: range
    intervals:
      - {lo: -inf, hi: 150, shard: s1}
      - {lo: 150, hi: 200, shard: s2}
      - {lo: 200, hi: +inf, shard: s3}
`, []string{"[100, 150) s2->s1"}, nil},
		{"adjacent moves to the same shard merge", `    key_type: bigint
    strategy: range
    intervals:
      - {lo: -inf, hi: 50, shard: s1}
      - {lo: 50, hi: 100, shard: s4}
      - {lo: 100, hi: 300, shard: s4}
      - {lo: 300, hi: +inf, shard: s3}
`, []string{"[50, 100) s1->s4", "[100, 200) s2->s4", "[200, 300) s3->s4"}, nil},
		{"re-split without moves", `    key_type: bigint
    strategy: range
    intervals:
      - {lo: -inf, hi: 50, shard: s1}
      - {lo: 50, hi: 100, shard: s1}
      - {lo: 100, hi: 200, shard: s2}
      - {lo: 200, hi: +inf, shard: s3}
`, nil, []string{"intervals re-split, no key changes shard: 3 -> 4 intervals ([-inf, 50) on s1, [50, 100) on s1, [100, 200) on s2, [200, +inf) on s3)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := shardmap.Diff(diffMap(t, diffRange), diffMap(t, tc.new))
			if len(tc.moves) == 0 && len(tc.details) == 0 {
				if !d.Equal() {
					t.Fatalf("diff of equal maps: %+v", d)
				}
				return
			}
			if d.Equal() || len(d.Distributions) != 1 || len(d.Shards) != 0 || len(d.Tables) != 0 {
				t.Fatalf("diff = %+v, want one changed distribution", d)
			}
			dd := d.Distributions[0]
			if dd.Name != "d" || dd.Change != shardmap.ChangeChanged || dd.Old == nil || dd.New == nil {
				t.Errorf("distribution diff %s %s old %v new %v", dd.Name, dd.Change, dd.Old != nil, dd.New != nil)
			}
			if got := moves(dd); !slices.Equal(got, tc.moves) {
				t.Errorf("moves %q, want %q", got, tc.moves)
			}
			if !slices.Equal(dd.Details, tc.details) {
				t.Errorf("details %q, want %q", dd.Details, tc.details)
			}
		})
	}
}

// TestDiffKeyTypeChange: intervals of another key type cannot be
// compared key by key: the diff lists both.
func TestDiffKeyTypeChange(t *testing.T) {
	d := shardmap.Diff(diffMap(t, diffRange), diffMap(t, `    key_type: bigint
    strategy: hash
    shards_even: [s1, s2]
`))
	if len(d.Distributions) != 1 {
		t.Fatalf("diff = %+v", d)
	}
	dd := d.Distributions[0]
	want := []string{"strategy range -> hash",
		"intervals [-inf, 100) on s1, [100, 200) on s2, [200, +inf) on s3 -> " + dd.New.DescribeIntervals()}
	if len(dd.Moves) != 0 || !slices.Equal(dd.Details, want) {
		t.Errorf("moves %q details %q, want none and %q", moves(dd), dd.Details, want)
	}
}

// TestDiffShardsAndTables: order and epoch do not matter; added, removed
// and changed shards and tables are listed by name with what changed.
func TestDiffShardsAndTables(t *testing.T) {
	a := diffMap(t, diffRange)
	b := a.Clone()
	b.Epoch = 9
	slices.Reverse(b.Shards)
	if d := shardmap.Diff(a, b); !d.Equal() {
		t.Fatalf("reordered shards and another epoch differ: %+v", d)
	}
	s1 := b.Shard("s1")
	s1.Switch = &shardmap.Switch{Kind: shardmap.Failover, From: s1.Primary, Step: "fence"}
	s1.Fenced = []shardmap.Endpoint{{Host: "10.0.0.9", Port: 5432}}
	b.Shards = append(b.Shards, shardmap.Shard{Name: "s5", Primary: shardmap.Endpoint{Host: "10.0.0.7", Port: 5432}})
	b.Tables[0].KeyColumn = "uid"
	b.Tables = append(b.Tables, shardmap.Table{Name: "public.a", Kind: shardmap.Unsharded, Distribution: "d"})
	d := shardmap.Diff(a, b)
	if len(d.Shards) != 2 || len(d.Tables) != 2 || len(d.Distributions) != 0 {
		t.Fatalf("diff = %+v", d)
	}
	if s := d.Shards[0]; s.Name != "s1" || s.Change != shardmap.ChangeChanged || !slices.Equal(s.Details, []string{
		"fenced [] -> [10.0.0.9:5432]", "switch - -> failover 10.0.0.1:5432 -> (not chosen yet) at step fence"}) {
		t.Errorf("s1: %s %q", s.Change, s.Details)
	}
	if s := d.Shards[1]; s.Name != "s5" || s.Change != shardmap.ChangeAdded || s.Old != nil || s.New == nil || s.New.Name != "s5" {
		t.Errorf("s5: %+v", s)
	}
	if x := d.Tables[0]; x.Name != "public.a" || x.Change != shardmap.ChangeAdded {
		t.Errorf("tables[0]: %+v", x)
	}
	if x := d.Tables[1]; x.Name != "public.t" || x.Change != shardmap.ChangeChanged || !slices.Equal(x.Details, []string{"key id -> uid"}) {
		t.Errorf("tables[1]: %+v", x)
	}
	// Against no map, everything is added.
	d = shardmap.Diff(nil, a)
	if len(d.Shards) != 4 || len(d.Distributions) != 1 || len(d.Tables) != 1 || d.Shards[0].Change != shardmap.ChangeAdded {
		t.Errorf("diff from nothing: %+v", d)
	}
	// Removed.
	if d := shardmap.Diff(b, a); d.Shards[1].Name != "s5" || d.Shards[1].Change != shardmap.ChangeRemoved || d.Shards[1].New != nil {
		t.Errorf("removed s5: %+v", d.Shards[1])
	}
}
