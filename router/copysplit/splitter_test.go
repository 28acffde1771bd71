package copysplit

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/pgshard/pgshard/router/plan"
)

func TestNewRefuses(t *testing.T) {
	tests := []struct {
		name string
		spec *plan.CopySpec
		opts []Option
		err  string // errString; "plain: ..." for a programming error
	}{
		{name: "unknown format", spec: &plan.CopySpec{Columns: 1, Format: "xml"},
			err: `22023 COPY format "xml" not recognized`},
		{name: "binary header", spec: withHeader(binSpec(1, 0)),
			err: "0A000 cannot specify HEADER in BINARY mode"},
		{name: "newline delimiter", spec: withDelim(csvSpec(2, 0), '\n'),
			err: "22023 COPY delimiter cannot be newline or carriage return"},
		{name: "cr delimiter", spec: withDelim(textSpec(2, 0), '\r'),
			err: "22023 COPY delimiter cannot be newline or carriage return"},
		{name: "backslash delimiter", spec: withDelim(textSpec(2, 0), '\\'),
			err: `22023 COPY delimiter cannot be "\"`},
		{name: "letter delimiter", spec: withDelim(textSpec(2, 0), 'x'),
			err: `22023 COPY delimiter cannot be "x"`},
		{name: "digit delimiter", spec: withDelim(textSpec(2, 0), '1'),
			err: `22023 COPY delimiter cannot be "1"`},
		{name: "dot delimiter", spec: withDelim(textSpec(2, 0), '.'),
			err: `22023 COPY delimiter cannot be "."`},
		{name: "N delimiter", spec: withDelim(textSpec(2, 0), 'N'),
			err: "0A000 COPY delimiter must not appear in the NULL specification"},
		{name: "quote delimiter in csv", spec: withDelim(csvSpec(2, 0), '"'),
			err: "22023 COPY delimiter and quote must be different"},
		{name: "non-ASCII delimiter", spec: withDelim(textSpec(2, 0), 0xe9),
			err: "0A000 COPY delimiter must be an ASCII character for a sharded table"},
		{name: "SJIS", spec: textSpec(2, 0), opts: []Option{WithClientEncoding("Shift_JIS")},
			err: "0A000 COPY into a sharded table in client encoding Shift_JIS is not supported"},
		{name: "GB18030", spec: csvSpec(2, 0), opts: []Option{WithClientEncoding("gb18030")},
			err: "0A000 COPY into a sharded table in client encoding gb18030 is not supported"},
		{name: "key out of range", spec: textSpec(2, 2), err: "plain: copysplit: key column 2 out of range for 2 columns"},
		{name: "no columns", spec: textSpec(0, 0), err: "plain: copysplit: key column 0 out of range for 0 columns"},
		{name: "wrong number of names", spec: textSpec(2, 0), opts: []Option{WithColumnNames("a")},
			err: "plain: copysplit: 1 column names for 2 columns"},
		{name: "bad row limit", spec: textSpec(2, 0), opts: []Option{WithMaxRowSize(0)},
			err: "plain: copysplit: row size limit 0 is not positive"},
		{name: "nil spec", err: "plain: copysplit: nil spec or route"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.spec, testRoute, tc.opts...)
			if s != nil || errString(err) != tc.err {
				t.Fatalf("New = %v, %q; want nil, %q", s, errString(err), tc.err)
			}
		})
	}
	// What PostgreSQL accepts, the splitter accepts.
	for _, spec := range []*plan.CopySpec{withDelim(textSpec(2, 0), '"'), withDelim(textSpec(2, 0), 'A'),
		withDelim(csvSpec(2, 0), '\\'), withDelim(csvSpec(2, 0), 'a'), withDelim(csvSpec(2, 0), '.'),
		{Columns: 1, Format: "CSV", Delimiter: ','}, {Columns: 1, Delimiter: '\t'}} {
		if _, err := New(spec, testRoute, WithClientEncoding("LATIN1")); err != nil {
			t.Errorf("New(%+v): %v", spec, err)
		}
	}
}

