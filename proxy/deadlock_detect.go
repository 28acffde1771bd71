package proxy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/wire"
)

// DefaultDeadlockTimeout is transactions.deadlock_timeout's default: how
// long a statement of a transaction over several shards waits before the
// proxy looks for a deadlock across shards.
const DefaultDeadlockTimeout = time.Second

// deadlockQuery lists a server's backends that belong to a distributed
// transaction or wait for a lock, with the pids blocking them. Any role
// may run it: pid and application_name of every session are public, and
// so are locks.
const deadlockQuery = `SELECT pid, application_name, b::text FROM (SELECT pid, coalesce(application_name, '') AS application_name, pg_blocking_pids(pid) AS b FROM pg_stat_activity WHERE pid <> pg_backend_pid()) a WHERE application_name LIKE 'pgshard dtx %' OR cardinality(b) > 0`

// deadlockCheckTimeout bounds one look at every primary.
const deadlockCheckTimeout = 3 * time.Second

// deadlockDetector is the proxy's watch over its transactions over
// several shards (deadlock.go). Its goroutine is the Server's, started by
// Serve and stopped by Shutdown.
type deadlockDetector struct {
	nonce uint32
	seq   atomic.Uint64

	mu   sync.Mutex
	txs  map[*session]struct{} // sessions whose transaction has an ID
	wake chan struct{}         // a first transaction was watched

	stop context.CancelFunc // under Server.mu
	done chan struct{}

	detected prometheus.Counter
	checks   prometheus.Counter
}

// init prepares the detector and registers its metrics.
func (d *deadlockDetector) init(reg prometheus.Registerer) error {
	var b [4]byte
	_, _ = rand.Read(b[:])
	d.nonce = binary.BigEndian.Uint32(b[:])
	d.txs = make(map[*session]struct{})
	d.wake = make(chan struct{}, 1)
	d.detected = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pgshard_deadlocks_detected_total",
		Help: "Deadlocks across shards this proxy broke by failing one of its transactions with 40P01.",
	})
	d.checks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pgshard_deadlock_checks_total",
		Help: "Looks at every primary's lock waits, made while a transaction over several shards waited longer than transactions.deadlock_timeout.",
	})
	if err := reg.Register(d.detected); err != nil {
		return fmt.Errorf("register deadlock metrics: %w", err)
	}
	if err := reg.Register(d.checks); err != nil {
		return fmt.Errorf("register deadlock metrics: %w", err)
	}
	return nil
}

// newID returns a new distributed transaction ID.
func (d *deadlockDetector) newID() string {
	return newDtxID(time.Now(), d.nonce, d.seq.Add(1))
}

