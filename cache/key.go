package cache

import (
	"bytes"
	"encoding/binary"

	"github.com/cespare/xxhash/v2"
)

// ServerRole is the kind of server a cached result was read from: results
// of a primary and of a replica are different entries.
type ServerRole uint8

const (
	// Primary marks a result read on the shard's primary.
	Primary ServerRole = 1
	// Replica marks a result read on one of the shard's replicas.
	Replica ServerRole = 2
)

// Key identifies one cached result. It is built with a [KeyBuilder] and
// holds the full encoded key (compared byte for byte on every hit, so a hash
// collision is a miss, never a wrong answer) and its hash. A Key built by a
// KeyBuilder refers to the builder's buffer: it is valid until the builder's
// next Begin.
type Key struct {
	// Epoch is the shard map epoch the statement was planned with.
	Epoch uint64
	// Shard is the shard that owns the row (the one whose invalidation
	// stream covers it). Shard and Table are empty in a key without its
	// row (BeginLookup).
	Shard string
	// Table is the schema-qualified, lower-case table name ("public.users").
	Table string

	full    []byte // the injective encoding of every component
	rowEnd  int    // full[:rowEnd] encodes epoch, shard, table and row key (0: a key without its row)
	hash    uint64 // xxhash of full
	rowHash uint64 // xxhash of shard, table and row key: the invalidation slot
}

// Hash returns the key's 64-bit hash (for logs and tests).
func (k Key) Hash() uint64 { return k.hash }

// Equal reports whether k and o are the same key, component by component.
func (k Key) Equal(o Key) bool { return k.hash == o.hash && bytes.Equal(k.full, o.full) }

// Valid reports whether k was built by a KeyBuilder.
func (k Key) Valid() bool { return k.full != nil }

// component tags keep the encoding injective even where lengths coincide.
const (
	tagStatement  byte = 'S'
	tagParam      byte = 'P'
	tagNull       byte = 'N'
	tagRole       byte = 'R'
	tagFormats    byte = 'F'
	tagGeneration byte = 'G'
	// After the epoch: a key of a row (Begin) or one without (BeginLookup).
	tagRow    byte = 'W'
	tagLookup byte = 'L'
)

// KeyBuilder builds Keys into a buffer it reuses: after the first few keys a
// build does not allocate. The proxy keeps one per session. The zero value is
// ready to use; it is not safe for concurrent use.
//
//	b.Begin(epoch, "s1", "public.users", []byte("42"))
//	b.Statement("select * from users where id = $1")
//	b.Param(0, []byte("42"))
//	b.Role("app", cache.Primary)
//	b.Formats(resultFormats)
//	k := b.Key()
type KeyBuilder struct {
	buf    []byte
	shard  string
	table  string
	epoch  uint64
	rowEnd int
}

// Begin starts a key for a read of the rows with sharding key value rowKey
// of table on shard, planned under map epoch epoch. rowKey must be the
// PostgreSQL text output of the key value (bigint in decimal, uuid in its
// lower-case hyphenated form, text as is): it is what the invalidation
// stream decodes, and invalidations match on it.
func (b *KeyBuilder) Begin(epoch uint64, shard, table string, rowKey []byte) {
	b.buf = b.buf[:0]
	b.buf = binary.BigEndian.AppendUint64(b.buf, epoch)
	b.buf = append(b.buf, tagRow)
	b.buf = appendString(b.buf, shard)
	b.buf = appendString(b.buf, table)
	b.buf = appendBytes(b.buf, rowKey)
	b.rowEnd = len(b.buf)
	b.shard, b.table, b.epoch = shard, table, epoch
}

// BeginLookup starts a key that names no row: the statement, its
// parameters, roles and formats under map epoch epoch decide the rows it
// reads (the planner is deterministic under one epoch), so [Cache.Lookup]
// can answer it without planning; the row it was read from is given to
// [Cache.BeginFillRow]. Such keys never equal a key started by Begin.
func (b *KeyBuilder) BeginLookup(epoch uint64) {
	b.buf = b.buf[:0]
	b.buf = binary.BigEndian.AppendUint64(b.buf, epoch)
	b.buf = append(b.buf, tagLookup)
	b.rowEnd = 0
	b.shard, b.table, b.epoch = "", "", epoch
}

// Generation adds a number the caller changes when what the key's
// components decide changes without a new epoch (the proxy: a map
// replaced by another of the same epoch).
func (b *KeyBuilder) Generation(g uint64) {
	b.buf = append(b.buf, tagGeneration)
	b.buf = binary.BigEndian.AppendUint64(b.buf, g)
}

// Statement adds the normalized statement text (constants replaced by
// placeholders, so that the parameters below carry them).
func (b *KeyBuilder) Statement(normalized string) {
	b.buf = append(b.buf, tagStatement)
	b.buf = appendString(b.buf, normalized)
}

// Param adds one bound parameter, in order: its format code (0 text,
// 1 binary) and its value as sent by the client (nil is NULL).
func (b *KeyBuilder) Param(format int16, v []byte) {
	if v == nil {
		b.buf = append(b.buf, tagNull)
		return
	}
	b.buf = append(b.buf, tagParam, byte(format))
	b.buf = appendBytes(b.buf, v)
}

// Role adds the session's role (entries are never shared across roles:
// row-level security and column privileges differ) and the server role the
// result is read from.
func (b *KeyBuilder) Role(role string, server ServerRole) {
	b.buf = append(b.buf, tagRole, byte(server))
	b.buf = appendString(b.buf, role)
}

// Formats adds the result column format codes (Bind's result formats;
// none for the simple protocol, which is text).
func (b *KeyBuilder) Formats(codes []int16) {
	b.buf = append(b.buf, tagFormats)
	b.buf = binary.AppendUvarint(b.buf, uint64(len(codes)))
	for _, c := range codes {
		b.buf = binary.BigEndian.AppendUint16(b.buf, uint16(c))
	}
}

// Key returns the key built since Begin. It refers to the builder's buffer
// and stays valid until the next Begin.
func (b *KeyBuilder) Key() Key {
	return Key{
		Epoch:   b.epoch,
		Shard:   b.shard,
		Table:   b.table,
		full:    b.buf,
		rowEnd:  b.rowEnd,
		hash:    xxhash.Sum64(b.buf),
		rowHash: b.rowHash(),
	}
}

func (b *KeyBuilder) rowHash() uint64 {
	if b.rowEnd == 0 {
		return 0
	}
	return xxhash.Sum64(b.buf[9:b.rowEnd])
}

// clone returns a copy of k that owns its bytes.
func (k Key) clone() Key {
	k.full = bytes.Clone(k.full)
	return k
}

func appendBytes(dst, v []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(v)))
	return append(dst, v...)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// rowSlotHash is the hash of (shard, table, rowKey) exactly as Begin encodes
// them, for invalidations that arrive without a Key.
func rowSlotHash(buf []byte, shard, table string, rowKey []byte) ([]byte, uint64) {
	buf = buf[:0]
	buf = appendString(buf, shard)
	buf = appendString(buf, table)
	buf = appendBytes(buf, rowKey)
	return buf, xxhash.Sum64(buf)
}
