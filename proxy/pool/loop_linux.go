//go:build linux

package pool

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// EventLoop reads plain-TCP server connections without a goroutine per
// connection (Config.EventLoop): each of its loops owns an epoll
// instance, whose own descriptor waits in the Go runtime's poller like
// any socket, so a loop is a goroutine woken once for every batch of
// ready connections rather than one goroutine wake-up per connection and
// reply. On a wake-up it reads each ready socket once (a short read means
// the socket is drained: no second read that would only return EAGAIN),
// passes the complete frames to the connection's handler on the loop's
// goroutine, and calls Flush.
//
// Only handlers that never wait for another connection run on a loop
// (InlineHandler: the session's relay, the proxy's own statements). A
// connection that gets any other handler (a scatter, a COPY), or a frame
// larger than its buffer, moves for good to a reader goroutine of its own
// (readLoop), with what it had buffered. TLS connections always have one.
//
// A small loop over golang.org/x/sys/unix rather than an event-loop
// library (gnet, nbio): those own the connection's reads, writes and
// lifetime, while here pgconn dials and authenticates the connection, the
// session writes to it through net.Conn, and the runtime's poller keeps
// it; only its reads move.
type EventLoop struct {
	loops []*evloop
	next  atomic.Uint32
}

// evloop is one epoll instance and its goroutine.
type evloop struct {
	epfd *os.File // the epoll instance, non-blocking, in the runtime's poller
	rc   syscall.RawConn
	fd   int // epfd's descriptor (File.Fd would make it blocking)

	mu     sync.Mutex
	conns  map[int32]*Conn // by token (EpollEvent.Fd holds the token)
	tok    int32
	closed bool // epfd is closed (fd may be another file's now)
	done   chan struct{}
}

// NewEventLoop starts n loops (n < 1: one).
func NewEventLoop(n int) (*EventLoop, error) {
	e := &EventLoop{}
	for range max(n, 1) {
		l, err := newEvloop()
		if err != nil {
			e.Close()
			return nil, err
		}
		e.loops = append(e.loops, l)
	}
	return e, nil
}

func newEvloop() (*evloop, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("event loop: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("event loop: set non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "pgshard-event-loop")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("event loop: %w", err)
	}
	l := &evloop{epfd: f, rc: rc, fd: fd, conns: make(map[int32]*Conn), done: make(chan struct{})}
	go l.run()
	return l, nil
}

// Close stops the loops. Connections still on them are ended (their
// handlers' Fail is called); pools should be closed first.
func (e *EventLoop) Close() {
	for _, l := range e.loops {
		l.mu.Lock()
		l.closed = true
		_ = l.epfd.Close()
		l.mu.Unlock()
		<-l.done
		l.mu.Lock()
		left := make([]*Conn, 0, len(l.conns))
		for _, c := range l.conns {
			left = append(left, c)
		}
		l.mu.Unlock()
		for _, c := range left {
			c.loopEnd(errors.New("event loop stopped"))
		}
	}
}

// pick returns the loop for a new connection (round robin).
func (e *EventLoop) pick() *evloop {
	return e.loops[int(e.next.Add(1))%len(e.loops)]
}

// run waits for ready connections until the epoll instance is closed.
// The connections are read inside the poller's callback, so that a
// wake-up that arrives while they are being read is remembered (the
// runtime's poller is edge-triggered): after a batch smaller than the
// event buffer the loop waits at once, without one more epoll_wait that
// would find nothing.
func (l *evloop) run() {
	defer close(l.done)
	events := make([]unix.EpollEvent, 128)
	_ = l.rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), events, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				return false // wait in the runtime's poller
			}
			for i := range n {
				l.mu.Lock()
				c := l.conns[events[i].Fd]
				l.mu.Unlock()
				if c != nil {
					c.loopReadable()
				}
			}
			if n < len(events) {
				return false
			}
		}
	})
}

// loopState is a connection's part of the event loop.
type loopState struct {
	l          *evloop
	rd         *connReader
	tok        int32
	fd         int
	registered bool  // in l's epoll instance (under l.mu)
	mode       uint8 // under Conn.hmu
}

const (
	modeLoop      = iota + 1 // the loop reads the connection
	modeGoroutine            // readLoop does, for good
	modeEnded
)

// attachLoop puts c, a new plain-TCP connection, on one of e's loops; it
// reports false (c keeps a reader goroutine) where that is not possible.
func (c *Conn) attachLoop(e *EventLoop, nc net.Conn) bool {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil || fd < 0 {
		return false
	}
	rd := &connReader{nc: nc, rc: rc, buf: make([]byte, ioBufferSize), nonblock: true}
	l := e.pick()
	c.loop = &loopState{l: l, rd: rd, fd: fd, mode: modeLoop}
	c.Reader = newFrameReader(rd)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.loop = nil
		return false
	}
	l.tok++
	if l.tok <= 0 {
		l.tok = 1
	}
	c.loop.tok = l.tok
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: l.tok}
	if err := unix.EpollCtl(l.fd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		c.loop = nil
		return false
	}
	c.loop.registered = true
	l.conns[l.tok] = c
	return true
}

