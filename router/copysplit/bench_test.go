package copysplit

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/router/plan"
)

// benchRows returns about 4 MB of rows made by row(i).
func benchRows(row func(i int) string) []byte {
	var b strings.Builder
	for i := 0; b.Len() < 4<<20; i++ {
		b.WriteString(row(i))
	}
	return []byte(b.String())
}

// benchSplit splits data in CopyData payloads of chunk bytes (0: one row
// per payload, as rows gives them) and reports the throughput.
func benchSplit(b *testing.B, spec *plan.CopySpec, header string, data []byte, chunk int, rows []int) {
	route := func(key []byte, null bool) (int, error) {
		if len(key) == 0 {
			return 0, nil
		}
		return int(key[len(key)-1]) & 3, nil
	}
	emit := func(int, []byte) error { return nil }
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		s, err := New(spec, route)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Write([]byte(header), emit); err != nil {
			b.Fatal(err)
		}
		if chunk > 0 {
			for p := data; len(p) > 0; {
				n := min(chunk, len(p))
				if err := s.Write(p[:n], emit); err != nil {
					b.Fatal(err)
				}
				p = p[n:]
			}
		} else {
			off := 0
			for _, n := range rows {
				if err := s.Write(data[off:off+n], emit); err != nil {
					b.Fatal(err)
				}
				off += n
			}
		}
		if err := s.Close(emit); err != nil {
			b.Fatal(err)
		}
	}
}

// rowLengths returns the length of each row of data, split by sep.
func rowLengths(data []byte, row func(i int) string) []int {
	var out []int
	for i, n := 0, 0; n < len(data); i++ {
		l := len(row(i))
		out = append(out, l)
		n += l
	}
	return out
}

func benchFormats(b *testing.B, spec *plan.CopySpec, header string, row func(i int) string) {
	data := benchRows(row)
	for _, chunk := range []int{65536, 8192} {
		b.Run(fmt.Sprintf("chunk=%d", chunk), func(b *testing.B) { benchSplit(b, spec, header, data, chunk, nil) })
	}
	rows := rowLengths(data, row)
	b.Run("chunk=row", func(b *testing.B) { benchSplit(b, spec, header, data, 0, rows) })
}

func BenchmarkSplitText(b *testing.B) {
	benchFormats(b, textSpec(4, 0), "", func(i int) string {
		return fmt.Sprintf("%d\tuser %d\tuser%d@example.com\t2024-01-%02d 12:00:00+00\n", i, i, i, i%28+1)
	})
}

func BenchmarkSplitTextEscaped(b *testing.B) {
	benchFormats(b, textSpec(4, 1), "", func(i int) string {
		return fmt.Sprintf("%d\tuser\\t%d\tline one\\nline two \\\\ %d\t\\N\n", i, i, i)
	})
}

func BenchmarkSplitCSV(b *testing.B) {
	benchFormats(b, csvSpec(4, 0), "", func(i int) string {
		return fmt.Sprintf("%d,user %d,user%d@example.com,2024-01-%02d 12:00:00+00\n", i, i, i, i%28+1)
	})
}

func BenchmarkSplitCSVQuoted(b *testing.B) {
	benchFormats(b, csvSpec(4, 1), "", func(i int) string {
		return fmt.Sprintf("%d,\"user, %d\",\"say \"\"hi\"\"\n%d\",\n", i, i, i)
	})
}

func BenchmarkSplitBinary(b *testing.B) {
	benchFormats(b, binSpec(4, 0), hdr, func(i int) string {
		key := string([]byte{0, 0, 0, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)})
		return tup(s(key), s(fmt.Sprintf("user %d", i)), s(fmt.Sprintf("user%d@example.com", i)), nil)
	})
}
