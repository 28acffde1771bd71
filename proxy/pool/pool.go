package pool

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrTimeout is returned by Acquire when no connection became free within
// the wait timeout.
var ErrTimeout = errors.New("timed out waiting for a server connection")

// ErrClosed is returned by Acquire on a closed pool.
var ErrClosed = errors.New("pool is closed")

// Config describes one pool.
type Config struct {
	Addr     string // host:port of the server
	User     string
	Password string // may be empty for trust
	Database string
	// SSLMode is a libpq sslmode: disable, allow, prefer, require,
	// verify-ca, verify-full. Empty means "prefer".
	SSLMode string
	// SSLRootCert is a CA file for verify-ca/verify-full.
	SSLRootCert string
	// SSLCert and SSLKey are a client certificate and its key (PEM
	// files), for servers that authenticate the proxy by certificate.
	SSLCert, SSLKey string
	// Size is the most connections the pool opens; 0 means 20.
	Size int
	// WaitTimeout bounds how long Acquire waits for a free connection when
	// the pool is full; 0 means 5 s.
	WaitTimeout time.Duration
	// ConnectTimeout bounds opening one connection; 0 means 5 s.
	ConnectTimeout time.Duration
	// IdleTimeout closes connections idle longer than this; 0 means 10 min,
	// negative means never.
	IdleTimeout time.Duration
	// MaxLifetime closes connections older than this when they are
	// returned; 0 means 1 h, negative means never.
	MaxLifetime time.Duration
	// RuntimeParams are sent in the startup packet of every connection.
	RuntimeParams map[string]string
	// TLSConfig, when non-nil, overrides the TLS settings SSLMode implies
	// (used by tests and for client certificates).
	TLSConfig *tls.Config
	// AckTimeout fails a connection whose server acknowledges nothing
	// this long while it has data to deliver (see sockopt.go; Linux);
	// 0 means DefaultAckTimeout, negative means never (TCP's own
	// retries, minutes).
	AckTimeout time.Duration
	// KeepAliveIdle, KeepAliveInterval and KeepAliveCount are the TCP
	// keepalive settings: probes start after KeepAliveIdle without
	// traffic, go every KeepAliveInterval, and KeepAliveCount unanswered
	// ones fail the connection. 0 means the defaults (2 s, 1 s, 3); a
	// negative KeepAliveIdle turns keepalives off.
	KeepAliveIdle, KeepAliveInterval time.Duration
	KeepAliveCount                   int
}

