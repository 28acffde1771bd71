package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/pgshard/pgshard/shardmap"
)

// This file compares two shard maps the way a DBA reviews a change: by
// meaning, not by text. Order of shards, distributions and tables does not
// matter, epochs are ignored, and a distribution's intervals are compared
// by which shard owns each key, so that the diff says which key ranges
// move from which shard to which. It needs no server and no cobra: it is
// ready to move into package shardmap once another user wants it.

// The kinds of change of a named element.
const (
	changeAdded   = "added"
	changeRemoved = "removed"
	changeChanged = "changed"
)

// mapDiff is what changes from one map to another. It is the result of
// `pgshard map diff`.
type mapDiff struct {
	// From says what the old map is ("epoch 3"), To what the new one is
	// (a file name).
	From string `json:"from"`
	To   string `json:"to"`
	// Equal is whether no difference was found.
	Equal         bool               `json:"equal"`
	Shards        []shardDiff        `json:"shards"`
	Distributions []distributionDiff `json:"distributions"`
	Tables        []tableDiff        `json:"tables"`
}

// shardDiff is a shard added, removed or changed.
type shardDiff struct {
	Name   string     `json:"name"`
	Change string     `json:"change"`
	Old    *shardJSON `json:"old,omitempty"`
	New    *shardJSON `json:"new,omitempty"`
	// Details say what changed, one line each ("primary a -> b").
	Details []string `json:"details,omitempty"`
}

// distributionDiff is a distribution added, removed or changed.
type distributionDiff struct {
	Name   string            `json:"name"`
	Change string            `json:"change"`
	Old    *distributionJSON `json:"old,omitempty"`
	New    *distributionJSON `json:"new,omitempty"`
	// Moves are the key ranges that change shard, in key order, when the
	// key type and strategy stay the same.
	Moves   []intervalMove `json:"moves,omitempty"`
	Details []string       `json:"details,omitempty"`
}

// intervalMove is a key range [Lo, Hi) (of hash values for a hash
// distribution) that moves from shard From to shard To. Bounds are
// written as in mapJSON.
type intervalMove struct {
	Lo   string `json:"lo"`
	Hi   string `json:"hi"`
	From string `json:"from"`
	To   string `json:"to"`
}

// tableDiff is a table added, removed or changed.
type tableDiff struct {
	Name    string     `json:"name"`
	Change  string     `json:"change"`
	Old     *tableJSON `json:"old,omitempty"`
	New     *tableJSON `json:"new,omitempty"`
	Details []string   `json:"details,omitempty"`
}

