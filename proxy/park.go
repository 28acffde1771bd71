//go:build linux

package proxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Parking idle clients (limits.park_idle_clients): a session that has
// read nothing for a sweep interval (1-2 s), with nothing buffered and no
// server connection attached, ends its goroutine, and its socket is
// registered with the parker's epoll instance. The sweeper finds such
// sessions and interrupts their blocked read with a read deadline; serve
// then parks (parkRequested). Busy clients are never parked, so the data
// path keeps the runtime's poller and costs no extra system call. When the socket becomes readable (or is closed, or the session
// is kicked), a worker goroutine runs the same session code (serve) again.
// An idle client then costs its session's heap objects but no goroutine
// stack. TLS clients stay on their goroutine (their bytes are read through
// crypto/tls, whose buffered plaintext epoll cannot see).
//
// The loop is a small one over golang.org/x/sys/unix rather than an
// event-loop library (nbio, gnet, netpoll): those own the connection's
// reads and writes and would replace the net.Conn the whole session code,
// the relay and crypto/tls use; here only the readiness of parked sockets
// is watched, one-shot and level-triggered, beside the runtime's own poller.

// parkState is a session's part of parking; fields under parker.mu.
type parkState struct {
	fd         int32
	registered bool // the fd has been added to the epoll instance
	parked     bool // armed in epoll, no goroutine runs serve
	kick       bool // the next park attempt must not park (see kick)
	// early counts the sync points after which a new session still parks
	// at once when its server connection is let go (parkEarly); under
	// the session's mu.
	early uint8
	seen  uint32 // clientReader.reads at the previous sweep
}

// earlyParks is how many of a new session's first transactions end with
// a request to park at once rather than after a sweep interval: besides
// the wait right after authentication. Clients that connect in a burst
// (a connection pool filling up) and then wait would otherwise all hold
// a goroutine for a second or two at the same time, and the runtime
// never frees a goroutine's descriptor (about 0.5 KiB) once it existed:
// the process would keep one per client of the burst. A busy client
// pays this a few times in its life (a park and a resume each, some
// microseconds), then parks only after a sweep interval of silence.
const earlyParks = 2

// earlyParkDelay is how long a new session waits for its client before
// an early park: a client that sends its next request within it (a
// connection opened for one statement, pgbench -C) is not parked and
// resumed for nothing (a park and a resume were about a fifth of the
// proxy's CPU per such connection), while a burst of clients that go idle
// still holds goroutines for only this long.
const earlyParkDelay = 20 * time.Millisecond

// parkEarly asks a session that is still new to park once it has waited
// earlyParkDelay for its client (the sweeper's request, without the
// interval). The caller holds s.mu (or is the only goroutine using s).
func (s *session) parkEarly() {
	if s.srv.parker == nil || s.rd == nil || !s.rd.pollable || s.console {
		return
	}
	s.rd.requestPark(time.Now().Add(earlyParkDelay))
}

// parker is the epoll loop and the workers that resume sessions.
type parker struct {
	epfd, efd int // epoll instance; eventfd that stops the loop

	mu      sync.Mutex
	parked  map[int32]*session
	parks   uint64 // sessions parked so far (for the sweeper's quiet test)
	stopped bool
	// ctx is the context serve runs parked sessions with when they resume:
	// Serve's, which all sessions share.
	ctx context.Context

	work     chan *session // to an idle worker
	quit     chan struct{}
	wg       sync.WaitGroup // the loop and the workers
	maxIdle  time.Duration  // an idle worker ends after this
	onResume func(*session) // runs the session (Server.resume)
	sessions func([]*session) []*session
}

// sweepInterval is how often the sweeper looks for idle sessions.
const sweepInterval = time.Second

// freeAfterParked is by how many the parked sessions must have grown
// since the last time for the sweeper to return freed memory to the
// system (two full collections: the second frees what the first moved to
// the pools' victim caches, the client read buffers among them).
const freeAfterParked = 256

// freeInterval is the least time between two such releases while
// sessions keep parking, so that clients coming and going in thousands
// cost at most one release every freeInterval. Once no session at all
// parked during quietSweeps sweep intervals (parking has gone quiet, and
// the workers that resumed the last sessions have ended, after
// workerIdle), the release comes at once, at most every
// freeQuietInterval: the memory of a wave of clients that went idle is
// then returned within seconds of the wave rather than up to freeInterval
// later, and clients that keep coming and going (parking all the time)
// still cost at most one release every freeInterval.
const (
	freeInterval      = 30 * time.Second
	freeQuietInterval = 2 * time.Second
	quietSweeps       = 2
)

