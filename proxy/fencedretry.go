package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/pgshard/pgshard/router"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
)

// Retrying a statement that met a fenced interval.
//
// A write routed by a map older than a moving interval's hold (it was
// routed before the proxy had the marker, or by a proxy whose lease ran
// out) may reach the interval's source after the fence: it fails there
// with PS001 (interval fenced) and did not run. Outside a transaction the
// proxy retries such a statement itself, once it has a map other than the
// one it routed the statement by (the hold in holdMoving then applies,
// and the release routes it to the interval's owner), for at most
// buffer.window from the first failure; then the client gets the PS001.
//
// Only a request the proxy is certain did not run and whose answer has not
// begun to reach the client is retried:
//   - a simple query, or an extended-protocol batch of at most an unnamed
//     Parse, one Bind, Describes and one Execute without a row limit,
//     ended by Sync: the whole request is sent again;
//   - sent outside a transaction (no transaction open or deferred, not
//     pinned, transaction pooling) as the only request in flight (but
//     for the proxy's own query for the WAL position after it, reads.go),
//     with
//     no client message after it yet, routed to one shard as a write on
//     a sharded table;
//   - whose answer, up to the ErrorResponse PS001 that arrived first,
//     held only ParseComplete, BindComplete and Describe answers not yet
//     written to the client, and ended with ReadyForQuery idle.
//
// While such a request is in flight, serve reads nothing more from the
// client (it waits for the ReadyForQuery, awaitFenced), so nothing can be
// sent after it: the relay drops the failed answer and hands the request
// back to serve (fencedRetry), which sends it again.

// retryState is serve's record of the request in flight that may be
// retried.
type retryState struct {
	// buf holds the frames of the current extended-protocol batch (or the
	// simple query) while ok says it may still be retried.
	buf         []byte
	binds, exec int
	// m is the map of the write below.
	m *shardmap.Map
	// armed is the request sent that may come back (nil: none).
	armed *retryArm
	// deadline ends the retries of the current request (zero: none yet).
	deadline time.Time
	ok, open bool
	// complete says the batch just ended by Sync may be retried.
	complete bool
	// write says attachPlan routed a write on a sharded table to one
	// shard for this request, by map m.
	write bool
}

// retryArm is a request sent that the relay may hand back.
type retryArm struct {
	frames []byte
	m      *shardmap.Map
}

// fencedRetry is what the relay hands back to serve: the answer the
// client would have got, kept for when serve gives up.
type fencedRetry struct {
	resp []byte
}

// retryStartOK reports whether a request starting now may be retried.
func (s *session) retryStartOK() bool {
	if s.sessionPool || s.txRouter != nil || s.portal != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.life != statePinned && !s.st.inTx() && !s.st.crossShard && s.queue.syncs == 0 && !s.unsynced
}

// routedBy returns the map a statement about to be routed is routed by
// (attachPlan; nil without a map).
func (s *session) routedBy() *shardmap.Map { return s.srv.runtime().cfg.shardMap }

// noteRoute records, for a simple query or a Bind routed as plan by map
// m (attachPlan), whether it may be retried after PS001: a write on a
// sharded table, on one shard.
func (s *session) noteRoute(q router.Query, m *shardmap.Map, plan rplan.Plan) {
	if s.curType != 'Q' && q.Bind == nil {
		return
	}
	s.retry.m = m
	s.retry.write = m != nil && plan.Kind == rplan.Single && !plan.ReadOnly && plan.Table != ""
}

// recordFrame keeps the client's extended-protocol frames of the batch
// in progress while it may be retried. handle calls it first.
func (s *session) recordFrame(typ byte, frame []byte) {
	r := &s.retry
	switch typ {
	case 'P', 'B', 'D', 'E':
	case 'S':
		// handleSync arms the batch (armBatch) when it is complete.
		r.complete = r.open && r.ok && r.binds == 1 && r.exec == 1
		r.open = false
		return
	case 'H':
		return
	case 'Q':
		r.ok = false // inside a batch: left alone
		return
	default:
		r.open, r.ok = true, false
		return
	}
	if !r.open {
		r.open = true
		r.ok = s.retryStartOK()
		r.buf, r.binds, r.exec, r.write = r.buf[:0], 0, 0, false
	}
	if !r.ok {
		return
	}
	switch typ {
	case 'P':
		// An unnamed statement only: a named one would exist twice.
		r.ok = len(frame) > wire.HeaderLen && frame[wire.HeaderLen] == 0
	case 'B':
		r.binds++
	case 'E':
		r.exec++
		// No row limit: a PortalSuspended answer leaves the portal open.
		r.ok = len(frame) >= wire.HeaderLen+4 && binary.BigEndian.Uint32(frame[len(frame)-4:]) == 0
	}
	r.ok = r.ok && r.binds <= 1 && r.exec <= 1
	if r.ok {
		r.buf = append(r.buf, frame...)
	}
}

// armBatch says whether the batch ending with the Sync frame may be
// retried, and if so arms it; it resets the batch record.
func (s *session) armBatch(frame []byte) bool {
	r := &s.retry
	ok := r.complete && r.write && s.in.Buffered() == 0
	r.complete, r.write = false, false
	if !ok {
		return false
	}
	r.buf = append(r.buf, frame...)
	r.armed = &retryArm{frames: r.buf, m: r.m}
	r.buf = nil
	return true
}

// armQuery says whether the simple query frame, routed as a write to
// one shard by attachPlan, may be retried, and if so arms it.
func (s *session) armQuery(start bool, frame []byte) bool {
	r := &s.retry
	ok := start && r.write && s.rewrite == "" && s.in.Buffered() == 0
	r.write = false
	if !ok {
		return false
	}
	r.armed = &retryArm{frames: append([]byte(nil), frame...), m: r.m}
	return true
}

