package shardmap

import (
	"encoding/hex"
	"fmt"
)

// UUID is a PostgreSQL uuid: 16 bytes in the order PostgreSQL stores,
// sorts (bytewise) and hashes them.
type UUID [16]byte

// String formats u in PostgreSQL's canonical form,
// xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, lower-case.
func (u UUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], u[10:16])
	return string(b[:])
}

// ParseUUID parses the canonical form of a uuid (hex digits in either case,
// with the four hyphens) or 32 hex digits without hyphens. It accepts less
// than PostgreSQL's uuid_in (no braces, no other hyphen placements) on
// purpose: a shard map is written by people and read by people.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	var digits string
	switch len(s) {
	case 36:
		if s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
			return u, fmt.Errorf("invalid uuid %q: want xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
		}
		digits = s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	case 32:
		digits = s
	default:
		return u, fmt.Errorf("invalid uuid %q: want xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	if _, err := hex.Decode(u[:], []byte(digits)); err != nil {
		return UUID{}, fmt.Errorf("invalid uuid %q: %w", s, err)
	}
	return u, nil
}

// MustParseUUID is ParseUUID that panics on error, for constants in tests
// and examples.
func MustParseUUID(s string) UUID {
	u, err := ParseUUID(s)
	if err != nil {
		panic(err)
	}
	return u
}
