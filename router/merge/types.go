package merge

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// PostgreSQL type OIDs the merger understands (pg_type.dat).
const (
	oidBool        = 16
	oidBytea       = 17
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidOID         = 26
	oidFloat4      = 700
	oidFloat8      = 701
	oidBpchar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidNumeric     = 1700
	oidUUID        = 2950
)

// typeNames names the supported types and a few common unsupported ones,
// for error messages.
var typeNames = map[uint32]string{
	oidBool: "boolean", oidBytea: "bytea", oidName: "name", oidInt8: "bigint",
	oidInt2: "smallint", oidInt4: "integer", oidText: "text", oidOID: "oid",
	oidFloat4: "real", oidFloat8: "double precision", oidBpchar: "character",
	oidVarchar: "character varying", oidDate: "date", oidTimestamp: "timestamp without time zone",
	oidTimestamptz: "timestamp with time zone", oidNumeric: "numeric", oidUUID: "uuid",
	18: "\"char\"", 114: "json", 142: "xml", 650: "cidr", 705: "unknown", 790: "money",
	829: "macaddr", 869: "inet", 1083: "time without time zone", 1186: "interval",
	1266: "time with time zone", 1560: "bit", 1562: "bit varying", 3802: "jsonb",
	1007: "integer[]", 1009: "text[]", 1016: "bigint[]",
}

// TypeName returns PostgreSQL's name for a type OID, or "type OID n" for
// one this package does not know by name.
func TypeName(oid uint32) string {
	if n, ok := typeNames[oid]; ok {
		return n
	}
	return fmt.Sprintf("type OID %d", oid)
}

// kind is how the merger reads, compares and keys a column's values.
type kind uint8

const (
	kindUnsupported kind = iota
	kindBool
	kindInt // int2, int4, int8
	kindOID // unsigned 32-bit
	kindFloat4
	kindFloat8
	kindNumeric
	kindText   // text, varchar, name: bytewise (COLLATE "C")
	kindBpchar // bytewise, trailing spaces insignificant
	kindBytea
	kindDate
	kindTimestamp // timestamp and timestamptz
	kindUUID
)

func kindOf(oid uint32) kind {
	switch oid {
	case oidBool:
		return kindBool
	case oidInt2, oidInt4, oidInt8:
		return kindInt
	case oidOID:
		return kindOID
	case oidFloat4:
		return kindFloat4
	case oidFloat8:
		return kindFloat8
	case oidNumeric:
		return kindNumeric
	case oidText, oidVarchar, oidName:
		return kindText
	case oidBpchar:
		return kindBpchar
	case oidBytea:
		return kindBytea
	case oidDate:
		return kindDate
	case oidTimestamp, oidTimestamptz:
		return kindTimestamp
	case oidUUID:
		return kindUUID
	}
	return kindUnsupported
}

// errValue reports a value a shard sent that does not parse as its type.
var errValue = errors.New("malformed value")

// value is one decoded, non-NULL or NULL value, comparable within its kind.
// b may alias the row it was decoded from.
type value struct {
	null bool
	i    int64
	f    float64
	b    []byte
	n    *decimal
}

// decodeValue decodes raw (nil for NULL) in format (0 text, 1 binary).
// For bytea and uuid in text format it decodes into v.b's own buffer.
func decodeValue(k kind, format int16, raw []byte, v *value) error {
	v.null = raw == nil
	if v.null {
		// Drop what the previous value referenced: text values alias the
		// row, whose buffer the source recycles.
		v.b = nil
		return nil
	}
	var err error
	if format == 1 {
		err = decodeBinary(k, raw, v)
	} else {
		err = decodeText(k, raw, v)
	}
	if err != nil {
		return fmt.Errorf("%w: %q: %w", errValue, truncate(raw), err)
	}
	return nil
}