func (c Config) withDefaults() Config {
	if c.Size <= 0 {
		c.Size = 20
	}
	if c.WaitTimeout <= 0 {
		c.WaitTimeout = 5 * time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 10 * time.Minute
	}
	if c.MaxLifetime == 0 {
		c.MaxLifetime = time.Hour
	}
	if c.SSLMode == "" {
		c.SSLMode = "prefer"
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.KeepAliveIdle == 0 {
		c.KeepAliveIdle = DefaultKeepAliveIdle
	}
	if c.KeepAliveInterval <= 0 {
		c.KeepAliveInterval = DefaultKeepAliveInterval
	}
	if c.KeepAliveCount <= 0 {
		c.KeepAliveCount = DefaultKeepAliveCount
	}
	return c
}

// Stats is a snapshot of a pool's counters, read by metrics and SHOW POOLS.
type Stats struct {
	Open      int           // connections open (idle + in use + being opened)
	Idle      int           // connections idle in the pool
	Waiting   int           // Acquire calls waiting now
	Acquired  uint64        // successful Acquire calls
	Waits     uint64        // Acquire calls that had to wait
	WaitTime  time.Duration // total time spent waiting
	Timeouts  uint64        // Acquire calls that timed out
	Dials     uint64        // connections opened
	DialFails uint64        // failed attempts to open a connection
	Discarded uint64        // connections closed as broken, old or idle
	Aborted   uint64        // connections reset by Abort
	Stalled   uint64        // connections reset for want of acknowledgement
}

// Pool lends backend connections. It is safe for concurrent use.
type Pool struct {
	cfg          Config
	pgconnConfig *pgconn.Config
	now          func() time.Time // time.Now; a fake clock in tests (newPool)

	mu      sync.Mutex
	idle    []*Conn            // LIFO: the most recently returned is lent first
	open    int                // idle + lent + dialing; never above cfg.Size
	conns   map[*Conn]struct{} // every connection whose reader runs
	waiters []*waiter          // FIFO
	closed  bool
	stats   Stats
	// reconnectAt: connections opened before it are closed when they
	// are returned (Reconnect).
	reconnectAt time.Time

	stop    chan struct{}
	done    chan struct{} // closed when reap ends
	wstop   chan struct{} // closed to stop watch, once no connection is left
	wonce   sync.Once
	wdone   chan struct{}  // closed when watch ends
	readers sync.WaitGroup // one reader goroutine per open connection
	cancels sync.WaitGroup // CancelRequests sent by Abort
}

type waiter struct {
	ch chan acquireResult // buffered, capacity 1
}

type acquireResult struct {
	conn *Conn
	dial bool // the waiter was granted a slot and must dial
}

// New returns a pool for cfg and starts its idle reaper. Close stops it.
func New(cfg Config) (*Pool, error) { return newPool(cfg, time.Now) }

// newPool is New with the clock the pool reads (time.Now but in tests).
func newPool(cfg Config, now func() time.Time) (*Pool, error) {
	cfg = cfg.withDefaults()
	connStr := fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=%s connect_timeout=%d",
		quoteHost(cfg.Addr), quotePort(cfg.Addr), quote(cfg.User), quote(cfg.Database), quote(cfg.SSLMode),
		int(cfg.ConnectTimeout.Seconds()+0.999))
	if cfg.SSLRootCert != "" {
		connStr += " sslrootcert=" + quote(cfg.SSLRootCert)
	}
	if cfg.SSLCert != "" {
		connStr += " sslcert=" + quote(cfg.SSLCert) + " sslkey=" + quote(cfg.SSLKey)
	}
	pc, err := pgconn.ParseConfig(connStr)
	if err != nil {
		return nil, fmt.Errorf("pool for %s: %w", cfg.Addr, err)
	}
	pc.Password = cfg.Password
	pc.DialFunc = cfg.dialContext
	if cfg.TLSConfig != nil {
		pc.TLSConfig = cfg.TLSConfig
		pc.Fallbacks = nil
	}
	for k, v := range cfg.RuntimeParams {
		pc.RuntimeParams[k] = v
	}
	p := &Pool{
		cfg:          cfg,
		pgconnConfig: pc,
		now:          now,
		conns:        make(map[*Conn]struct{}),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
		wstop:        make(chan struct{}),
		wdone:        make(chan struct{}),
	}
	go p.reap()
	go p.watch()
	return p, nil
}

// Config returns the pool's configuration with defaults filled in.
func (p *Pool) Config() Config { return p.cfg }

// Acquire returns an idle connection, opens a new one while the pool has
// room, or waits up to the wait timeout for one to be released.
func (p *Pool) Acquire(ctx context.Context) (*Conn, error) {
	p.mu.Lock()
	for {
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		n := len(p.idle)
		if n == 0 {
			break
		}
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if c.Broken() {
			p.open--
			p.stats.Discarded++
			p.mu.Unlock()
			c.close()
			p.mu.Lock()
			continue
		}
		p.stats.Acquired++
		p.mu.Unlock()
		return c, nil
	}
	if p.open < p.cfg.Size {
		p.open++
		p.mu.Unlock()
		return p.dial(ctx)
	}
	w := &waiter{ch: make(chan acquireResult, 1)}
	p.waiters = append(p.waiters, w)
	p.stats.Waits++
	p.mu.Unlock()

	start := p.now()
	timer := time.NewTimer(p.cfg.WaitTimeout)
	defer timer.Stop()
	var res acquireResult
	select {
	case res = <-w.ch:
	case <-timer.C:
		if r, ok := p.leave(w); ok {
			res = r
			break
		}
		p.mu.Lock()
		p.stats.Timeouts++
		p.stats.WaitTime += p.now().Sub(start)
		p.mu.Unlock()
		return nil, ErrTimeout
	case <-ctx.Done():
		if r, ok := p.leave(w); ok {
			res = r
			break
		}
		return nil, fmt.Errorf("wait for server connection: %w", ctx.Err())
	}
	p.mu.Lock()
	p.stats.WaitTime += p.now().Sub(start)
	if res.conn != nil {
		p.stats.Acquired++
	}
	p.mu.Unlock()
	if res.dial {
		return p.dial(ctx)
	}
	if res.conn == nil {
		return nil, ErrClosed
	}
	return res.conn, nil
}

