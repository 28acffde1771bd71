package pool

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/internal/testutil"
)

// fakeServer speaks just enough of the protocol for a pool: trust
// authentication, then hands each session's socket to the test. It
// records the PIDs of the CancelRequests it gets.
type fakeServer struct {
	ln       net.Listener
	sessions chan net.Conn
	wg       sync.WaitGroup

	mu      sync.Mutex
	nextPID uint32
	cancels []uint32
	gotCan  chan struct{} // receives after each CancelRequest
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{ln: ln, sessions: make(chan net.Conn, 16), nextPID: 100, gotCan: make(chan struct{}, 16)}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.handshake(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		for {
			select {
			case c := <-f.sessions:
				_ = c.Close()
				continue
			default:
			}
			break
		}
		f.wg.Wait()
	})
	return f
}

func (f *fakeServer) handshake(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	be := pgproto3.NewBackend(c, c)
	msg, err := be.ReceiveStartupMessage()
	if err != nil {
		_ = c.Close()
		return
	}
	switch m := msg.(type) {
	case *pgproto3.CancelRequest:
		f.mu.Lock()
		f.cancels = append(f.cancels, m.ProcessID)
		f.mu.Unlock()
		f.gotCan <- struct{}{}
		_ = c.Close()
		return
	case *pgproto3.StartupMessage:
	default:
		_ = c.Close()
		return
	}
	f.mu.Lock()
	f.nextPID++
	pid := f.nextPID
	f.mu.Unlock()
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: pid, SecretKey: []byte{1, 2, 3, 4}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := be.Flush(); err != nil {
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	f.sessions <- c
}

// session returns the server side of the next connection the pool opened.
func (f *fakeServer) session(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-f.sessions:
		t.Cleanup(func() { _ = c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection reached the server")
		return nil
	}
}

func (f *fakeServer) cancelPIDs() []uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.cancels)
}

func newTestPool(t *testing.T, f *fakeServer, mod func(*Config)) *Pool {
	t.Helper()
	cfg := Config{Addr: f.ln.Addr().String(), User: "u", Database: "d", SSLMode: "disable", Size: 4,
		ConnectTimeout: 2 * time.Second, WaitTimeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recorder is a Handler that records what it is given. Frame blocks on
// gate (when set) for the first frame.
type recorder struct {
	mu      sync.Mutex
	events  []string
	failed  chan error
	inFrame chan struct{}
	gate    chan struct{}
}

func newRecorder() *recorder {
	return &recorder{failed: make(chan error, 1), inFrame: make(chan struct{}, 1)}
}

func (r *recorder) note(e string) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) Events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *recorder) Frame(_ *Conn, typ byte, _ []byte) bool {
	r.note("frame " + string(typ))
	if r.gate != nil {
		select {
		case r.inFrame <- struct{}{}:
		default:
		}
		<-r.gate
		r.gate = nil
		r.note("frame " + string(typ) + " done")
	}
	return false
}

func (r *recorder) Flush(*Conn) {}

func (r *recorder) Fail(_ *Conn, err error) { r.failed <- err }

// wantAborted waits for the handler's Fail, which must be for ErrAborted.
func (r *recorder) wantAborted(t *testing.T) {
	t.Helper()
	select {
	case err := <-r.failed:
		if !errors.Is(err, ErrAborted) {
			t.Errorf("Fail got %v, want ErrAborted", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler was not told")
	}
}

// acquireNew acquires a connection the pool opens for it and returns it
// with the fake server's side of it.
func acquireNew(t *testing.T, ctx context.Context, p *Pool, f *fakeServer) (*Conn, net.Conn) {
	t.Helper()
	c, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, f.session(t)
}

// TestAbortResetsEveryConnection: Abort resets idle connections and
// connections in use with RST (the server reads ECONNRESET, not EOF: the
// close did not wait for queued data), the handler of the one in use
// fails, a CancelRequest goes to the one in use only, and the pool lends
// nothing more.
func TestAbortResetsEveryConnection(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, nil)
	ctx := testCtx(t)
	busy, busySrv := acquireNew(t, ctx, p, f)
	idle, idleSrv := acquireNew(t, ctx, p, f)
	p.Release(idle)
	rec := newRecorder()
	if err := busy.SetHandler(rec); err != nil {
		t.Fatal(err)
	}

	p.Abort()
	if !busy.Aborted() || !idle.Aborted() {
		t.Fatalf("aborted: busy %v idle %v", busy.Aborted(), idle.Aborted())
	}
	for name, c := range map[string]net.Conn{"in use": busySrv, "idle": idleSrv} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 64))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("server side of the %s connection read %v, want ECONNRESET (a reset, not a close)", name, err)
		}
	}
	rec.wantAborted(t)
	select {
	case <-f.gotCan:
	case <-time.After(5 * time.Second):
		t.Fatal("no CancelRequest for the connection in use")
	}
	if got := f.cancelPIDs(); len(got) != 1 || got[0] != busy.PID {
		t.Errorf("CancelRequests for PIDs %v, want only %d (the connection in use)", got, busy.PID)
	}
	if st := p.Stats(); st.Aborted != 2 {
		t.Errorf("Stats().Aborted = %d, want 2", st.Aborted)
	}
	if _, err := p.Acquire(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Acquire after Abort: %v, want ErrClosed", err)
	}
	p.Discard(busy)
}

