package shardmap

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// This file holds the map edits of resharding: parse a bound as an
// operator types it, split an interval at a value, hold a moving interval
// ([Moving]) and give it to another shard.

// ParseBound parses a bound of d's bound type as an operator writes it:
// -inf, +inf, or a value (a bigint, a bigint hash value for a hash
// distribution, a text or a uuid). A text value that is literally -inf or
// +inf cannot be written here.
func (d *Distribution) ParseBound(s string) (Bound, error) {
	switch s {
	case "-inf":
		return NegInf(), nil
	case "+inf", "inf":
		return PosInf(), nil
	}
	switch d.boundType() {
	case KeyBigint:
		v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			if d.Strategy == Hash {
				return Bound{}, fmt.Errorf("%q is not -inf, +inf or a bigint hash value of distribution %s", s, d.Name)
			}
			return Bound{}, fmt.Errorf("%q is not -inf, +inf or a bigint key of distribution %s", s, d.Name)
		}
		return Int64Bound(v), nil
	case KeyUUID:
		u, err := ParseUUID(s)
		if err != nil {
			return Bound{}, fmt.Errorf("%q is not -inf, +inf or a uuid key of distribution %s: %w", s, d.Name, err)
		}
		return UUIDBound(u), nil
	case KeyText:
		return TextBound(s), nil
	}
	return Bound{}, fmt.Errorf("distribution %s has unknown key type %q", d.Name, d.KeyType)
}

// ParseInterval parses "[LO,HI)" (spaces allowed) into d's bounds.
func (d *Distribution) ParseInterval(s string) (lo, hi Bound, err error) {
	t := strings.TrimSpace(s)
	if !strings.HasPrefix(t, "[") || !strings.HasSuffix(t, ")") {
		return Bound{}, Bound{}, fmt.Errorf("interval %q: want [LO,HI) (half-open, e.g. [401,501) or [1000,+inf))", s)
	}
	l, h, ok := strings.Cut(t[1:len(t)-1], ",")
	if !ok || strings.Contains(h, ",") && d.boundType() != KeyText {
		return Bound{}, Bound{}, fmt.Errorf("interval %q: want [LO,HI) with one comma", s)
	}
	if lo, err = d.ParseBound(strings.TrimSpace(l)); err != nil {
		return Bound{}, Bound{}, fmt.Errorf("interval %q: lo: %w", s, err)
	}
	if hi, err = d.ParseBound(strings.TrimSpace(h)); err != nil {
		return Bound{}, Bound{}, fmt.Errorf("interval %q: hi: %w", s, err)
	}
	if lo.IsPosInf() || hi.IsNegInf() || lo.Compare(hi) >= 0 {
		return Bound{}, Bound{}, fmt.Errorf("interval %q is empty: lo must be below hi", s)
	}
	return lo, hi, nil
}

// SplitAt returns a copy of m (same epoch) whose distribution dist has the
// interval holding at split in two at at, both halves on the same shard:
// no key changes owner. It fails when at is infinite or already a bound.
func (m *Map) SplitAt(dist string, at Bound) (*Map, error) {
	c := m.Clone()
	d := c.Distribution(dist)
	if d == nil {
		return nil, fmt.Errorf("no distribution %q in the shard map", dist)
	}
	if at.IsNegInf() || at.IsPosInf() || at.IsZero() {
		return nil, fmt.Errorf("distribution %s: cannot split at %s; give a value", dist, at)
	}
	i := d.IntervalIndex(at)
	if i < 0 {
		return nil, fmt.Errorf("distribution %s: %s is in no interval", dist, at)
	}
	iv := d.Intervals[i]
	if iv.Lo.Compare(at) == 0 {
		return nil, fmt.Errorf("distribution %s: %s is already a bound (interval [%s, %s) on %s starts there)", dist, at, iv.Lo, iv.Hi, iv.Shard)
	}
	d.Intervals = slices.Insert(d.Intervals, i+1, Interval{Lo: at, Hi: iv.Hi, Shard: iv.Shard})
	d.Intervals[i].Hi = at
	return c, nil
}

// SetOwner returns a copy of m (same epoch) in which the keys [lo, hi)
// of distribution dist are owned by shard to: the intervals at lo and hi
// are split as needed, those inside are given to to. Adjacent intervals
// are not merged, so that giving the keys back restores the same bounds
// plus the splits.
func (m *Map) SetOwner(dist string, lo, hi Bound, to string) (*Map, error) {
	c := m.Clone()
	d := c.Distribution(dist)
	if d == nil {
		return nil, fmt.Errorf("no distribution %q in the shard map", dist)
	}
	if lo.IsZero() || hi.IsZero() || lo.Compare(hi) >= 0 {
		return nil, fmt.Errorf("distribution %s: [%s, %s) is empty", dist, lo, hi)
	}
	out := make([]Interval, 0, len(d.Intervals)+2)
	for _, iv := range d.Intervals {
		if iv.Hi.Compare(lo) <= 0 || hi.Compare(iv.Lo) <= 0 {
			out = append(out, iv) // outside [lo, hi)
			continue
		}
		if iv.Lo.Compare(lo) < 0 {
			out = append(out, Interval{Lo: iv.Lo, Hi: lo, Shard: iv.Shard})
		}
		in := Interval{Lo: maxBound(iv.Lo, lo), Hi: minBound(iv.Hi, hi), Shard: to}
		if n := len(out); n > 0 && out[n-1].Shard == to && out[n-1].Hi == in.Lo && out[n-1].Lo.Compare(lo) >= 0 {
			out[n-1].Hi = in.Hi // pieces of [lo, hi) already given to to
		} else {
			out = append(out, in)
		}
		if hi.Compare(iv.Hi) < 0 {
			out = append(out, Interval{Lo: hi, Hi: iv.Hi, Shard: iv.Shard})
		}
	}
	d.Intervals = out
	return c, nil
}