// workerIdle is how long a worker that resumed a session waits for the
// next one before it ends (its stack, grown by the session's work, goes
// with it; starting a goroutine costs about a microsecond).
const workerIdle = time.Second

func newParker(resume func(*session), sessions func([]*session) []*session) (*parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("park idle clients: epoll_create1: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("park idle clients: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(efd)
		return nil, fmt.Errorf("park idle clients: epoll_ctl: %w", err)
	}
	p := &parker{
		epfd: epfd, efd: efd,
		parked:   make(map[int32]*session),
		work:     make(chan *session),
		quit:     make(chan struct{}),
		maxIdle:  workerIdle,
		onResume: resume,
		sessions: sessions,
	}
	p.wg.Add(2)
	go p.loop()
	go p.sweep()
	return p, nil
}

// sweep asks sessions that read nothing since the previous sweep and have
// no server connection attached to park.
func (p *parker) sweep() {
	defer p.wg.Done()
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	var list []*session
	freedAt := 0         // parked sessions at the last release of memory
	var prevParks uint64 // parker.parks at the previous sweep
	quiet := 0           // sweeps in a row that found no new park
	var lastFree time.Time
	for {
		select {
		case <-p.quit:
			return
		case <-t.C:
		}
		p.mu.Lock()
		n, parks := len(p.parked), p.parks
		p.mu.Unlock()
		freedAt = min(freedAt, n)
		if parks == prevParks {
			quiet++
		} else {
			quiet = 0
		}
		prevParks = parks
		if n-freedAt >= freeAfterParked && (time.Since(lastFree) >= freeInterval ||
			quiet >= quietSweeps && time.Since(lastFree) >= freeQuietInterval) {
			// The goroutine stacks of the sessions parked since, and the
			// read buffers they used, are free heap now: give the memory
			// back to the system rather than keep it until the runtime's
			// scavenger gets to it.
			goruntime.GC()
			debug.FreeOSMemory()
			releaseCMemory()
			freedAt, lastFree = n, time.Now()
		}
		list = p.sessions(list[:0])
		for _, ss := range list {
			if ss.console || ss.rd == nil || !ss.rd.pollable {
				continue
			}
			reads := ss.rd.reads.Load()
			p.mu.Lock()
			ps := &ss.park
			skip := ps.parked || reads != ps.seen
			ps.seen = reads
			p.mu.Unlock()
			if skip {
				continue
			}
			// Under the session's lock so that it cannot attach a server
			// connection meanwhile (an attached session does not park; its
			// read retries, see parkRequested).
			ss.mu.Lock()
			if ss.st.conn() == nil {
				ss.rd.requestPark(time.Now())
			}
			ss.mu.Unlock()
		}
		clear(list)
	}
}

// count returns how many sessions are parked.
func (p *parker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// park registers s's socket and reports true when s's goroutine may end:
// the socket had nothing to read (the caller has just seen EAGAIN) and no
// kick is pending. Readiness that arrived meanwhile is reported at once,
// as the registration is level-triggered.
func (p *parker) park(ctx context.Context, s *session, fd int, fresh bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps := &s.park
	if ps.kick || p.stopped {
		ps.kick = false
		return false
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd)}
	op := unix.EPOLL_CTL_MOD
	if fresh || !ps.registered || ps.fd != int32(fd) {
		op = unix.EPOLL_CTL_ADD
	}
	if err := unix.EpollCtl(p.epfd, op, fd, &ev); err != nil {
		return false // the goroutine path still works
	}
	p.ctx, ps.fd, ps.registered, ps.parked = ctx, int32(fd), true, true
	p.parked[int32(fd)] = s
	p.parks++
	return true
}

// kick makes s run its goroutine: a parked session is resumed, and one
// that is about to park does not. Whoever sets a read deadline on a
// session's connection or closes it from outside the session calls kick
// after that (Server.kickSession).
func (p *parker) kick(s *session) {
	p.mu.Lock()
	ps := &s.park
	ps.kick = true
	parked := ps.parked
	if parked {
		p.unparkLocked(s)
	}
	p.mu.Unlock()
	if parked {
		p.dispatch(s)
	}
}

// unparkLocked takes s off the parked sessions; the one-shot registration
// stays disarmed until the next park re-arms it.
func (p *parker) unparkLocked(s *session) {
	ps := &s.park
	ps.parked = false
	if p.parked[ps.fd] == s {
		delete(p.parked, ps.fd)
	}
}

