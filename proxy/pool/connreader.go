package pool

import (
	"io"
	"net"
	"syscall"

	"github.com/pgshard/pgshard/wire"
)

// connReader is the buffered reader of a connection on an event loop
// (wire.BufferedReader): non-blocking while the loop reads it (fill
// returns errWouldBlock when the socket has nothing), blocking through
// net.Conn once the connection has moved to a reader goroutine, with what
// it had buffered.
type connReader struct {
	nc       net.Conn
	rc       syscall.RawConn
	buf      []byte
	r, w     int
	nonblock bool
	short    bool // the last non-blocking read returned less than it asked for
}

var _ wire.BufferedReader = (*connReader)(nil)

func newFrameReader(rd *connReader) *wire.FrameReader { return wire.NewFrameReader(rd, 0) }

// fill reads once more into the buffer.
func (b *connReader) fill() error {
	if b.r == b.w {
		b.r, b.w = 0, 0
	} else if b.w == len(b.buf) && b.r > 0 {
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	if b.w == len(b.buf) {
		return io.ErrShortBuffer
	}
	if b.nonblock {
		n, err := b.fillNonBlocking()
		if err != nil {
			return err
		}
		if n == 0 {
			return io.EOF
		}
		b.short = b.w+n < len(b.buf)
		b.w += n
		return nil
	}
	for range 100 {
		n, err := b.nc.Read(b.buf[b.w:])
		b.w += n
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// Peek implements wire.BufferedReader.
func (b *connReader) Peek(n int) ([]byte, error) {
	if n > len(b.buf) {
		return b.buf[b.r:b.w], io.ErrShortBuffer
	}
	for b.w-b.r < n {
		if b.r > 0 && len(b.buf)-b.r < n {
			b.w = copy(b.buf, b.buf[b.r:b.w])
			b.r = 0
		}
		if err := b.fill(); err != nil {
			return b.buf[b.r:b.w], err
		}
	}
	return b.buf[b.r : b.r+n], nil
}

// Discard implements wire.BufferedReader (only over buffered bytes).
func (b *connReader) Discard(n int) (int, error) {
	n = min(n, b.w-b.r)
	b.r += n
	return n, nil
}

// Buffered implements wire.BufferedReader.
func (b *connReader) Buffered() int { return b.w - b.r }

// Size implements wire.BufferedReader.
func (b *connReader) Size() int { return len(b.buf) }

// Read implements io.Reader.
func (b *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.r == b.w {
		if err := b.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}