// unregister takes c off its loop's epoll instance. Every close of c's
// socket calls it first, while the descriptor is still c's (a later close
// could hand its number to another socket).
func (c *Conn) unregister() {
	ls := c.loop
	if ls == nil {
		return
	}
	ls.l.mu.Lock()
	if ls.registered {
		if !ls.l.closed {
			_ = unix.EpollCtl(ls.l.fd, unix.EPOLL_CTL_DEL, ls.fd, nil)
		}
		delete(ls.l.conns, ls.tok)
		ls.registered = false
	}
	ls.l.mu.Unlock()
}

// closedByUs is called after c's socket was closed by the proxy: a
// connection read by a loop ends as readLoop ends after a failed read.
func (c *Conn) closedByUs() {
	if c.loop != nil {
		go c.loopEnd(net.ErrClosed)
	}
}

// loopEnd ends c while the loop reads it: its handler fails with err (nil
// handler: the connection is marked broken). Once only.
func (c *Conn) loopEnd(err error) {
	c.hmu.Lock()
	if c.loop.mode != modeLoop {
		c.hmu.Unlock()
		return
	}
	c.endLocked(err)
}

// endLocked is loopEnd with c.hmu held (released): what readLoop does
// after a failed read. The handler's Fail runs on a goroutine of its own,
// as it would on the connection's reader goroutine: it may wait.
func (c *Conn) endLocked(err error) {
	c.loop.mode = modeEnded
	c.unregister()
	err = c.readErr(err)
	h := c.handler
	c.handler = nil
	c.broken.Store(true)
	c.hmu.Unlock()
	go func() {
		if h != nil {
			h.Fail(c, err)
		} else {
			c.markBroken()
		}
		c.pool.track(c, false)
		c.pool.readers.Done()
	}()
}

// toGoroutine moves c for good to a reader goroutine of its own, with
// what it has buffered. Called by the loop with c.hmu held.
func (c *Conn) toGoroutine() {
	c.unregister()
	c.loop.mode = modeGoroutine
	c.loop.rd.nonblock = false
	go c.readLoop()
}

// loopReadable reads c, which its loop found readable, and passes its
// complete frames on.
func (c *Conn) loopReadable() {
	c.hmu.Lock()
	ls := c.loop
	if ls.mode != modeLoop {
		c.hmu.Unlock()
		return
	}
	rd := ls.rd
	filled := false
	for {
		if rd.Buffered() >= 5 {
			hdr := rd.buf[rd.r : rd.r+5]
			n := int(int32(uint32(hdr[1])<<24 | uint32(hdr[2])<<16 | uint32(hdr[3])<<8 | uint32(hdr[4])))
			total := n + 1
			if n >= 4 && total > len(rd.buf) {
				c.toGoroutine() // a large frame: readLoop assembles it
				c.hmu.Unlock()
				return
			}
			if n < 4 || rd.Buffered() >= total {
				h := c.handler
				if h != nil {
					if _, ok := h.(InlineHandler); !ok {
						c.toGoroutine()
						c.hmu.Unlock()
						return
					}
				}
				typ, frame, err := c.Reader.Next()
				if !c.deliver(typ, frame, err) {
					return // c.hmu released, c ended
				}
				if ls.mode != modeLoop {
					c.hmu.Unlock()
					return
				}
				continue
			}
		}
		if filled && rd.short {
			break // drained: the loop hears of the next bytes
		}
		err := rd.fill()
		filled = true
		if err == errWouldBlock {
			break
		}
		if err != nil {
			c.endLocked(err)
			return
		}
	}
	if c.handler != nil && rd.Buffered() == 0 {
		c.handler.Flush(c)
	}
	c.hmu.Unlock()
}

// deliver passes one frame the loop read to c's handler, with c.hmu held.
// It reports whether c goes on (c.hmu held again); false: c ended and
// c.hmu is released.
func (c *Conn) deliver(typ byte, frame []byte, err error) bool {
	if err == nil && c.aborted.Load() {
		err = ErrAborted
	}
	h := c.handler
	if err != nil || h == nil {
		if err == nil {
			err = ErrBroken // input while no one waits for it
		}
		c.endLocked(err)
		return false
	}
	if !h.Frame(c, typ, frame) {
		return true
	}
	c.handler = nil
	c.hmu.Unlock()
	c.pool.Release(c)
	c.hmu.Lock()
	return true
}

// errWouldBlock is a non-blocking read that found nothing.
var errWouldBlock = errors.New("would block")

// fillNonBlocking reads what the socket has, without waiting.
func (b *connReader) fillNonBlocking() (int, error) {
	var n int
	var rerr error
	err := b.rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), b.buf[b.w:])
			if rerr != unix.EINTR {
				return true
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case rerr == unix.EAGAIN:
		return 0, errWouldBlock
	case rerr != nil:
		return 0, rerr
	}
	return n, nil
}