// dispatch hands s to an idle worker or starts one.
func (p *parker) dispatch(s *session) {
	select {
	case p.work <- s:
	default:
		p.wg.Add(1)
		go p.worker(s)
	}
}

// worker resumes sessions; it keeps its (grown) stack for the next one
// until it has been idle for maxIdle.
func (p *parker) worker(s *session) {
	defer p.wg.Done()
	t := time.NewTimer(p.maxIdle)
	defer t.Stop()
	for {
		p.onResume(s)
		t.Reset(p.maxIdle)
		select {
		case s = <-p.work:
		case <-t.C:
			return
		case <-p.quit:
			return
		}
	}
}

// loop waits for parked sockets to become readable.
func (p *parker) loop() {
	defer p.wg.Done()
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			return
		}
		for i := range n {
			fd := events[i].Fd
			if fd == int32(p.efd) {
				return
			}
			p.mu.Lock()
			s := p.parked[fd]
			if s != nil {
				p.unparkLocked(s)
			}
			p.mu.Unlock()
			if s != nil {
				p.dispatch(s)
			}
		}
	}
}

// stop ends the loop and the idle workers once no session is parked
// (Shutdown kicks them all first); sessions that park later stay on their
// goroutines.
func (p *parker) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	var one [8]byte
	one[0] = 1
	_, _ = unix.Write(p.efd, one[:])
	close(p.quit)
	p.wg.Wait()
	_ = unix.Close(p.epfd)
	_ = unix.Close(p.efd)
}

// resumeSession runs a parked session again (on a parker's worker).
func (s *Server) resumeSession(ss *session) {
	if pc, ok := ss.conn.(*parkConn); ok {
		pc.attach(s.parker.epfd)
		ss.rd.reattach()
	}
	s.parker.mu.Lock()
	ctx := s.parker.ctx
	s.parker.mu.Unlock()
	if !ss.serve(ctx) {
		s.conns.Done()
	}
}

// parkRequested handles a client read that failed: when the error is the
// sweeper's read deadline (at a message boundary, the proxy not shutting
// down), it clears it and, if park, parks the session when it is idle.
// parked says the session parked (its goroutine must end); retry that the
// read should be repeated.
func (s *session) parkRequested(ctx context.Context, err error, park bool) (parked, retry bool) {
	p := s.srv.parker
	if p == nil || !errors.Is(err, os.ErrDeadlineExceeded) || !s.rd.boundary || s.srv.shuttingDown() {
		return false, false
	}
	if !s.rd.takeParkRequest() {
		return false, false
	}
	s.rd.err = nil
	if park && s.parkIdle(ctx) {
		return true, false
	}
	return false, true
}

// next reads the next client frame, repeating a read the sweeper
// interrupted (for readers of client frames other than serve).
func (s *session) next(ctx context.Context) (byte, []byte, error) {
	for {
		typ, frame, err := s.in.Next()
		if err != nil {
			if _, retry := s.parkRequested(ctx, err, false); retry {
				continue
			}
		}
		return typ, frame, err
	}
}

// parkIdle ends serve's goroutine when the session is idle: no server
// connection attached, nothing buffered and nothing to read on a plain
// socket. It reports whether the session parked.
func (s *session) parkIdle(ctx context.Context) bool {
	if s.rd == nil || s.zInFlight.Load() || s.attached() != nil {
		return false
	}
	fd, wouldBlock := s.rd.poll()
	if !wouldBlock {
		return false
	}
	// Output buffers grow back on the next request; an idle client holds
	// none (no relay runs while no server connection is attached).
	if len(s.out) == 0 {
		s.out = nil
	}
	if len(s.bout) == 0 {
		s.bout = nil
	}
	if len(s.relay.out) == 0 {
		s.relay.out = nil
	}
	s.mu.Lock()
	if s.queue.empty() {
		s.queue.items, s.queue.head = nil, 0
	}
	if len(s.tentative) == 0 {
		s.tentative = nil
	}
	if len(s.raised) == 0 {
		s.raised = nil
	}
	s.mu.Unlock()
	// The socket leaves the runtime's poller while parked (parkConn).
	pc, _ := s.conn.(*parkConn)
	fresh := false
	if pc != nil {
		if dfd, ok := pc.detach(); ok {
			fd, fresh = dfd, true
			s.rd.raw = nil // it would keep the closed connection's objects
		}
	}
	if s.srv.parker.park(ctx, s, fd, fresh) {
		return true
	}
	if fresh {
		pc.attach(s.srv.parker.epfd)
		s.rd.reattach()
	}
	return false
}
