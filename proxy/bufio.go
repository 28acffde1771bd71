package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// clientBuffers holds the read buffers of client connections: a session
// takes one when bytes arrive and gives it back whenever it has consumed
// everything it read and waits for more, so an idle client holds none.
var clientBuffers = sync.Pool{New: func() any { return new([clientBufferSize]byte) }}

// clientReader is the buffered reader of a client connection
// (wire.BufferedReader). Its buffer comes from clientBuffers only while
// unread bytes are in it or a read is under way: on a TCP connection the
// read runs inside the runtime's readiness wait (syscall.RawConn), so the
// buffer is taken only once the socket is readable; on other connections
// (TLS) the buffer is held during the blocking read.
//
// A slice returned by Peek is valid until the next Peek or Read that has
// to read from the connection, like bufio.Reader's (whose buffer is
// overwritten then): after that the memory may be another session's.
type clientReader struct {
	conn net.Conn
	raw  syscall.RawConn // nil when conn is not a plain socket
	buf  *[clientBufferSize]byte
	r, w int
	err  error
	// pollable says raw was set at the start (it changes when a parked
	// session's connection is attached again: reattach).
	pollable bool
	// boundary says the latest read from the connection began between
	// two frames (nothing of the next one read yet).
	boundary bool
	// reads counts reads from the connection, for the sweeper (park.go).
	reads atomic.Uint32
	// parkReq is set by the sweeper and by early parks (park.go) with a
	// read deadline that asks serve to park: a read it interrupts in the
	// middle of a frame is repeated (midFrame). Under parkMu, which makes
	// setting a request (parkReq and its deadline) and taking it (both
	// cleared) one step each, so a deadline is never left set without its
	// request: the read it ended would fail the session (requestPark,
	// takeParkRequest).
	parkReq bool
	parkMu  sync.Mutex
}

// requestPark asks serve to park at the next frame boundary once the read
// deadline at has passed (the sweeper: now; an early park: a little later).
func (c *clientReader) requestPark(at time.Time) {
	c.parkMu.Lock()
	c.parkReq = true
	_ = c.conn.SetReadDeadline(at)
	c.parkMu.Unlock()
}

// takeParkRequest takes a pending park request and clears its read
// deadline; false when there was none (the deadline is someone else's).
func (c *clientReader) takeParkRequest() bool {
	c.parkMu.Lock()
	defer c.parkMu.Unlock()
	if !c.parkReq {
		return false
	}
	c.parkReq = false
	_ = c.conn.SetReadDeadline(time.Time{})
	return true
}

// midFrame reports whether err is the sweeper's read deadline on a read in
// the middle of a frame; then the deadline is cleared and the caller
// repeats the read. At a frame boundary the error goes to serve, which
// parks (parkRequested).
func (c *clientReader) midFrame(err error) bool {
	return !c.boundary && errors.Is(err, os.ErrDeadlineExceeded) && c.takeParkRequest()
}

func newClientReader(conn net.Conn) *clientReader {
	c := &clientReader{conn: conn}
	c.reattach()
	c.pollable = c.raw != nil
	return c
}

// reattach takes the raw connection of conn: at the start, and again
// after a parked session's connection was attached (parkConn); after a
// failed attach the old one stays, whose reads fail.
func (c *clientReader) reattach() {
	if sc, ok := c.conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
		}
	}
}

// Size implements wire.BufferedReader.
func (c *clientReader) Size() int { return clientBufferSize }

// Buffered implements wire.BufferedReader.
func (c *clientReader) Buffered() int { return c.w - c.r }

// Peek implements wire.BufferedReader.
func (c *clientReader) Peek(n int) ([]byte, error) {
	if n > clientBufferSize {
		return nil, errors.New("clientReader: peek beyond the buffer")
	}
	for c.w-c.r < n && c.err == nil {
		c.boundary = c.r == c.w
		c.fill()
	}
	if c.w-c.r >= n {
		return c.buf[c.r : c.r+n], nil
	}
	if c.buf == nil {
		return nil, c.err
	}
	return c.buf[c.r:c.w], c.err
}

// Discard implements wire.BufferedReader; n must not exceed Buffered.
func (c *clientReader) Discard(n int) (int, error) {
	n = min(n, c.w-c.r)
	c.r += n
	return n, nil
}

