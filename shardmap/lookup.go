package shardmap

import (
	"errors"
	"fmt"
)

// ErrKeyType is returned (wrapped) when a key's Go type does not match the
// distribution's key type.
var ErrKeyType = errors.New("key type does not match the distribution")

// ErrNotCovered is returned (wrapped) when no interval holds a key, which
// only happens with a map that fails Validate.
var ErrNotCovered = errors.New("no interval holds the key")

// The lookups below find the interval of a key by binary search, in
// O(log n) comparisons, without allocating. They rely on the intervals
// being sorted and contiguous, as Validate guarantees; on an invalid map
// they return ErrNotCovered or some shard, and never panic.

// ShardForInt64 returns the shard holding bigint key v: the interval
// holding v for Range, the one holding HashInt64(v) for Hash.
func (d *Distribution) ShardForInt64(v int64) (string, error) {
	if d.KeyType != KeyBigint {
		return "", d.keyTypeError(KeyBigint)
	}
	if d.Strategy == Hash {
		return d.ShardForHash(HashInt64(v))
	}
	if i := d.search(func(b *Bound) int { return cmpInt64(v, *b) }); i >= 0 {
		return d.Intervals[i].Shard, nil
	}
	return "", d.notCovered(Int64Bound(v))
}

// ShardForText returns the shard holding text key s: the interval holding
// s (bytewise order, like COLLATE "C") for Range, the one holding
// HashText(s) for Hash.
func (d *Distribution) ShardForText(s string) (string, error) {
	if d.KeyType != KeyText {
		return "", d.keyTypeError(KeyText)
	}
	if d.Strategy == Hash {
		return d.ShardForHash(HashText(s))
	}
	if i := d.search(func(b *Bound) int { return cmpText(s, *b) }); i >= 0 {
		return d.Intervals[i].Shard, nil
	}
	return "", d.notCovered(TextBound(s))
}

// ShardForUUID returns the shard holding uuid key u: the interval holding
// u (bytewise order) for Range, the one holding HashUUID(u) for Hash.
func (d *Distribution) ShardForUUID(u UUID) (string, error) {
	if d.KeyType != KeyUUID {
		return "", d.keyTypeError(KeyUUID)
	}
	if d.Strategy == Hash {
		return d.ShardForHash(HashUUID(u))
	}
	if i := d.search(func(b *Bound) int { return cmpUUID(&u, b) }); i >= 0 {
		return d.Intervals[i].Shard, nil
	}
	return "", d.notCovered(UUIDBound(u))
}

// ShardForHash returns the shard whose interval holds hash value h, for a
// Hash distribution.
func (d *Distribution) ShardForHash(h int64) (string, error) {
	if d.Strategy != Hash {
		return "", fmt.Errorf("distribution %s uses strategy %s, not hash", d.Name, d.Strategy)
	}
	if i := d.search(func(b *Bound) int { return cmpInt64(h, *b) }); i >= 0 {
		return d.Intervals[i].Shard, nil
	}
	return "", d.notCovered(Int64Bound(h))
}

// ShardForKey returns the shard holding key v, which may be an int64, int,
// int32 or int16 (bigint keys), a string (text keys, or the text form of a
// uuid for uuid keys), a UUID or a [16]byte.
func (d *Distribution) ShardForKey(v any) (string, error) {
	switch v := v.(type) {
	case int64:
		return d.ShardForInt64(v)
	case int:
		return d.ShardForInt64(int64(v))
	case int32:
		return d.ShardForInt64(int64(v))
	case int16:
		return d.ShardForInt64(int64(v))
	case string:
		if d.KeyType == KeyUUID {
			u, err := ParseUUID(v)
			if err != nil {
				return "", fmt.Errorf("distribution %s: %w", d.Name, err)
			}
			return d.ShardForUUID(u)
		}
		return d.ShardForText(v)
	case UUID:
		return d.ShardForUUID(v)
	case [16]byte:
		return d.ShardForUUID(v)
	}
	return "", fmt.Errorf("distribution %s: %w: unsupported key %T", d.Name, ErrKeyType, v)
}

// IntervalIndex returns the index in d.Intervals of the interval holding
// position p (a key value for Range, a hash value for Hash), or -1.
func (d *Distribution) IntervalIndex(p Bound) int {
	return d.search(func(b *Bound) int { return p.Compare(*b) })
}

// search returns the index of the interval holding the position that cmp
// compares with a bound (the sign of position - bound), or -1.
func (d *Distribution) search(cmp func(*Bound) int) int {
	iv := d.Intervals
	// Find the first interval whose Hi is above the position...
	lo, hi := 0, len(iv)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if cmp(&iv[mid].Hi) >= 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	// ...which holds it if its Lo is not above it.
	if lo == len(iv) || cmp(&iv[lo].Lo) < 0 {
		return -1
	}
	return lo
}

func (d *Distribution) notCovered(p Bound) error {
	what := "key"
	if d.Strategy == Hash {
		what = "hash"
	}
	return fmt.Errorf("distribution %s: %w: %s %s", d.Name, ErrNotCovered, what, p)
}

func (d *Distribution) keyTypeError(got KeyType) error {
	return fmt.Errorf("distribution %s: %w: its keys are %s, not %s", d.Name, ErrKeyType, d.KeyType, got)
}
