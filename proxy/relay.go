package proxy

import (
	"bytes"
	"errors"
	"strings"
	"syscall"
	"time"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/wire"
)

// relayState is the part of a session that only its pool.Handler methods
// touch; they run on the reader goroutine of the attached server
// connection, one call at a time.
//
// Fields are ordered so that the bools share one word (an idle client
// keeps its session: TestSessionSize).
type relayState struct {
	out     []byte // client output not yet written
	lastTag string // last CommandComplete tag of the segment
	swallow int    // segments of statements the proxy injected: hide them
	// lsn is the WAL position query's answer so far (see capture).
	lsn health.LSN
	// retryResp is what retrying kept back.
	retryResp []byte

	segFailed  bool // an ErrorResponse arrived since the last ReadyForQuery
	sawFatal   bool // a FATAL ErrorResponse arrived
	clientGone bool // a write to the client failed: drop output
	// capture: the segment being swallowed is the WAL position query
	// (reads.go); captureEnded says the client's transaction had ended
	// before it.
	capture, captureEnded bool
	// segFlushed says client output was written since the last
	// ReadyForQuery; retrying says the PS001 of a request serve may send
	// again was kept back, with what preceded it, in retryResp
	// (fencedretry.go).
	segFlushed, retrying bool
}

// Frame implements pool.Handler: it copies a server frame to the client,
// doing the bookkeeping recorded in the response queue, and reports
// whether the server connection goes back to the pool (transaction
// pooling, at the end of a transaction).
func (s *session) Frame(be *pool.Conn, typ byte, frame []byte) bool {
	r := &s.relay
	if be.Aborted() {
		// The server is no longer its shard's primary: nothing it sent
		// is passed on (Fail follows and tells the client).
		r.out = r.out[:0]
		return false
	}
	if r.swallow > 0 {
		if r.capture {
			return s.lsnFrame(be, typ, frame)
		}
		return s.swallowFrame(be, typ, frame)
	}
	if f := s.cache.fill.Load(); f != nil && f.be == be && s.cacheCapture(f, typ, frame) {
		return false // the answer to the proxy's own Describe
	}
	if (typ == 'C' || typ == 'Z') && s.cache.pending.Load() {
		s.cacheRelayInvalidate(typ, frame)
	}
	if r.retrying {
		if typ == 'Z' && len(frame) > wire.HeaderLen && s.fencedReady(frame[wire.HeaderLen], frame) {
			r.segFailed, r.lastTag, r.segFlushed = false, "", false
			return s.readyForQuery(be, 'I', true, "")
		}
		if r.retrying {
			s.fencedPassOn()
		}
	}
	switch typ {
	case 'Z':
		r.out = append(r.out, frame...)
		if s.overrides.Load() > 0 {
			s.mu.Lock()
			if e, ok := s.queue.firstSync(); ok && e.sync.hide {
				r.out = r.out[:len(r.out)-len(frame)]
				s.overrides.Add(-1)
			} else if ok && e.sync.status != 0 {
				r.out[len(r.out)-1] = e.sync.status
				s.overrides.Add(-1)
			}
			s.mu.Unlock()
		}
		// The client may answer this ReadyForQuery before readyForQuery
		// below has done its bookkeeping: serve waits for it (settle).
		if be.Aborted() {
			r.out = r.out[:0] // reset meanwhile: see above
			return false
		}
		s.zInFlight.Store(true)
		s.flushRelay()
		r.segFlushed = false
		var status byte = 'I'
		if len(frame) > wire.HeaderLen {
			status = frame[wire.HeaderLen]
		}
		failed, tag := r.segFailed, r.lastTag
		r.segFailed, r.lastTag = false, ""
		return s.readyForQuery(be, status, failed, tag)
	case '1', '3': // ParseComplete, CloseComplete
		s.mu.Lock()
		e, ok := s.queue.popResponse()
		s.mu.Unlock()
		if ok && e.swallow {
			return false
		}
	case '2': // BindComplete
		if s.raises.Load() > 0 {
			s.mu.Lock()
			mine := s.queue.popBind()
			s.mu.Unlock()
			if mine {
				return false
			}
		}
	case 'E':
		if s.fencedFrame(frame) {
			return false // sent again by serve (fencedretry.go)
		}
		r.segFailed = true
		if s.raises.Load() > 0 {
			frame = s.raisedError(frame)
		}
		if s.dtx.victim.Load() != nil {
			frame = s.dtxFrame(frame) // 57014 of a deadlock across shards: 40P01
		}
		if sev := wire.ErrorField(frame, 'V'); sev == "FATAL" || sev == "PANIC" {
			r.sawFatal = true
			if code := wire.ErrorCode(frame); strings.HasPrefix(code, "57P0") {
				// The server ends the session (shut down, its postmaster
				// died, terminated): to the client that is a lost server
				// connection, whatever the reason — one SQLSTATE to retry on.
				r.out = wire.AppendErrorResponse(r.out, &wire.Error{Severity: "FATAL", Code: wire.SQLStateConnectionFailure,
					Message: "server connection lost: " + wire.ErrorField(frame, 'M'),
					Detail:  "The PostgreSQL server behind pgshard ended the session (SQLSTATE " + code + "); the transaction, if any, is lost."})
				s.srv.metrics.errorCode(wire.SQLStateConnectionFailure)
				return false
			}
		}
		s.srv.metrics.errorCode(wire.ErrorCode(frame))
	case 'C':
		r.lastTag = cstring(frame[wire.HeaderLen:])
	case 'G': // CopyInResponse: Syncs sent before the copy's end are ignored
		s.mu.Lock()
		_, overrides := s.queue.dropCopySyncs(s.st.copyStarted())
		s.mu.Unlock()
		s.overrides.Add(-int32(overrides))
	}
	r.out = append(r.out, frame...)
	if len(r.out) >= flushThreshold && s.describing.Load() == nil {
		s.flushRelay()
	}
	return false
}