// Owns reports whether shard owns every key of [lo, hi) of distribution
// dist.
func (m *Map) Owns(dist string, lo, hi Bound, shard string) bool {
	d := m.Distribution(dist)
	if d == nil {
		return false
	}
	covered := lo
	for _, iv := range d.Intervals {
		if iv.Hi.Compare(lo) <= 0 || hi.Compare(iv.Lo) <= 0 {
			continue
		}
		if iv.Shard != shard || iv.Lo.Compare(covered) > 0 {
			return false
		}
		covered = iv.Hi
	}
	return covered.Compare(hi) >= 0
}

func maxBound(a, b Bound) Bound {
	if a.Compare(b) >= 0 {
		return a
	}
	return b
}

func minBound(a, b Bound) Bound {
	if a.Compare(b) <= 0 {
		return a
	}
	return b
}

// WithMoving returns a copy of m (same epoch) with mv set on distribution
// dist, replacing a marker of the same ID, or without the marker of
// mv.ID when remove is set.
func (m *Map) WithMoving(dist string, mv Moving, remove bool) (*Map, error) {
	c := m.Clone()
	d := c.Distribution(dist)
	if d == nil {
		return nil, fmt.Errorf("no distribution %q in the shard map", dist)
	}
	d.Moving = slices.DeleteFunc(d.Moving, func(x Moving) bool { return x.ID == mv.ID })
	if !remove {
		d.Moving = append(d.Moving, mv)
	}
	if len(d.Moving) == 0 {
		d.Moving = nil
	}
	return c, nil
}

// MovingByID returns the marker of move id in distribution dist, or nil.
func (m *Map) MovingByID(dist, id string) *Moving {
	d := m.Distribution(dist)
	if d == nil {
		return nil
	}
	for i := range d.Moving {
		if d.Moving[i].ID == id {
			return &d.Moving[i]
		}
	}
	return nil
}

// WithStale returns a copy of m (same epoch) with marker s set on
// distribution dist, replacing a marker of the same ID, or without the
// marker of s.ID when remove is set.
func (m *Map) WithStale(dist string, s StaleRows, remove bool) (*Map, error) {
	c := m.Clone()
	d := c.Distribution(dist)
	if d == nil {
		return nil, fmt.Errorf("no distribution %q in the shard map", dist)
	}
	d.Stale = slices.DeleteFunc(d.Stale, func(x StaleRows) bool { return x.ID == s.ID })
	if !remove {
		d.Stale = append(d.Stale, s)
	}
	if len(d.Stale) == 0 {
		d.Stale = nil
	}
	return c, nil
}

// StaleByID returns the stale-rows marker of move id in distribution
// dist, or nil.
func (m *Map) StaleByID(dist, id string) *StaleRows {
	d := m.Distribution(dist)
	if d == nil {
		return nil
	}
	for i := range d.Stale {
		if d.Stale[i].ID == id {
			return &d.Stale[i]
		}
	}
	return nil
}

// StalePredicate returns the SQL condition, true for the rows of s's
// interval, on key expression expr (a quoted column, possibly qualified)
// of distribution d: [IntervalPredicate] of s's bounds.
func (d *Distribution) StalePredicate(s *StaleRows, expr string) string {
	return IntervalPredicate(d.KeyType, d.Strategy, expr, s.Lo, s.Hi)
}

// boundJSON is the JSON form of a Bound: one field set.
type boundJSON struct {
	Inf  string  `json:"inf,omitempty"` // "-" or "+"
	Int  *string `json:"int,omitempty"` // decimal, as a string: JSON numbers lose int64 precision
	Text *string `json:"text,omitempty"`
	UUID string  `json:"uuid,omitempty"`
}

// MarshalJSON writes b with its type, so that workflow states kept as
// JSON read back the same bound: {"inf":"-"}, {"int":"401"},
// {"text":"abc"}, {"uuid":"..."}; a missing bound is null.
func (b Bound) MarshalJSON() ([]byte, error) {
	var j boundJSON
	switch b.kind {
	case boundUnset:
		return []byte("null"), nil
	case boundNegInf:
		j.Inf = "-"
	case boundPosInf:
		j.Inf = "+"
	case boundInt64:
		s := strconv.FormatInt(b.i, 10)
		j.Int = &s
	case boundText:
		s := b.s
		j.Text = &s
	case boundUUID:
		j.UUID = b.u.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (b *Bound) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		*b = Bound{}
		return nil
	}
	var j boundJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("bound: %w", err)
	}
	switch {
	case j.Inf == "-":
		*b = NegInf()
	case j.Inf == "+":
		*b = PosInf()
	case j.Int != nil:
		v, err := strconv.ParseInt(*j.Int, 10, 64)
		if err != nil {
			return fmt.Errorf("bound: %w", err)
		}
		*b = Int64Bound(v)
	case j.Text != nil:
		*b = TextBound(*j.Text)
	case j.UUID != "":
		u, err := ParseUUID(j.UUID)
		if err != nil {
			return fmt.Errorf("bound: %w", err)
		}
		*b = UUIDBound(u)
	default:
		return fmt.Errorf("bound: %s names no value", data)
	}
	return nil
}