// watch adds ss, whose transaction got an ID, to the watched sessions.
func (d *deadlockDetector) watch(ss *session) {
	d.mu.Lock()
	d.txs[ss] = struct{}{}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// unwatch removes ss.
func (d *deadlockDetector) unwatch(ss *session) {
	d.mu.Lock()
	delete(d.txs, ss)
	d.mu.Unlock()
}

// startDeadlocks starts the detector's goroutine (not after Shutdown).
func (s *Server) startDeadlocks() {
	d := &s.dl
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shuttingDown() || d.stop != nil {
		cancel()
		return
	}
	d.stop, d.done = cancel, make(chan struct{})
	go func() {
		defer close(d.done)
		d.run(ctx, s)
	}()
}

// stopDeadlocks stops the detector and waits for it.
func (s *Server) stopDeadlocks() {
	d := &s.dl
	s.mu.Lock()
	stop, done := d.stop, d.done
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// deadlockTimeout returns transactions.deadlock_timeout (negative: off).
func (s *Server) deadlockTimeout() time.Duration {
	t := s.runtime().cfg.Transactions.DeadlockTimeout.D()
	if t == 0 {
		t = DefaultDeadlockTimeout
	}
	return t
}

// run sleeps while no transaction over several shards is open; else it
// looks, every quarter of the timeout, whether one of them has waited
// longer than the timeout, and then checks the primaries for a deadlock
// (at most once per timeout while the waits last).
func (d *deadlockDetector) run(ctx context.Context, s *Server) {
	var last time.Time
	for {
		d.mu.Lock()
		n := len(d.txs)
		d.mu.Unlock()
		if n == 0 {
			select {
			case <-ctx.Done():
				return
			case <-d.wake:
			}
			continue
		}
		timeout := s.deadlockTimeout()
		tick := min(max(timeout/4, 20*time.Millisecond), time.Second)
		if timeout < 0 {
			tick = time.Second
		}
		t := time.NewTimer(tick)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if timeout < 0 || time.Since(last) < timeout {
			continue
		}
		waiter := d.longWaiter(timeout)
		if waiter == nil {
			continue
		}
		last = time.Now()
		d.check(ctx, s, waiter)
	}
}

// watched returns the watched sessions.
func (d *deadlockDetector) watched() []*session {
	d.mu.Lock()
	defer d.mu.Unlock()
	list := make([]*session, 0, len(d.txs))
	for ss := range d.txs {
		list = append(list, ss)
	}
	return list
}

// longWaiter returns a watched session whose transaction has waited for
// an answer longer than timeout, or nil; it forgets sessions whose
// transaction ended without telling (a session that closed).
func (d *deadlockDetector) longWaiter(timeout time.Duration) *session {
	var found *session
	for _, ss := range d.watched() {
		ss.mu.Lock()
		since, id := ss.dtxWaitingSince()
		gone := id == "" || len(ss.st.atts) == 0
		ss.mu.Unlock()
		if gone {
			d.unwatch(ss)
			continue
		}
		if found == nil && !since.IsZero() && time.Since(since) >= timeout {
			found = ss
		}
	}
	return found
}

// check looks at every primary for cycles of waits across shards and
// breaks those whose victim is one of this proxy's transactions. A victim
// is only acted on when a second look, right after the first, chooses it
// again: the shards are listed one after the other, not at one instant.
// Both looks use one connection per primary, closed at the end.
func (d *deadlockDetector) check(ctx context.Context, s *Server, waiter *session) {
	ctx, cancel := context.WithTimeout(ctx, deadlockCheckTimeout)
	defer cancel()
	lk := &lockLister{s: s, waiter: waiter, conns: map[string]*pgconn.PgConn{}}
	defer lk.close(ctx)
	first := d.victims(ctx, s, lk)
	if len(first) == 0 {
		return
	}
	mine := false
	for _, v := range first {
		mine = mine || d.owner(v.dtx) != nil
	}
	if !mine {
		return
	}
	again := map[string]bool{}
	for _, v := range d.victims(ctx, s, lk) {
		again[v.dtx] = true
	}
	for _, v := range first {
		if again[v.dtx] {
			d.breakCycle(ctx, s, v)
		}
	}
}

// victims lists every primary's waits and chooses the victims of the
// cycles across shards.
func (d *deadlockDetector) victims(ctx context.Context, s *Server, lk *lockLister) []dlVictim {
	d.checks.Inc()
	shards := s.runtime().cfg.Shards
	edges := make([][]dlEdge, len(shards))
	var wg sync.WaitGroup
	for i := range shards {
		name := shards[i].Name
		wg.Go(func() {
			procs, err := lk.lockWaits(ctx, name)
			if err != nil {
				if ctx.Err() == nil || !errors.Is(ctx.Err(), context.Canceled) {
					s.log.Warn("deadlock check: cannot list the lock waits of a shard", "shard", name, "err", err)
				}
				return
			}
			edges[i] = waitEdges(name, procs)
		})
	}
	wg.Wait()
	var all []dlEdge
	for _, e := range edges {
		all = append(all, e...)
	}
	return chooseVictims(all)
}

// lockLister lists the lock waits of the primaries during one check,
// over a connection of its own per primary (with the credentials of the
// waiting session's pool), opened on first use and kept for the check's
// second look: a full pool must not keep the check from seeing the
// deadlock that fills it.
type lockLister struct {
	s      *Server
	waiter *session
	mu     sync.Mutex
	conns  map[string]*pgconn.PgConn // by shard
}

// conn returns the check's connection to shard's primary.
func (lk *lockLister) conn(ctx context.Context, shard string) (*pgconn.PgConn, error) {
	lk.mu.Lock()
	pc := lk.conns[shard]
	lk.mu.Unlock()
	if pc != nil {
		return pc, nil
	}
	p, err := lk.s.pool(ctx, shard, lk.waiter.user, lk.waiter.db)
	if err != nil {
		return nil, err
	}
	pc, err = p.ConnectAside(ctx, "pgshard deadlock check")
	if err != nil {
		return nil, err
	}
	lk.mu.Lock()
	lk.conns[shard] = pc
	lk.mu.Unlock()
	return pc, nil
}

// close closes the check's connections.
func (lk *lockLister) close(ctx context.Context) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	lk.mu.Lock()
	defer lk.mu.Unlock()
	for shard, pc := range lk.conns {
		_ = pc.Close(cctx)
		delete(lk.conns, shard)
	}
}

// lockWaits lists the backends of shard's primary that belong to a
// distributed transaction or wait for a lock. A connection that failed
// is dropped (the next look opens another).
func (lk *lockLister) lockWaits(ctx context.Context, shard string) ([]dlProc, error) {
	pc, err := lk.conn(ctx, shard)
	if err != nil {
		return nil, err
	}
	procs, err := readLockWaits(ctx, pc)
	if err != nil {
		lk.mu.Lock()
		delete(lk.conns, shard)
		lk.mu.Unlock()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = pc.Close(cctx)
		cancel()
	}
	return procs, err
}

// readLockWaits runs deadlockQuery on pc.
func readLockWaits(ctx context.Context, pc *pgconn.PgConn) ([]dlProc, error) {
	res := pc.Exec(ctx, deadlockQuery)
	results, err := res.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("list lock waits: %w", err)
	}
	if len(results) != 1 {
		return nil, errors.New("list lock waits: no result")
	}
	procs := make([]dlProc, 0, len(results[0].Rows))
	for _, row := range results[0].Rows {
		if len(row) != 3 {
			return nil, fmt.Errorf("list lock waits: %d columns", len(row))
		}
		pid, err := strconv.ParseInt(string(row[0]), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("list lock waits: pid %q: %w", row[0], err)
		}
		blockers, err := parsePIDArray(string(row[2]))
		if err != nil {
			return nil, fmt.Errorf("list lock waits: %w", err)
		}
		procs = append(procs, dlProc{pid: int32(pid), dtx: dtxOfApp(string(row[1])), blockers: blockers})
	}
	return procs, nil
}

