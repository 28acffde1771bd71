package copysplit

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pgshard/pgshard/router/plan"
)

// fuzzSpec decodes the fuzzer's mode byte: bits 0-1 the format (text,
// csv, binary, binary), bit 2 HEADER (not binary), bits 3-4 the number of
// columns less one, bits 5-6 the key column (modulo the columns), bit 7 a
// small row size limit.
func fuzzSpec(mode byte, seed uint64) (*plan.CopySpec, []Option) {
	spec := &plan.CopySpec{Columns: 1 + int(mode>>3&3), Format: "text", Delimiter: '\t'}
	spec.KeyColumn = int(mode>>5&3) % spec.Columns
	switch mode & 3 {
	case 1:
		spec.Format, spec.Delimiter = "csv", ','
	case 2, 3:
		spec.Format = "binary"
	}
	spec.Header = mode&4 != 0 && spec.Format != "binary"
	var opts []Option
	if mode&0x80 != 0 {
		opts = append(opts, WithMaxRowSize(len(binarySignature)+8+int(seed%32)))
	}
	return spec, opts
}

// cut splits data at random points, sometimes into empty chunks.
func cut(data []byte, rng *rand.Rand) [][]byte {
	var chunks [][]byte
	for len(data) > 0 {
		n := rng.IntN(min(len(data), 16) + 1)
		if rng.IntN(8) == 0 {
			n = rng.IntN(len(data) + 1)
		}
		chunks = append(chunks, data[:n:n])
		data = data[n:]
	}
	return chunks
}

// FuzzSplit checks, for any input, that splitting does not panic; that
// the rows, header and error do not depend on how the input is cut into
// CopyData messages; that the header and rows are the input itself, up to
// the end marker or trailer; and that every shard's stream splits into
// the same rows again.
func FuzzSplit(f *testing.F) {
	f.Add(byte(0), uint64(1), []byte("1\tx\n2\ty\n"))
	f.Add(byte(1), uint64(2), []byte("1,\"a\nb\"\n2,y\n"))
	f.Add(byte(2), uint64(3), []byte(hdr+tup(s("1"))+trailer))
	f.Fuzz(func(t *testing.T, mode byte, seed uint64, data []byte) {
		spec, opts := fuzzSpec(mode, seed)
		whole := split(t, spec, [][]byte{data}, opts...)
		rng := rand.New(rand.NewPCG(seed, uint64(len(data))))
		tries := [][][]byte{cut(data, rng), cut(data, rng)}
		if len(data) <= 512 {
			one := make([][]byte, len(data))
			for i := range data {
				one[i] = data[i : i+1 : i+1]
			}
			tries = append(tries, one)
		}
		for _, chunks := range tries {
			got := split(t, spec, chunks, opts...)
			if !slices.Equal(got.rows, whole.rows) || got.header != whole.header || got.hdrOK != whole.hdrOK ||
				got.ended != whole.ended || errString(got.err) != errString(whole.err) {
				t.Fatalf("chunks %s:\ngot:\n%v\nwhole:\n%v", describe(chunks), got, whole)
			}
		}
		if whole.err != nil {
			return
		}
		cat := []byte(whole.header)
		for _, r := range whole.rows {
			cat = append(cat, r.data...)
		}
		if !bytes.HasPrefix(data, cat) {
			t.Fatalf("header and rows %q are not a prefix of the input", cat)
		}
		rest := data[len(cat):]
		switch {
		case spec.Format == "binary" && whole.ended:
			if string(rest) != "\xff\xff" {
				t.Fatalf("after the rows of ended binary data: %q", rest)
			}
		case spec.Format == "binary":
			if len(rest) > 1 {
				t.Fatalf("after the rows of binary data: %q", rest)
			}
		case whole.ended:
			if !bytes.HasPrefix(rest, []byte(`\.`)) {
				t.Fatalf("after the rows of ended data: %q", rest)
			}
		case len(rest) > 0:
			t.Fatalf("after the rows: %q", rest)
		}
		checkShardStreams(t, spec, whole, opts...)
	})
}
