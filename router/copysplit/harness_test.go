package copysplit

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/router/plan"
)

// row is an emitted row and the key it was routed by, as the tests
// compare them.
type row struct {
	key  string // the decoded key, or nullKey
	data string
}

const nullKey = "<NULL>"

func (r row) String() string {
	if r.key == nullKey {
		return fmt.Sprintf("NULL %q", r.data)
	}
	return fmt.Sprintf("%q %q", r.key, r.data)
}

// outcome is everything a split produced.
type outcome struct {
	rows   []row
	shards []int
	header string
	hdrOK  bool
	ended  bool
	err    error
}

// errString renders an error for comparison: SQLSTATE, message and the
// CONTEXT PostgreSQL would send for table t.
func errString(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if !errors.As(err, &e) {
		return "plain: " + err.Error()
	}
	s := e.Code + " " + e.Message
	if w := e.Where("t"); w != "" {
		s += " | " + w
	}
	return s
}

func (o outcome) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "header %q (complete %v)\n", o.header, o.hdrOK)
	for _, r := range o.rows {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "err: %s", errString(o.err))
	return b.String()
}

// testRoute routes by the key's first byte, NULL and empty keys to 0.
func testRoute(key []byte, null bool) (int, error) {
	if null || len(key) == 0 {
		return 0, nil
	}
	return int(key[0]) % 3, nil
}

// split runs the data, cut into chunks, through a new Splitter and
// collects what it emits. Rows are copied, as a caller must.
func split(tb testing.TB, spec *plan.CopySpec, chunks [][]byte, opts ...Option) outcome {
	tb.Helper()
	var o outcome
	var lastKey string
	route := func(key []byte, null bool) (int, error) {
		if null {
			if key != nil {
				tb.Fatalf("NULL key with bytes %q", key)
			}
			lastKey = nullKey
		} else {
			lastKey = string(key)
		}
		if lastKey == "route-error" {
			return 0, InvalidInput("bigint", key)
		}
		return testRoute(key, null)
	}
	s, err := New(spec, route, opts...)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	emit := func(shard int, data []byte) error {
		if !s.hdrDone {
			tb.Fatalf("row %q emitted before the header is complete", data)
		}
		o.rows = append(o.rows, row{key: lastKey, data: string(data)})
		o.shards = append(o.shards, shard)
		return nil
	}
	for _, c := range chunks {
		if o.err = s.Write(c, emit); o.err != nil {
			break
		}
	}
	if o.err == nil {
		o.err = s.Close(emit)
	}
	h, ok := s.Header()
	o.header, o.hdrOK, o.ended = string(h), ok, s.Ended()
	return o
}

// chunkings returns in cut in the ways the tests try: whole, at every
// byte boundary into two, one byte at a time, and for short inputs at
// every pair of boundaries into three.
func chunkings(in string) [][][]byte {
	b := []byte(in)
	out := [][][]byte{{b}}
	for i := 0; i <= len(b); i++ {
		out = append(out, [][]byte{b[:i:i], b[i:]})
	}
	one := make([][]byte, len(b))
	for i := range b {
		one[i] = b[i : i+1 : i+1]
	}
	out = append(out, one)
	if len(b) <= 48 {
		for i := 1; i < len(b); i++ {
			for j := i + 1; j < len(b); j++ {
				out = append(out, [][]byte{b[:i:i], b[i:j:j], b[j:]})
			}
		}
	}
	return out
}

// describe shows a chunking for failure messages.
func describe(chunks [][]byte) string {
	var parts []string
	for _, c := range chunks {
		parts = append(parts, fmt.Sprintf("%q", c))
	}
	return strings.Join(parts, " + ")
}

func textSpec(cols, key int) *plan.CopySpec {
	return &plan.CopySpec{KeyColumn: key, Columns: cols, Format: "text", Delimiter: '\t'}
}

func csvSpec(cols, key int) *plan.CopySpec {
	return &plan.CopySpec{KeyColumn: key, Columns: cols, Format: "csv", Delimiter: ','}
}

func withHeader(s *plan.CopySpec) *plan.CopySpec {
	s.Header = true
	return s
}

func withDelim(s *plan.CopySpec, d byte) *plan.CopySpec {
	s.Delimiter = d
	return s
}

// k is a row routed by key; n is a row with a NULL key.
func k(key, data string) row { return row{key: key, data: data} }
func n(data string) row      { return row{key: nullKey, data: data} }