// swallowFrame handles a frame of a statement the proxy injected (a
// deferred BEGIN): the client already has its answer. Only an error is
// passed on, so it is not lost.
func (s *session) swallowFrame(be *pool.Conn, typ byte, frame []byte) bool {
	r := &s.relay
	switch typ {
	case 'E':
		r.segFailed = true
		s.srv.metrics.errorCode(wire.ErrorCode(frame))
		if s.probingBegin.Load() {
			// serve answers the client's statement with it (probeBegin).
			s.mu.Lock()
			if s.beginErr == nil {
				s.beginErr = bytes.Clone(frame)
			}
			s.mu.Unlock()
			return false
		}
		r.out = append(r.out, frame...)
	case 'Z':
		r.swallow--
		failed := r.segFailed
		r.segFailed = false
		var status byte = 'I'
		if len(frame) > wire.HeaderLen {
			status = frame[wire.HeaderLen]
		}
		return s.readyForQuery(be, status, failed, "")
	}
	return false
}

// Flush implements pool.Handler: the server has nothing more buffered.
func (s *session) Flush(be *pool.Conn) {
	if be.Aborted() {
		s.relay.out = s.relay.out[:0]
		return
	}
	if s.describing.Load() != nil {
		return // held until the ReadyForQuery (describe.go)
	}
	s.flushRelay()
}

// Fail implements pool.Handler: the server connection is lost. When serve
// is ending the session anyway it handles the connection; otherwise the
// client is told, since its transaction state is gone, and disconnected.
func (s *session) Fail(be *pool.Conn, err error) {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return
	}
	s.log.Info("server connection lost", "server", be.Addr, "err", err)
	r := &s.relay
	if t := s.describing.Load(); t != nil {
		s.describeLost(be, t, err) // sent to another server instead
		return
	}
	if be.Aborted() {
		// Whatever the old primary sent and was not yet passed on is
		// dropped: it must not reach the client as a success.
		r.out = r.out[:0]
	}
	if e := lostServerError(be, err, r.sawFatal); e != nil {
		s.srv.metrics.errorCode(e.Code)
		r.out = wire.AppendErrorResponse(r.out, e)
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	s.flushRelay()
	_ = s.conn.Close() // serve wakes up and ends the session
	s.srv.kickSession(s)
	// Give the dead connection up only now, so serve cannot attach another
	// (and start relaying into this state) while the client is told.
	s.mu.Lock()
	mine := s.st.detach(be) // else serve's finish took it and discards it
	s.wakeServe()
	s.mu.Unlock()
	if mine {
		be.Pool().Discard(be)
	}
}