func TestColumnNamesAndEncoding(t *testing.T) {
	got := split(t, textSpec(2, 0), [][]byte{[]byte("1\n")}, WithColumnNames("id", "name"))
	if want := `22P04 missing data for column "name" | COPY t, line 1: "1"`; errString(got.err) != want {
		t.Errorf("got %s, want %s", errString(got.err), want)
	}
	got = split(t, textSpec(2, 0), [][]byte{[]byte("a\x00\n")}, WithClientEncoding("LATIN1"))
	if want := `22021 invalid byte sequence for encoding "LATIN1": 0x00 | COPY t, line 1`; errString(got.err) != want {
		t.Errorf("got %s, want %s", errString(got.err), want)
	}
}

// within reports whether b lies inside p's memory.
func within(b, p []byte) bool {
	if len(b) == 0 || len(p) == 0 {
		return false
	}
	start, end := uintptr(unsafe.Pointer(&p[0])), uintptr(unsafe.Pointer(&p[0]))+uintptr(len(p))
	q := uintptr(unsafe.Pointer(&b[0]))
	return q >= start && q+uintptr(len(b)) <= end
}

// TestZeroCopy checks that rows inside one Write are passed as slices of
// it, and that the key of an unescaped row is too.
func TestZeroCopy(t *testing.T) {
	for _, tc := range []struct {
		spec *plan.CopySpec
		a, b string // two Writes; the second row spans them
	}{
		{textSpec(2, 1), "1\tx\n2\t", "y\n3\tz\n"},
		{csvSpec(2, 1), "1,x\n2,", "y\n3,z\n"},
		{binSpec(2, 1), hdr + tup(s("1"), s("x")) + tup(s("2"), s("y"))[:4], tup(s("2"), s("y"))[4:] + tup(s("3"), s("z"))},
	} {
		var p []byte
		var inP []bool
		var keyInP []bool
		s, err := New(tc.spec, func(key []byte, null bool) (int, error) {
			keyInP = append(keyInP, within(key, p))
			return 0, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		emit := func(_ int, row []byte) error {
			inP = append(inP, within(row, p))
			return nil
		}
		for _, in := range []string{tc.a, tc.b} {
			p = []byte(in)
			if err := s.Write(p, emit); err != nil {
				t.Fatal(err)
			}
		}
		if want := []bool{true, false, true}; !slices.Equal(inP, want) || !slices.Equal(keyInP, want) {
			t.Errorf("%s: rows in p %v, keys in p %v, want %v", tc.spec.Format, inP, keyInP, want)
		}
	}
}

// TestNoAllocs checks that splitting complete rows allocates nothing, in
// every format, with and without escapes.
func TestNoAllocs(t *testing.T) {
	tests := []struct {
		name string
		spec *plan.CopySpec
		data string
	}{
		{"text", textSpec(3, 1), strings.Repeat("1\tkey\tvalue\n", 100)},
		{"text escaped", textSpec(3, 1), strings.Repeat("1\tk\\tey\tva\\\\lue\n", 100)},
		{"csv", csvSpec(3, 1), strings.Repeat("1,key,value\n", 100)},
		{"csv quoted", csvSpec(3, 1), strings.Repeat("1,\"k,ey\",\"va\"\"lue\"\n", 100)},
		{"binary", binSpec(3, 1), strings.Repeat(tup(s("1"), s("key"), s("value")), 100)},
	}
	for _, tc := range tests {
		s, err := New(tc.spec, testRoute)
		if err != nil {
			t.Fatal(err)
		}
		emit := func(int, []byte) error { return nil }
		if tc.spec.Format == "binary" {
			if err := s.Write([]byte(hdr), emit); err != nil {
				t.Fatal(err)
			}
		}
		data := []byte(tc.data)
		// Warm up the key buffer.
		if err := s.Write(data, emit); err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(20, func() {
			if err := s.Write(data, emit); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: %v allocations per Write", tc.name, n)
		}
	}
}

// TestMaxRowSize checks the row size limit, which must not depend on how
// the data is cut either.
func TestMaxRowSize(t *testing.T) {
	tests := []struct {
		name string
		spec *plan.CopySpec
		in   string
		rows int
		err  string
	}{
		{"text at the limit", textSpec(1, 0), "12345678\n1234567\n", 2, ""},
		{"text over the limit", textSpec(1, 0), "12345678\n123456789\n", 1, "54000 COPY row is too large | COPY t, line 2"},
		{"text over the limit with escapes", textSpec(1, 0), "1\\t34567\\\n\n", 0, "54000 COPY row is too large | COPY t, line 1"},
		{"text last line at the limit", textSpec(1, 0), "123456789", 1, ""},
		{"text last line over the limit", textSpec(1, 0), "1234567890", 0, "54000 COPY row is too large | COPY t, line 1"},
		{"text cr line at the limit", textSpec(1, 0), "12345678\r1\r", 2, ""},
		{"text crlf line over the limit", textSpec(1, 0), "1234567\r\n12345678\r\n", 1, "54000 COPY row is too large | COPY t, line 2"},
		{"text end marker counts", textSpec(1, 0), "1234567\\.\n", 0, "54000 COPY row is too large | COPY t, line 1"},
		{"csv quoted over the limit", csvSpec(1, 0), "\"1\n2\n3\n4\n5\"\n", 0, "54000 COPY row is too large | COPY t, line 1"},
		{"header over the limit", withHeader(csvSpec(1, 0)), "abcdefghij\n1\n", 0, "54000 COPY row is too large | COPY t, line 1"},
		{"binary at the limit", binSpec(1, 0), hdr + tup(s("1")) + tup(s("1234567890123")) + trailer, 2, ""},
		{"binary over the limit", binSpec(1, 0), hdr + tup(s("1")) + tup(s("12345678901234")) + trailer, 1, "54000 COPY row is too large | COPY t, line 2, column #1"},
		{"binary header extension over the limit", binSpec(1, 0), binHeader(0, "x") + trailer, 0, "54000 COPY row is too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			limit := 9
			if tc.spec.Format == "binary" {
				limit = len(hdr) // the header counts as a row
			}
			for _, chunks := range chunkings(tc.in) {
				got := split(t, tc.spec, chunks, WithMaxRowSize(limit))
				if len(got.rows) != tc.rows || errString(got.err) != tc.err {
					t.Fatalf("chunks %s: got %v, want %d rows, err %s", describe(chunks), got, tc.rows, tc.err)
				}
			}
		})
	}
}

// TestHeaderTiming checks when Header becomes known.
func TestHeaderTiming(t *testing.T) {
	s, err := New(withHeader(csvSpec(1, 0)), testRoute)
	if err != nil {
		t.Fatal(err)
	}
	emit := func(int, []byte) error { return nil }
	if h, ok := s.Header(); h != nil || ok {
		t.Fatalf("Header before data = %q, %v", h, ok)
	}
	if err := s.Write([]byte("a,\"b"), emit); err != nil {
		t.Fatal(err)
	}
	if h, ok := s.Header(); h != nil || ok {
		t.Fatalf("Header in the middle of the line = %q, %v", h, ok)
	}
	if err := s.Write([]byte("\nc\"\n1\n"), emit); err != nil {
		t.Fatal(err)
	}
	if h, ok := s.Header(); string(h) != "a,\"b\nc\"\n" || !ok {
		t.Fatalf("Header = %q, %v", h, ok)
	}

	s, _ = New(textSpec(1, 0), testRoute)
	if h, ok := s.Header(); h != nil || !ok {
		t.Fatalf("Header without HEADER = %q, %v", h, ok)
	}
	s, _ = New(withHeader(textSpec(1, 0)), testRoute)
	if err := s.Close(emit); err != nil {
		t.Fatal(err)
	}
	if h, ok := s.Header(); h != nil || !ok {
		t.Fatalf("Header of empty data = %q, %v", h, ok)
	}
}

func TestTrailer(t *testing.T) {
	for format, want := range map[string]string{"text": "", "csv": "", "binary": "\xff\xff"} {
		s, err := New(&plan.CopySpec{Columns: 1, Format: format, Delimiter: ','}, testRoute)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(s.Trailer()); got != want {
			t.Errorf("%s: Trailer = %q, want %q", format, got, want)
		}
	}
}

// TestErrorsStick checks that an error from emit is returned unchanged,
// and that it and any other error is returned again by later calls.
func TestErrorsStick(t *testing.T) {
	boom := errors.New("boom")
	s, _ := New(textSpec(1, 0), testRoute)
	emit := func(int, []byte) error { return boom }
	if err := s.Write([]byte("1\n2\n"), emit); err != boom {
		t.Fatalf("Write = %v, want boom", err)
	}
	if err := s.Write([]byte("3\n"), nil); err != boom {
		t.Fatalf("second Write = %v, want boom", err)
	}
	if err := s.Close(nil); err != boom {
		t.Fatalf("Close = %v, want boom", err)
	}

	s, _ = New(textSpec(1, 0), testRoute)
	if err := s.Write([]byte("1\t2\n"), nil); errString(err) != `22P04 extra data after last expected column | COPY t, line 1: "1	2"` {
		t.Fatalf("Write = %v", err)
	}
	if err := s.Close(nil); errString(err) != `22P04 extra data after last expected column | COPY t, line 1: "1	2"` {
		t.Fatalf("Close = %v", err)
	}

	s, _ = New(textSpec(1, 0), testRoute)
	if err := s.Close(nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Write([]byte("1\n"), nil); err == nil {
		t.Fatal("Write after Close succeeded")
	}
}

// pgError is an error with a SQLSTATE, as pgconn.PgError is.
type pgError struct{ code string }

func (e pgError) Error() string    { return "pg says no" }
func (e pgError) SQLState() string { return e.code }

func TestRouteErrors(t *testing.T) {
	plain := errors.New("no shard for key")
	tests := []struct {
		err   error
		want  string
		where string
	}{
		{plain, "XX000 no shard for key", `COPY t, line 1, column #1: "k"`},
		{pgError{"23502"}, "23502 pg says no", `COPY t, line 1, column #1: "k"`},
		{&Error{Code: "22003", Message: "value out of range", Hint: "h"}, "22003 value out of range", `COPY t, line 1, column #1: "k"`},
	}
	for _, tc := range tests {
		s, _ := New(textSpec(1, 0), func([]byte, bool) (int, error) { return 0, tc.err })
		err := s.Write([]byte("k\n"), nil)
		var e *Error
		if !errors.As(err, &e) || e.Code+" "+e.Message != tc.want || e.Where("t") != tc.where || !errors.Is(err, tc.err) {
			t.Errorf("route error %v: got %v", tc.err, err)
		}
	}
	s, _ := New(textSpec(1, 0), func([]byte, bool) (int, error) { return 0, plain })
	err := s.Write([]byte("\\N\n"), nil)
	var e *Error
	if !errors.As(err, &e) || e.Where("users") != "COPY users, line 1, column #1: null input" {
		t.Errorf("NULL key: got %v", err)
	}
}

func TestErrorText(t *testing.T) {
	e := lineError(3, []byte(strings.Repeat("x", 99)+"é"), "extra data after last expected column")
	if want := `COPY users, line 3: "` + strings.Repeat("x", 99) + `..."`; e.Where("users") != want {
		t.Errorf("Where = %q, want %q", e.Where("users"), want)
	}
	if want := `extra data after last expected column (SQLSTATE 22P04); line 3: "` + strings.Repeat("x", 99) + `..."`; e.Error() != want {
		t.Errorf("Error = %q, want %q", e.Error(), want)
	}
	e = headerError("COPY file signature not recognized")
	if e.Where("users") != "" || e.Error() != "COPY file signature not recognized (SQLSTATE 22P04)" || e.SQLState() != "22P04" {
		t.Errorf("header error: %q, %q", e.Where("users"), e.Error())
	}
	if got := display([]byte(strings.Repeat("é", 60))); got != strings.Repeat("é", 50)+"..." {
		t.Errorf("display cut a character: %q", got)
	}
}

// TestShardStreams checks what the proxy relies on: each shard's stream,
// Header + its rows + Trailer, splits into the same rows again, so each
// shard reads what PostgreSQL would have read from the client.
func TestShardStreams(t *testing.T) {
	for _, tc := range slices.Concat(textCases, binaryCases) {
		if tc.err != "" {
			continue
		}
		got := split(t, tc.spec, [][]byte{[]byte(tc.in)})
		checkShardStreams(t, tc.spec, got)
	}
}

// checkShardStreams re-splits every shard's stream of o and compares.
func checkShardStreams(t *testing.T, spec *plan.CopySpec, o outcome, opts ...Option) {
	t.Helper()
	streams := map[int][]byte{}
	want := map[int][]row{}
	for i, r := range o.rows {
		sh := o.shards[i]
		if streams[sh] == nil {
			streams[sh] = []byte(o.header)
		}
		streams[sh] = append(streams[sh], r.data...)
		want[sh] = append(want[sh], r)
	}
	trailer := ""
	if spec.Format == "binary" {
		trailer = "\xff\xff"
	}
	for sh, st := range streams {
		got := split(t, spec, [][]byte{append(st, trailer...)}, opts...)
		if got.err != nil || got.header != o.header || !slices.Equal(got.rows, want[sh]) {
			t.Fatalf("shard %d stream %q:\ngot %v\nwant %v", sh, st, got, want[sh])
		}
	}
}

// TestLongRowsSpanningWrites checks rows much longer than a CopyData
// message: they are emitted whole and their buffer is not kept.
func TestLongRowsSpanningWrites(t *testing.T) {
	long := strings.Repeat("ab\\\\cd\\n", 300000) // 2.4 MB
	tests := []struct {
		spec *plan.CopySpec
		in   string
		key  string
	}{
		{textSpec(2, 1), "1\t" + long + "\n2\tx\n", strings.Repeat("ab\\cd\n", 300000)},
		{csvSpec(2, 1), "1,\"" + strings.Repeat("a\nb\"\"", 500000) + "\"\n2,x\n", strings.Repeat("a\nb\"", 500000)},
		{binSpec(2, 1), hdr + tup(s("1"), s(long)) + tup(s("2"), s("x")) + trailer, long},
	}
	for _, tc := range tests {
		var keys []string
		var rows []int
		sp, err := New(tc.spec, func(key []byte, null bool) (int, error) {
			keys = append(keys, string(key))
			return 0, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		emit := func(_ int, row []byte) error {
			rows = append(rows, len(row))
			return nil
		}
		for p := []byte(tc.in); len(p) > 0; {
			n := min(4096, len(p))
			if err := sp.Write(p[:n], emit); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
		kept := cap(sp.buf)
		if err := sp.Close(emit); err != nil {
			t.Fatal(err)
		}
		h, _ := sp.Header()
		want := len(tc.in) - len(h) - len(sp.Trailer())
		if len(keys) != 2 || keys[0] != tc.key || keys[1] != "x" || kept > bufKeep || len(rows) != 2 || rows[0]+rows[1] != want {
			t.Errorf("%s: keys %d, first %d bytes; rows %v, want %d bytes; buffer %d bytes kept",
				tc.spec.Format, len(keys), len(keys[0]), rows, want, kept)
		}
	}
}
