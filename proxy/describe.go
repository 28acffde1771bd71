package proxy

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/router"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// Describing before the key is known. A driver's first use of a statement
// is often Parse, Describe (statement) and Sync, with no Bind: pgx's
// statement cache, JDBC's describe. Nothing runs, and every shard has the
// same schema, so any server holding the statement's tables answers alike
// — a healthy one is chosen rather than the default shard's primary,
// which may be the one server that cannot be reached.

// attachForDescribe attaches, outside any deferred transaction, a backend
// that can answer the held-back Parse and Describe messages pending (they
// are followed by a Sync, so the attachment ends there).
func (s *session) attachForDescribe(ctx context.Context, pending [][]byte) (*pool.Conn, error) {
	var shards []string
	if !s.sessionPool && s.attached() == nil {
		shards = s.describeShards(pending)
	}
	if shards == nil {
		// A session-pooled client keeps its first backend: let the
		// usual route choose it.
		s.noBegin = true
		defer func() { s.noBegin = false }()
		return s.attach(ctx, router.Query{})
	}
	shard, replica := s.srv.describeEndpoint(shards)
	return s.attachDescribeAt(ctx, shard, replica)
}

// attachDescribeAt attaches, outside any deferred transaction, a backend
// of shard's primary, or of its replica at address replica when that is
// not "", for describing.
func (s *session) attachDescribeAt(ctx context.Context, shard, replica string) (*pool.Conn, error) {
	s.noBegin = true
	defer func() { s.noBegin = false }()
	return s.attachRouted(ctx, rplan.Plan{Kind: rplan.Any, Shard: shard}, router.Query{},
		func(rplan.Plan) string { return replica })
}

// Sending a describe again. A request of held-back Parse and Describe
// messages and the client's Sync runs nothing, so when its server
// connection fails (aborted because the map replaced the server, reset by
// the acknowledgement watchdog, closed) before any of the answer reached
// the client, it is sent to another server that can describe it, and the
// client sees only that server's answer. A server that just went silent
// (a partition the health monitor has not seen yet) would otherwise hold
// a new session for the failover's fence step or backend.ack_timeout, so
// the request is also sent to another server when no ReadyForQuery came
// within describeResendAfter. The first server is not taken for failed:
// a describe can wait on a lock (DDL in progress), so its connection
// stays out of the pool until its answer comes (and is dropped: the
// client has its answer) or the connection is reset, whichever first.
// To know that nothing reached the client, the relay holds the answer
// back until its ReadyForQuery (describing); serve waits for it, which
// costs a client nothing that waits for its describe anyway. One request
// goes to each server at most, and a retry only to a server not known
// down; without one, serve waits for the last server tried, and reports
// its loss as before.

// describeResendAfter is how long a describe-only request waits for its
// server's answer before it is sent to another server.
const describeResendAfter = 300 * time.Millisecond

// describeTry is a describe-only request in flight (session.describing).
type describeTry struct {
	// lost is set, with err, by the relay when the server connection
	// failed and it detached it: serve sends the request elsewhere.
	lost atomic.Bool
	err  error
}

// describeOnly answers held-back Parse and Describe messages pending
// followed by the client's Sync (frame sync) as described above. It
// reports false, having done nothing, when the request is not one it
// handles (the session's router cannot say which servers can describe
// it, a backend is attached, session pooling, an open portal over several
// shards): sendPending then attaches as usual.
func (s *session) describeOnly(ctx context.Context, pending [][]byte, sync []byte) (bool, error) {
	if s.sessionPool || s.portal != nil || s.stmts.ran != nil || s.attached() != nil {
		return false, nil
	}
	shards := s.describeShards(pending)
	if shards == nil {
		return false, nil
	}
	var tried []string
	var lost error
	for {
		shard, replica, ok := s.srv.describeEndpointBut(shards, tried)
		switch {
		case !ok && tried == nil:
			shard, replica = s.srv.describeEndpoint(shards) // none known up: try anyway
		case !ok:
			return true, wire.Fatalf(wire.SQLStateConnectionFailure, "server connection lost while describing the statement, and no other server can describe it: %v", lost)
		}
		addr := replica
		if addr == "" {
			addr = s.srv.primaryAddr(shard)
		}
		be, err := s.attachDescribeAt(ctx, shard, replica)
		if err != nil {
			if unreachable(err) {
				if _, _, ok := s.srv.describeEndpointBut(shards, append(tried, addr)); ok {
					tried, lost = append(tried, addr), err
					continue
				}
			}
			return true, err
		}
		t := &describeTry{}
		s.describing.Store(t)
		answered, err := s.sendDescribe(ctx, be, t, pending, sync, shards, tried)
		s.describing.Store(nil)
		if answered || err != nil {
			return true, err
		}
		tried = append(tried, be.Addr)
		lost = t.err
		// The held-back Parse messages are sent again: their names are
		// not in use (they were new when they came).
		for _, f := range pending {
			if f[0] == 'P' {
				p, _ := wire.DecodeParse(f[wire.HeaderLen:]) // checked by handleParse
				delete(s.stmts.named, string(p.Name))
			}
		}
		s.log.Debug("describe sent to another server", "server", be.Addr, "err", lost)
	}
}

