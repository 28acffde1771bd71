package pool

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgshard/pgshard/internal/testutil"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newClockedPool is newTestPool reading clock instead of time.Now.
func newClockedPool(t *testing.T, f *fakeServer, clock *fakeClock, mod func(*Config)) *Pool {
	t.Helper()
	cfg := Config{Addr: f.ln.Addr().String(), User: "u", Database: "d", SSLMode: "disable", Size: 4,
		ConnectTimeout: 2 * time.Second, WaitTimeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	p, err := newPool(cfg, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// wantStats fails the test unless the pool's gauges are open, idle and
// waiting.
func wantStats(t *testing.T, p *Pool, open, idle, waiting int) {
	t.Helper()
	if st := p.Stats(); st.Open != open || st.Idle != idle || st.Waiting != waiting {
		t.Fatalf("stats: open %d idle %d waiting %d, want %d, %d, %d", st.Open, st.Idle, st.Waiting, open, idle, waiting)
	}
}

// waitWaiting waits until n Acquire calls wait in the pool.
func waitWaiting(t *testing.T, p *Pool, n int) {
	t.Helper()
	testutil.Until(t, 5*time.Second, "Acquire calls to wait", func() bool { return p.Stats().Waiting == n })
}

type acquired struct {
	c   *Conn
	err error
}

// acquireAsync calls Acquire in a goroutine. The test's cleanup ends
// the call if it still waits and discards a connection the test did not
// take, so that a failed test does not leave the pool's Close waiting.
func acquireAsync(t *testing.T, ctx context.Context, p *Pool) <-chan acquired {
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan acquired, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := p.Acquire(ctx)
		ch <- acquired{c, err}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		select {
		case a := <-ch:
			if a.c != nil {
				p.Discard(a.c)
			}
		default:
		}
	})
	return ch
}

// receive returns what an acquireAsync got, failing the test after 5 s.
func receive(t *testing.T, ch <-chan acquired) acquired {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(5 * time.Second):
		t.Fatal("Acquire did not return")
		return acquired{}
	}
}

// TestLendAndReturn: the pool opens connections while it has room, lends
// the most recently returned idle one first, and counts what it did.
func TestLendAndReturn(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, nil)
	ctx := testCtx(t)
	a, _ := acquireNew(t, ctx, p, f)
	b, _ := acquireNew(t, ctx, p, f)
	if a == b {
		t.Fatal("one connection lent twice")
	}
	wantStats(t, p, 2, 0, 0)
	p.Release(a)
	p.Release(b)
	wantStats(t, p, 2, 2, 0)
	c, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c != b {
		t.Error("Acquire did not lend the most recently returned connection")
	}
	wantStats(t, p, 2, 1, 0)
	p.Release(c)
	st := p.Stats()
	if st.Acquired != 3 || st.Dials != 2 || st.Waits != 0 || st.Discarded != 0 || st.DialFails != 0 {
		t.Errorf("stats %+v, want 3 acquired, 2 dials, no waits, discards or failed dials", st)
	}
}

// TestFullPoolLendsToWaitersInOrder: a full pool opens no more
// connections; Acquire calls wait, and a returned connection goes to the
// first of them, then to the next.
func TestFullPoolLendsToWaitersInOrder(t *testing.T) {
	f := newFakeServer(t)
	clock := newFakeClock()
	p := newClockedPool(t, f, clock, func(c *Config) { c.Size = 2 })
	ctx := testCtx(t)
	a, _ := acquireNew(t, ctx, p, f)
	b, _ := acquireNew(t, ctx, p, f)
	first := acquireAsync(t, ctx, p)
	waitWaiting(t, p, 1)
	second := acquireAsync(t, ctx, p)
	waitWaiting(t, p, 2)
	clock.advance(3 * time.Second)

	p.Release(b)
	if got := receive(t, first); got.err != nil || got.c != b {
		t.Fatalf("first waiter got %v (the returned connection: %v)", got.err, got.c == b)
	}
	wantStats(t, p, 2, 0, 1)
	p.Release(a)
	if got := receive(t, second); got.err != nil || got.c != a {
		t.Fatalf("second waiter got %v (the returned connection: %v)", got.err, got.c == a)
	}
	wantStats(t, p, 2, 0, 0)
	st := p.Stats()
	if st.Dials != 2 || st.Waits != 2 || st.Acquired != 4 {
		t.Errorf("stats %+v, want 2 dials, 2 waits, 4 acquired", st)
	}
	// Both waited from before the clock moved 3 s to after.
	if st.WaitTime != 6*time.Second {
		t.Errorf("WaitTime %v, want 6s (two waits of 3 s on the pool's clock)", st.WaitTime)
	}
	p.Release(a)
	p.Release(b)
}

