package pool

import "time"

// ConnInfo describes one open server connection, for the admin console's
// SHOW SERVERS.
type ConnInfo struct {
	PID       uint32    // the server process
	LocalAddr string    // the proxy's end of the connection
	Created   time.Time // when it was opened
	Returned  time.Time // when it last went back to the pool (idle ones only)
	Idle      bool      // idle in the pool (else lent to a session)
	TLS       bool      // encrypted
}

// Conns lists the pool's open connections.
func (p *Pool) Conns() []ConnInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	idle := make(map[*Conn]bool, len(p.idle))
	for _, c := range p.idle {
		idle[c] = true
	}
	out := make([]ConnInfo, 0, len(p.conns))
	for c := range p.conns {
		ci := ConnInfo{PID: c.PID, Created: c.created, Idle: idle[c], TLS: c.tlsConfig}
		if ci.Idle {
			ci.Returned = c.returned // written before it joined idle, under mu
		}
		if a := c.NetConn.LocalAddr(); a != nil {
			ci.LocalAddr = a.String()
		}
		out = append(out, ci)
	}
	return out
}

// Reconnect makes the pool replace its connections: idle ones are closed
// now, those lent out when they are returned (as PgBouncer's RECONNECT).
// It returns how many it closed now.
func (p *Pool) Reconnect() int {
	p.mu.Lock()
	p.reconnectAt = p.now()
	old := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range old {
		p.Discard(c)
	}
	return len(old)
}
