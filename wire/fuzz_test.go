package wire_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pgshard/pgshard/wire"
)

// pgAcceptsLayout is PostgreSQL's own check of a StartupMessage's
// name/value list (ProcessStartupPacket in backend_startup.c): pairs of
// NUL-terminated strings, values may be empty, and an empty name is the
// terminator, which must be the last byte. params is body after the
// version word.
func pgAcceptsLayout(params []byte) bool {
	offset := 0
	for offset < len(params) {
		if params[offset] == 0 {
			break
		}
		name := bytes.IndexByte(params[offset:], 0)
		if name < 0 {
			return false
		}
		val := offset + name + 1
		if val >= len(params) {
			break
		}
		v := bytes.IndexByte(params[val:], 0)
		if v < 0 {
			return false
		}
		offset = val + v + 1
	}
	return offset == len(params)-1
}

// FuzzReadStartup: ReadStartup never panics, never reads past the packet
// it was told about, reports protocol errors as FATAL *wire.Error with a
// SQLSTATE, and accepts nothing PostgreSQL would reject.
func FuzzReadStartup(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		s, err := wire.ReadStartup(r)
		consumed := len(data) - r.Len()
		if consumed > 10000 {
			t.Fatalf("read %d bytes", consumed)
		}
		if len(data) >= 4 {
			n := int(int32(binary.BigEndian.Uint32(data)))
			if n >= 8 && n <= 10000 {
				if consumed != min(n, len(data)) {
					t.Fatalf("declared %d, had %d, consumed %d", n, len(data), consumed)
				}
			} else if consumed != 4 {
				t.Fatalf("invalid length %d: consumed %d bytes, want 4", n, consumed)
			}
		}
		if err != nil {
			var we *wire.Error
			if errors.As(err, &we) {
				if len(we.Code) != 5 || we.Severity != "FATAL" || we.Message == "" {
					t.Fatalf("bad protocol error %+v", we)
				}
				return
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error kind %T: %v", err, err)
			}
			return
		}
		body := data[4:consumed]
		switch s.Kind {
		case wire.KindSSLRequest, wire.KindGSSENCRequest:
			if len(body) != 4 || s.Message != nil || s.Cancel != nil {
				t.Fatalf("%v from a %d-byte body: %+v", s.Kind, len(body), s)
			}
		case wire.KindCancelRequest:
			if s.Cancel == nil || s.Message != nil || !bytes.Equal(s.Cancel.SecretKey, body[8:]) ||
				s.Cancel.ProcessID != binary.BigEndian.Uint32(body[4:]) {
				t.Fatalf("cancel %+v from body %x", s.Cancel, body)
			}
		case wire.KindStartup:
			if body[0] != 0 || body[1] != 3 {
				t.Fatalf("accepted protocol %d.%d", binary.BigEndian.Uint16(body), binary.BigEndian.Uint16(body[2:]))
			}
			if !pgAcceptsLayout(body[4:]) {
				t.Fatalf("accepted a layout PostgreSQL rejects: %q", body[4:])
			}
			m := s.Message
			if m == nil || s.Cancel != nil || m.Parameters["user"] == "" {
				t.Fatalf("startup %+v", s)
			}
			for k := range m.Parameters {
				if strings.HasPrefix(k, "_pq_.") {
					t.Fatalf("protocol option %q left in parameters", k)
				}
			}
			if (binary.BigEndian.Uint16(body[2:]) != 0) && s.Negotiate == nil {
				t.Fatal("newer minor version without Negotiate")
			}
			again, err := m.Encode(nil)
			if err != nil {
				t.Fatalf("re-encode %+v: %v", m, err)
			}
			s2, err := wire.ReadStartup(bytes.NewReader(again))
			if err != nil || !maps.Equal(s2.Message.Parameters, m.Parameters) {
				t.Fatalf("round trip: %+v, %v", s2.Message, err)
			}
		default:
			t.Fatalf("unknown kind %v", s.Kind)
		}
	})
}

// FuzzFrameReader: reading frames from arbitrary bytes never panics,
// returns exactly the consecutive frames of the input (each as long as
// its header says, none over the limit), and ends with an error that
// says why.
func FuzzFrameReader(f *testing.F) {
	const maxSize = 64
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, wrap := range []func(io.Reader) io.Reader{
			func(r io.Reader) io.Reader { return r }, iotest.OneByteReader,
		} {
			fr := wire.NewFrameReader(bufio.NewReaderSize(wrap(bytes.NewReader(data)), 16), maxSize)
			rest := data
			for {
				typ, frame, err := fr.Next()
				if err != nil {
					if frame != nil {
						t.Fatalf("frame returned with error %v", err)
					}
					checkFrameErr(t, rest, err, maxSize)
					break
				}
				if len(frame) < wire.HeaderLen || typ != frame[0] {
					t.Fatalf("frame %x with type %q", frame, typ)
				}
				if n := binary.BigEndian.Uint32(frame[1:]); int(n)+1 != len(frame) || n-4 > maxSize {
					t.Fatalf("frame of %d bytes declares %d", len(frame), n)
				}
				if !bytes.HasPrefix(rest, frame) {
					t.Fatalf("frame %x is not the next bytes of the input", frame)
				}
				rest = rest[len(frame):]
			}
		}
	})
}

// checkFrameErr checks err is the right error for what is left of the
// input when reading stopped.
func checkFrameErr(t *testing.T, rest []byte, err error, maxSize int) {
	t.Helper()
	var want error
	switch {
	case len(rest) == 0:
		want = io.EOF
	case len(rest) < wire.HeaderLen:
		want = io.ErrUnexpectedEOF
	default:
		n := int(int32(binary.BigEndian.Uint32(rest[1:])))
		switch {
		case n < 4:
			want = wire.ErrMalformed
		case n-4 > maxSize:
			want = wire.ErrMessageTooLarge
		case len(rest) < n+1:
			want = io.ErrUnexpectedEOF
		default:
			t.Fatalf("error %v with a whole frame left", err)
		}
	}
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v (%d bytes left)", err, want, len(rest))
	}
}