func truncate(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

func decodeText(k kind, raw []byte, v *value) error {
	var err error
	switch k {
	case kindBool:
		switch string(raw) {
		case "t":
			v.i = 1
		case "f":
			v.i = 0
		default:
			return errors.New("not a boolean")
		}
	case kindInt:
		v.i, err = strconv.ParseInt(string(raw), 10, 64)
	case kindOID:
		var u uint64
		u, err = strconv.ParseUint(string(raw), 10, 32)
		v.i = int64(u)
	case kindFloat4, kindFloat8:
		v.f, err = strconv.ParseFloat(string(raw), 64)
		if err != nil && errors.Is(err, strconv.ErrRange) {
			err = nil // PostgreSQL prints only representable values; ±Inf/0 is the nearest
		}
	case kindNumeric:
		if v.n == nil {
			v.n = new(decimal)
		}
		err = v.n.parseText(raw)
	case kindText:
		v.b = raw
	case kindBpchar:
		v.b = bytes.TrimRight(raw, " ")
	case kindBytea:
		v.b, err = decodeByteaText(v.b[:0], raw)
	case kindDate:
		v.i, err = parseDate(raw)
	case kindTimestamp:
		v.i, err = parseTimestamp(raw)
	case kindUUID:
		v.b, err = decodeUUIDText(v.b[:0], raw)
	default:
		return errors.New("unsupported type")
	}
	return err
}

func decodeBinary(k kind, raw []byte, v *value) error {
	need := func(n int) error {
		if len(raw) != n {
			return fmt.Errorf("binary value of %d bytes, want %d", len(raw), n)
		}
		return nil
	}
	switch k {
	case kindBool:
		if err := need(1); err != nil {
			return err
		}
		v.i = int64(raw[0])
		if raw[0] > 1 {
			return errors.New("not a boolean")
		}
	case kindInt:
		switch len(raw) {
		case 2:
			v.i = int64(int16(binary.BigEndian.Uint16(raw)))
		case 4:
			v.i = int64(int32(binary.BigEndian.Uint32(raw)))
		case 8:
			v.i = int64(binary.BigEndian.Uint64(raw))
		default:
			return fmt.Errorf("binary integer of %d bytes", len(raw))
		}
	case kindOID:
		if err := need(4); err != nil {
			return err
		}
		v.i = int64(binary.BigEndian.Uint32(raw))
	case kindFloat4:
		if err := need(4); err != nil {
			return err
		}
		v.f = float64(math.Float32frombits(binary.BigEndian.Uint32(raw)))
	case kindFloat8:
		if err := need(8); err != nil {
			return err
		}
		v.f = math.Float64frombits(binary.BigEndian.Uint64(raw))
	case kindNumeric:
		if v.n == nil {
			v.n = new(decimal)
		}
		return v.n.parseBinary(raw)
	case kindText, kindBytea:
		v.b = raw
	case kindBpchar:
		v.b = bytes.TrimRight(raw, " ")
	case kindDate:
		if err := need(4); err != nil {
			return err
		}
		v.i = int64(int32(binary.BigEndian.Uint32(raw)))
	case kindTimestamp:
		if err := need(8); err != nil {
			return err
		}
		v.i = int64(binary.BigEndian.Uint64(raw))
	case kindUUID:
		if err := need(16); err != nil {
			return err
		}
		v.b = raw
	default:
		return errors.New("unsupported type")
	}
	return nil
}

// compareValues orders two non-NULL values of kind k as PostgreSQL's
// default btree operator class does (text under COLLATE "C").
func compareValues(k kind, a, b *value) int {
	switch k {
	case kindBool, kindInt, kindOID, kindDate, kindTimestamp:
		return cmpInt64(a.i, b.i)
	case kindFloat4, kindFloat8:
		return compareFloat(a.f, b.f)
	case kindNumeric:
		return a.n.cmp(b.n)
	default:
		// bytea: memcmp then length, which is bytes.Compare.
		return bytes.Compare(a.b, b.b)
	}
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// compareFloat is float8_cmp_internal: NaN equals NaN and is greater than
// every other value, including Infinity; -0 equals 0.
func compareFloat(a, b float64) int {
	an, bn := math.IsNaN(a), math.IsNaN(b)
	switch {
	case an && bn:
		return 0
	case an:
		return 1
	case bn:
		return -1
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// appendKey appends a canonical encoding of v such that two values of
// kind k have equal keys exactly when PostgreSQL's equality operator says
// they are equal (for text: byte-equal, as under a deterministic collation).
func appendKey(dst []byte, k kind, v *value) []byte {
	if v.null {
		return append(dst, 0)
	}
	dst = append(dst, 1)
	switch k {
	case kindBool, kindInt, kindOID, kindDate, kindTimestamp:
		return binary.BigEndian.AppendUint64(dst, uint64(v.i))
	case kindFloat4, kindFloat8:
		f := v.f
		switch {
		case math.IsNaN(f):
			f = math.NaN()
		case f == 0:
			f = 0 // -0 = 0
		}
		return binary.BigEndian.AppendUint64(dst, math.Float64bits(f))
	case kindNumeric:
		start := len(dst)
		dst = append(dst, 0, 0, 0, 0)
		dst = v.n.appendKey(dst)
		binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
		return dst
	default:
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v.b)))
		return append(dst, v.b...)
	}
}

// copyValue makes dst an independent copy of src (reusing dst's buffers).
func copyValue(dst, src *value) {
	dst.null, dst.i, dst.f = src.null, src.i, src.f
	if src.null {
		dst.b = dst.b[:0]
		return
	}
	dst.b = append(dst.b[:0], src.b...)
	if src.n != nil {
		if dst.n == nil {
			dst.n = new(decimal)
		}
		dst.n.coef.Set(&src.n.coef)
		dst.n.scale, dst.n.spec = src.n.scale, src.n.spec
	}
}

// decodeByteaText decodes bytea_out's hex format (\x...) or escape format.
func decodeByteaText(dst, raw []byte) ([]byte, error) {
	if bytes.HasPrefix(raw, []byte(`\x`)) {
		h := raw[2:]
		if len(h)%2 != 0 {
			return nil, errors.New("odd hex length")
		}
		n := len(dst)
		dst = append(dst, make([]byte, len(h)/2)...)
		if _, err := hex.Decode(dst[n:], h); err != nil {
			return nil, err
		}
		return dst, nil
	}
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		if i+1 < len(raw) && raw[i+1] == '\\' {
			dst = append(dst, '\\')
			i++
			continue
		}
		if i+3 >= len(raw) {
			return nil, errors.New("bad escape")
		}
		o := raw[i+1 : i+4]
		for _, d := range o {
			if d < '0' || d > '7' {
				return nil, errors.New("bad escape")
			}
		}
		if o[0] > '3' {
			return nil, errors.New("bad escape")
		}
		dst = append(dst, (o[0]-'0')<<6|(o[1]-'0')<<3|(o[2]-'0'))
		i += 3
	}
	return dst, nil
}

