package pool

import (
	"context"
	"net"
	"syscall"
	"time"
)

// Bounded server I/O: every connection to a server (pooled ones and the
// short ones that carry a CancelRequest) has TCP keepalives and, on
// Linux, a TCP user timeout. A server that stops answering without
// closing the connection (a network partition drops its packets) then
// fails the connection within seconds: keepalive probes find it while a
// statement waits for its reply, the user timeout while data the proxy
// sent stays unacknowledged. Without them a read waits until TCP gives up
// retransmitting, which takes up to about 15 minutes.

// Defaults of the socket options, well under failover detection (about
// 2 s) plus the proxy's buffer window (10 s).
const (
	DefaultTCPUserTimeout    = 5 * time.Second
	DefaultKeepAliveIdle     = 2 * time.Second
	DefaultKeepAliveInterval = time.Second
	DefaultKeepAliveCount    = 3
)

// dialer returns the dialer of the pool's connections.
func (c Config) dialer() *net.Dialer {
	d := &net.Dialer{Timeout: c.ConnectTimeout}
	if c.KeepAliveIdle < 0 {
		d.KeepAlive = -1 // off
	} else {
		d.KeepAliveConfig = net.KeepAliveConfig{
			Enable:   true,
			Idle:     c.KeepAliveIdle,
			Interval: c.KeepAliveInterval,
			Count:    c.KeepAliveCount,
		}
	}
	if ut := c.TCPUserTimeout; ut > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = setUserTimeout(fd, ut) }); err != nil {
				return err
			}
			return serr
		}
	}
	return d
}

// dialContext is the pool's dial function (pgconn.DialFunc).
func (c Config) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return c.dialer().DialContext(ctx, network, addr)
}

// tcpConn returns the TCP connection under nc (a TLS one is unwrapped),
// or nil.
func tcpConn(nc net.Conn) *net.TCPConn {
	for {
		switch c := nc.(type) {
		case *net.TCPConn:
			return c
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return nil
		}
	}
}