// Read implements io.Reader (for frames larger than the buffer).
func (c *clientReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.r == c.w {
		if c.err != nil {
			return 0, c.err
		}
		c.boundary = false
		if len(p) >= clientBufferSize {
			// Large reads go straight to the caller's memory.
			c.release()
			for {
				n, err := c.conn.Read(p)
				c.reads.Add(1)
				if n == 0 && c.midFrame(err) {
					continue
				}
				return n, err
			}
		}
		c.fill()
		if c.r == c.w {
			return 0, c.err
		}
	}
	n := copy(p, c.buf[c.r:c.w])
	c.r += n
	return n, nil
}

// release gives the buffer back when it holds no unread bytes.
func (c *clientReader) release() {
	if c.buf != nil && c.r == c.w {
		clientBuffers.Put(c.buf)
		c.buf = nil
		c.r, c.w = 0, 0
	}
}

// fill reads once from the connection into the buffer, waiting for bytes.
func (c *clientReader) fill() {
	if c.r == c.w {
		c.release() // nothing unread: wait without a buffer
	} else if c.r > 0 {
		copy(c.buf[:], c.buf[c.r:c.w])
		c.w -= c.r
		c.r = 0
	}
	if c.raw == nil {
		if c.buf == nil {
			c.buf = clientBuffers.Get().(*[clientBufferSize]byte)
		}
		n, err := c.conn.Read(c.buf[c.w:])
		c.reads.Add(1)
		c.w += n
		c.err = err
		return
	}
	c.readRaw(true)
}

// poll reads what a plain socket has without waiting, when nothing is
// buffered: it reports the socket's descriptor and whether there was
// nothing to read (then no buffer is held).
func (c *clientReader) poll() (fd int, wouldBlock bool) {
	if c.raw == nil || c.r != c.w || c.err != nil {
		return -1, false
	}
	c.release()
	return c.readRaw(false)
}

// readRaw reads once through the runtime's poller; with wait, until bytes
// (or the end, or an error) arrive.
func (c *clientReader) readRaw(wait bool) (fd int, wouldBlock bool) {
	op := rawReads.Get().(*rawRead)
	op.c, op.wait = c, wait
again:
	op.fd, op.n, op.rerr, op.wouldBlock = -1, 0, nil, false
	err := c.raw.Read(op.read)
	c.reads.Add(1)
	if err != nil && c.midFrame(err) {
		goto again
	}
	fd, wouldBlock, n, rerr := op.fd, op.wouldBlock, op.n, op.rerr
	op.c = nil
	rawReads.Put(op)
	switch {
	case err != nil: // closed, deadline
		c.err = err
		wouldBlock = false
	case wouldBlock:
	case rerr != nil:
		c.err = &net.OpError{Op: "read", Net: "tcp", Source: c.conn.LocalAddr(), Addr: c.conn.RemoteAddr(), Err: os.NewSyscallError("read", rerr)}
	case n == 0:
		c.err = io.EOF
	default:
		c.w += n
	}
	if c.r == c.w {
		c.release()
	}
	return fd, wouldBlock
}

// rawRead is one read of readRaw: the function syscall.RawConn.Read calls
// once the socket may be readable, with its results. The objects are
// pooled and their read method value is bound once, so a read allocates
// nothing (a closure over readRaw's variables took five allocations).
type rawRead struct {
	c          *clientReader
	read       func(fd uintptr) bool // op.do, bound once
	fd, n      int
	rerr       error
	wait       bool
	wouldBlock bool
}

var rawReads = sync.Pool{New: func() any {
	op := new(rawRead)
	op.read = op.do
	return op
}}

func (op *rawRead) do(sfd uintptr) bool {
	c := op.c
	op.fd = int(sfd)
	took := c.buf == nil
	if took {
		c.buf = clientBuffers.Get().(*[clientBufferSize]byte)
	}
	for {
		op.n, op.rerr = syscall.Read(op.fd, c.buf[c.w:])
		if op.rerr != syscall.EINTR {
			break
		}
	}
	if op.rerr == syscall.EAGAIN {
		if took {
			clientBuffers.Put(c.buf)
			c.buf = nil
		}
		op.wouldBlock = true
		return !op.wait // with wait, the runtime waits until the socket is readable
	}
	op.wouldBlock = false
	return true
}
