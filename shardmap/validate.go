package shardmap

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Validate checks the map and returns every problem found, joined with
// errors.Join (one per line), or nil. The messages name the shard,
// distribution, interval or table at fault and say what is wrong in terms
// a DBA can act on: which key values are not covered by any interval,
// which intervals overlap and where, which shard is unknown, and so on.
//
// A valid map has an epoch, uniquely named shards with usable endpoints,
// distributions whose intervals are sorted, non-empty, of the right bound
// type, owned by known shards and cover the key space from -inf to +inf
// without gaps or overlaps, and tables naming a known distribution.
func (m *Map) Validate() error {
	v := &validator{shards: make(map[string]bool, len(m.Shards))}
	if m.Epoch == 0 {
		v.addf("the map has epoch 0; epochs start at 1 and grow with every change")
	}
	v.shardList(m.Shards)
	dists := make(map[string]*Distribution, len(m.Distributions))
	for i := range m.Distributions {
		d := &m.Distributions[i]
		if d.Name == "" {
			v.addf("distribution #%d has no name", i+1)
		} else if _, dup := dists[d.Name]; dup {
			v.addf("distribution %s is defined more than once", d.Name)
		} else {
			dists[d.Name] = d
			v.name("distribution", d.Name)
		}
		v.distribution(i, d)
		v.moving(i, d)
		v.stale(i, d)
	}
	v.tables(m.Tables, dists)
	return errors.Join(v.errs...)
}

// validator collects problems.
type validator struct {
	errs   []error
	shards map[string]bool // names of the map's shards
}

func (v *validator) addf(format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf(format, args...))
}

// name checks that a name is printable and has no spaces, so that it can
// be used on a command line and in a log line without quoting.
func (v *validator) name(what, name string) {
	if strings.IndexFunc(name, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
		v.addf("%s name %q has spaces or unprintable characters", what, name)
	}
}

func (v *validator) shardList(shards []Shard) {
	if len(shards) == 0 {
		v.addf("the map has no shards")
	}
	primaries := make(map[Endpoint]string)
	for i := range shards {
		s := &shards[i]
		label := fmt.Sprintf("shard %s", s.Name)
		switch {
		case s.Name == "":
			label = fmt.Sprintf("shard #%d", i+1)
			v.addf("%s has no name", label)
		case v.shards[s.Name]:
			v.addf("shard %s is defined more than once", s.Name)
		default:
			v.shards[s.Name] = true
			v.name("shard", s.Name)
		}
		if !s.State.Known() {
			v.addf("%s has unknown state %q (want %s, %s or %s)", label, s.State, StateActive, StateReadOnly, StateOffline)
		}
		if msg := endpointProblem(s.Primary); msg != "" {
			v.addf("%s: primary %s", label, msg)
		} else if other, dup := primaries[s.Primary]; dup {
			v.addf("%s has the same primary %s as shard %s; two shards cannot share a server", label, s.Primary, other)
		} else {
			primaries[s.Primary] = s.Name
		}
		seen := map[Endpoint]bool{s.Primary: true}
		for j, r := range s.Replicas {
			if msg := endpointProblem(r); msg != "" {
				v.addf("%s: replica #%d %s", label, j+1, msg)
			} else if seen[r] {
				v.addf("%s lists %s twice (as primary or replica)", label, r)
			}
			seen[r] = true
		}
		for j, r := range s.Fenced {
			if msg := endpointProblem(r); msg != "" {
				v.addf("%s: fenced #%d %s", label, j+1, msg)
			} else if seen[r] {
				v.addf("%s lists %s as fenced and as primary or replica (or twice as fenced); a fenced server gets no traffic until it is re-joined", label, r)
			}
			seen[r] = true
		}
		if sw := s.Switch; sw != nil {
			switch {
			case !sw.Kind.Known():
				v.addf("%s: switch has unknown kind %q (want %s or %s)", label, sw.Kind, Failover, Switchover)
			case sw.From != s.Primary:
				v.addf("%s: switch from %s is not the shard's primary %s", label, sw.From, s.Primary)
			case sw.To != (Endpoint{}) && !slices.Contains(s.Replicas, sw.To):
				v.addf("%s: switch to %s is not one of the shard's replicas", label, sw.To)
			}
		}
	}
}

