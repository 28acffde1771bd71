//go:build linux

package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// parkConn is a client's plain TCP connection that a parking session
// takes out of the runtime's poller (detach) and puts back when it
// resumes (attach). While detached, only a duplicate of the socket's
// descriptor is kept: the runtime's objects for the socket (the netFD,
// its two addresses, its poll descriptor, which the runtime never frees
// but reuses for the next socket, and its finalizer record, about
// 0.7 KiB in all) are gone, so a parked client costs that much less.
// Detaching and attaching take about a dozen system calls (dup, close,
// and what net.FileConn does), paid only by clients that park: idle for a
// sweep interval, or new (earlyParks).
//
// Reads and writes go to the attached connection without a lock; only
// the session's goroutine reads and writes, and never while detached.
// Close and the deadlines may come from other goroutines at any time:
// they are serialised with detach and attach by mu, and the read
// deadline is remembered so that attach sets it again.
type parkConn struct {
	c  atomic.Pointer[net.TCPConn] // nil while detached or closed
	mu sync.Mutex
	// Under mu: the descriptor while detached (else -1), whether Close was
	// called, the latest read deadline set, and the client's address kept
	// while detached.
	fd           int
	closed       bool
	readDeadline time.Time
	remote       netip.AddrPort
}

func newParkConn(c *net.TCPConn) *parkConn {
	pc := &parkConn{fd: -1}
	pc.c.Store(c)
	return pc
}

var errDetached = fmt.Errorf("client connection detached: %w", net.ErrClosed)

// Read implements net.Conn.
func (pc *parkConn) Read(b []byte) (int, error) {
	if c := pc.c.Load(); c != nil {
		return c.Read(b)
	}
	return 0, errDetached
}

// Write implements net.Conn.
func (pc *parkConn) Write(b []byte) (int, error) {
	if c := pc.c.Load(); c != nil {
		return c.Write(b)
	}
	return 0, errDetached
}

// Close implements net.Conn; it closes the detached descriptor too.
func (pc *parkConn) Close() error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed {
		return net.ErrClosed
	}
	pc.closed = true
	if c := pc.c.Load(); c != nil {
		return c.Close()
	}
	if pc.fd >= 0 {
		err := unix.Close(pc.fd)
		pc.fd = -1
		return err
	}
	return nil
}

// LocalAddr implements net.Conn (while detached: an empty address).
func (pc *parkConn) LocalAddr() net.Addr {
	if c := pc.c.Load(); c != nil {
		return c.LocalAddr()
	}
	return &net.TCPAddr{}
}

// RemoteAddr implements net.Conn.
func (pc *parkConn) RemoteAddr() net.Addr {
	if c := pc.c.Load(); c != nil {
		return c.RemoteAddr()
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return net.TCPAddrFromAddrPort(pc.remote)
}

// SetDeadline implements net.Conn.
func (pc *parkConn) SetDeadline(t time.Time) error {
	if err := pc.SetReadDeadline(t); err != nil {
		return err
	}
	return pc.SetWriteDeadline(t)
}

// SetReadDeadline implements net.Conn.
func (pc *parkConn) SetReadDeadline(t time.Time) error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.readDeadline = t
	if c := pc.c.Load(); c != nil {
		return c.SetReadDeadline(t)
	}
	return nil
}

// SetWriteDeadline implements net.Conn (while detached nothing writes).
func (pc *parkConn) SetWriteDeadline(t time.Time) error {
	if c := pc.c.Load(); c != nil {
		return c.SetWriteDeadline(t)
	}
	return nil
}

// SyscallConn implements syscall.Conn for the attached connection.
func (pc *parkConn) SyscallConn() (syscall.RawConn, error) {
	if c := pc.c.Load(); c != nil {
		return c.SyscallConn()
	}
	return nil, errDetached
}

// detach keeps a duplicate of the socket's descriptor and closes the
// connection, and returns the duplicate; ok is false when the connection
// is closed or the descriptor could not be duplicated (then it stays
// attached).
func (pc *parkConn) detach() (fd int, ok bool) {
	c := pc.c.Load()
	if c == nil {
		return -1, false
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, false
	}
	nfd := -1
	if err := raw.Control(func(sfd uintptr) {
		nfd, _ = unix.FcntlInt(sfd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil || nfd < 0 {
		return -1, false
	}
	pc.mu.Lock()
	if pc.closed {
		pc.mu.Unlock()
		_ = unix.Close(nfd)
		return -1, false
	}
	pc.remote = addrPort(c.RemoteAddr())
	pc.fd = nfd
	pc.c.Store(nil)
	pc.mu.Unlock()
	_ = c.Close() // the duplicate keeps the socket open
	return nfd, true
}

// attach makes a connection of the detached descriptor again, with the
// read deadline set meanwhile. A closed connection stays without one
// (reads and writes fail), as does one the runtime refuses. The
// descriptor is first taken out of the epoll instance epfd: a
// registration outlives its descriptor while another descriptor (the
// connection's) refers to the same socket, and would make the next park's
// registration under the same number fail.
func (pc *parkConn) attach(epfd int) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.fd < 0 || pc.c.Load() != nil {
		return
	}
	fd := pc.fd
	pc.fd = -1
	_ = unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, fd, nil)
	// Blocking, so that os.NewFile does not register the descriptor with
	// the poller only for net.FileConn's duplicate to be registered too;
	// the duplicate shares the flag and net.FileConn clears it again.
	_ = unix.SetNonblock(fd, false)
	f := os.NewFile(uintptr(fd), "client")
	nc, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		pc.closed = true
		return
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		_ = nc.Close()
		pc.closed = true
		return
	}
	if !pc.readDeadline.IsZero() {
		_ = tc.SetReadDeadline(pc.readDeadline)
	}
	pc.remote = netip.AddrPort{}
	pc.c.Store(tc)
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}