// leave removes w from the wait queue. When w was already granted a
// result, it returns that result and true: the caller owns it.
func (p *Pool) leave(w *waiter) (acquireResult, bool) {
	p.mu.Lock()
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.mu.Unlock()
			return acquireResult{}, false
		}
	}
	p.mu.Unlock()
	return <-w.ch, true
}

func (p *Pool) dial(ctx context.Context) (*Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	c, err := dial(ctx, p)
	p.mu.Lock()
	if err != nil {
		p.stats.DialFails++
		p.mu.Unlock()
		p.releaseSlot()
		return nil, err
	}
	p.stats.Dials++
	p.stats.Acquired++
	p.mu.Unlock()
	return c, nil
}

// Release returns a connection in the idle state ('I', nothing in flight,
// no handler) to the pool; a broken one is discarded instead.
func (p *Pool) Release(c *Conn) {
	if c.park() {
		return // a CancelRequest is on its way: lent again when it is done
	}
	if c.Broken() {
		p.Discard(c)
		return
	}
	now := p.now()
	if p.cfg.MaxLifetime > 0 && now.Sub(c.created) > p.cfg.MaxLifetime {
		p.Discard(c)
		return
	}
	c.returned = now
	c.Reader.ReleaseLarge()
	p.mu.Lock()
	if !c.created.After(p.reconnectAt) {
		p.mu.Unlock()
		p.Discard(c)
		return
	}
	if p.closed {
		p.open--
		p.mu.Unlock()
		c.close()
		return
	}
	if p.open > p.cfg.Size {
		p.open--
		p.stats.Discarded++
		p.mu.Unlock()
		c.close()
		return
	}
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		w.ch <- acquireResult{conn: c}
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// evict drops a connection that broke while idle in the pool.
func (p *Pool) evict(c *Conn) {
	p.mu.Lock()
	for i, x := range p.idle {
		if x == c {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			p.stats.Discarded++
			p.mu.Unlock()
			p.releaseSlot()
			return
		}
	}
	p.mu.Unlock()
}

// Discard closes a connection that is broken or in an unknown state and
// frees its slot.
func (p *Pool) Discard(c *Conn) {
	c.close()
	p.mu.Lock()
	p.stats.Discarded++
	p.mu.Unlock()
	p.releaseSlot()
}

// releaseSlot frees one slot: a waiter gets the right to dial, else the
// open count drops.
func (p *Pool) releaseSlot() {
	p.mu.Lock()
	if len(p.waiters) > 0 && !p.closed {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		w.ch <- acquireResult{dial: true}
		return
	}
	p.open--
	p.mu.Unlock()
}

// SetSize changes the most connections the pool opens. Growing lets
// waiters dial at once; shrinking closes idle connections above the new
// size, and busy ones as they are returned.
func (p *Pool) SetSize(n int) {
	if n <= 0 {
		n = 20
	}
	p.mu.Lock()
	p.cfg.Size = n
	var grant []*waiter
	for p.open < n && len(p.waiters) > 0 {
		grant = append(grant, p.waiters[0])
		p.waiters = p.waiters[1:]
		p.open++
	}
	var excess []*Conn
	for p.open > n && len(p.idle) > 0 {
		excess = append(excess, p.idle[0])
		p.idle = p.idle[1:]
		p.open--
		p.stats.Discarded++
	}
	p.mu.Unlock()
	for _, w := range grant {
		w.ch <- acquireResult{dial: true}
	}
	for _, c := range excess {
		c.close()
	}
}

// Stats returns a snapshot of the pool's counters.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Open = p.open
	s.Idle = len(p.idle)
	s.Waiting = len(p.waiters)
	return s
}

// Close closes idle connections, fails waiters and makes later Acquire
// calls fail. Connections in use are closed when they are returned.
func (p *Pool) Close() { p.shut(false) }

