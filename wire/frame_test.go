package wire_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pgshard/pgshard/wire"
)

// typedFrame builds a typed frame: type byte, int32 length (itself
// included), body.
func typedFrame(typ byte, body []byte) []byte {
	out := make([]byte, 5, 5+len(body))
	out[0] = typ
	binary.BigEndian.PutUint32(out[1:], uint32(len(body)+4))
	return append(out, body...)
}

// header builds just a frame header declaring length n.
func header(typ byte, n uint32) []byte {
	out := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], n)
	return out
}

func body(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// readerWrappers feed a stream to the FrameReader in different chunkings.
var readerWrappers = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"whole", func(r io.Reader) io.Reader { return r }},
	{"one byte", iotest.OneByteReader},
	{"half", iotest.HalfReader},
	{"data+EOF", iotest.DataErrReader},
}

func TestFrameReaderRoundTrip(t *testing.T) {
	sizes := []int{0, 1, 2, 11, 16 - 5, 16 - 4, 100, 4096 - 5, 4096 - 4, 4096, 10000, 70000, 1<<20 + 3}
	var stream []byte
	var want [][]byte
	for i, n := range sizes {
		f := typedFrame(byte('A'+i), body(n, byte(i)))
		stream = append(stream, f...)
		want = append(want, f)
	}
	for _, bufSize := range []int{16, 4096, 1 << 16} {
		for _, w := range readerWrappers {
			t.Run(w.name+"/buf"+itoa(bufSize), func(t *testing.T) {
				fr := wire.NewFrameReader(bufio.NewReaderSize(w.wrap(bytes.NewReader(stream)), bufSize), 0)
				for i, wf := range want {
					typ, got, err := fr.Next()
					if err != nil {
						t.Fatalf("frame %d (%d bytes): %v", i, len(wf), err)
					}
					if typ != wf[0] {
						t.Fatalf("frame %d: type %q, want %q", i, typ, wf[0])
					}
					if !bytes.Equal(got, wf) {
						t.Fatalf("frame %d: got %d bytes, want %d (contents differ)", i, len(got), len(wf))
					}
				}
				if typ, f, err := fr.Next(); err != io.EOF {
					t.Fatalf("after last frame: (%q, %d bytes, %v), want io.EOF", typ, len(f), err)
				}
				// EOF is sticky.
				if _, _, err := fr.Next(); err != io.EOF {
					t.Fatalf("second read after EOF: %v, want io.EOF", err)
				}
			})
		}
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// TestFrameReaderValidUntilNext checks the documented contract from the
// caller's side: a frame copied before the next call is intact, and the
// slice itself may be reused by the next call (large frames share one
// buffer), so holding on to it is a bug.
func TestFrameReaderValidUntilNext(t *testing.T) {
	a := typedFrame('D', bytes.Repeat([]byte{'a'}, 100))
	b := typedFrame('D', bytes.Repeat([]byte{'b'}, 100))
	fr := wire.NewFrameReader(bufio.NewReaderSize(bytes.NewReader(append(append([]byte{}, a...), b...)), 16), 0)
	_, f1, err := fr.Next()
	if err != nil {
		t.Fatal(err)
	}
	kept := append([]byte(nil), f1...)
	_, f2, err := fr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(kept, a) || !bytes.Equal(f2, b) {
		t.Fatal("copied frame or second frame corrupted")
	}
	if &f1[0] != &f2[0] {
		t.Log("large frames no longer share a buffer; the contract still holds")
	} else if bytes.Equal(f1, a) {
		t.Fatal("f1 aliases f2 but still holds the first frame")
	}
}

// TestFrameReaderNoAllocs checks the hot path does not allocate per frame
// once warmed up, for frames that fit the bufio buffer and frames that
// do not.
func TestFrameReaderNoAllocs(t *testing.T) {
	for _, n := range []int{10, 8000} {
		f := typedFrame('d', body(n, 1))
		var stream []byte
		for range 200 {
			stream = append(stream, f...)
		}
		br := bufio.NewReaderSize(bytes.NewReader(stream), 4096)
		fr := wire.NewFrameReader(br, 0)
		if _, _, err := fr.Next(); err != nil { // warm up the large buffer
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(100, func() {
			if _, _, err := fr.Next(); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%d-byte frames: %v allocs per Next, want 0", n, allocs)
		}
	}
}

// strictReader serves data and fails the test if anyone reads past it:
// it stands for a client that sent a header and is now silent.
type strictReader struct {
	t    *testing.T
	data []byte
}

func (r *strictReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		r.t.Errorf("read past the %s", "header: the reader would block here")
		return 0, errors.New("strictReader: read past end")
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestFrameReaderLimits(t *testing.T) {
	const limit = 1024
	tests := []struct {
		name    string
		stream  []byte
		limit   int
		want    error // nil: one frame of the whole stream, then io.EOF
		noReads bool  // the stream is a header only; nothing past it may be read
	}{
		{name: "body exactly at limit", stream: typedFrame('Q', body(limit, 3)), limit: limit},
		{name: "body one over limit", stream: header('Q', limit+4+1), limit: limit, want: wire.ErrMessageTooLarge, noReads: true},
		{name: "length 2^31-1, default limit", stream: header('Q', 1<<31-1), want: wire.ErrMessageTooLarge, noReads: true},
		{name: "length 2^31-1, 1 KiB limit", stream: header('Q', 1<<31-1), limit: limit, want: wire.ErrMessageTooLarge, noReads: true},
		{name: "length 1 GiB+5, default limit", stream: header('Q', 1<<30+5), want: wire.ErrMessageTooLarge, noReads: true},
		{name: "length 4 (empty body)", stream: typedFrame('S', nil)},
		{name: "length 3", stream: header('S', 3), want: wire.ErrMalformed, noReads: true},
		{name: "length 0", stream: header('S', 0), want: wire.ErrMalformed, noReads: true},
		{name: "length -1", stream: header('S', 0xffffffff), want: wire.ErrMalformed, noReads: true},
		{name: "length 2^31 (negative int32)", stream: header('S', 1<<31), want: wire.ErrMalformed, noReads: true},
		{name: "truncated header", stream: []byte{'Q', 0, 0}, want: io.ErrUnexpectedEOF},
		{name: "type byte only", stream: []byte{'Q'}, want: io.ErrUnexpectedEOF},
		{name: "truncated small body", stream: typedFrame('Q', body(100, 0))[:50], want: io.ErrUnexpectedEOF},
		{name: "truncated large body", stream: typedFrame('Q', body(10000, 0))[:9000], want: io.ErrUnexpectedEOF},
		{name: "header only, small body", stream: header('Q', 10), want: io.ErrUnexpectedEOF},
		{name: "empty stream", stream: nil, want: io.EOF},
	}
	for _, tt := range tests {
		for _, w := range readerWrappers {
			t.Run(tt.name+"/"+w.name, func(t *testing.T) {
				var src io.Reader = bytes.NewReader(tt.stream)
				if tt.noReads {
					if w.name == "data+EOF" {
						t.Skip("iotest.DataErrReader reads ahead by itself")
					}
					src = &strictReader{t: t, data: tt.stream}
				}
				fr := wire.NewFrameReader(bufio.NewReaderSize(w.wrap(src), 64), tt.limit)
				var ms0, ms1 runtime.MemStats
				runtime.ReadMemStats(&ms0)
				_, f, err := fr.Next()
				runtime.ReadMemStats(&ms1)
				if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 64<<10 {
					t.Errorf("Next allocated %d bytes", alloc)
				}
				if tt.want == nil {
					if err != nil || !bytes.Equal(f, tt.stream) {
						t.Fatalf("Next = (%d bytes, %v), want the whole stream", len(f), err)
					}
					if _, _, err := fr.Next(); err != io.EOF {
						t.Fatalf("second Next: %v, want io.EOF", err)
					}
					return
				}
				if !errors.Is(err, tt.want) {
					t.Fatalf("Next error = %v, want %v", err, tt.want)
				}
				if f != nil {
					t.Fatalf("Next returned %d bytes with an error", len(f))
				}
			})
		}
	}
}

func TestFrameReaderTooLargeKeepsType(t *testing.T) {
	fr := wire.NewFrameReader(bufio.NewReader(bytes.NewReader(header('P', 1<<20))), 1024)
	typ, _, err := fr.Next()
	if !errors.Is(err, wire.ErrMessageTooLarge) || typ != 'P' {
		t.Fatalf("Next = (%q, %v), want ('P', ErrMessageTooLarge)", typ, err)
	}
	if !strings.Contains(err.Error(), "limit 1024") {
		t.Errorf("error %q does not name the limit", err)
	}
}

func TestFrameReaderIOError(t *testing.T) {
	boom := errors.New("boom")
	for _, stream := range [][]byte{nil, {'Q', 0}, typedFrame('Q', body(10, 0))[:8], typedFrame('Q', body(5000, 0))[:100]} {
		r := io.MultiReader(bytes.NewReader(stream), iotest.ErrReader(boom))
		fr := wire.NewFrameReader(bufio.NewReaderSize(r, 16), 0)
		if _, _, err := fr.Next(); !errors.Is(err, boom) {
			t.Errorf("stream of %d bytes then error: Next error = %v, want %v", len(stream), err, boom)
		}
	}
}

func TestFrameReaderBuffered(t *testing.T) {
	stream := append(typedFrame('Z', []byte{'I'}), typedFrame('Z', []byte{'I'})...)
	fr := wire.NewFrameReader(bufio.NewReader(bytes.NewReader(stream)), 0)
	if _, _, err := fr.Next(); err != nil {
		t.Fatal(err)
	}
	if got := fr.Buffered(); got != 6 {
		t.Errorf("Buffered after first frame = %d, want 6", got)
	}
	if _, _, err := fr.Next(); err != nil {
		t.Fatal(err)
	}
	if got := fr.Buffered(); got != 0 {
		t.Errorf("Buffered after last frame = %d, want 0", got)
	}
}

func TestFrameReaderReleaseLarge(t *testing.T) {
	big := typedFrame('d', body(2<<20, 9))
	small := typedFrame('d', body(10, 1))
	var stream []byte
	stream = append(stream, big...)
	stream = append(stream, small...)
	stream = append(stream, big...)
	fr := wire.NewFrameReader(bufio.NewReader(bytes.NewReader(stream)), 0)
	for i, want := range [][]byte{big, small, big} {
		fr.ReleaseLarge()
		_, got, err := fr.Next()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("frame %d after ReleaseLarge: (%d bytes, %v)", i, len(got), err)
		}
	}
}

// TestFrameReaderAllocatesAsDataArrives: a peer that declares a large
// (but allowed) length and then sends nothing must not make the proxy
// allocate the declared size: with the 1 GiB default, a few hundred idle
// connections would otherwise exhaust memory.
func TestFrameReaderAllocatesAsDataArrives(t *testing.T) {
	const declared = 64 << 20
	src := bytes.NewReader(append(header('d', declared+4), body(100, 0)...))
	fr := wire.NewFrameReader(bufio.NewReader(src), 0)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	_, _, err := fr.Next()
	runtime.ReadMemStats(&ms1)
	if err == nil {
		t.Fatal("Next succeeded on a truncated stream")
	}
	if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 1<<20 {
		t.Errorf("Next allocated %d bytes for a frame declaring %d of which 100 arrived", alloc, declared)
	}
}
