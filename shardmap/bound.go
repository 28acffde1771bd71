package shardmap

import (
	"bytes"
	"cmp"
	"math"
	"strconv"
	"strings"
)

// boundKind says what a Bound holds.
type boundKind uint8

const (
	boundUnset  boundKind = iota // the zero Bound: missing, reported by Validate
	boundNegInf                  // below every value
	boundPosInf                  // above every value
	boundInt64                   // a bigint key or a hash value
	boundText                    // a text key
	boundUUID                    // a uuid key
)

// Bound is one end of an [Interval]: -infinity, +infinity or a value of
// the distribution's bound type (int64 for bigint keys and for every hash
// distribution, string for text keys, [UUID] for uuid keys). Build one with
// [NegInf], [PosInf], [Int64Bound], [TextBound] or [UUIDBound]; the zero
// Bound is "missing" and fails validation. Bounds are comparable with ==.
type Bound struct {
	kind boundKind
	i    int64
	s    string
	u    UUID
}

// NegInf is the bound below every value.
func NegInf() Bound { return Bound{kind: boundNegInf} }

// PosInf is the bound above every value.
func PosInf() Bound { return Bound{kind: boundPosInf} }

// Int64Bound is a bigint key value, or a hash value in a hash distribution.
func Int64Bound(v int64) Bound { return Bound{kind: boundInt64, i: v} }

// TextBound is a text key value, ordered bytewise like COLLATE "C".
func TextBound(s string) Bound { return Bound{kind: boundText, s: s} }

// UUIDBound is a uuid key value, ordered bytewise like PostgreSQL's uuid.
func UUIDBound(u UUID) Bound { return Bound{kind: boundUUID, u: u} }

// IsNegInf reports whether b is -infinity.
func (b Bound) IsNegInf() bool { return b.kind == boundNegInf }

// IsPosInf reports whether b is +infinity.
func (b Bound) IsPosInf() bool { return b.kind == boundPosInf }

// IsZero reports whether b is the zero (missing) Bound.
func (b Bound) IsZero() bool { return b.kind == boundUnset }

// Int64 returns the value of a bigint (or hash) bound.
func (b Bound) Int64() (int64, bool) { return b.i, b.kind == boundInt64 }

// Text returns the value of a text bound.
func (b Bound) Text() (string, bool) { return b.s, b.kind == boundText }

// UUID returns the value of a uuid bound.
func (b Bound) UUID() (UUID, bool) { return b.u, b.kind == boundUUID }

// valueType is the key type of a finite bound's value, "" for the others.
func (b Bound) valueType() KeyType {
	switch b.kind {
	case boundInt64:
		return KeyBigint
	case boundText:
		return KeyText
	case boundUUID:
		return KeyUUID
	}
	return ""
}

// isMin reports whether b is -infinity or the smallest value of its type
// (the minimum int64, the empty string, the nil uuid): nothing lies below
// it, so an interval starting there covers the start of the key space.
func (b Bound) isMin() bool {
	switch b.kind {
	case boundNegInf:
		return true
	case boundInt64:
		return b.i == math.MinInt64
	case boundText:
		return b.s == ""
	case boundUUID:
		return b.u == UUID{}
	}
	return false
}

// String formats b as a DBA reads it: -inf, +inf, 1000, "abc" (text is
// quoted), or a uuid in canonical form.
func (b Bound) String() string {
	switch b.kind {
	case boundNegInf:
		return "-inf"
	case boundPosInf:
		return "+inf"
	case boundInt64:
		return strconv.FormatInt(b.i, 10)
	case boundText:
		return strconv.Quote(b.s)
	case boundUUID:
		return b.u.String()
	}
	return "(missing)"
}

// Compare orders two bounds: -1 if b < c, 0 if equal, +1 if b > c.
// Infinities are below and above everything; values compare as PostgreSQL
// compares them in COLLATE "C" (numerically, or bytewise for text and
// uuid). Bounds of different value types, which only an invalid map has,
// are ordered by type so that sorting stays total.
func (b Bound) Compare(c Bound) int {
	rank := func(x Bound) int {
		switch x.kind {
		case boundNegInf:
			return 0
		case boundPosInf:
			return 2
		}
		return 1
	}
	if r := cmp.Compare(rank(b), rank(c)); r != 0 || rank(b) != 1 {
		return r
	}
	if b.kind != c.kind {
		return cmp.Compare(b.kind, c.kind)
	}
	switch b.kind {
	case boundInt64:
		return cmp.Compare(b.i, c.i)
	case boundText:
		return strings.Compare(b.s, c.s)
	case boundUUID:
		return bytes.Compare(b.u[:], c.u[:])
	}
	return 0
}

// The key-versus-bound comparisons below are what lookups run; they avoid
// building a Bound (and boxing the key) per comparison. Each returns the
// sign of key - b; a bound of another type (invalid map) compares as if
// the key were below it, which keeps binary search well-defined.

func cmpInt64(k int64, b Bound) int {
	switch b.kind {
	case boundNegInf:
		return 1
	case boundInt64:
		return cmp.Compare(k, b.i)
	}
	return -1
}

func cmpText(k string, b Bound) int {
	switch b.kind {
	case boundNegInf:
		return 1
	case boundText:
		return strings.Compare(k, b.s)
	}
	return -1
}

func cmpUUID(k *UUID, b *Bound) int {
	switch b.kind {
	case boundNegInf:
		return 1
	case boundUUID:
		return bytes.Compare(k[:], b.u[:])
	}
	return -1
}