// owner returns the watched session whose transaction is dtx, or nil.
func (d *deadlockDetector) owner(dtx string) *session {
	for _, ss := range d.watched() {
		ss.mu.Lock()
		id := ss.dtx.id
		ss.mu.Unlock()
		if id == dtx {
			return ss
		}
	}
	return nil
}

// breakCycle fails v, when it is one of this proxy's transactions: each
// of its statements waiting in the cycle is cancelled (CancelRequest with
// the backend's key, the connection held so that the cancel cannot reach
// another owner), and the session reports the cancel as 40P01.
func (d *deadlockDetector) breakCycle(ctx context.Context, s *Server, v dlVictim) {
	ss := d.owner(v.dtx)
	if ss == nil {
		return
	}
	type target struct {
		be    *pool.Conn
		shard string
		done  func(bool)
	}
	var targets []target
	ss.mu.Lock()
	if since, id := ss.dtxWaitingSince(); id != v.dtx || since.IsZero() {
		// Another transaction now, or its statement has ended: nothing
		// to cancel, and no 57014 to come may be taken for this one's.
		ss.mu.Unlock()
		return
	}
	for _, w := range v.waits {
		a := ss.st.byShard(w.shard)
		if a == nil || a.replica || int32(a.conn.PID) != w.pid {
			continue
		}
		targets = append(targets, target{be: a.conn, shard: w.shard, done: a.conn.HoldForCancel()})
	}
	var armed *wire.Error
	if len(targets) > 0 {
		// Armed before the cancels go out: their 57014 may come back
		// before Cancel returns.
		armed = deadlockError(v, targets[0].shard)
		ss.dtx.victim.Store(armed)
	}
	ss.mu.Unlock()
	if len(targets) == 0 {
		return
	}
	d.detected.Inc()
	ss.log.Info("deadlock across shards: failing the youngest transaction of the cycle",
		"dtx", v.dtx, "cycle", v.members, "shards", v.shards, "waiting_on", targets[0].shard)
	sent := false
	for _, t := range targets {
		err := t.be.Cancel(ctx)
		notSent := errors.Is(err, pool.ErrCancelNotSent)
		sent = sent || !notSent
		t.done(err == nil || notSent)
		if err != nil {
			ss.log.Warn("deadlock across shards: cancel failed", "shard", t.shard, "server", t.be.Addr, "err", err)
		}
	}
	if !sent {
		// No cancel went out: the next 57014 of the transaction (its
		// statement_timeout, the client's cancel) is not the deadlock's.
		ss.dtxDisarm(armed)
	}
}