// sendDescribe sends the request to be, attached for it, and waits for its
// answer (true) or its loss (false: be is detached, t.err says why when
// it failed).
func (s *session) sendDescribe(ctx context.Context, be *pool.Conn, t *describeTry, pending [][]byte, sync []byte, shards, tried []string) (bool, error) {
	if err := s.forwardPending(ctx, pending); err != nil {
		return false, err
	}
	s.mu.Lock()
	override := s.syncOverrideLocked()
	ends, pinned := s.st.copyEnds, s.st.life == statePinned
	wait := s.waitChan()
	s.mu.Unlock()
	s.pushSync(be, syncEntry{status: override, clientSync: true, copyEnds: ends})
	s.bout = append(s.bout, sync...)
	if pinned {
		// A statement that pins the session was parsed: it stays on
		// this server, like the session.
		s.describing.Store(nil)
		return true, s.flushBackend()
	}
	if err := s.flushBackend(); err != nil {
		return false, err
	}
	timer := time.NewTimer(describeResendAfter)
	defer timer.Stop()
	resend := timer.C
	for {
		select {
		case <-wait:
			return !t.lost.Load(), nil
		case <-resend:
			resend = nil
			if _, _, ok := s.srv.describeEndpointBut(shards, append(tried, be.Addr)); ok && s.handOver(be) {
				t.err = fmt.Errorf("no answer from %s within %s", be.Addr, describeResendAfter)
				return false, nil
			}
			// Nowhere else to go, or be answered or failed just now
			// (wait tells which).
		case <-ctx.Done():
			return false, fmt.Errorf("wait for the description of the statement: %w", ctx.Err())
		}
	}
}

// describeLost is the relay's Fail for the server connection be of
// describe-only request t: nothing of its answer reached the client, so
// instead of telling the client, it detaches be and lets serve send the
// request to another server.
func (s *session) describeLost(be *pool.Conn, t *describeTry, err error) {
	s.relay.out = s.relay.out[:0]
	t.err = fmt.Errorf("%s: %w", be.Addr, err)
	s.mu.Lock()
	mine := s.st.byConn(be) != nil
	if mine {
		s.dropDescribeLocked(be)
	}
	t.lost.Store(true)
	s.wakeServe()
	s.mu.Unlock()
	if mine {
		be.Pool().Discard(be)
	}
}

// handOver takes be, whose describe-only request goes to another server,
// from the relay: a describeDrain waits for its answer and returns it to
// the pool. It reports false when the relay has finished with be (the
// answer came, or the connection failed) and nothing was done.
func (s *session) handOver(be *pool.Conn) bool {
	d := &describeDrain{}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !be.ReplaceHandler(s, d) {
		return false
	}
	// The relay is not running and will not be called again for be.
	s.relay.out = s.relay.out[:0]
	s.mu.Lock()
	d.q = s.dropDescribeLocked(be)
	s.mu.Unlock()
	return true
}

// dropDescribeLocked detaches the session's backend be, whose
// describe-only request is given up, and returns the bookkeeping of what
// it has not answered yet. Callers hold s.mu.
func (s *session) dropDescribeLocked(be *pool.Conn) respQueue {
	q := s.queue
	s.queue = respQueue{}
	for i := q.head; i < len(q.items); i++ {
		if e := q.items[i]; e.kind == entrySync && (e.sync.status != 0 || e.sync.hide) {
			s.overrides.Add(-1)
		}
	}
	s.st.detach(be)
	s.unsynced = false
	s.zInFlight.Store(false)
	return q
}

// describeDrain is the handler of a server connection whose describe-only
// request was sent to another server: it drops the answer and, at its
// ReadyForQuery, gives the connection back to the pool (forgetting the
// statements whose Parse failed); a connection that fails is discarded.
type describeDrain struct {
	mu sync.Mutex
	q  respQueue
}