func decodeUUIDText(dst, raw []byte) ([]byte, error) {
	var h [32]byte
	n := 0
	for _, c := range raw {
		if c == '-' || c == '{' || c == '}' {
			continue
		}
		if n == 32 {
			return nil, errors.New("not a uuid")
		}
		h[n] = c
		n++
	}
	if n != 32 {
		return nil, errors.New("not a uuid")
	}
	l := len(dst)
	dst = append(dst, make([]byte, 16)...)
	if _, err := hex.Decode(dst[l:], h[:]); err != nil {
		return nil, err
	}
	return dst, nil
}

// appendFloatDigits formats f as float4out/float8out do under
// extra_float_digits efd: the shortest exact text when efd > 0, else
// printf's %.*g with DBL_DIG (15) or FLT_DIG (6) plus efd digits, at
// least 1.
func appendFloatDigits(dst []byte, f float64, bitSize int, efd int) []byte {
	if efd > 0 || math.IsNaN(f) || math.IsInf(f, 0) || f == 0 {
		return appendFloatText(dst, f, bitSize)
	}
	ndig := 15 + efd
	if bitSize == 32 {
		ndig = 6 + efd
	}
	// %g: exponent notation when the exponent is below -4 or at least
	// the precision; trailing zeros dropped. Go's 'g' with a precision
	// does the same, and also writes at least two exponent digits.
	return strconv.AppendFloat(dst, f, 'g', max(ndig, 1), 64)
}

// appendFloatText formats f as float4out/float8out do with
// extra_float_digits > 0 (the default): the shortest text that reads back
// exactly, in fixed notation when the decimal exponent is in [-4, 15) for
// float8 or [-4, 6) for float4, else in exponent notation (1e+20, 1e-05).
func appendFloatText(dst []byte, f float64, bitSize int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "NaN"...)
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	case f == 0:
		if math.Signbit(f) {
			return append(dst, "-0"...)
		}
		return append(dst, '0')
	}
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, bitSize)
	i := bytes.IndexByte(e, 'e')
	exp, _ := strconv.Atoi(string(e[i+1:]))
	limit := 15
	if bitSize == 32 {
		limit = 6
	}
	if exp >= -4 && exp < limit {
		return strconv.AppendFloat(dst, f, 'f', -1, bitSize)
	}
	return append(dst, e...)
}