// TestAbortWinsOverBufferedReply: a reply the reader has already taken
// from the socket is not given to the handler once Abort has begun, and
// Abort returns only after a handler call in progress has ended.
func TestAbortWinsOverBufferedReply(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, nil)
	ctx := testCtx(t)
	c, srv := acquireNew(t, ctx, p, f)
	rec := newRecorder()
	rec.gate = make(chan struct{})
	if err := c.SetHandler(rec); err != nil {
		t.Fatal(err)
	}
	// CommandComplete and ReadyForQuery in one write: both end up in the
	// reader's buffer while the handler is busy with the first.
	var reply []byte
	reply, _ = (&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")}).Encode(reply)
	reply, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(reply)
	if _, err := srv.Write(reply); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rec.inFrame:
	case <-time.After(5 * time.Second):
		t.Fatal("the reply did not reach the handler")
	}
	aborted := make(chan struct{})
	go func() {
		p.Abort()
		rec.note("abort returned")
		close(aborted)
	}()
	testutil.Until(t, 5*time.Second, "Abort to start", c.Aborted)
	close(rec.gate)
	select {
	case <-aborted:
	case <-time.After(5 * time.Second):
		t.Fatal("Abort did not return")
	}
	rec.wantAborted(t)
	want := []string{"frame C", "frame C done", "abort returned"}
	if got := rec.Events(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q (the ReadyForQuery read before the reset must not be handled)", got, want)
	}
	p.Discard(c)
}

// TestHoldForCancel: a connection released while a cancel holds it is not
// lent until the cancel is done; one whose cancel may still arrive is
// closed instead.
func TestHoldForCancel(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, func(c *Config) { c.Size = 1 })
	ctx := testCtx(t)
	c, _ := acquireNew(t, ctx, p, f)
	done := c.HoldForCancel()
	p.Release(c)
	if st := p.Stats(); st.Idle != 0 || st.Open != 1 {
		t.Fatalf("released while held: idle %d open %d, want 0 and 1", st.Idle, st.Open)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if _, err := p.Acquire(short); err == nil {
		t.Fatal("a held connection was lent")
	}
	cancel()
	done(true)
	if st := p.Stats(); st.Idle != 1 {
		t.Fatalf("after the cancel: idle %d, want 1", st.Idle)
	}
	c2, err := p.Acquire(ctx)
	if err != nil || c2 != c {
		t.Fatalf("Acquire after the cancel: %v (same connection %v)", err, c2 == c)
	}
	done = c2.HoldForCancel()
	p.Release(c2)
	done(false)
	if st := p.Stats(); st.Idle != 0 || st.Open != 0 {
		t.Fatalf("after a cancel of unknown fate: idle %d open %d, want 0 and 0", st.Idle, st.Open)
	}
}

// TestCancelUnreachable: a cancel towards a server that does not answer
// ends with the context.
func TestCancelUnreachable(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, nil)
	ctx := testCtx(t)
	c, _ := acquireNew(t, ctx, p, f)
	defer p.Discard(c)
	// A listener that never accepts and whose backlog is full would be
	// closer to a black hole; an address that drops SYNs is not
	// portable, so use a server that accepts and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c.Addr = ln.Addr().String()
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.Cancel(cctx); err == nil {
		t.Fatal("cancel to a silent server succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("cancel took %s", d)
	}
}
