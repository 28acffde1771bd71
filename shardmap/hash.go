package shardmap

import "math/bits"

// Seed is the seed pgshard passes to PostgreSQL's extended hash functions.
// It is the ASCII bytes of "pgshard!" read as a big-endian integer,
// 0x7067736861726421. It is fixed forever: changing it would move every
// row of every hash distribution, so SQL that must agree with pgshard
// (publication row filters, verification queries) writes it literally,
// e.g. hashint8extended(id, 8099569346997806113); see [KeyType.HashSQL].
//
// A non-zero seed matters: PostgreSQL skips seeding altogether for 0.
const Seed int64 = 0x7067736861726421

// HashInt64 is PostgreSQL's hashint8extended(v, Seed).
func HashInt64(v int64) int64 { return HashInt64Seed(v, Seed) }

// HashText is PostgreSQL's hashtextextended(s, Seed) for a deterministic
// collation such as "C", which hashes the bytes of the text.
func HashText(s string) int64 { return HashTextSeed(s, Seed) }

// HashUUID is PostgreSQL's uuid_hash_extended(u, Seed).
func HashUUID(u [16]byte) int64 { return HashUUIDSeed(u, Seed) }

// HashInt64Seed is PostgreSQL's hashint8extended(v, seed). Like PostgreSQL
// it folds the high half of v into the low half (complemented for negative
// values), so values that fit in an int4 hash as hashint4extended does,
// then hashes the resulting 32-bit word.
func HashInt64Seed(v, seed int64) int64 {
	lo := uint32(v)
	hi := uint32(v >> 32)
	if v >= 0 {
		lo ^= hi
	} else {
		lo ^= ^hi
	}
	return int64(hashUint32Extended(lo, uint64(seed)))
}

// HashTextSeed is PostgreSQL's hashtextextended(s, seed) for a
// deterministic collation: hash_bytes_extended over the bytes of s, which
// are the bytes a UTF8 database stores when s is UTF-8. (With another
// server encoding, s would have to be converted to it first.)
// Nondeterministic (ICU) collations hash a sort key instead and are not
// supported.
func HashTextSeed(s string, seed int64) int64 {
	return int64(hashBytesExtended(s, uint64(seed)))
}

// HashUUIDSeed is PostgreSQL's uuid_hash_extended(u, seed):
// hash_bytes_extended over the 16 bytes of the uuid.
func HashUUIDSeed(u [16]byte, seed int64) int64 {
	return int64(hashBytesExtended(string(u[:]), uint64(seed)))
}

// The functions below are Bob Jenkins' lookup3 as PostgreSQL uses it in
// src/common/hashfn.c (hash_bytes_extended, hash_bytes_uint32_extended).
//
// Byte order: hashfn.c reads the key in 4-byte words in the machine's byte
// order, so PostgreSQL's hashes of text and uuid differ between big- and
// little-endian servers. pgshard implements the little-endian variant, the
// one of x86_64 and arm64 servers, whatever the byte order of the machine
// pgshard itself runs on (it assembles words byte by byte). Integer
// hashing (hash_bytes_uint32_extended) does not depend on byte order.

// initval is lookup3's initial state for a key of n bytes.
func initval(n uint32) uint32 { return 0x9e3779b9 + n + 3923095 }

// mix is lookup3's mix(a, b, c).
func mix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= bits.RotateLeft32(c, 4)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 6)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 8)
	b += a
	a -= c
	a ^= bits.RotateLeft32(c, 16)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 19)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 4)
	b += a
	return a, b, c
}

// final is lookup3's final(a, b, c).
func final(a, b, c uint32) (uint32, uint32, uint32) {
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return a, b, c
}

// seedState perturbs the initial state with a non-zero seed: PostgreSQL
// treats the seed as a 12-byte chunk (high word, low word, zero) of data.
func seedState(a, b, c uint32, seed uint64) (uint32, uint32, uint32) {
	if seed == 0 {
		return a, b, c
	}
	a += uint32(seed >> 32)
	b += uint32(seed)
	return mix(a, b, c)
}

// hashBytesExtended is hash_bytes_extended(k, len(k), seed) on a
// little-endian machine. It takes a string so that hashing text does not
// copy it.
func hashBytesExtended(k string, seed uint64) uint64 {
	a := initval(uint32(len(k)))
	a, b, c := seedState(a, a, a, seed)

	for len(k) >= 12 {
		a += le32(k[0:4])
		b += le32(k[4:8])
		c += le32(k[8:12])
		a, b, c = mix(a, b, c)
		k = k[12:]
	}
	// The last 0..11 bytes. The lowest byte of c is reserved for the
	// length in lookup3, so c takes bytes 8..10 from its second byte on.
	switch len(k) {
	case 11:
		c += uint32(k[10]) << 24
		fallthrough
	case 10:
		c += uint32(k[9]) << 16
		fallthrough
	case 9:
		c += uint32(k[8]) << 8
		fallthrough
	case 8:
		b += uint32(k[7]) << 24
		fallthrough
	case 7:
		b += uint32(k[6]) << 16
		fallthrough
	case 6:
		b += uint32(k[5]) << 8
		fallthrough
	case 5:
		b += uint32(k[4])
		fallthrough
	case 4:
		a += uint32(k[3]) << 24
		fallthrough
	case 3:
		a += uint32(k[2]) << 16
		fallthrough
	case 2:
		a += uint32(k[1]) << 8
		fallthrough
	case 1:
		a += uint32(k[0])
	}
	_, b, c = final(a, b, c)
	return uint64(b)<<32 | uint64(c)
}

// hashUint32Extended is hash_bytes_uint32_extended(k, seed).
func hashUint32Extended(k uint32, seed uint64) uint64 {
	a := initval(4)
	a, b, c := seedState(a, a, a, seed)
	a += k
	_, b, c = final(a, b, c)
	return uint64(b)<<32 | uint64(c)
}

// le32 decodes 4 bytes of s as a little-endian word.
func le32(s string) uint32 {
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}
