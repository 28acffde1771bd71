package proxy

import (
	"context"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/router"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// Held-back messages: with a router that routes by parameter values, a
// Parse (and a Describe of a statement) waits in session.pending until a
// Bind names the shard or another message needs a backend; then they are
// sent where the request goes, before the earlier requests' backend is
// let go, or on their own.

// sendPending sends held-back Parse and Describe messages once the
// client's next message decides the backend: a Bind routes by its
// parameters; anything else (a Sync after Parse/Describe, say) only needs
// some backend, outside any deferred transaction.
func (s *session) sendPending(ctx context.Context, typ byte, frame []byte) error {
	pending := s.pending
	s.pending = nil
	q := router.Query{}
	if typ == 'B' {
		body := frame[wire.HeaderLen:]
		if bind, err := wire.DecodeBind(body); err == nil {
			name := string(bind.Statement)
			// The statement may be one of the pending ones.
			q = router.Query{SQL: pendingSQL(pending, name, s.stmtSQL(name)), Bind: body}
		}
	}
	if q.Bind != nil {
		if err := s.settleBeforeBegin(ctx, q.SQL); err != nil {
			return err
		}
	}
	if q.Bind != nil && s.holdInTx() {
		return s.sendPendingInTx(ctx, q, pending)
	}
	if be := s.betweenRequests(); be != nil {
		stays := q.Bind == nil || s.bindStays(q)
		// (Unless the backend went back to the pool meanwhile: then
		// route as usual, below.)
		if s.claim() == be {
			if !stays {
				return s.sendPendingBefore(ctx, be, pending)
			}
			// The request goes on where the earlier ones run.
			return s.forwardPending(ctx, pending)
		}
	}
	if s.claim() == nil {
		if q.Bind != nil {
			if _, ok := s.localTx(q.SQL); ok && s.answerPendingLocally(pending) {
				return nil
			}
		}
		var err error
		if q.Bind == nil && typ == 'S' {
			// Parse and Describe, then Sync: any server of the
			// statements' tables can answer.
			if done, err := s.describeOnly(ctx, pending, frame); done {
				if err == nil {
					err = errAnswered // the Sync was sent with them
				}
				return err
			}
			_, err = s.attachForDescribe(ctx, pending)
		} else {
			var be *pool.Conn
			var plan rplan.Plan
			s.noBegin = q.Bind == nil
			be, plan, err = s.attachPlan(ctx, q)
			s.noBegin = false
			if err == nil && plan.Kind.Several() && be == nil {
				// The Bind runs over several shards with no backend: the
				// held-back messages are answered by a backend of their
				// own first.
				return s.sendPendingAlone(ctx, pending)
			}
		}
		if err != nil {
			return err
		}
	}
	return s.forwardPending(ctx, pending)
}

// forwardPending sends held-back Parse and Describe messages to the
// attached backend.
func (s *session) forwardPending(ctx context.Context, pending [][]byte) error {
	for _, f := range pending {
		var err error
		if f[0] == 'P' {
			err = s.handleParse(ctx, f)
		} else {
			err = s.handleDescribe(ctx, f)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// betweenRequests returns the attached backend when it is attached only
// for the answers of earlier requests (see claimRequest), else nil.
func (s *session) betweenRequests() *pool.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.betweenRequests(s.pipe()) {
		return s.st.conn()
	}
	return nil
}

// bindStays reports whether the Bind q, the first statement of a new
// request, runs on the backend still attached for earlier requests (its
// shard, and a primary or a replica as the statement allows).
func (s *session) bindStays(q router.Query) bool {
	q.HintShard, q.HintKey = s.hint()
	plan, err := s.routerFor().Route(q)
	if err != nil || plan.InTx {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if plan.Moving != "" && !s.openOnServer() {
		return false // attach holds it (hold.go)
	}
	a := s.st.cur()
	switch {
	case plan.Kind == rplan.Any:
		return true
	case a == nil || plan.Kind != rplan.Single || plan.Shard != a.shard:
		return false
	}
	return !a.replica || plan.ReplicaSafe
}

// sendPendingBefore sends held-back Parse and Describe messages of a new
// request whose Bind goes to another shard than the earlier requests'
// backend be: they run there (any server can parse), with a Sync of the
// proxy's own, so that their answers — or their error, which skips the
// rest of the request, as the server would — come in order; the session
// waits until be has answered everything, then routes the Bind (attach).
// In a transaction the Parse meets the transaction's state, as on
// PostgreSQL. The caller has claimed be.
func (s *session) sendPendingBefore(ctx context.Context, be *pool.Conn, pending [][]byte) error {
	if err := s.forwardPending(ctx, pending); err != nil {
		return err
	}
	s.mu.Lock()
	s.overrides.Add(1)
	s.mu.Unlock()
	s.pushSync(be, syncEntry{hide: true})
	s.bout = append(s.bout, 'S', 0, 0, 0, 4)
	for {
		s.mu.Lock()
		if s.st.byConn(be) == nil || s.queue.syncs == 0 {
			failed := s.lastFailed
			s.mu.Unlock()
			if failed {
				s.st.skipBatch()
				return errAnswered
			}
			return nil
		}
		wait := s.waitChan()
		s.mu.Unlock()
		if err := s.waitZ(ctx, wait); err != nil {
			return err
		}
	}
}

// sendPendingAlone sends held-back Parse and Describe messages to a
// backend with a Sync of the proxy's own, relays their answers (not the
// ReadyForQuery) and waits for them. When the server reported an error,
// the rest of the client's batch is skipped, as the server would.
func (s *session) sendPendingAlone(ctx context.Context, pending [][]byte) error {
	be, err := s.attachForDescribe(ctx, pending)
	if err != nil {
		return err
	}
	if err := s.forwardPending(ctx, pending); err != nil {
		return err
	}
	s.mu.Lock()
	s.overrides.Add(1)
	s.mu.Unlock()
	s.pushSync(be, syncEntry{hide: true})
	s.bout = append(s.bout, 'S', 0, 0, 0, 4)
	s.mu.Lock()
	wait := s.waitChan()
	s.mu.Unlock()
	if err := s.waitZ(ctx, wait); err != nil {
		return err
	}
	s.mu.Lock()
	failed := s.lastFailed
	s.mu.Unlock()
	if failed {
		s.st.skipBatch()
		return errAnswered
	}
	return nil
}

// pendingSQL returns the text of statement name from held-back Parse
// frames (the last one wins), else fallback.
func pendingSQL(pending [][]byte, name, fallback string) string {
	sql := fallback
	for _, f := range pending {
		if f[0] != 'P' {
			continue
		}
		if p, err := wire.DecodeParse(f[wire.HeaderLen:]); err == nil && string(p.Name) == name {
			sql = string(p.Query)
		}
	}
	return sql
}

// pendingFrameSQL returns the statement text of f, a held-back Parse or
// Describe of pending: a Parse's own text, or that of the statement a
// Describe names (parsed earlier in pending, or before).
func (s *session) pendingFrameSQL(pending [][]byte, f []byte) string {
	body := f[wire.HeaderLen:]
	if f[0] == 'P' {
		p, _ := wire.DecodeParse(body) // checked by handleParse
		return string(p.Query)
	}
	d, _ := wire.DecodeDescribe(body) // checked by handleDescribe
	name := string(d.Name)
	return pendingSQL(pending, name, s.stmtSQL(name))
}