// TestWaiterLeavesOnContextEnd: an Acquire whose context ends leaves the
// queue with the context's error, and a connection returned afterwards
// goes idle instead of to the departed waiter.
func TestWaiterLeavesOnContextEnd(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, func(c *Config) { c.Size = 1; c.WaitTimeout = time.Minute })
	ctx := testCtx(t)
	a, _ := acquireNew(t, ctx, p, f)
	wctx, cancel := context.WithCancel(ctx)
	ch := acquireAsync(t, wctx, p)
	waitWaiting(t, p, 1)
	cancel()
	got := receive(t, ch)
	if !errors.Is(got.err, context.Canceled) || got.c != nil {
		t.Fatalf("Acquire with a canceled context: %v, want context.Canceled and no connection", got.err)
	}
	wantStats(t, p, 1, 0, 0)
	p.Release(a)
	wantStats(t, p, 1, 1, 0)
	if c, err := p.Acquire(ctx); err != nil || c != a {
		t.Fatalf("Acquire after the waiter left: %v (the returned connection: %v)", err, c == a)
	}
	if st := p.Stats(); st.Timeouts != 0 || st.Waits != 1 {
		t.Errorf("stats %+v, want 1 wait and no timeout", st)
	}
	p.Release(a)
}

// TestWaitTimeout: an Acquire that gets nothing within the wait timeout
// fails with ErrTimeout, leaves the queue and is counted.
func TestWaitTimeout(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, func(c *Config) { c.Size = 1; c.WaitTimeout = 50 * time.Millisecond })
	ctx := testCtx(t)
	a, _ := acquireNew(t, ctx, p, f)
	if c, err := p.Acquire(ctx); !errors.Is(err, ErrTimeout) || c != nil {
		t.Fatalf("Acquire on a full pool: %v, want ErrTimeout", err)
	}
	wantStats(t, p, 1, 0, 0)
	if st := p.Stats(); st.Timeouts != 1 || st.Waits != 1 {
		t.Errorf("stats %+v, want 1 wait and 1 timeout", st)
	}
	p.Release(a)
	wantStats(t, p, 1, 1, 0)
}

// TestDiscardLetsAWaiterDial: a discarded connection frees its slot for
// the first waiter, which opens a new connection; the discarded one is
// closed.
func TestDiscardLetsAWaiterDial(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, func(c *Config) { c.Size = 1 })
	ctx := testCtx(t)
	a, aSrv := acquireNew(t, ctx, p, f)
	ch := acquireAsync(t, ctx, p)
	waitWaiting(t, p, 1)
	p.Discard(a)
	got := receive(t, ch)
	if got.err != nil || got.c == a {
		t.Fatalf("waiter after a discard: %v (the discarded connection: %v)", got.err, got.c == a)
	}
	f.session(t)
	wantClosed(t, aSrv)
	wantStats(t, p, 1, 0, 0)
	if st := p.Stats(); st.Dials != 2 || st.Discarded != 1 {
		t.Errorf("stats %+v, want 2 dials and 1 discard", st)
	}
	p.Release(got.c)
}

// TestBrokenIdleConnectionIsDropped: an idle connection whose server
// ends the session leaves the pool at once; the next Acquire opens a new
// one.
func TestBrokenIdleConnectionIsDropped(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, nil)
	ctx := testCtx(t)
	a, aSrv := acquireNew(t, ctx, p, f)
	p.Release(a)
	_ = aSrv.Close()
	testutil.Until(t, 5*time.Second, "the broken connection to leave the pool", func() bool {
		st := p.Stats()
		return st.Open == 0 && st.Idle == 0
	})
	if !a.Broken() {
		t.Error("the connection is not marked broken")
	}
	b, _ := acquireNew(t, ctx, p, f)
	if b == a {
		t.Fatal("a broken connection was lent")
	}
	if st := p.Stats(); st.Discarded != 1 || st.Dials != 2 {
		t.Errorf("stats %+v, want 1 discard and 2 dials", st)
	}
	p.Release(b)
}

// wantClosed fails the test unless the pool ended the session on srv:
// Terminate, then end of stream.
func wantClosed(t *testing.T, srv net.Conn) {
	t.Helper()
	_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(srv)
	if err != nil {
		t.Fatalf("server side read %q, %v; want Terminate and EOF", b, err)
	}
	if string(b) != "X\x00\x00\x00\x04" {
		t.Fatalf("server side read %q before EOF, want a Terminate", b)
	}
}

// TestIdleTimeout: the reaper closes a connection idle longer than the
// idle timeout on the pool's clock, and only then.
func TestIdleTimeout(t *testing.T) {
	f := newFakeServer(t)
	clock := newFakeClock()
	p := newClockedPool(t, f, clock, func(c *Config) { c.IdleTimeout = time.Minute; c.MaxLifetime = -1 })
	ctx := testCtx(t)
	a, aSrv := acquireNew(t, ctx, p, f)
	clock.advance(time.Hour) // time in use does not count
	p.Release(a)
	clock.advance(time.Minute)
	p.reapOnce()
	wantStats(t, p, 1, 1, 0)
	clock.advance(time.Second)
	p.reapOnce()
	wantStats(t, p, 0, 0, 0)
	wantClosed(t, aSrv)
	if st := p.Stats(); st.Discarded != 1 {
		t.Errorf("Discarded %d, want 1", st.Discarded)
	}
	b, _ := acquireNew(t, ctx, p, f)
	if b == a {
		t.Fatal("an expired connection was lent")
	}
	p.Release(b)
}

