package merge

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestNumericTextBinaryRoundTrip(t *testing.T) {
	for _, s := range []string{"0", "0.000", "1", "-1", "1.50", "-0.0001", "10000", "12345678.9012345", "0.00000000000000000001",
		"99999999999999999999999999999999.99", "-123456789012345678901234567890.123456789", "NaN", "Infinity", "-Infinity", "100000000",
		"9999999999999999999", "-9999999999999999999", "10000000000000000000", "-1234567890123456789.0", "1844674407370955161.5", "0.0000000000000000001",
		"-9223372036854775808", "-9223372036854775809", "18446744073709551615", "18446744073709551616", "-0.5"} {
		var d, e decimal
		if err := d.parseText([]byte(s)); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if got := string(d.appendText(nil)); got != s {
			t.Errorf("text round trip %q → %q", s, got)
		}
		bin := d.appendBinary(nil)
		if err := e.parseBinary(bin); err != nil {
			t.Fatalf("%s: binary: %v", s, err)
		}
		if got := string(e.appendText(nil)); got != s {
			t.Errorf("binary round trip %q → %q (% x)", s, got, bin)
		}
		if d.cmp(&e) != 0 {
			t.Errorf("%s: cmp after round trip", s)
		}
	}
	// 1.50 as PostgreSQL sends it: ndigits 2, weight 0, sign +, dscale 2, digits 1, 5000.
	var d decimal
	want := []byte{0, 2, 0, 0, 0, 0, 0, 2, 0, 1, 0x13, 0x88}
	if err := d.parseText([]byte("1.50")); err != nil {
		t.Fatal(err)
	}
	if got := d.appendBinary(nil); !bytes.Equal(got, want) {
		t.Errorf("binary 1.50 = % x, want % x", got, want)
	}
}

// TestNumericParseReuse: one decimal parsed again and again (as the merge
// does) holds each value exactly, whatever came before it.
func TestNumericParseReuse(t *testing.T) {
	var d decimal
	for _, s := range []string{"-123456789012345678901234567890.5", "5", "-7.25", "12345678901234567890", "0", "-0.001", "NaN", "3"} {
		if err := d.parseText([]byte(s)); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if got := string(d.appendText(nil)); got != s {
			t.Errorf("parsed %q after other values: %q", s, got)
		}
	}
}

func TestNumericMalformed(t *testing.T) {
	for _, s := range []string{"", "-", "1.2.3", "1e5", " 1", "abc", "."} {
		var d decimal
		if err := d.parseText([]byte(s)); err == nil {
			t.Errorf("parseText(%q) succeeded", s)
		}
	}
	bad := [][]byte{
		{0, 1},
		{0, 1, 0, 0, 0, 0, 0, 0},                   // missing digit
		{0, 1, 0, 0, 0x12, 0x34, 0, 0, 0, 1},       // bad sign
		{0, 1, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF},       // digit >= 10000
		{0, 1, 0xFF, 0xFF, 0, 0, 0, 0, 0x13, 0x88}, // 0.5 with dscale 0: digits beyond scale
	}
	for _, b := range bad {
		var d decimal
		if err := d.parseBinary(b); err == nil {
			t.Errorf("parseBinary(% x) succeeded", b)
		}
	}
}

func TestDivScale(t *testing.T) {
	// Expected values printed by PostgreSQL 15 for SELECT avg(x).
	tests := []struct {
		sum   string
		count int64
		want  string
	}{
		{"3", 2, "1.5000000000000000"},
		{"7", 3, "2.3333333333333333"},
		{"100006", 3, "33335.333333333333"},
		{"3.60", 2, "1.8000000000000000"},
		{"0.00035", 3, "0.000116666666666666666667"},
		{"-3", 3, "-1.00000000000000000000"},
		{"-1", 2, "-0.50000000000000000000"},
		{"123456789013", 2, "61728394506.50000000"},
		{"0.00", 2, "0.00000000000000000000"},
	}
	for _, tt := range tests {
		var s, c, q decimal
		if err := s.parseText([]byte(tt.sum)); err != nil {
			t.Fatal(err)
		}
		c.coef.SetInt64(tt.count)
		q.div(&s, &c)
		if got := string(q.appendText(nil)); got != tt.want {
			t.Errorf("%s/%d = %s, want %s", tt.sum, tt.count, got, tt.want)
		}
	}
}

// FuzzDecodeValue checks that no value a shard can send makes the decoders
// panic, and that DataRow splitting is consistent with building.
func FuzzDecodeValue(f *testing.F) {
	f.Add([]byte("1.50"), uint8(kindNumeric), false)
	f.Add([]byte{0, 2, 0, 0, 0, 0, 0, 2, 0, 1, 0x13, 0x88}, uint8(kindNumeric), true)
	f.Add([]byte("2024-01-02 03:04:05.5+05:30 BC"), uint8(kindTimestamp), false)
	f.Add([]byte(`\x00ff`), uint8(kindBytea), false)
	f.Add([]byte(`\001\\`), uint8(kindBytea), false)
	f.Add(binary.BigEndian.AppendUint64(nil, 7), uint8(kindInt), true)
	f.Fuzz(func(t *testing.T, raw []byte, k uint8, bin bool) {
		var v, w value
		format := int16(0)
		if bin {
			format = 1
		}
		kk := kind(k % (uint8(kindUUID) + 1))
		if err := decodeValue(kk, format, raw, &v); err != nil {
			return
		}
		copyValue(&w, &v)
		if compareValues(kk, &v, &w) != 0 {
			t.Fatalf("value not equal to its copy")
		}
		if !bytes.Equal(appendKey(nil, kk, &v), appendKey(nil, kk, &w)) {
			t.Fatalf("key differs from its copy's")
		}
		frame := appendDataRow(nil, [][]byte{raw, nil})
		vals, err := splitDataRow(frame, 2, nil)
		if err != nil || !bytes.Equal(vals[0], raw) || vals[1] != nil {
			t.Fatalf("DataRow round trip: %v", err)
		}
		_, _ = splitDataRow(raw, 1, nil)
	})
}

// TestNullKeyDropsRowBytes: a NULL decoded into a value that held text
// keeps no reference to the earlier row (the scatter source recycles a
// row's buffer once the merge moved past it), and copying it reads none.
func TestNullKeyDropsRowBytes(t *testing.T) {
	row := []byte("abc")
	var v, prev value
	if err := decodeValue(kindText, 0, row, &v); err != nil || string(v.b) != "abc" {
		t.Fatalf("text: %q %v", v.b, err)
	}
	if err := decodeValue(kindText, 0, nil, &v); err != nil || !v.null || v.b != nil {
		t.Fatalf("NULL after text: null %v, b %q, %v", v.null, v.b, err)
	}
	copy(row, "xyz") // the buffer is reused
	copyValue(&prev, &v)
	if !prev.null || len(prev.b) != 0 {
		t.Errorf("copy of a NULL: null %v, b %q", prev.null, prev.b)
	}
}
