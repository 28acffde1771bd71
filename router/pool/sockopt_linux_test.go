package pool

import (
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
// keepalives and TCP_USER_TIMEOUT as configured (defaults 2s/1s/3 and
// 5s), and none when turned off.
func TestServerConnSocketOptions(t *testing.T) {
	f := newFakeServer(t)
	for _, tc := range []struct {
		name                          string
		mod                           func(*Config)
		ka, idle, intvl, cnt, userTMS int
	}{
		{"defaults", nil, 1, 2, 1, 3, 5000},
		{"configured", func(c *Config) {
			c.TCPUserTimeout, c.KeepAliveIdle, c.KeepAliveInterval, c.KeepAliveCount = 1500*time.Millisecond, 4*time.Second, 3*time.Second, 7
		}, 1, 4, 3, 7, 1500},
		{"off", func(c *Config) { c.TCPUserTimeout, c.KeepAliveIdle = -1, -1 }, 0, -1, -1, -1, 0},
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
