package shardmap_test

import (
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// staleMap is validMap with a copy of [2000, 3000) of users (owned by s2)
// on s1, as while a move copies it there.
func staleMap() *shardmap.Map {
	m := validMap()
	m.Distributions[0].Stale = []shardmap.StaleRows{{ID: "m1", Lo: i64(2000), Hi: i64(3000), Shard: "s1"}}
	return m
}

func TestStaleValidate(t *testing.T) {
	if err := staleMap().Validate(); err != nil {
		t.Fatal(err)
	}
	// With the hold of the cutover: the interval is still s2's.
	h := staleMap()
	h.Distributions[0].Moving = heldMap().Distributions[0].Moving
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(s *shardmap.StaleRows, d *shardmap.Distribution)
		want string
	}{
		{"no id", func(s *shardmap.StaleRows, _ *shardmap.Distribution) { s.ID = "" }, "has no move id"},
		{"no shard", func(s *shardmap.StaleRows, _ *shardmap.Distribution) { s.Shard = "" }, "names no shard"},
		{"unknown shard", func(s *shardmap.StaleRows, _ *shardmap.Distribution) { s.Shard = "s9" }, "names shard s9, which is not a shard"},
		{"owner", func(s *shardmap.StaleRows, _ *shardmap.Distribution) { s.Shard = "s2" },
			"shard s2 owns interval [1000, 5000), which overlaps it"},
		{"partly owned", func(s *shardmap.StaleRows, _ *shardmap.Distribution) { s.Lo = i64(500) },
			"shard s1 owns interval [-inf, 1000), which overlaps it"},
		{"empty", func(s *shardmap.StaleRows, _ *shardmap.Distribution) { s.Hi = i64(2000) }, "is empty"},
		{"bound type", func(s *shardmap.StaleRows, _ *shardmap.Distribution) { s.Lo = txt("a") }, "is a text value"},
		{"same id", func(s *shardmap.StaleRows, d *shardmap.Distribution) {
			d.Stale = append(d.Stale, shardmap.StaleRows{ID: "m1", Lo: i64(3000), Hi: i64(4000), Shard: "s1"})
		}, "has the move id m1 of stale rows #1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := staleMap()
			d := &m.Distributions[0]
			c.edit(&d.Stale[0], d)
			err := m.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate = %v, want %q", err, c.want)
			}
		})
	}
	// The cutover's epoch: the interval is s1's, the stale rows s2's.
	m, err := staleMap().SetOwner("users", i64(2000), i64(3000), "s1")
	if err != nil {
		t.Fatal(err)
	}
	if m, err = m.WithStale("users", shardmap.StaleRows{ID: "m1", Lo: i64(2000), Hi: i64(3000), Shard: "s2"}, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if s := m.StaleByID("users", "m1"); s == nil || s.Shard != "s2" || len(m.Distribution("users").Stale) != 1 {
		t.Fatalf("WithStale did not replace the marker: %+v", m.Distribution("users").Stale)
	}
	r, _ := m.WithStale("users", shardmap.StaleRows{ID: "m1"}, true)
	if r.Distribution("users").Stale != nil || r.StaleByID("users", "m1") != nil || m.StaleByID("users", "m1") == nil {
		t.Fatal("WithStale remove: wrong marker left, or the original changed")
	}
	if _, err := m.WithStale("nope", shardmap.StaleRows{ID: "x"}, false); err == nil {
		t.Fatal("WithStale of an unknown distribution succeeded")
	}
}

