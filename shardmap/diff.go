package shardmap

import (
	"fmt"
	"slices"
	"strings"
)

// This file compares two shard maps the way a DBA reviews a change: by
// meaning, not by text. Order of shards, distributions and tables does not
// matter, epochs are ignored, and a distribution's intervals are compared
// by which shard owns each key, so that the diff says which key ranges
// move from which shard to which (`pgshard map diff`; resharding plans
// its moves from it).

// The kinds of change of a named element ([ShardDiff].Change, ...).
const (
	ChangeAdded   = "added"
	ChangeRemoved = "removed"
	ChangeChanged = "changed"
)

// MapDiff is what changes from one map to another, each list in name
// order.
type MapDiff struct {
	Shards        []ShardDiff
	Distributions []DistributionDiff
	Tables        []TableDiff
}

// Equal reports whether no difference was found.
func (d *MapDiff) Equal() bool {
	return len(d.Shards) == 0 && len(d.Distributions) == 0 && len(d.Tables) == 0
}

// ShardDiff is a shard added, removed or changed. Old is nil for an added
// shard, New for a removed one.
type ShardDiff struct {
	Name     string
	Change   string
	Old, New *Shard
	// Details say what changed, one line each ("primary a -> b").
	Details []string
}

// DistributionDiff is a distribution added, removed or changed.
type DistributionDiff struct {
	Name     string
	Change   string
	Old, New *Distribution
	// Moves are the key ranges that change shard, in key order, when the
	// key type and strategy stay the same.
	Moves   []IntervalMove
	Details []string
}

// IntervalMove is a key range [Lo, Hi) (of hash values for a hash
// distribution) that moves from shard From to shard To.
type IntervalMove struct {
	Lo, Hi   Bound
	From, To string
}

// TableDiff is a table added, removed or changed.
type TableDiff struct {
	Name     string
	Change   string
	Old, New *Table
	Details  []string
}

// Diff compares old (nil when there is none yet) with new. Both must be
// valid maps (Validate), so that intervals cover the key space. The diff
// points into old and new.
func Diff(old, new *Map) *MapDiff {
	if old == nil {
		old = &Map{}
	}
	d := &MapDiff{Shards: []ShardDiff{}, Distributions: []DistributionDiff{}, Tables: []TableDiff{}}
	diffNamed(old.Shards, new.Shards, func(s Shard) string { return s.Name },
		func(name string, o, n *Shard) {
			if sd, ok := diffShard(name, o, n); ok {
				d.Shards = append(d.Shards, sd)
			}
		})
	diffNamed(old.Distributions, new.Distributions, func(x Distribution) string { return x.Name },
		func(name string, o, n *Distribution) {
			if dd, ok := diffDistribution(name, o, n); ok {
				d.Distributions = append(d.Distributions, dd)
			}
		})
	diffNamed(old.Tables, new.Tables, func(t Table) string { return t.Name },
		func(name string, o, n *Table) {
			if td, ok := diffTable(name, o, n); ok {
				d.Tables = append(d.Tables, td)
			}
		})
	return d
}

