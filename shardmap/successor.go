package shardmap

import (
	"fmt"
	"slices"
)

// The kinds of [Hazard].
const (
	// HazardFencedPrimary: the new map names as a shard's primary a
	// server the current map lists as fenced (in any shard).
	HazardFencedPrimary = "fenced-primary"
	// HazardDroppedFence: a server fenced in the current map is neither
	// fenced in the new one nor a replica of the same shard (what
	// `pgshard shards rejoin` commits after rebuilding it).
	HazardDroppedFence = "dropped-fence"
	// HazardPrimaryInRecovery: the new map makes a server that is in
	// recovery (a replica, as the caller's health view says) a shard's
	// primary.
	HazardPrimaryInRecovery = "primary-in-recovery"
	// HazardMovingInterval: the new map adds, drops or changes a
	// distribution's moving-interval marker ([Moving]), which only the
	// resharding workflow sets and releases (Shard is "" and Server names
	// the distribution).
	HazardMovingInterval = "moving-interval"
	// HazardStaleRows: the new map adds, drops or changes a
	// distribution's stale-rows marker ([StaleRows]), which only the
	// resharding workflow sets and drops (Shard is "" and Server names
	// the distribution).
	HazardStaleRows = "stale-rows"
)

// Hazard is a reason not to replace the current map by a new one: the new
// one would send writes to a server that is not the shard's real primary,
// or let a fenced server serve again. Applying it anyway risks split
// brain: writes acknowledged on a server that is not the real primary.
type Hazard struct {
	Kind   string // HazardFencedPrimary, HazardDroppedFence, HazardPrimaryInRecovery, HazardMovingInterval or HazardStaleRows
	Shard  string // the shard of the new map (the current map's for HazardDroppedFence)
	Server string // host:port
	Reason string // why, for people; starts with the server
}

// String names the shard, the server and why.
func (h Hazard) String() string {
	if h.Shard == "" {
		return h.Reason
	}
	return "shard " + h.Shard + ": " + h.Reason
}

// CheckSuccessor returns the hazards of replacing cur by next, in shard
// order: a primary of next that cur fences, a fence of cur that next drops
// (other than a move to the replicas of the same shard, which is what a
// rejoin commits), and — when inRecovery is not nil — a primary that
// changes to a server for which inRecovery reports true (it is known to
// be a replica; an unknown health must report false), and a change of a
// distribution's moving-interval markers (HazardMovingInterval, after the
// shard hazards) or stale-rows markers (HazardStaleRows). A nil cur (no map yet) has no hazards.
func CheckSuccessor(cur, next *Map, inRecovery func(addr string) bool) []Hazard {
	if cur == nil || next == nil {
		return nil
	}
	fencedIn := make(map[Endpoint]string) // fenced endpoint -> its shard in cur
	for _, s := range cur.Shards {
		for _, f := range s.Fenced {
			fencedIn[f] = s.Name
		}
	}
	stillFenced := make(map[Endpoint]bool)
	for _, s := range next.Shards {
		for _, f := range s.Fenced {
			stillFenced[f] = true
		}
	}
	var out []Hazard
	for _, s := range next.Shards {
		p := s.Primary.String()
		if fs, ok := fencedIn[s.Primary]; ok {
			out = append(out, Hazard{Kind: HazardFencedPrimary, Shard: s.Name, Server: p, Reason: fmt.Sprintf(
				"primary %s is fenced in the current map (shard %s): it was replaced as primary and may hold writes the real primary never got; "+
					"rebuild it with pgshard shards rejoin before it serves again", p, fs)})
			continue
		}
		old := cur.Shard(s.Name)
		if inRecovery != nil && (old == nil || old.Primary != s.Primary) && inRecovery(p) {
			out = append(out, Hazard{Kind: HazardPrimaryInRecovery, Shard: s.Name, Server: p, Reason: fmt.Sprintf(
				"primary %s is in recovery (a replica) at the meta leader's latest health check: writes there fail, "+
					"and a later promotion outside pgshard would leave two primaries; use pgshard failover to change a primary", p)})
		}
	}
	for _, s := range cur.Shards {
		ns := next.Shard(s.Name)
		for _, f := range s.Fenced {
			if stillFenced[f] || (ns != nil && slices.Contains(ns.Replicas, f)) {
				continue
			}
			if ns != nil && ns.Primary == f {
				continue // reported as HazardFencedPrimary
			}
			out = append(out, Hazard{Kind: HazardDroppedFence, Shard: s.Name, Server: f.String(), Reason: fmt.Sprintf(
				"%s is fenced in the current map and the new map drops its fence; only pgshard shards rejoin lifts a fence "+
					"(it rebuilds the server as a replica first)", f)})
		}
	}
	for _, d := range cur.Distributions {
		var nm []Moving
		if nd := next.Distribution(d.Name); nd != nil {
			nm = nd.Moving
		}
		if o, n := DescribeMoving(d.Moving), DescribeMoving(nm); o != n {
			out = append(out, Hazard{Kind: HazardMovingInterval, Server: d.Name, Reason: fmt.Sprintf(
				"distribution %s: moving intervals [%s] -> [%s]: only the resharding workflow holds and releases an interval "+
					"(pgshard reshard cutover|cancel|rollback); changing it by hand can route writes to a shard that lacks them", d.Name, o, n)})
		}
	}
	for _, d := range cur.Distributions {
		var ns []StaleRows
		if nd := next.Distribution(d.Name); nd != nil {
			ns = nd.Stale
		}
		if o, n := DescribeStale(d.Stale), DescribeStale(ns); o != n {
			out = append(out, Hazard{Kind: HazardStaleRows, Server: d.Name, Reason: fmt.Sprintf(
				"distribution %s: stale rows [%s] -> [%s]: only the resharding workflow marks the rows a shard holds without owning them "+
					"(pgshard reshard cleanup|cancel|rollback drop them); changing it by hand makes reads count rows twice or not at all", d.Name, o, n)})
		}
	}
	for _, d := range next.Distributions {
		if cur.Distribution(d.Name) == nil && len(d.Stale) > 0 {
			out = append(out, Hazard{Kind: HazardStaleRows, Server: d.Name, Reason: fmt.Sprintf(
				"distribution %s: a new distribution cannot have stale rows (%s)", d.Name, DescribeStale(d.Stale))})
		}
		if cur.Distribution(d.Name) == nil && len(d.Moving) > 0 {
			out = append(out, Hazard{Kind: HazardMovingInterval, Server: d.Name, Reason: fmt.Sprintf(
				"distribution %s: a new distribution cannot have moving intervals (%s)", d.Name, DescribeMoving(d.Moving))})
		}
	}
	return out
}
