package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/pgshard/pgshard/shardmap"
)

// The output of `pgshard map diff`: shardmap.Diff's comparison as JSON
// and as a table for people.

// The kinds of change of a named element.
const (
	changeAdded   = shardmap.ChangeAdded
	changeRemoved = shardmap.ChangeRemoved
	changeChanged = shardmap.ChangeChanged
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

// diffMaps compares old (nil when there is none yet) with new
// (shardmap.Diff), for output. Both must be valid maps (Validate).
func diffMaps(old, new *shardmap.Map, from, to string) *mapDiff {
	sd := shardmap.Diff(old, new)
	d := &mapDiff{From: from, To: to, Equal: sd.Equal(),
		Shards: make([]shardDiff, 0, len(sd.Shards)), Distributions: make([]distributionDiff, 0, len(sd.Distributions)),
		Tables: make([]tableDiff, 0, len(sd.Tables))}
	for _, x := range sd.Shards {
		out := shardDiff{Name: x.Name, Change: x.Change, Details: x.Details}
		if x.Old != nil {
			j := shardToJSON(x.Old)
			out.Old = &j
		}
		if x.New != nil {
			j := shardToJSON(x.New)
			out.New = &j
		}
		d.Shards = append(d.Shards, out)
	}
	for _, x := range sd.Distributions {
		out := distributionDiff{Name: x.Name, Change: x.Change, Details: x.Details}
		if x.Old != nil {
			j := distributionToJSON(x.Old)
			out.Old = &j
		}
		if x.New != nil {
			j := distributionToJSON(x.New)
			out.New = &j
		}
		for _, m := range x.Moves {
			out.Moves = append(out.Moves, intervalMove{Lo: m.Lo.String(), Hi: m.Hi.String(), From: m.From, To: m.To})
		}
		d.Distributions = append(d.Distributions, out)
	}
	for _, x := range sd.Tables {
		out := tableDiff{Name: x.Name, Change: x.Change, Details: x.Details}
		if x.Old != nil {
			j := tableToJSON(x.Old)
			out.Old = &j
		}
		if x.New != nil {
			j := tableToJSON(x.New)
			out.New = &j
		}
		d.Tables = append(d.Tables, out)
	}
	return d
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
