package shardmap_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// heldMap is validMap with [2000, 3000) of users (on s2) held for a move
// to s1.
func heldMap() *shardmap.Map {
	m := validMap()
	m.Distributions[0].Moving = []shardmap.Moving{{ID: "m1", Lo: i64(2000), Hi: i64(3000), From: "s2", To: "s1", Step: shardmap.MoveHold}}
	return m
}

func TestMovingValidate(t *testing.T) {
	if err := heldMap().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(mv *shardmap.Moving, d *shardmap.Distribution)
		want string
	}{
		{"unknown step", func(mv *shardmap.Moving, _ *shardmap.Distribution) { mv.Step = "copy" }, `unknown step "copy"`},
		{"no id", func(mv *shardmap.Moving, _ *shardmap.Distribution) { mv.ID = "" }, "has no move id"},
		{"to itself", func(mv *shardmap.Moving, _ *shardmap.Distribution) { mv.To = "s2" }, "from shard s2 to itself"},
		{"unknown shard", func(mv *shardmap.Moving, _ *shardmap.Distribution) { mv.To = "s9" }, "names shard s9, which is not a shard"},
		{"wrong owner", func(mv *shardmap.Moving, _ *shardmap.Distribution) { mv.From, mv.To = "s1", "s2" }, "is from shard s1, but interval [1000, 5000)"},
		{"across intervals", func(mv *shardmap.Moving, _ *shardmap.Distribution) { mv.Hi = i64(6000) }, "not inside one interval"},
		{"empty", func(mv *shardmap.Moving, _ *shardmap.Distribution) { mv.Hi = i64(2000) }, "is empty"},
		{"bound type", func(mv *shardmap.Moving, _ *shardmap.Distribution) { mv.Lo = txt("a") }, "is a text value"},
		{"overlap", func(mv *shardmap.Moving, d *shardmap.Distribution) {
			d.Moving = append(d.Moving, shardmap.Moving{ID: "m2", Lo: i64(2500), Hi: i64(4000), From: "s2", To: "s1", Step: shardmap.MoveHold})
		}, "overlaps moving interval #1 [2000, 3000)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := heldMap()
			d := &m.Distributions[0]
			c.edit(&d.Moving[0], d)
			err := m.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate = %v, want %q", err, c.want)
			}
		})
	}
}

func TestMovingYAMLCloneDiff(t *testing.T) {
	m := heldMap()
	m.Distributions[2].Moving = []shardmap.Moving{{ID: "h1", Lo: shardmap.NegInf(), Hi: i64(-100), From: "s1", To: "s2", Step: shardmap.MoveHold}}
	y, err := m.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(y), "moving:") || !strings.Contains(string(y), "step: hold") {
		t.Fatalf("YAML lacks the marker:\n%s", y)
	}
	back, err := shardmap.ParseYAML(y)
	if err != nil {
		t.Fatal(err)
	}
	if d := shardmap.Diff(m, back); !d.Equal() {
		t.Fatalf("round trip differs: %+v", d)
	}
	if got := back.Distributions[2].Moving; len(got) != 1 || got[0] != m.Distributions[2].Moving[0] {
		t.Fatalf("hash marker after round trip = %+v", got)
	}

	c := m.Clone()
	c.Distributions[0].Moving[0].Step = "x"
	if m.Distributions[0].Moving[0].Step != shardmap.MoveHold {
		t.Fatal("Clone shares the markers")
	}

	d := shardmap.Diff(validMap(), heldMap())
	if len(d.Distributions) != 1 || !strings.Contains(strings.Join(d.Distributions[0].Details, ";"), "moving - -> move m1 [2000, 3000) s2 -> s1 (hold)") {
		t.Fatalf("Diff = %+v", d.Distributions)
	}
	if moves := shardmap.DataMoves(validMap(), heldMap()); len(moves) != 0 {
		t.Fatalf("a hold moves no data, DataMoves = %+v", moves)
	}
}

func TestMovingHazard(t *testing.T) {
	for _, c := range []struct {
		name      string
		cur, next *shardmap.Map
	}{
		{"added", validMap(), heldMap()},
		{"dropped", heldMap(), validMap()},
		{"changed", heldMap(), func() *shardmap.Map {
			m := heldMap()
			m.Distributions[0].Moving[0].To = "s9"
			return m
		}()},
	} {
		t.Run(c.name, func(t *testing.T) {
			hs := shardmap.CheckSuccessor(c.cur, c.next, nil)
			if len(hs) != 1 || hs[0].Kind != shardmap.HazardMovingInterval || hs[0].Server != "users" {
				t.Fatalf("hazards = %s", hazardList(hs))
			}
			if !strings.HasPrefix(hs[0].String(), "distribution users: moving intervals") {
				t.Fatalf("String = %q", hs[0].String())
			}
		})
	}
	if hs := shardmap.CheckSuccessor(heldMap(), heldMap(), nil); len(hs) != 0 {
		t.Fatalf("same markers: hazards = %s", hazardList(hs))
	}
}

