package pool

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// closedByPool reports whether the server side of a connection sees it
// closed (rather than silent until the deadline).
func closedByPool(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	for {
		_, err := c.Read(buf) // a Terminate first, then EOF
		if err != nil {
			return errors.Is(err, io.EOF) || !isTimeout(err)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestConnsAndReconnect: Conns lists every open connection, idle or lent;
// Reconnect closes the idle ones at once and a lent one when it is
// returned, and the pool opens new connections afterwards.
func TestConnsAndReconnect(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, nil)
	ctx := testCtx(t)
	busy, busySrv := acquireNew(t, ctx, p, f)
	idle, idleSrv := acquireNew(t, ctx, p, f)
	p.Release(idle)

	conns := p.Conns()
	if len(conns) != 2 {
		t.Fatalf("Conns: %+v, want 2", conns)
	}
	for _, c := range conns {
		wantIdle := c.PID == idle.PID
		if c.Idle != wantIdle || c.LocalAddr == "" || c.Created.IsZero() || c.Returned.IsZero() != !wantIdle {
			t.Errorf("Conns entry %+v (idle is pid %d)", c, idle.PID)
		}
	}

	if n := p.Reconnect(); n != 1 {
		t.Errorf("Reconnect closed %d idle connections, want 1", n)
	}
	if !closedByPool(t, idleSrv) {
		t.Error("the idle connection was not closed")
	}
	if st := p.Stats(); st.Open != 1 || st.Idle != 0 {
		t.Errorf("after Reconnect: open %d idle %d, want 1 and 0", st.Open, st.Idle)
	}
	p.Release(busy)
	if !closedByPool(t, busySrv) {
		t.Error("the lent connection was not closed when returned")
	}
	if st := p.Stats(); st.Open != 0 {
		t.Errorf("after the release: open %d, want 0", st.Open)
	}
	fresh, _ := acquireNew(t, ctx, p, f)
	p.Release(fresh)
	if st := p.Stats(); st.Idle != 1 {
		t.Errorf("a connection opened after Reconnect was not kept: idle %d", st.Idle)
	}
}