func (d *describeDrain) Frame(be *pool.Conn, typ byte, _ []byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch typ {
	case '1', '3': // ParseComplete, CloseComplete
		d.q.popResponse()
	case 'Z':
		_, failed := d.q.popSync()
		for _, name := range failed {
			delete(be.Prepared, name)
		}
		return d.q.syncs == 0
	}
	return false
}

func (d *describeDrain) Flush(*pool.Conn) {}

func (d *describeDrain) Fail(be *pool.Conn, _ error) { be.Pool().Discard(be) }

// describeShards returns the shards any of which can describe every
// statement of pending, the preferred first, or nil when the router does
// not say.
func (s *session) describeShards(pending [][]byte) []string {
	r := s.routerFor()
	var shards []string
	seen := false
	for _, f := range pending {
		sql := s.pendingFrameSQL(pending, f)
		if sql == "" {
			continue
		}
		plan, err := r.Route(router.Query{SQL: sql, Describe: true})
		if err != nil || plan.DescribeShards == nil {
			return nil
		}
		if !seen {
			shards, seen = slices.Clone(plan.DescribeShards), true
			continue
		}
		shards = slices.DeleteFunc(shards, func(sh string) bool { return !slices.Contains(plan.DescribeShards, sh) })
	}
	if len(shards) == 0 {
		return nil
	}
	return shards
}

// endpointView is the health of every endpoint of the shard map, reused
// for replicaViewTTL.
type endpointView struct {
	at       time.Time
	statuses []health.Status
}

// describeEndpoint picks the server that describes a statement any of
// shards can describe: the primary of the first unless the health monitor
// saw it down (or its shard is switching primaries), else the primary of
// another that the monitor saw up, else a replica of one of them that it
// saw up (the statement is only described there); when none is known up,
// the primary that failed the fewest probes in a row. It returns the
// shard and the replica's address ("" for the primary).
func (s *Server) describeEndpoint(shards []string) (shard, replica string) {
	if shard, replica, ok := s.describeEndpointBut(shards, nil); ok {
		return shard, replica
	}
	// None is known up: the primary that failed the fewest probes in a
	// row (a probe may just have timed out).
	statuses := s.endpointStatuses()
	best, fails := shards[0], -1
	for _, sh := range shards {
		if st := findStatus(statuses, sh, health.RolePrimary); st != nil && (fails < 0 || st.ConsecutiveFailures < fails) {
			best, fails = sh, st.ConsecutiveFailures
		}
	}
	return best, ""
}

// describeEndpointBut is describeEndpoint's choice among the servers not
// in skip (addresses) that are not known down: it reports false when
// there is none.
func (s *Server) describeEndpointBut(shards, skip []string) (shard, replica string, ok bool) {
	statuses := s.endpointStatuses()
	if sh, ok := s.upPrimary(statuses, shards, skip); ok {
		return sh, "", true
	}
	for _, sh := range shards {
		for _, st := range statuses {
			if st.Shard == sh && st.Role == health.RoleReplica && st.Up && !slices.Contains(skip, st.Addr) {
				return sh, st.Addr, true
			}
		}
	}
	return "", "", false
}

// upPrimary returns, of shards, the first whose primary (not in skip) is
// fit to use: the first shard's unless the health monitor saw it down or
// the shard switches primaries, else another's that the monitor saw up.
func (s *Server) upPrimary(statuses []health.Status, shards, skip []string) (string, bool) {
	for i, sh := range shards {
		if slices.Contains(skip, s.primaryAddr(sh)) || s.switching(sh) {
			continue
		}
		st := findStatus(statuses, sh, health.RolePrimary)
		if i == 0 && (st == nil || st.LastProbe.IsZero()) || st != nil && st.Up {
			return sh, true
		}
	}
	return "", false
}

// endpointStatuses returns the health of every endpoint, rebuilt from the
// monitor at most every replicaViewTTL.
func (s *Server) endpointStatuses() []health.Status {
	v := s.endpoints.Load()
	if v == nil || time.Since(v.at) > replicaViewTTL {
		v = &endpointView{at: time.Now(), statuses: s.Health()}
		s.endpoints.Store(v)
	}
	return v.statuses
}

func findStatus(statuses []health.Status, shard, role string) *health.Status {
	for i := range statuses {
		if st := &statuses[i]; st.Shard == shard && st.Role == role {
			return st
		}
	}
	return nil
}

// primaryAddr returns the address of shard's primary in the current
// configuration ("" for an unknown shard): the address of its pools and
// their connections (pool.Conn.Addr).
func (s *Server) primaryAddr(shard string) string {
	for _, sc := range s.runtime().cfg.Shards {
		if sc.Name == shard {
			return sc.address()
		}
	}
	return ""
}