func TestSplitSetOwner(t *testing.T) {
	m := validMap()
	s, err := m.SplitAt("users", i64(3000))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Distribution("users").DescribeIntervals(); got != "[-inf, 1000) on s1, [1000, 3000) on s2, [3000, 5000) on s2, [5000, +inf) on s1" {
		t.Fatalf("split: %s", got)
	}
	if moves := shardmap.DataMoves(m, s); len(moves) != 0 {
		t.Fatalf("a split moves no data: %+v", moves)
	}
	if _, err := s.SplitAt("users", i64(3000)); err == nil || !strings.Contains(err.Error(), "already a bound") {
		t.Fatalf("split at a bound: %v", err)
	}
	if _, err := s.SplitAt("users", shardmap.PosInf()); err == nil {
		t.Fatal("split at +inf accepted")
	}
	o, err := s.SetOwner("users", i64(3500), i64(4000), "s1")
	if err != nil {
		t.Fatal(err)
	}
	if got := o.Distribution("users").DescribeIntervals(); got != "[-inf, 1000) on s1, [1000, 3000) on s2, [3000, 3500) on s2, [3500, 4000) on s1, [4000, 5000) on s2, [5000, +inf) on s1" {
		t.Fatalf("set owner: %s", got)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	moves := shardmap.DataMoves(s, o)
	if len(moves) != 1 || moves[0].Interval() != "[3500, 4000)" || moves[0].From != "s2" || moves[0].To != "s1" {
		t.Fatalf("DataMoves = %+v", moves)
	}
	back, err := o.SetOwner("users", i64(3500), i64(4000), "s2")
	if err != nil {
		t.Fatal(err)
	}
	if moves := shardmap.DataMoves(s, back); len(moves) != 0 {
		t.Fatalf("giving it back: DataMoves = %+v", moves)
	}
	// Across intervals: each is cut at the bounds, the inside given away.
	x, err := s.SetOwner("users", i64(2500), i64(3500), "s1")
	if err != nil {
		t.Fatal(err)
	}
	if got := x.Distribution("users").DescribeIntervals(); got != "[-inf, 1000) on s1, [1000, 2500) on s2, [2500, 3500) on s1, [3500, 5000) on s2, [5000, +inf) on s1" {
		t.Fatalf("set owner across intervals: %s", got)
	}
	if !x.Owns("users", i64(2500), i64(3500), "s1") || x.Owns("users", i64(2400), i64(3500), "s1") || !x.Owns("users", i64(6000), shardmap.PosInf(), "s1") {
		t.Fatal("Owns")
	}
	if err := x.Validate(); err != nil {
		t.Fatal(err)
	}
	h, err := m.WithMoving("users", heldMap().Distributions[0].Moving[0], false)
	if err != nil || h.MovingByID("users", "m1") == nil || h.Validate() != nil {
		t.Fatalf("WithMoving: %v %v", err, h.Validate())
	}
	r, _ := h.WithMoving("users", shardmap.Moving{ID: "m1"}, true)
	if r.Distribution("users").Moving != nil {
		t.Fatal("WithMoving remove kept the marker")
	}
}

func TestParseInterval(t *testing.T) {
	m := validMap()
	lo, hi, err := m.Distribution("users").ParseInterval("[401, +inf)")
	if err != nil || lo != i64(401) || !hi.IsPosInf() {
		t.Fatalf("got %v %v %v", lo, hi, err)
	}
	if _, _, err := m.Distribution("users").ParseInterval("[501,401)"); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty: %v", err)
	}
	if _, _, err := m.Distribution("users").ParseInterval("401,501"); err == nil {
		t.Fatal("no brackets accepted")
	}
	if _, _, err := m.Distribution("users").ParseInterval("[a,5)"); err == nil || !strings.Contains(err.Error(), "bigint key") {
		t.Fatalf("bad bound: %v", err)
	}
	lo, hi, err = m.Distribution("tenants").ParseInterval("[k,m)")
	if err != nil || lo != txt("k") || hi != txt("m") {
		t.Fatalf("text: %v %v %v", lo, hi, err)
	}
}

func TestBoundJSON(t *testing.T) {
	u, _ := shardmap.ParseUUID("6f1c9a4e-0000-4000-8000-000000000001")
	for _, b := range []shardmap.Bound{shardmap.NegInf(), shardmap.PosInf(), i64(-9223372036854775808), i64(401), txt(""), txt("a\"b"), shardmap.UUIDBound(u), {}} {
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		var back shardmap.Bound
		if err := json.Unmarshal(data, &back); err != nil || back != b {
			t.Fatalf("%v -> %s -> %v, %v", b, data, back, err)
		}
	}
	var b shardmap.Bound
	if err := json.Unmarshal([]byte(`{}`), &b); err == nil {
		t.Fatal("empty object accepted")
	}
}