// lostServerError is the FATAL error telling a client that its server
// connection be was lost with err: aborted by the shard map, stalled, or
// closed; nil when the server's own FATAL error was already relayed
// (sawFatal) and says it.
func lostServerError(be *pool.Conn, err error, sawFatal bool) *wire.Error {
	switch {
	case be.Aborted():
		return &wire.Error{
			Severity: "FATAL",
			Code:     wire.SQLStateConnectionFailure,
			Message:  "server connection aborted: the server is no longer the primary of its shard",
			Detail:   "The shard map replaced or fenced " + be.Addr + " while this session used it; the transaction, if any, is lost, and whether the statement in progress committed there is unknown.",
			Hint:     "Reconnect and retry the transaction.",
		}
	case errors.Is(err, pool.ErrStalled) || errors.Is(err, syscall.ETIMEDOUT):
		return &wire.Error{
			Severity: "FATAL",
			Code:     wire.SQLStateConnectionFailure,
			Message:  "server connection lost: the server stopped answering",
			Detail:   "pgshard got no acknowledgement from " + be.Addr + " within backend.ack_timeout or its keepalives (a network partition or a hung host); the transaction, if any, is lost, and whether the statement in progress committed is unknown.",
			Hint:     "Reconnect and retry the transaction.",
		}
	case !sawFatal:
		return &wire.Error{
			Severity: "FATAL",
			Code:     wire.SQLStateConnectionFailure,
			Message:  "server closed the connection unexpectedly",
			Detail:   "The PostgreSQL server behind pgshard terminated the connection; the transaction, if any, is lost.",
		}
	}
	return nil
}

// flushRelay writes the relay's client output. When the client is gone
// the output is dropped; the first failure marks the server connection
// dirty and closes the client connection so serve wakes up and ends the
// session.
func (s *session) flushRelay() {
	r := &s.relay
	if s.multi.active.Load() {
		r.out = s.multi.filter(r.out)
	}
	if len(r.out) == 0 {
		return
	}
	r.segFlushed = true
	if !r.clientGone {
		if _, err := s.conn.Write(r.out); err != nil {
			r.clientGone = true
			s.mu.Lock()
			s.dirty = true
			s.mu.Unlock()
			_ = s.conn.Close()
			s.srv.kickSession(s)
		}
	}
	r.out = r.out[:0]
}

// readyForQuery does the bookkeeping of a completed sync point and reports
// whether the backend was detached (it then goes back to the pool).
func (s *session) readyForQuery(be *pool.Conn, status byte, failed bool, lastTag string) bool {
	s.mu.Lock()
	e, rolledBack := s.queue.popSync()
	for _, name := range rolledBack {
		delete(be.Prepared, name)
	}
	if next, ok := s.queue.peek(); ok && next.sync.captureLSN {
		s.relay.capture, s.relay.captureEnded = true, status == 'I'
		s.relay.swallow++
	}
	// The connection is let go (detach) at the end of a transaction with
	// every request answered.
	prev, detach := s.st.ready(be, status, s.pipe(), s.closing)
	if detach && s.park.early > 0 {
		s.park.early--
		s.parkEarly()
	}
	if status == 'I' {
		s.dtxEnd() // a transaction over several shards has ended
	}
	s.lastFailed = failed
	if !failed {
		s.dtxSettled()
		if e.sync.setting != nil {
			if status == 'I' {
				s.applySetting(be, e.sync.setting)
			} else {
				s.tentative = append(s.tentative, e.sync.setting)
			}
		}
		if e.sync.deallocateAll {
			clear(be.Prepared)
		}
		if e.sync.drops != nil {
			for _, st := range *e.sync.drops {
				delete(be.Prepared, st.global)
			}
			s.queue.gone = append(s.queue.gone, *e.sync.drops...)
		}
	}
	if status == 'I' && prev != 'I' && len(s.tentative) > 0 {
		if lastTag == "COMMIT" {
			for _, c := range s.tentative {
				s.applySetting(be, c)
			}
		}
		s.tentative = s.tentative[:0]
	}
	if len(s.queue.gone) > 0 {
		s.forget.Store(true)
	}
	if s.queue.empty() && len(s.raised) > 0 {
		// Every refusal raised has been answered (or skipped by a
		// server in error).
		s.raised = s.raised[:0]
		s.raises.Store(0)
	}
	s.zInFlight.Store(false)
	s.wakeServe()
	s.mu.Unlock()
	if !e.sent.IsZero() {
		s.srv.metrics.query(time.Since(e.sent))
	}
	if detach {
		// The reader releases be to the pool when Frame returns.
		s.srv.metrics.transaction()
		if s.srv.shuttingDown() {
			_ = s.conn.SetReadDeadline(time.Now()) // wake serve to say goodbye
			s.srv.kickSession(s)
		}
	}
	return detach
}

// wakeServe wakes serve if it waits for a ReadyForQuery. Callers hold
// s.mu.
func (s *session) wakeServe() {
	if s.zWait != nil {
		close(s.zWait)
		s.zWait = nil
	}
}

// applySetting records a completed session parameter change. Callers hold
// s.mu.
func (s *session) applySetting(be *pool.Conn, c *settingChange) {
	s.sets = s.sets.with(c)
	if c.resets() {
		be.SettingsKey = unknownSettings
	} else {
		be.SettingsKey = s.sets.key
	}
	if c.discardsStatements() {
		clear(be.Prepared)
	}
}