// Abort is Close for a server that must get nothing more from the proxy
// (it is no longer its shard's primary): every connection, idle or in
// use, is reset at once (SO_LINGER 0, so nothing still queued in the
// kernel is sent later), and what the ones in use may still run on the
// server is canceled in the background (a CancelRequest; Close waits for
// them). Owners of connections in use see their handler
// fail (or their connection broken) and give them back as usual. When
// Abort returns, no handler of the pool's connections runs, and none will
// be given another frame.
func (p *Pool) Abort() { p.shut(true) }

func (p *Pool) shut(abort bool) {
	p.mu.Lock()
	wasClosed := p.closed
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	waiters := p.waiters
	p.waiters = nil
	var all []*Conn
	if abort {
		all = make([]*Conn, 0, len(p.conns))
		for c := range p.conns {
			all = append(all, c)
		}
	}
	p.mu.Unlock()
	if !wasClosed {
		close(p.stop)
		<-p.done
	}
	var reset []*Conn // guarded by p.mu while the aborts run
	idleSet := make(map[*Conn]bool, len(idle))
	for _, c := range idle {
		idleSet[c] = true
	}
	// Each abort may wait (boundedly) for a handler writing to a slow
	// client: all at once.
	var wg sync.WaitGroup
	for _, c := range all {
		wg.Go(func() {
			if c.abort() {
				p.mu.Lock()
				p.stats.Aborted++
				reset = append(reset, c)
				p.mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, c := range reset {
		if !idleSet[c] {
			// A statement may still run there (the reset reaches the
			// server process only when it next reads or writes): cancel
			// it, best effort, so it does not go on to commit.
			p.cancels.Add(1)
			go func() {
				defer p.cancels.Done()
				ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ConnectTimeout)
				defer cancel()
				_ = c.Cancel(ctx)
			}()
		}
	}
	for _, c := range idle {
		if abort {
			c.abort()
		} else {
			c.close()
		}
	}
	for _, w := range waiters {
		w.ch <- acquireResult{}
	}
	if !abort {
		p.readers.Wait()
		p.cancels.Wait()
	}
	// Connections in use are watched until they are gone (or reset).
	p.wonce.Do(func() { close(p.wstop) })
	<-p.wdone
}

// track records c as open (its reader runs) or, with open false, gone.
func (p *Pool) track(c *Conn, open bool) {
	p.mu.Lock()
	if open {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	p.mu.Unlock()
}

// reap closes idle connections past the idle timeout or lifetime.
func (p *Pool) reap() {
	defer close(p.done)
	if p.cfg.IdleTimeout < 0 && p.cfg.MaxLifetime < 0 {
		<-p.stop
		return
	}
	interval := time.Second
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.reapOnce()
	}
}

// reapOnce closes the idle connections past the idle timeout or lifetime
// now.
func (p *Pool) reapOnce() {
	now := p.now()
	var expired []*Conn
	p.mu.Lock()
	kept := p.idle[:0]
	for _, c := range p.idle {
		if (p.cfg.IdleTimeout > 0 && now.Sub(c.returned) > p.cfg.IdleTimeout) ||
			(p.cfg.MaxLifetime > 0 && now.Sub(c.created) > p.cfg.MaxLifetime) {
			expired = append(expired, c)
			continue
		}
		kept = append(kept, c)
	}
	for i := len(kept); i < len(p.idle); i++ {
		p.idle[i] = nil
	}
	p.idle = kept
	p.open -= len(expired)
	p.stats.Discarded += uint64(len(expired))
	p.mu.Unlock()
	for _, c := range expired {
		c.close()
	}
}

// ConnectAside opens a connection to the pool's server with its settings
// (application_name set to appName when not empty) that the pool neither
// counts nor lends: a short look at the server that must not wait for a
// free connection (the proxy's deadlock check). The caller closes it.
func (p *Pool) ConnectAside(ctx context.Context, appName string) (*pgconn.PgConn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	cfg := p.pgconnConfig.Copy()
	if appName != "" {
		cfg.RuntimeParams["application_name"] = appName
	}
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", p.cfg.Addr, err)
	}
	return pc, nil
}