// diffMaps compares old (nil when there is none yet) with new. Both must
// be valid maps (Validate), so that intervals cover the key space.
func diffMaps(old, new *shardmap.Map, from, to string) *mapDiff {
	if old == nil {
		old = &shardmap.Map{}
	}
	d := &mapDiff{From: from, To: to, Shards: []shardDiff{}, Distributions: []distributionDiff{}, Tables: []tableDiff{}}
	diffNamed(old.Shards, new.Shards, func(s shardmap.Shard) string { return s.Name },
		func(name string, o, n *shardmap.Shard) {
			if sd, ok := diffShard(name, o, n); ok {
				d.Shards = append(d.Shards, sd)
			}
		})
	diffNamed(old.Distributions, new.Distributions, func(x shardmap.Distribution) string { return x.Name },
		func(name string, o, n *shardmap.Distribution) {
			if dd, ok := diffDistribution(name, o, n); ok {
				d.Distributions = append(d.Distributions, dd)
			}
		})
	diffNamed(old.Tables, new.Tables, func(t shardmap.Table) string { return t.Name },
		func(name string, o, n *shardmap.Table) {
			if td, ok := diffTable(name, o, n); ok {
				d.Tables = append(d.Tables, td)
			}
		})
	d.Equal = len(d.Shards) == 0 && len(d.Distributions) == 0 && len(d.Tables) == 0
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

// change returns "old -> new" details for a field when it differs.
func change(details []string, field, old, new string) []string {
	if old == new {
		return details
	}
	return append(details, fmt.Sprintf("%s %s -> %s", field, orDash(old), orDash(new)))
}

func diffShard(name string, o, n *shardmap.Shard) (shardDiff, bool) {
	sd := shardDiff{Name: name}
	if o != nil {
		j := shardToJSON(o)
		sd.Old = &j
	}
	if n != nil {
		j := shardToJSON(n)
		sd.New = &j
	}
	switch {
	case o == nil:
		sd.Change = changeAdded
		return sd, true
	case n == nil:
		sd.Change = changeRemoved
		return sd, true
	}
	var det []string
	det = change(det, "primary", o.Primary.String(), n.Primary.String())
	or, nr := slices.Sorted(slices.Values(sd.Old.Replicas)), slices.Sorted(slices.Values(sd.New.Replicas))
	if !slices.Equal(or, nr) {
		det = append(det, fmt.Sprintf("replicas [%s] -> [%s]", strings.Join(or, " "), strings.Join(nr, " ")))
	}
	det = change(det, "state", string(o.State), string(n.State))
	of, nf := slices.Sorted(slices.Values(sd.Old.Fenced)), slices.Sorted(slices.Values(sd.New.Fenced))
	if !slices.Equal(of, nf) {
		det = append(det, fmt.Sprintf("fenced [%s] -> [%s]", strings.Join(of, " "), strings.Join(nf, " ")))
	}
	det = change(det, "switch", sd.Old.Switch.describe(), sd.New.Switch.describe())
	if len(det) == 0 {
		return sd, false
	}
	sd.Change, sd.Details = changeChanged, det
	return sd, true
}

func diffTable(name string, o, n *shardmap.Table) (tableDiff, bool) {
	td := tableDiff{Name: name}
	if o != nil {
		j := tableToJSON(o)
		td.Old = &j
	}
	if n != nil {
		j := tableToJSON(n)
		td.New = &j
	}
	switch {
	case o == nil:
		td.Change = changeAdded
		return td, true
	case n == nil:
		td.Change = changeRemoved
		return td, true
	}
	var det []string
	det = change(det, "kind", string(o.Kind), string(n.Kind))
	det = change(det, "key", o.KeyColumn, n.KeyColumn)
	det = change(det, "distribution", o.Distribution, n.Distribution)
	if len(det) == 0 {
		return td, false
	}
	td.Change, td.Details = changeChanged, det
	return td, true
}

func diffDistribution(name string, o, n *shardmap.Distribution) (distributionDiff, bool) {
	dd := distributionDiff{Name: name}
	if o != nil {
		j := distributionToJSON(o)
		dd.Old = &j
	}
	if n != nil {
		j := distributionToJSON(n)
		dd.New = &j
	}
	switch {
	case o == nil:
		dd.Change = changeAdded
		return dd, true
	case n == nil:
		dd.Change = changeRemoved
		return dd, true
	}
	var det []string
	det = change(det, "key_type", string(o.KeyType), string(n.KeyType))
	det = change(det, "strategy", string(o.Strategy), string(n.Strategy))
	det = change(det, "default_shard", o.DefaultShard, n.DefaultShard)
	sameIntervals := slices.Equal(o.Intervals, n.Intervals)
	switch {
	case sameIntervals:
	case o.KeyType != n.KeyType || o.Strategy != n.Strategy:
		// Keys of one cannot be placed in the other's intervals.
		det = append(det, "intervals "+describeIntervals(dd.Old)+" -> "+describeIntervals(dd.New))
	default:
		dd.Moves = intervalMoves(o, n)
		if len(dd.Moves) == 0 {
			det = append(det, fmt.Sprintf("intervals re-split, no key changes shard: %d -> %d intervals (%s)",
				len(o.Intervals), len(n.Intervals), describeIntervals(dd.New)))
		}
	}
	if len(det) == 0 && len(dd.Moves) == 0 {
		return dd, false
	}
	dd.Change, dd.Details = changeChanged, det
	return dd, true
}

// intervalMoves returns the key ranges whose shard differs between o and
// n (of the same key type and strategy, both covering the key space), in
// key order, adjacent ranges with the same move merged.
func intervalMoves(o, n *shardmap.Distribution) []intervalMove {
	// Every bound of either map starts a segment owned by one shard in
	// each.
	points := make([]shardmap.Bound, 0, len(o.Intervals)+len(n.Intervals))
	for _, iv := range o.Intervals {
		points = append(points, iv.Lo)
	}
	for _, iv := range n.Intervals {
		points = append(points, iv.Lo)
	}
	slices.SortFunc(points, shardmap.Bound.Compare)
	points = slices.CompactFunc(points, func(a, b shardmap.Bound) bool { return a.Compare(b) == 0 })
	owner := func(d *shardmap.Distribution, p shardmap.Bound) string {
		if i := d.IntervalIndex(p); i >= 0 {
			return d.Intervals[i].Shard
		}
		return "" // not covered: only in an invalid map
	}
	var moves []intervalMove
	var cur *intervalMove
	var curLo shardmap.Bound
	flush := func(hi shardmap.Bound) {
		if cur != nil {
			cur.Lo, cur.Hi = curLo.String(), hi.String()
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
			cur, curLo = &intervalMove{From: from, To: to}, p
		}
	}
	flush(shardmap.PosInf())
	return moves
}

// writeTable prints the diff for people: + added, - removed, ~ changed.
func (d *mapDiff) writeTable(w io.Writer) error {
	var b strings.Builder
	if d.Equal {
		fmt.Fprintf(&b, "No differences between %s and %s.\n", d.From, d.To)
		_, err := io.WriteString(w, b.String())
		return err
	}
	fmt.Fprintf(&b, "--- %s\n+++ %s\n", d.From, d.To)
	if len(d.Shards) > 0 {
		b.WriteString("shards:\n")
		for _, s := range d.Shards {
			writeElement(&b, s.Change, s.Name, s.Details, func() string {
				if s.Change == changeRemoved {
					return describeShardJSON(s.Old)
				}
				return describeShardJSON(s.New)
			})
		}
	}
	if len(d.Distributions) > 0 {
		b.WriteString("distributions:\n")
		for _, x := range d.Distributions {
			details := slices.Clone(x.Details)
			hash := ""
			if x.New != nil && x.New.Strategy == string(shardmap.Hash) {
				hash = "hash "
			}
			for _, m := range x.Moves {
				details = append(details, fmt.Sprintf("%s[%s, %s) moves from %s to %s", hash, m.Lo, m.Hi, orDash(m.From), orDash(m.To)))
			}
			writeElement(&b, x.Change, x.Name, details, func() string {
				if x.Change == changeRemoved {
					return describeDistributionJSON(x.Old)
				}
				return describeDistributionJSON(x.New)
			})
		}
	}
	if len(d.Tables) > 0 {
		b.WriteString("tables:\n")
		for _, t := range d.Tables {
			writeElement(&b, t.Change, t.Name, t.Details, func() string {
				if t.Change == changeRemoved {
					return describeTableJSON(t.Old)
				}
				return describeTableJSON(t.New)
			})
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeElement writes one added, removed or changed element: added and
// removed ones with what they are, changed ones with a line per detail.
func writeElement(b *strings.Builder, change, name string, details []string, describe func() string) {
	switch change {
	case changeAdded:
		fmt.Fprintf(b, "  + %s: %s\n", name, describe())
	case changeRemoved:
		fmt.Fprintf(b, "  - %s: %s\n", name, describe())
	default:
		fmt.Fprintf(b, "  ~ %s:\n", name)
		for _, d := range details {
			fmt.Fprintf(b, "      %s\n", d)
		}
	}
}

func describeShardJSON(s *shardJSON) string {
	var b strings.Builder
	fmt.Fprintf(&b, "primary %s", s.Primary)
	if len(s.Replicas) > 0 {
		fmt.Fprintf(&b, ", replicas %s", strings.Join(s.Replicas, " "))
	}
	fmt.Fprintf(&b, ", %s", s.State)
	if len(s.Fenced) > 0 {
		fmt.Fprintf(&b, ", fenced %s", strings.Join(s.Fenced, " "))
	}
	if s.Switch != nil {
		fmt.Fprintf(&b, ", %s", s.Switch.describe())
	}
	return b.String()
}

func describeDistributionJSON(d *distributionJSON) string {
	s := fmt.Sprintf("%s keys by %s: %s", d.KeyType, d.Strategy, describeIntervals(d))
	if d.DefaultShard != "" {
		s += "; default shard " + d.DefaultShard
	}
	return s
}

// describeIntervals lists a distribution's intervals with their shards;
// those of a hash distribution are ranges of hash values.
func describeIntervals(d *distributionJSON) string {
	hash := ""
	if d.Strategy == string(shardmap.Hash) {
		hash = "hash "
	}
	parts := make([]string, 0, len(d.Intervals))
	for _, iv := range d.Intervals {
		parts = append(parts, fmt.Sprintf("%s[%s, %s) on %s", hash, iv.Lo, iv.Hi, iv.Shard))
	}
	return strings.Join(parts, ", ")
}

func describeTableJSON(t *tableJSON) string {
	if t.Kind == string(shardmap.Unsharded) {
		return "unsharded, on the default shard of distribution " + t.Distribution
	}
	return "sharded by " + t.Key + " in distribution " + t.Distribution
}