// endpointProblem describes what is wrong with e, or returns "".
func endpointProblem(e Endpoint) string {
	switch {
	case e.Host == "" && e.Port == 0:
		return "is missing (want host:port)"
	case e.Host == "":
		return fmt.Sprintf("%s has no host", e)
	case strings.IndexFunc(e.Host, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0:
		return fmt.Sprintf("host %q has spaces or unprintable characters", e.Host)
	case e.Port < 1 || e.Port > 65535:
		return fmt.Sprintf("%s has port %d; ports go from 1 to 65535", e, e.Port)
	}
	return ""
}

func (v *validator) distribution(i int, d *Distribution) {
	label := "distribution " + d.Name
	if d.Name == "" {
		label = fmt.Sprintf("distribution #%d", i+1)
	}
	if !d.KeyType.Known() {
		v.addf("%s has unknown key type %q (want %s, %s or %s)", label, d.KeyType, KeyBigint, KeyText, KeyUUID)
	}
	if !d.Strategy.Known() {
		v.addf("%s has unknown strategy %q (want %s or %s)", label, d.Strategy, Range, Hash)
	}
	if d.DefaultShard != "" && !v.shards[d.DefaultShard] {
		v.addf("%s: default shard %s is not a shard of the map", label, d.DefaultShard)
	}
	if len(d.Intervals) == 0 {
		v.addf("%s has no intervals; it needs at least one, from -inf to +inf", label)
		return
	}
	// Each interval on its own.
	boundsOK := d.KeyType.Known() && d.Strategy.Known()
	var unknown []string               // unknown shards, in order of first use
	onUnknown := map[string][]string{} // unknown shard -> its intervals
	for j, iv := range d.Intervals {
		il := fmt.Sprintf("%s: interval #%d [%s, %s)", label, j+1, iv.Lo, iv.Hi)
		if iv.Shard == "" {
			v.addf("%s has no shard", il)
		} else if !v.shards[iv.Shard] {
			if onUnknown[iv.Shard] == nil {
				unknown = append(unknown, iv.Shard)
			}
			onUnknown[iv.Shard] = append(onUnknown[iv.Shard], fmt.Sprintf("#%d [%s, %s)", j+1, iv.Lo, iv.Hi))
		}
		if !boundsOK {
			continue
		}
		ok := v.bound(d, il, "lo", iv.Lo)
		ok = v.bound(d, il, "hi", iv.Hi) && ok
		if !ok {
			boundsOK = false
			continue
		}
		if iv.Lo.IsPosInf() || iv.Hi.IsNegInf() || iv.Lo.Compare(iv.Hi) >= 0 || (iv.Lo.IsNegInf() && iv.Hi.isMin()) {
			v.addf("%s is empty: lo must be below hi", il)
			boundsOK = false
		}
	}
	for _, name := range unknown {
		if ivs := onUnknown[name]; len(ivs) == 1 {
			v.addf("%s: interval %s is on shard %s, which is not a shard of the map", label, ivs[0], name)
		} else {
			v.addf("%s: intervals %s are on shard %s, which is not a shard of the map", label, strings.Join(ivs, ", "), name)
		}
	}
	if !boundsOK {
		return // coverage makes no sense with broken intervals
	}
	v.coverage(label, d)
}

// bound checks the type of one bound of an interval.
func (v *validator) bound(d *Distribution, il, which string, b Bound) bool {
	if b.IsZero() {
		v.addf("%s has no %s", il, which)
		return false
	}
	want := d.boundType()
	if t := b.valueType(); t != "" && t != want {
		if d.Strategy == Hash {
			v.addf("%s: %s %s is a %s value, but the intervals of a hash distribution are over the bigint hash of the key", il, which, b, t)
		} else {
			v.addf("%s: %s %s is a %s value, but the distribution's keys are %s", il, which, b, t, want)
		}
		return false
	}
	if s, ok := b.Text(); ok && strings.IndexByte(s, 0) >= 0 {
		v.addf("%s: %s %s contains a NUL byte, which PostgreSQL text cannot hold", il, which, b)
		return false
	} else if ok && !utf8.ValidString(s) {
		v.addf("%s: %s %s is not valid UTF-8", il, which, b)
		return false
	}
	return true
}

// coverage checks that the intervals are sorted and cover the key space
// from -inf to +inf without gaps or overlaps. The gaps and overlaps are
// reported in key order, whatever the order of the intervals.
func (v *validator) coverage(label string, d *Distribution) {
	type numbered struct {
		Interval
		n int // 1-based position in d.Intervals
	}
	ivs := make([]numbered, len(d.Intervals))
	for i, iv := range d.Intervals {
		ivs[i] = numbered{iv, i + 1}
	}
	sorted := slices.IsSortedFunc(ivs, func(a, b numbered) int { return a.Lo.Compare(b.Lo) })
	if !sorted {
		slices.SortStableFunc(ivs, func(a, b numbered) int { return a.Lo.Compare(b.Lo) })
		order := make([]string, len(ivs))
		for i, iv := range ivs {
			order[i] = fmt.Sprintf("#%d", iv.n)
		}
		v.addf("%s: intervals must be listed in ascending order of lo (that is %s)", label, strings.Join(order, ", "))
	}
	what := "key values"
	if d.Strategy == Hash {
		what = "hash values"
	}
	desc := func(iv numbered) string {
		return fmt.Sprintf("interval #%d [%s, %s) on %s", iv.n, iv.Lo, iv.Hi, iv.Shard)
	}
	if first := ivs[0]; !first.Lo.isMin() {
		v.addf("%s: %s below %s are not on any shard: the first interval must start at -inf, but %s does not",
			label, what, first.Lo, desc(first))
	}
	// reach is the interval reaching highest so far: an interval can
	// overlap one that is not its direct predecessor.
	reach := ivs[0]
	for _, next := range ivs[1:] {
		switch c := reach.Hi.Compare(next.Lo); {
		case c < 0:
			v.addf("%s: %s from %s up to (not including) %s are not on any shard: gap between %s and %s",
				label, what, reach.Hi, next.Lo, desc(reach), desc(next))
		case c > 0:
			end := reach.Hi
			if next.Hi.Compare(end) < 0 {
				end = next.Hi
			}
			v.addf("%s: %s from %s up to (not including) %s are in two intervals: %s overlaps %s",
				label, what, next.Lo, end, desc(reach), desc(next))
		}
		if next.Hi.Compare(reach.Hi) > 0 {
			reach = next
		}
	}
	if !reach.Hi.IsPosInf() {
		v.addf("%s: %s from %s up are not on any shard: the last interval must end at +inf, but %s does not",
			label, what, reach.Hi, desc(reach))
	}
}

// moving checks the distribution's moving-interval markers: known step,
// a move id, bounds of the right type with lo below hi, known shards From
// and To that differ, the interval inside one interval owned by From, and
// no two markers overlapping.
func (v *validator) moving(i int, d *Distribution) {
	label := "distribution " + d.Name
	if d.Name == "" {
		label = fmt.Sprintf("distribution #%d", i+1)
	}
	for j, mv := range d.Moving {
		ml := fmt.Sprintf("%s: moving interval #%d [%s, %s)", label, j+1, mv.Lo, mv.Hi)
		if !mv.Step.Known() {
			v.addf("%s has unknown step %q (want %s)", ml, mv.Step, MoveHold)
		}
		if mv.ID == "" {
			v.addf("%s has no move id", ml)
		}
		switch {
		case mv.From == "" || mv.To == "":
			v.addf("%s needs both from and to shards", ml)
		case mv.From == mv.To:
			v.addf("%s moves from shard %s to itself", ml, mv.From)
		}
		for _, s := range []string{mv.From, mv.To} {
			if s != "" && !v.shards[s] {
				v.addf("%s names shard %s, which is not a shard of the map", ml, s)
			}
		}
		if !d.KeyType.Known() || !d.Strategy.Known() {
			continue
		}
		ok := v.bound(d, ml, "lo", mv.Lo)
		ok = v.bound(d, ml, "hi", mv.Hi) && ok
		if !ok {
			continue
		}
		if mv.Lo.IsPosInf() || mv.Hi.IsNegInf() || mv.Lo.Compare(mv.Hi) >= 0 {
			v.addf("%s is empty: lo must be below hi", ml)
			continue
		}
		inside := false
		for _, iv := range d.Intervals {
			if iv.Lo.Compare(mv.Lo) <= 0 && mv.Hi.Compare(iv.Hi) <= 0 {
				inside = true
				if iv.Shard != mv.From {
					v.addf("%s is from shard %s, but interval [%s, %s) holding it is on shard %s", ml, mv.From, iv.Lo, iv.Hi, iv.Shard)
				}
			}
		}
		if !inside {
			v.addf("%s is not inside one interval of the distribution", ml)
		}
		for k, other := range d.Moving[:j] {
			if !other.Lo.IsZero() && !other.Hi.IsZero() && other.Lo.Compare(mv.Hi) < 0 && mv.Lo.Compare(other.Hi) < 0 {
				v.addf("%s overlaps moving interval #%d [%s, %s)", ml, k+1, other.Lo, other.Hi)
			}
		}
	}
}

// stale checks the distribution's stale-rows markers: a move id, used
// once, a known shard, bounds of the right type with lo below hi, and a
// shard that owns no key of the interval.
func (v *validator) stale(i int, d *Distribution) {
	label := "distribution " + d.Name
	if d.Name == "" {
		label = fmt.Sprintf("distribution #%d", i+1)
	}
	for j, s := range d.Stale {
		sl := fmt.Sprintf("%s: stale rows #%d [%s, %s) on %s", label, j+1, s.Lo, s.Hi, s.Shard)
		if s.ID == "" {
			v.addf("%s has no move id", sl)
		}
		for k, other := range d.Stale[:j] {
			if s.ID != "" && other.ID == s.ID {
				v.addf("%s has the move id %s of stale rows #%d", sl, s.ID, k+1)
			}
		}
		switch {
		case s.Shard == "":
			v.addf("%s names no shard", sl)
		case !v.shards[s.Shard]:
			v.addf("%s names shard %s, which is not a shard of the map", sl, s.Shard)
		}
		if !d.KeyType.Known() || !d.Strategy.Known() {
			continue
		}
		ok := v.bound(d, sl, "lo", s.Lo)
		ok = v.bound(d, sl, "hi", s.Hi) && ok
		if !ok {
			continue
		}
		if s.Lo.IsPosInf() || s.Hi.IsNegInf() || s.Lo.Compare(s.Hi) >= 0 {
			v.addf("%s is empty: lo must be below hi", sl)
			continue
		}
		for _, iv := range d.Intervals {
			if iv.Shard == s.Shard && !iv.Lo.IsZero() && !iv.Hi.IsZero() && iv.Lo.Compare(s.Hi) < 0 && s.Lo.Compare(iv.Hi) < 0 {
				v.addf("%s: shard %s owns interval [%s, %s), which overlaps it; stale rows are rows a shard holds without owning them", sl, s.Shard, iv.Lo, iv.Hi)
			}
		}
	}
}

func (v *validator) tables(tables []Table, dists map[string]*Distribution) {
	seen := make(map[string]bool, len(tables))
	for i, t := range tables {
		label := "table " + t.Name
		switch {
		case t.Name == "":
			label = fmt.Sprintf("table #%d", i+1)
			v.addf("%s has no name", label)
		case seen[t.Name]:
			v.addf("table %s is listed more than once", t.Name)
		default:
			seen[t.Name] = true
			schema, rel, ok := strings.Cut(t.Name, ".")
			if !ok || schema == "" || rel == "" || strings.Contains(rel, ".") {
				v.addf("table name %q must be schema-qualified, like public.users", t.Name)
			} else if strings.ToLower(t.Name) != t.Name {
				v.addf("table name %q must be lower-case, as PostgreSQL folds unquoted names (%s)", t.Name, strings.ToLower(t.Name))
			}
			v.name("table", t.Name)
		}
		var d *Distribution
		if t.Distribution == "" {
			v.addf("%s has no distribution", label)
		} else if d = dists[t.Distribution]; d == nil {
			v.addf("%s uses distribution %s, which is not defined", label, t.Distribution)
		}
		switch t.Kind {
		case Sharded:
			if t.KeyColumn == "" {
				v.addf("%s is sharded but has no key column", label)
			}
		case Unsharded:
			if t.KeyColumn != "" {
				v.addf("%s is unsharded but has key column %s; drop the key or make it sharded", label, t.KeyColumn)
			}
			if d != nil && d.DefaultShard == "" {
				v.addf("%s is unsharded, so it lives on the default shard of distribution %s, but %s has no default shard",
					label, d.Name, d.Name)
			}
		default:
			v.addf("%s has unknown kind %q (want %s or %s)", label, t.Kind, Sharded, Unsharded)
		}
		if t.Cache.Enabled && t.Kind != Sharded {
			v.addf("%s is unsharded, so it cannot be cached (the cache holds point reads by sharding key); drop its cache settings", label)
		}
		if t.Cache.TTL < 0 || t.Cache.MaxEntryBytes < 0 {
			v.addf("%s has a negative cache ttl or max_entry_bytes", label)
		}
	}
}
