package pool

import (
	"context"
	"net"
	"time"
)

// Bounded server I/O. A server that stops answering without closing the
// connection (a network partition drops its packets) must fail the
// connection within seconds, not when TCP gives up retransmitting (up to
// about 15 minutes):
//
//   - While nothing is to be delivered (a statement waits for its reply,
//     or the connection is idle), TCP keepalive probes find it: after
//     KeepAliveIdle without traffic, KeepAliveCount unanswered probes
//     KeepAliveInterval apart fail the connection.
//   - While data is to be delivered, keepalives do not run; the pool's
//     watchdog (Linux: TCP_INFO) resets a connection that got no
//     acknowledgement at all for AckTimeout while it had data in flight
//     or probes unanswered. A server that is alive but does not read
//     (a COPY waiting for a lock, a long statement ahead of a pipelined
//     batch) still acknowledges window probes, so it is left alone —
//     which TCP_USER_TIMEOUT does not do (since Linux 5.11 it also ends
//     connections whose peer keeps its receive window closed).

// Defaults of the settings above, well under failover detection (about
// 2 s) plus the proxy's buffer window (10 s).
const (
	DefaultAckTimeout        = 5 * time.Second
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

// watch resets, every tick, the connections stalled for the ack timeout
// (see above), until the pool is closed and its connections are gone.
func (p *Pool) watch() {
	defer close(p.wdone)
	if p.cfg.AckTimeout <= 0 || !canWatch {
		<-p.wstop
		return
	}
	tick := min(p.cfg.AckTimeout/4, 250*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-p.wstop:
			return
		case <-t.C:
		}
		// Idle connections have nothing to deliver; keepalives watch them.
		p.mu.Lock()
		idle := make(map[*Conn]bool, len(p.idle))
		for _, c := range p.idle {
			idle[c] = true
		}
		conns := make([]*Conn, 0, len(p.conns))
		for c := range p.conns {
			if !idle[c] {
				conns = append(conns, c)
			}
		}
		p.mu.Unlock()
		now := p.now()
		for _, c := range conns {
			if silent, stalled := c.stalled(now, p.cfg.AckTimeout); stalled && c.reset(silent) {
				p.mu.Lock()
				p.stats.Stalled++
				p.mu.Unlock()
			}
		}
	}
}
