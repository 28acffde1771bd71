package pool

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sockopts reads the keepalive and user timeout settings of nc's socket.
func sockopts(t *testing.T, nc net.Conn) (keepalive, idle, intvl, cnt, userTimeoutMS int) {
	t.Helper()
	tc := tcpConn(nc)
	if tc == nil {
		t.Fatalf("%T is not a TCP connection", nc)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var gerr error
	get := func(fd uintptr, level, opt int) int {
		v, err := unix.GetsockoptInt(int(fd), level, opt)
		if err != nil && gerr == nil {
			gerr = err
		}
		return v
	}
	if err := rc.Control(func(fd uintptr) {
		keepalive = get(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		idle = get(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
		intvl = get(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL)
		cnt = get(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT)
		userTimeoutMS = get(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return
}

// TestServerConnSocketOptions: the connections a pool lends carry TCP
// keepalives as configured (defaults 2s/1s/3), none when turned off, and
// no TCP_USER_TIMEOUT (it would end connections to servers that are
// alive but do not read; the watchdog bounds silence instead).
func TestServerConnSocketOptions(t *testing.T) {
	f := newFakeServer(t)
	for _, tc := range []struct {
		name                          string
		mod                           func(*Config)
		ka, idle, intvl, cnt, userTMS int
	}{
		{"defaults", nil, 1, 2, 1, 3, 0},
		{"configured", func(c *Config) {
			c.AckTimeout, c.KeepAliveIdle, c.KeepAliveInterval, c.KeepAliveCount = 1500*time.Millisecond, 4*time.Second, 3*time.Second, 7
		}, 1, 4, 3, 7, 0},
		{"off", func(c *Config) { c.AckTimeout, c.KeepAliveIdle = -1, -1 }, 0, -1, -1, -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPool(t, f, tc.mod)
			c, err := p.Acquire(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			f.session(t)
			defer p.Discard(c)
			ka, idle, intvl, cnt, ut := sockopts(t, c.NetConn)
			if ka != tc.ka || ut != tc.userTMS || (tc.idle >= 0 && (idle != tc.idle || intvl != tc.intvl || cnt != tc.cnt)) {
				t.Fatalf("SO_KEEPALIVE %d TCP_KEEPIDLE %d TCP_KEEPINTVL %d TCP_KEEPCNT %d TCP_USER_TIMEOUT %d ms; want %d %d %d %d %d",
					ka, idle, intvl, cnt, ut, tc.ka, tc.idle, tc.intvl, tc.cnt, tc.userTMS)
			}
		})
	}
}

// TestSilentReaderIsNotStalled: a server that is alive but reads nothing
// for several ack timeouts while the proxy has much to send (its receive
// window closed, as for a COPY waiting for a lock) keeps its connection:
// it acknowledges TCP's window probes. Every byte arrives once it reads.
func TestSilentReaderIsNotStalled(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, func(c *Config) { c.AckTimeout = 300 * time.Millisecond })
	ctx := testCtx(t)
	c, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	srv := f.session(t)
	defer p.Discard(c)
	const total = 64 << 20 // far more than the socket buffers hold
	wrote := make(chan error, 1)
	go func() {
		_, err := c.NetConn.Write(make([]byte, total))
		wrote <- err
	}()
	// Not reading for 10 ack timeouts (TCP's window probes back off to
	// more than one apart meanwhile), polled on the pool's own counter.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if c.Broken() || p.Stats().Stalled != 0 {
			t.Fatalf("the connection was reset while the server was merely not reading (stalled %d)", p.Stats().Stalled)
		}
		time.Sleep(20 * time.Millisecond)
	}
	n, err := io.CopyN(io.Discard, srv, total)
	if err != nil || n != total {
		t.Fatalf("server read %d of %d bytes: %v", n, total, err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("write: %v", err)
	}
	if p.Stats().Stalled != 0 {
		t.Fatal("stalled counted")
	}
}