// TestMaxLifetime: a connection older than the lifetime is closed when
// it is returned, and by the reaper when it is idle; a negative idle
// timeout keeps it otherwise.
func TestMaxLifetime(t *testing.T) {
	f := newFakeServer(t)
	clock := newFakeClock()
	p := newClockedPool(t, f, clock, func(c *Config) { c.MaxLifetime = time.Hour; c.IdleTimeout = -1 })
	ctx := testCtx(t)
	old, oldSrv := acquireNew(t, ctx, p, f)
	clock.advance(30 * time.Minute)
	young, youngSrv := acquireNew(t, ctx, p, f)
	clock.advance(31 * time.Minute)
	p.Release(old) // 61 min old: closed
	wantClosed(t, oldSrv)
	wantStats(t, p, 1, 0, 0)
	p.Release(young) // 31 min old: kept
	wantStats(t, p, 1, 1, 0)
	clock.advance(29 * time.Minute)
	p.reapOnce()
	wantStats(t, p, 1, 1, 0)
	clock.advance(2 * time.Minute)
	p.reapOnce() // 62 min old
	wantStats(t, p, 0, 0, 0)
	wantClosed(t, youngSrv)
	if st := p.Stats(); st.Discarded != 2 {
		t.Errorf("Discarded %d, want 2", st.Discarded)
	}
}

// TestSetSize: growing the pool lets a waiter open a connection at once;
// shrinking closes idle connections above the new size and connections in
// use as they are returned.
func TestSetSize(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, func(c *Config) { c.Size = 1; c.WaitTimeout = time.Minute })
	ctx := testCtx(t)
	a, _ := acquireNew(t, ctx, p, f)
	ch := acquireAsync(t, ctx, p)
	waitWaiting(t, p, 1)
	p.SetSize(3)
	got := receive(t, ch)
	if got.err != nil || got.c == a {
		t.Fatalf("waiter after growing: %v (a connection in use: %v)", got.err, got.c == a)
	}
	b := got.c
	f.session(t)
	c, _ := acquireNew(t, ctx, p, f)
	wantStats(t, p, 3, 0, 0)
	p.Release(b)
	p.Release(c)
	wantStats(t, p, 3, 2, 0)

	p.SetSize(1)
	wantStats(t, p, 1, 0, 0) // both idle ones above the new size closed
	p.Release(a)             // in use, and the pool is at its size: kept
	wantStats(t, p, 1, 1, 0)
	if st := p.Stats(); st.Discarded != 2 || p.Config().Size != 1 {
		t.Errorf("Discarded %d size %d, want 2 and 1", st.Discarded, p.Config().Size)
	}
}

// TestClose: Close fails the waiters at once and closes a connection in
// use when it is returned, which is when Close returns; a closed pool
// lends nothing.
func TestClose(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, func(c *Config) { c.Size = 1; c.WaitTimeout = time.Minute })
	ctx := testCtx(t)
	a, aSrv := acquireNew(t, ctx, p, f)
	ch := acquireAsync(t, ctx, p)
	waitWaiting(t, p, 1)

	closed := make(chan struct{})
	go func() {
		p.Close()
		close(closed)
	}()
	if w := receive(t, ch); !errors.Is(w.err, ErrClosed) {
		t.Fatalf("waiter at Close: %v, want ErrClosed", w.err)
	}
	if _, err := p.Acquire(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire on a closed pool: %v, want ErrClosed", err)
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a connection was in use")
	default:
	}
	p.Release(a)
	wantClosed(t, aSrv)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the connection in use came back")
	}
	wantStats(t, p, 0, 0, 0)
}

// TestCloseClosesIdle: Close closes the idle connections before it
// returns.
func TestCloseClosesIdle(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, nil)
	ctx := testCtx(t)
	a, aSrv := acquireNew(t, ctx, p, f)
	p.Release(a)
	p.Close()
	wantStats(t, p, 0, 0, 0)
	wantClosed(t, aSrv)
	if _, err := p.Acquire(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire on a closed pool: %v, want ErrClosed", err)
	}
}

// TestDialFailureFreesTheSlot: a connection that cannot be opened fails
// Acquire, is counted, and gives its slot back (the next Acquire tries
// again instead of waiting).
func TestDialFailureFreesTheSlot(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	p, err := New(Config{Addr: addr, User: "u", Database: "d", SSLMode: "disable", Size: 1,
		ConnectTimeout: 2 * time.Second, WaitTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	ctx := testCtx(t)
	for i := range 2 {
		// A refused connection, not a wait for a slot that was not given
		// back.
		if c, err := p.Acquire(ctx); !errors.Is(err, syscall.ECONNREFUSED) || c != nil {
			t.Fatalf("Acquire %d from a server that is not there: %v, want ECONNREFUSED", i+1, err)
		}
	}
	wantStats(t, p, 0, 0, 0)
	if st := p.Stats(); st.DialFails != 2 || st.Dials != 0 || st.Acquired != 0 {
		t.Errorf("stats %+v, want 2 failed dials and nothing acquired", st)
	}
}
