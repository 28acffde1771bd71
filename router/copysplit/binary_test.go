package copysplit

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/pgshard/pgshard/router/plan"
)

func binSpec(cols, key int) *plan.CopySpec {
	return &plan.CopySpec{KeyColumn: key, Columns: cols, Format: "binary", Delimiter: '\t'}
}

// binHeader is a binary COPY header with the given flags and extension.
func binHeader(flags uint32, ext string) string {
	b := []byte(binarySignature)
	b = binary.BigEndian.AppendUint32(b, flags)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ext)))
	return string(b) + ext
}

// hdr is the usual binary header.
var hdr = binHeader(0, "")

// tup encodes a tuple; a nil field is NULL.
func tup(fields ...*string) string {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(fields)))
	for _, f := range fields {
		if f == nil {
			b = binary.BigEndian.AppendUint32(b, 0xffffffff)
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(*f)))
		b = append(b, *f...)
	}
	return string(b)
}

func s(v string) *string { return &v }

// i16 and i32 encode big-endian integers.
func i16(v int16) string { return string(binary.BigEndian.AppendUint16(nil, uint16(v))) }
func i32(v int32) string { return string(binary.BigEndian.AppendUint32(nil, uint32(v))) }

const trailer = "\xff\xff"

// The expectations were checked against PostgreSQL 15 (COPY t(a, b) FROM
// STDIN (FORMAT binary) into text columns).
var binaryCases = []textCase{
	{name: "rows and trailer", spec: binSpec(2, 0), in: hdr + tup(s("1"), s("x")) + tup(nil, s("")) + trailer,
		header: hdr, rows: []row{k("1", tup(s("1"), s("x"))), n(tup(nil, s("")))}},
	{name: "key in second column", spec: binSpec(2, 1), in: hdr + tup(s("1"), s("\x00\xff")) + trailer,
		header: hdr, rows: []row{k("\x00\xff", tup(s("1"), s("\x00\xff")))}},
	{name: "no trailer", spec: binSpec(2, 0), in: hdr + tup(s("1"), s("x")),
		header: hdr, rows: []row{k("1", tup(s("1"), s("x")))}},
	{name: "stray byte where a tuple would start", spec: binSpec(2, 0), in: hdr + tup(s("1"), s("x")) + "\x00",
		header: hdr, rows: []row{k("1", tup(s("1"), s("x")))}},
	{name: "only header", spec: binSpec(2, 0), in: hdr, header: hdr},
	{name: "header extension and non-critical flags", spec: binSpec(2, 0), in: binHeader(1, "abc") + tup(s("1"), s("x")) + trailer,
		header: binHeader(1, "abc"), rows: []row{k("1", tup(s("1"), s("x")))}},
	{name: "data after trailer", spec: binSpec(2, 0), in: hdr + tup(s("1"), s("x")) + trailer + "\x00",
		header: hdr, rows: []row{k("1", tup(s("1"), s("x")))},
		err: "22P04 received copy data after EOF marker | COPY t, line 2"},
	{name: "field count", spec: binSpec(2, 0), in: hdr + tup(s("1"), s("x")) + tup(s("1")),
		header: hdr, rows: []row{k("1", tup(s("1"), s("x")))},
		err: "22P04 row field count is 1, expected 2 | COPY t, line 2"},
	{name: "field count 0", spec: binSpec(2, 0), in: hdr + i16(0) + trailer,
		header: hdr, err: "22P04 row field count is 0, expected 2 | COPY t, line 1"},
	{name: "field count -2", spec: binSpec(2, 0), in: hdr + i16(-2) + trailer,
		header: hdr, err: "22P04 row field count is -2, expected 2 | COPY t, line 1"},
	{name: "field size", spec: binSpec(2, 0), in: hdr + tup(s("1"), s("x")) + i16(2) + i32(-2),
		header: hdr, rows: []row{k("1", tup(s("1"), s("x")))},
		err: "22P04 invalid field size | COPY t, line 2, column #1"},
	{name: "truncated field", spec: binSpec(2, 0), in: hdr + tup(s("1"), s("x")) + tup(s("1"), s("xy"))[:12],
		header: hdr, rows: []row{k("1", tup(s("1"), s("x")))},
		err: "22P04 unexpected EOF in COPY data | COPY t, line 2, column #2"},
	{name: "truncated field length", spec: binSpec(2, 0), in: hdr + tup(s("1"), s("x")) + i16(2) + i32(1) + "1" + "\x00\x00",
		header: hdr, rows: []row{k("1", tup(s("1"), s("x")))},
		err: "22P04 unexpected EOF in COPY data | COPY t, line 2, column #2"},
	{name: "truncated after field count", spec: binSpec(2, 0), in: hdr + i16(2),
		header: hdr, err: "22P04 unexpected EOF in COPY data | COPY t, line 1, column #1"},
	{name: "key error before a later field's error", spec: binSpec(2, 0), in: hdr + i16(2) + i32(11) + "route-error" + i32(-5),
		header: hdr, err: "22P02 invalid input syntax for type bigint: \"route-error\" | COPY t, line 1, column #1"},
	{name: "key error before end of data", spec: binSpec(2, 0), in: hdr + i16(2) + i32(11) + "route-error",
		header: hdr, err: "22P02 invalid input syntax for type bigint: \"route-error\" | COPY t, line 1, column #1"},
	{name: "earlier field's error before key error", spec: binSpec(2, 1), in: hdr + i16(2) + i32(-5),
		header: hdr, err: "22P04 invalid field size | COPY t, line 1, column #1"},
	{name: "WITH OIDS", spec: binSpec(2, 0), in: binHeader(1<<16, "") + trailer,
		err: "22P04 invalid COPY file header (WITH OIDS)"},
	{name: "critical flags", spec: binSpec(2, 0), in: binHeader(1<<17, "") + trailer,
		err: "22P04 unrecognized critical flags in COPY file header"},
	{name: "short extension", spec: binSpec(2, 0), in: binHeader(0, "abc")[:21],
		err: "22P04 invalid COPY file header (wrong length)"},
	{name: "negative extension length", spec: binSpec(2, 0), in: binarySignature + i32(0) + i32(-1),
		err: "22P04 invalid COPY file header (missing length)"},
	{name: "missing extension length", spec: binSpec(2, 0), in: binarySignature + i32(0) + "\x00",
		err: "22P04 invalid COPY file header (missing length)"},
	{name: "bad signature", spec: binSpec(2, 0), in: "PGCOPY\n\xff\r\n\x01" + i32(0) + i32(0) + trailer,
		err: "22P04 COPY file signature not recognized"},
	{name: "short signature", spec: binSpec(2, 0), in: "PGCOPY",
		err: "22P04 COPY file signature not recognized"},
	{name: "empty", spec: binSpec(2, 0), in: "",
		err: "22P04 COPY file signature not recognized"},
	{name: "missing flags", spec: binSpec(2, 0), in: binarySignature + "\x00\x00",
		err: "22P04 invalid COPY file header (missing flags)"},
}

func TestBinary(t *testing.T) {
	for _, tc := range binaryCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunks := range chunkings(tc.in) {
				got := split(t, tc.spec, chunks)
				hdrOK := tc.err == "" || tc.header != ""
				if !slices.Equal(got.rows, tc.rows) || got.header != tc.header || got.hdrOK != hdrOK ||
					errString(got.err) != tc.err {
					t.Fatalf("chunks %s\ngot:\n%v\nwant rows %v header %q\nerr: %s", describe(chunks), got, tc.rows, tc.header, tc.err)
				}
			}
		})
	}
}

// TestBinaryAfterTrailer checks that data after the trailer is an error in
// a later Write too, and that an empty Write is not.
func TestBinaryAfterTrailer(t *testing.T) {
	got := split(t, binSpec(1, 0), [][]byte{[]byte(hdr + tup(s("1")) + trailer), nil, []byte("x")})
	if want := "22P04 received copy data after EOF marker | COPY t, line 2"; errString(got.err) != want || !got.ended {
		t.Fatalf("got %v (ended %v), want %s", got, got.ended, want)
	}
}