// fencedFrame is the relay's look at an ErrorResponse: when it is PS001
// for a request serve armed, and nothing of the request's answer reached
// the client, it drops what the relay holds of that answer, keeps it, and
// reports true: the error is not passed on.
func (s *session) fencedFrame(frame []byte) bool {
	r := &s.relay
	if r.segFlushed || r.retrying || s.raises.Load() > 0 || s.describing.Load() != nil || s.cache.fill.Load() != nil {
		return false
	}
	if wire.ErrorCode(frame) != wire.SQLStateIntervalFenced || wire.ErrorField(frame, 'V') != "ERROR" {
		return false
	}
	for b := r.out; len(b) > 0; {
		if len(b) < wire.HeaderLen {
			return false
		}
		switch b[0] {
		case '1', '2', 't', 'T', 'n':
		default:
			return false
		}
		b = b[1+int(binary.BigEndian.Uint32(b[1:wire.HeaderLen])):]
	}
	s.mu.Lock()
	e, ok := s.queue.firstSync()
	ok = ok && e.sync.retry && s.queue.onlyRetry() && !s.unsynced
	s.mu.Unlock()
	if !ok {
		return false
	}
	r.retrying = true
	r.retryResp = append(append(r.retryResp[:0], r.out...), frame...)
	r.out = r.out[:0]
	return true
}

// fencedReady is the relay's handling of the ReadyForQuery that ends a
// request whose PS001 it kept (fencedFrame): with the request outside a
// transaction (status idle) it hands it back to serve; otherwise it
// passes the answer on after all (false: the caller goes on).
func (s *session) fencedReady(status byte, frame []byte) bool {
	r := &s.relay
	if status != 'I' {
		s.fencedPassOn()
		return false
	}
	r.retrying = false
	resp := append(append([]byte(nil), r.retryResp...), frame...)
	r.retryResp = r.retryResp[:0]
	s.mu.Lock()
	s.retryReq = &fencedRetry{resp: resp}
	s.mu.Unlock()
	return true
}

// fencedPassOn gives up the retry of the request whose PS001 the relay
// kept: its answer goes to the client after all.
func (s *session) fencedPassOn() {
	r := &s.relay
	r.retrying = false
	r.segFailed = true
	r.out = append(r.out, r.retryResp...)
	r.retryResp = r.retryResp[:0]
	s.srv.metrics.errorCode(wire.SQLStateIntervalFenced)
}

// awaitFenced waits, before serve reads the client again, for the answer
// to the armed request: when the relay hands it back (PS001), it is sent
// again (retryFenced).
func (s *session) awaitFenced(ctx context.Context) error {
	arm := s.retry.armed
	s.retry.armed = nil
	for {
		s.mu.Lock()
		if s.queue.syncs == 0 || s.st.conn() == nil {
			req := s.retryReq
			s.retryReq = nil
			s.mu.Unlock()
			if req == nil {
				s.retry.deadline = time.Time{}
				return nil
			}
			s.srv.metrics.hold.retries.Inc()
			return s.retryFenced(ctx, arm, req)
		}
		wait := s.waitChan()
		s.mu.Unlock()
		if err := s.waitZ(ctx, wait); err != nil {
			return err
		}
	}
}

// retryFenced sends arm again once the proxy has a map other than the one
// it was routed by, or gives the client the answer it got (req) when none
// arrives before the retries' deadline (buffer.window after the first
// PS001).
func (s *session) retryFenced(ctx context.Context, arm *retryArm, req *fencedRetry) error {
	if s.retry.deadline.IsZero() {
		s.retry.deadline = time.Now().Add(max(s.srv.runtime().cfg.Buffer.Window.D(), 0))
	}
	timer := time.NewTimer(time.Until(s.retry.deadline))
	defer timer.Stop()
	for {
		ch := s.srv.mapChange()
		if s.srv.runtime().cfg.shardMap != arm.m {
			break
		}
		select {
		case <-ch:
		case <-timer.C:
			s.retry.deadline = time.Time{}
			s.srv.metrics.errorCode(wire.SQLStateIntervalFenced)
			s.out = append(s.out, req.resp...)
			return s.flushClient()
		case <-ctx.Done():
			return fmt.Errorf("wait for a shard map after a fenced interval: %w", ctx.Err())
		}
	}
	for b := arm.frames; len(b) >= wire.HeaderLen; {
		n := 1 + int(binary.BigEndian.Uint32(b[1:wire.HeaderLen]))
		typ, frame := b[0], b[:n]
		b = b[n:]
		if s.st.skipToSync && typ != 'S' {
			continue
		}
		if err := s.handle(ctx, typ, frame); err != nil && !s.handled(typ, err) {
			return errTerminate
		}
	}
	return nil
}

// handled deals with handle's error err for a frame of type typ: it
// reports whether the session goes on.
func (s *session) handled(typ byte, err error) bool {
	if errors.Is(err, errTerminate) {
		return false
	}
	if errors.Is(err, errAnswered) {
		return true
	}
	var we *wire.Error
	if errors.As(err, &we) && we.Severity != "FATAL" {
		return s.reportError(we, typ) == nil
	}
	s.fatal(err)
	return false
}

// onlyRetry reports whether the queue holds, after the first sync entry,
// nothing but the proxy's query for the WAL position (captureLSN).
func (q *respQueue) onlyRetry() bool {
	syncs := 0
	for i := q.head; i < len(q.items); i++ {
		e := q.items[i]
		switch {
		case e.kind == entrySync && syncs == 0:
			syncs++
		case syncs == 0:
		case e.kind == entrySync && e.sync.captureLSN && syncs == 1:
			syncs++
		default:
			return false
		}
	}
	return syncs > 0
}