func TestStaleYAMLCloneDiff(t *testing.T) {
	m := staleMap()
	m.Distributions[2].Stale = []shardmap.StaleRows{{ID: "h1", Lo: shardmap.NegInf(), Hi: i64(-100), Shard: "s2"}}
	m.Distributions[1].Stale = []shardmap.StaleRows{{ID: "t1", Lo: txt("a"), Hi: txt("c"), Shard: "s2"}}
	y, err := m.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(y), "stale_rows:") || !strings.Contains(string(y), "shard: s1") {
		t.Fatalf("YAML lacks the marker:\n%s", y)
	}
	back, err := shardmap.ParseYAML(y)
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if d := shardmap.Diff(m, back); !d.Equal() {
		t.Fatalf("round trip differs: %+v", d)
	}
	for i := range m.Distributions {
		if got, want := back.Distributions[i].Stale, m.Distributions[i].Stale; len(got) != len(want) || len(got) == 1 && got[0] != want[0] {
			t.Fatalf("distribution %d markers after round trip = %+v, want %+v", i, got, want)
		}
	}
	if _, err := shardmap.ParseYAML([]byte(strings.Replace(string(y), "shard: s1}", "shard: s1, to: s2}", 1))); err == nil ||
		!strings.Contains(err.Error(), "to") {
		t.Fatalf("unknown field: err = %v", err)
	}

	c := m.Clone()
	c.Distributions[0].Stale[0].Shard = "x"
	if m.Distributions[0].Stale[0].Shard != "s1" {
		t.Fatal("Clone shares the markers")
	}

	d := shardmap.Diff(validMap(), staleMap())
	if len(d.Distributions) != 1 || !strings.Contains(strings.Join(d.Distributions[0].Details, ";"), "stale_rows - -> m1 [2000, 3000) on s1") {
		t.Fatalf("Diff = %+v", d.Distributions)
	}
	if moves := shardmap.DataMoves(validMap(), staleMap()); len(moves) != 0 {
		t.Fatalf("a marker moves no data, DataMoves = %+v", moves)
	}
}

func TestStaleHazard(t *testing.T) {
	for _, c := range []struct {
		name      string
		cur, next *shardmap.Map
	}{
		{"added", validMap(), staleMap()},
		{"dropped", staleMap(), validMap()},
		{"changed", staleMap(), func() *shardmap.Map {
			m := staleMap()
			m.Distributions[0].Stale[0].Hi = i64(2500)
			return m
		}()},
	} {
		t.Run(c.name, func(t *testing.T) {
			hs := shardmap.CheckSuccessor(c.cur, c.next, nil)
			if len(hs) != 1 || hs[0].Kind != shardmap.HazardStaleRows || hs[0].Server != "users" {
				t.Fatalf("hazards = %s", hazardList(hs))
			}
			if !strings.HasPrefix(hs[0].String(), "distribution users: stale rows") {
				t.Fatalf("String = %q", hs[0].String())
			}
		})
	}
	if hs := shardmap.CheckSuccessor(staleMap(), staleMap(), nil); len(hs) != 0 {
		t.Fatalf("same markers: hazards = %s", hazardList(hs))
	}
	n := validMap()
	n.Distributions = append(n.Distributions, shardmap.Distribution{Name: "new", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
		Intervals: []shardmap.Interval{iv(ninf, pinf, "s1")}, Stale: []shardmap.StaleRows{{ID: "x", Lo: i64(1), Hi: i64(2), Shard: "s2"}}})
	if hs := shardmap.CheckSuccessor(validMap(), n, nil); len(hs) != 1 || hs[0].Kind != shardmap.HazardStaleRows {
		t.Fatalf("new distribution with a marker: hazards = %s", hazardList(hs))
	}
}

func TestStalePredicate(t *testing.T) {
	m := staleMap()
	d := m.Distribution("users")
	if got, want := d.StalePredicate(&d.Stale[0], `"u"."id"`), `("u"."id" >= (2000)::int8 AND "u"."id" < (3000)::int8)`; got != want {
		t.Fatalf("StalePredicate = %s, want %s", got, want)
	}
	if !d.Stale[0].Contains(i64(2999)) || d.Stale[0].Contains(i64(3000)) || d.Stale[0].Contains(i64(1999)) {
		t.Fatal("Contains is not [Lo, Hi)")
	}
}