// diffNamed calls f for every name in old or new, in name order, with the
// element of each (nil where it is missing).
func diffNamed[T any](old, new []T, name func(T) string, f func(name string, o, n *T)) {
	index := func(list []T) map[string]*T {
		m := make(map[string]*T, len(list))
		for i := range list {
			m[name(list[i])] = &list[i]
		}
		return m
	}
	om, nm := index(old), index(new)
	names := make([]string, 0, len(om)+len(nm))
	for k := range om {
		names = append(names, k)
	}
	for k := range nm {
		if om[k] == nil {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		f(k, om[k], nm[k])
	}
}

// orDash is s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// change returns "old -> new" details for a field when it differs.
func change(details []string, field, old, new string) []string {
	if old == new {
		return details
	}
	return append(details, fmt.Sprintf("%s %s -> %s", field, orDash(old), orDash(new)))
}

// sortedEndpoints formats eps as host:port, sorted.
func sortedEndpoints(eps []Endpoint) []string {
	out := make([]string, 0, len(eps))
	for _, e := range eps {
		out = append(out, e.String())
	}
	slices.Sort(out)
	return out
}

// Describe says what the switch does, for people: "failover
// 10.0.0.1:5432 -> 10.0.0.2:5432 at step promote"; "" for none.
func (sw *Switch) Describe() string {
	if sw == nil {
		return ""
	}
	to := "(not chosen yet)"
	if sw.To != (Endpoint{}) {
		to = sw.To.String()
	}
	s := string(sw.Kind) + " " + sw.From.String() + " -> " + to
	if sw.Step != "" {
		s += " at step " + sw.Step
	}
	return s
}

// DescribeIntervals lists the distribution's intervals with their shards,
// for people; those of a hash distribution are ranges of hash values.
func (d *Distribution) DescribeIntervals() string {
	hash := ""
	if d.Strategy == Hash {
		hash = "hash "
	}
	parts := make([]string, 0, len(d.Intervals))
	for _, iv := range d.Intervals {
		parts = append(parts, fmt.Sprintf("%s[%s, %s) on %s", hash, iv.Lo, iv.Hi, iv.Shard))
	}
	return strings.Join(parts, ", ")
}

// DescribeMoving lists moving-interval markers for people: "move m1
// [401, 501) s1 -> s3 (hold)"; "" for none.
func DescribeMoving(ms []Moving) string {
	parts := make([]string, 0, len(ms))
	for _, mv := range ms {
		parts = append(parts, fmt.Sprintf("move %s [%s, %s) %s -> %s (%s)", mv.ID, mv.Lo, mv.Hi, mv.From, mv.To, mv.Step))
	}
	return strings.Join(parts, ", ")
}

// DescribeStale lists stale-rows markers for people: "m1 [401, 501) on
// s1"; "" for none.
func DescribeStale(ss []StaleRows) string {
	parts := make([]string, 0, len(ss))
	for _, s := range ss {
		parts = append(parts, fmt.Sprintf("%s [%s, %s) on %s", s.ID, s.Lo, s.Hi, s.Shard))
	}
	return strings.Join(parts, ", ")
}

func diffShard(name string, o, n *Shard) (ShardDiff, bool) {
	sd := ShardDiff{Name: name, Old: o, New: n}
	switch {
	case o == nil:
		sd.Change = ChangeAdded
		return sd, true
	case n == nil:
		sd.Change = ChangeRemoved
		return sd, true
	}
	var det []string
	det = change(det, "primary", o.Primary.String(), n.Primary.String())
	or, nr := sortedEndpoints(o.Replicas), sortedEndpoints(n.Replicas)
	if !slices.Equal(or, nr) {
		det = append(det, fmt.Sprintf("replicas [%s] -> [%s]", strings.Join(or, " "), strings.Join(nr, " ")))
	}
	det = change(det, "state", string(o.State), string(n.State))
	of, nf := sortedEndpoints(o.Fenced), sortedEndpoints(n.Fenced)
	if !slices.Equal(of, nf) {
		det = append(det, fmt.Sprintf("fenced [%s] -> [%s]", strings.Join(of, " "), strings.Join(nf, " ")))
	}
	det = change(det, "switch", o.Switch.Describe(), n.Switch.Describe())
	if len(det) == 0 {
		return sd, false
	}
	sd.Change, sd.Details = ChangeChanged, det
	return sd, true
}

func diffTable(name string, o, n *Table) (TableDiff, bool) {
	td := TableDiff{Name: name, Old: o, New: n}
	switch {
	case o == nil:
		td.Change = ChangeAdded
		return td, true
	case n == nil:
		td.Change = ChangeRemoved
		return td, true
	}
	var det []string
	det = change(det, "kind", string(o.Kind), string(n.Kind))
	det = change(det, "key", o.KeyColumn, n.KeyColumn)
	det = change(det, "distribution", o.Distribution, n.Distribution)
	det = change(det, "cache", o.Cache.String(), n.Cache.String())
	if len(det) == 0 {
		return td, false
	}
	td.Change, td.Details = ChangeChanged, det
	return td, true
}

func diffDistribution(name string, o, n *Distribution) (DistributionDiff, bool) {
	dd := DistributionDiff{Name: name, Old: o, New: n}
	switch {
	case o == nil:
		dd.Change = ChangeAdded
		return dd, true
	case n == nil:
		dd.Change = ChangeRemoved
		return dd, true
	}
	var det []string
	det = change(det, "key_type", string(o.KeyType), string(n.KeyType))
	det = change(det, "strategy", string(o.Strategy), string(n.Strategy))
	det = change(det, "default_shard", o.DefaultShard, n.DefaultShard)
	det = change(det, "moving", DescribeMoving(o.Moving), DescribeMoving(n.Moving))
	det = change(det, "stale_rows", DescribeStale(o.Stale), DescribeStale(n.Stale))
	sameIntervals := slices.Equal(o.Intervals, n.Intervals)
	switch {
	case sameIntervals:
	case o.KeyType != n.KeyType || o.Strategy != n.Strategy:
		// Keys of one cannot be placed in the other's intervals.
		det = append(det, "intervals "+o.DescribeIntervals()+" -> "+n.DescribeIntervals())
	default:
		dd.Moves = intervalMoves(o, n)
		if len(dd.Moves) == 0 {
			det = append(det, fmt.Sprintf("intervals re-split, no key changes shard: %d -> %d intervals (%s)",
				len(o.Intervals), len(n.Intervals), n.DescribeIntervals()))
		}
	}
	if len(det) == 0 && len(dd.Moves) == 0 {
		return dd, false
	}
	dd.Change, dd.Details = ChangeChanged, det
	return dd, true
}

// intervalMoves returns the key ranges whose shard differs between o and
// n (of the same key type and strategy, both covering the key space), in
// key order, adjacent ranges with the same move merged.
func intervalMoves(o, n *Distribution) []IntervalMove {
	// Every bound of either map starts a segment owned by one shard in
	// each.
	points := make([]Bound, 0, len(o.Intervals)+len(n.Intervals))
	for _, iv := range o.Intervals {
		points = append(points, iv.Lo)
	}
	for _, iv := range n.Intervals {
		points = append(points, iv.Lo)
	}
	slices.SortFunc(points, Bound.Compare)
	points = slices.CompactFunc(points, func(a, b Bound) bool { return a.Compare(b) == 0 })
	owner := func(d *Distribution, p Bound) string {
		if i := d.IntervalIndex(p); i >= 0 {
			return d.Intervals[i].Shard
		}
		return "" // not covered: only in an invalid map
	}
	var moves []IntervalMove
	var cur *IntervalMove
	flush := func(hi Bound) {
		if cur != nil {
			cur.Hi = hi
			moves = append(moves, *cur)
			cur = nil
		}
	}
	for _, p := range points {
		from, to := owner(o, p), owner(n, p)
		if cur != nil && cur.From == from && cur.To == to {
			continue // the same move goes on
		}
		flush(p)
		if from != to {
			cur = &IntervalMove{Lo: p, From: from, To: to}
		}
	}
	flush(PosInf())
	return moves
}
