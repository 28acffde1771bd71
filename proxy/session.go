package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/proxy/scatter"
	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/wire"
)

// flushThreshold is how much output a direction batches before writing
// even though more input is already buffered.
const flushThreshold = 64 << 10

// session is one client connection. The client-reading goroutine (serve)
// writes to the backend; while a backend is attached, the session is its
// pool.Handler and the backend's reader goroutine relays responses to the
// client (relay.go). Fields under mu are shared by the two; relay belongs
// to the handler methods; the rest belong to serve alone.
type session struct {
	srv  *Server
	conn net.Conn
	in   *wire.FrameReader
	rd   *clientReader // in's buffer (bufio.go)
	park parkState     // parking while idle (park.go); under srv.parker.mu
	user *userState
	db   string
	key  cancelKey

	out   []byte // serve's client output while no backend is attached
	bout  []byte // serve's backend output, flushed at sync points
	stmts statements
	sets  *settings
	relay relayState

	// pending are Parse and Describe (statement) frames held back (with a
	// parameter-aware router, while no backend is attached) until a Bind
	// names the shard or another message needs a backend.
	pending [][]byte
	// hints are the session's routing hints (SET pgshard.shard /
	// pgshard.key); nil until one is set (attach.go).
	hints *routingHints
	// portal is the client's portal over several shards (portal.go), or
	// nil.
	portal *scatterPortal
	// scatterCancel lets a CancelRequest reach every shard of a statement
	// running on several shards (Server.cancel).
	scatterCancel scatter.Canceler
	// rewrite, set by attach, replaces the client's simple query (the
	// router's answer to EXPLAIN (pgshard)).
	rewrite string
	// txRouter is the router the open transaction started with (see
	// routerFor); nil outside transactions.
	txRouter router.Router

	// log is the server's logger with the session's user (sessionlog.go).
	log *slog.Logger

	mu sync.Mutex
	// st is the session's state: its life cycle, its server connections
	// (attachments) and its transaction (sessionstate.go).
	st sessionState
	// lsns is, per shard, the primary's WAL position after the session's
	// latest write transaction there (read-your-writes).
	lsns map[string]health.LSN
	// beginErr is the server's ErrorResponse to a deferred BEGIN sent
	// alone (probeBegin), while probingBegin is set.
	beginErr []byte
	zWait    chan struct{} // closed at the next ReadyForQuery (serve waits)
	queue    respQueue     // responses that need bookkeeping, in order
	// tentative holds parameter changes made inside the open transaction;
	// they count only if it commits.
	tentative []*settingChange
	// raised are the messages of the refusals raised through the server
	// (raiseViaServer) whose errors may still arrive, and raises their
	// number, so the relay looks only when there is one.
	raised []string
	// describing is set while a describe-only request may still be sent
	// to another server (describe.go): the relay holds its answer back.
	describing atomic.Pointer[describeTry]
	// cache is the session's hot-row cache state (cache_session.go).
	cache sessionCache
	// retry is serve's record of a request it may send again after PS001,
	// and retryReq the relay's hand-back of one (under mu; fencedretry.go).
	retry    retryState
	retryReq *fencedRetry
	// dtx is the session's part in deadlock detection across shards
	// (deadlock_session.go).
	dtx dtxSession
	// multi filters client output while a query string of several
	// statements runs statement by statement (multistmt.go).
	multi multiStmtState

	// The small fields last, so that they share words (an idle client
	// keeps its session: TestSessionSize).

	raises       atomic.Int32 // see raised
	probingBegin atomic.Bool  // see beginErr
	// forget says queue.gone has statements for serve to forget.
	forget atomic.Bool
	// overrides counts queued sync entries with a status override, so the
	// relay takes the lock to look only when there is one.
	overrides atomic.Int32
	// zInFlight is set while the relay has written a ReadyForQuery to the
	// client but not yet done its bookkeeping (see settle).
	zInFlight atomic.Bool

	curType byte // type of the client message being handled
	// noBegin makes attach leave a deferred BEGIN for later: the request
	// needs a backend but not the transaction (describing a statement).
	noBegin bool
	// console marks an admin console session (console.go): no server.
	console bool
	// sessionPool says the session's pool mode is session (the server
	// connection stays attached), else transaction.
	sessionPool bool
	// wrote says a statement that may write ran on a primary since the
	// session last learned its shard's WAL position (reads.go); txEnding
	// that the transaction it ran in is being committed.
	wrote, txEnding bool
	unsynced        bool // messages sent since the last Sync/Query
	closing         bool // serve is ending: the relay must leave be alone
	dirty           bool // be is in an unknown state (relay stopped mid-stream)
	lastFailed      bool // the last sync point answered had an error
}

// routingHints are a session's routing hints (SET pgshard.shard /
// pgshard.key), "" when unset.
type routingHints struct{ shard, key string }

// hint returns the session's routing hints.
func (s *session) hint() (shard, key string) {
	if s.hints == nil {
		return "", ""
	}
	return s.hints.shard, s.hints.key
}

// pipe is the state of the session's requests in flight. Callers hold
// s.mu.
func (s *session) pipe() pipeline {
	return pipeline{unsynced: s.unsynced, syncs: s.queue.syncs}
}

// serve runs the session until the client leaves or the server stops it,
// or until it parks while idle (parked: another goroutine runs serve again
// when the client sends more, see park.go).
func (s *session) serve(ctx context.Context) (parked bool) {
	defer func() {
		if parked {
			return
		}
		if r := recover(); r != nil {
			s.log.Error("session panic", "panic", r)
			s.out = wire.AppendErrorResponse(s.out[:0], wire.Fatalf(wire.SQLStateInternalError, "internal error in pgshard"))
			_, _ = s.conn.Write(s.out)
		}
		s.finish()
	}()
	for {
		if s.retry.armed != nil && s.awaitFenced(ctx) != nil {
			return
		}
		if s.in.Buffered() == 0 {
			if err := s.flushBackend(); err != nil {
				return
			}
			if len(s.out) > 0 && s.attached() == nil {
				if err := s.flushClient(); err != nil {
					return
				}
			}
		}
		typ, frame, err := s.in.Next()
		if err != nil {
			if parked, retry := s.parkRequested(ctx, err, true); parked {
				return true
			} else if retry {
				continue
			}
			s.clientReadError(err)
			return
		}
		if s.st.skipToSync && typ != 'S' {
			continue
		}
		if err := s.handle(ctx, typ, frame); err != nil && !s.handled(typ, err) {
			return
		}
	}
}

var errTerminate = errors.New("client terminated the session")

// errAnswered means the proxy has answered the client's request in
// another way (such as a refusal the server raised for it): nothing more
// to forward.
var errAnswered = errors.New("request answered by the proxy")

// handle processes one client frame.
func (s *session) handle(ctx context.Context, typ byte, frame []byte) error {
	s.curType = typ
	switch typ {
	case 'Q', 'P', 'B', 'F':
		if err := s.settle(ctx); err != nil {
			return err
		}
	}
	s.recordFrame(typ, frame)
	s.forgetStatements()
	if typ == 'B' && s.srv.cacheOn.Load() && s.cacheBind(frame) {
		return nil // answered from the cache
	}
	if len(s.pending) > 0 && typ != 'P' && !(typ == 'D' && len(frame) > wire.HeaderLen && frame[wire.HeaderLen] == 'S') {
		if err := s.sendPending(ctx, typ, frame); err != nil {
			return err
		}
	}
	if err := s.limitStatement(typ); err != nil { // rate limits (ratelimit.go)
		return err
	}
	switch typ {
	case 'Q':
		return s.handleQuery(ctx, frame)
	case 'P':
		return s.handleParse(ctx, frame)
	case 'B':
		return s.handleBind(ctx, frame)
	case 'D':
		return s.handleDescribe(ctx, frame)
	case 'C':
		return s.handleClose(ctx, frame)
	case 'E':
		return s.handleExecute(ctx, frame)
	case 'H': // Flush
		if s.claimRequest() == nil {
			if s.attached() != nil {
				// Between requests: their Syncs make the server flush.
				return s.flushBackend()
			}
			return s.flushClient()
		}
		return s.forwardRaw(frame)
	case 'S':
		return s.handleSync(ctx, frame)
	case 'F': // FunctionCall: answered with ReadyForQuery like a Query
		be, err := s.attachAny(ctx)
		if err != nil {
			return err
		}
		s.pushSync(be, syncEntry{})
		return s.forwardRaw(frame)
	case 'd', 'c', 'f': // CopyData, CopyDone, CopyFail
		s.mu.Lock()
		inCopy := s.st.inCopy(s.pipe())
		s.mu.Unlock()
		if !inCopy {
			return nil // PostgreSQL ignores these outside COPY too
		}
		// The server answers the COPY's sync point only after CopyDone or
		// CopyFail, so the backend stays attached until these are sent.
		if typ != 'd' {
			s.mu.Lock()
			s.st.copyEnded()
			s.mu.Unlock()
		}
		return s.forwardRaw(frame)
	case 'X':
		return errTerminate
	default:
		return wire.Fatalf(wire.SQLStateProtocolViolation, "invalid frontend message type %d", typ)
	}
}

// settle waits, before a new request is routed, for the bookkeeping of a
// ReadyForQuery the relay has already written to the client: the relay
// writes it before it detaches the backend at the end of a transaction,
// so a client that answers at once could otherwise be routed as if the
// old transaction or pipeline were still open. Only that window is waited
// for (zInFlight); pipelined requests are not held back.
func (s *session) settle(ctx context.Context) error {
	for s.zInFlight.Load() {
		s.mu.Lock()
		if !s.zInFlight.Load() {
			s.mu.Unlock()
			return nil
		}
		wait := s.waitChan()
		s.mu.Unlock()
		if err := s.waitZ(ctx, wait); err != nil {
			return err
		}
	}
	return nil
}

// attached returns the attached backend, or nil.
func (s *session) attached() *pool.Conn {
	s.mu.Lock()
	be := s.st.conn()
	s.mu.Unlock()
	return be
}

// claim returns the attached backend (nil if none) and marks a request
// as outstanding, so the relay keeps the backend at least until the next
// sync point is answered. Every path that writes to the backend claims it
// (or pushes a sync entry) first: that is what stops the relay from
// returning a backend to the pool while serve still writes to it.
func (s *session) claim() *pool.Conn {
	s.mu.Lock()
	be := s.st.conn()
	if be != nil {
		s.unsynced = true
	}
	s.mu.Unlock()
	return be
}

// claimRequest is claim for a message that may begin a new request (a
// Parse or a Describe of a statement, or a Flush): it returns nil, and
// claims nothing, when the attached backend is kept only because it
// still owes the answers of earlier requests — the client has sent a
// Sync since its last message there, outside a pinned session. Requests
// separated by Sync are independent, so the new one is routed on its own
// (attach; with a map its Parse is held until the Bind, see sendPending):
// to that backend when it is of the same shard; otherwise the session
// waits until the backend has answered everything and gone back to the
// pool, and only then sends the new request to its shard. Waiting costs a
// round trip only in a pipeline that changes shards, and keeps the
// answers in request order without a second backend whose replies would
// have to be held back. Inside a transaction attach still keeps every
// statement on the transaction's shard (it learns the transaction status
// from the answers it waits for).
func (s *session) claimRequest() *pool.Conn {
	s.mu.Lock()
	be := s.st.conn()
	switch {
	case be == nil:
	case s.st.betweenRequests(s.pipe()):
		be = nil
	default:
		s.unsynced = true
	}
	s.mu.Unlock()
	return be
}

// pushSync records a sync point (Sync, Query, FunctionCall) sent to be.
func (s *session) pushSync(be *pool.Conn, e syncEntry) {
	s.mu.Lock()
	s.queue.push(entry{kind: entrySync, sync: e, sent: time.Now()})
	s.unsynced = false
	s.mu.Unlock()
	_ = be
}

// pushEntry records a Parse or Close whose response needs bookkeeping.
func (s *session) pushEntry(e entry) {
	s.mu.Lock()
	s.queue.push(e)
	s.mu.Unlock()
}

// forwardRaw appends frame to the backend output buffer.
func (s *session) forwardRaw(frame []byte) error {
	s.bout = append(s.bout, frame...)
	if len(s.bout) >= flushThreshold {
		return s.flushBackend()
	}
	return nil
}

// flushBackend writes buffered backend output.
func (s *session) flushBackend() error {
	if len(s.bout) == 0 {
		return nil
	}
	be := s.attached()
	if be == nil {
		// The relay gave the backend up because it failed, and has told
		// the client; the session ends on the next client read.
		s.bout = s.bout[:0]
		return nil
	}
	_, err := be.NetConn.Write(s.bout)
	s.bout = s.bout[:0]
	if err != nil {
		// The relay sees the same failure on its read and reports it.
		s.log.Debug("write to server failed", "server", be.Addr, "err", err)
	}
	return nil
}

func (s *session) handleSync(ctx context.Context, frame []byte) error {
	retry := s.armBatch(frame)
	if s.portal != nil {
		if s.st.skipToSync {
			s.portal = nil // it failed: nothing more to say
		} else if err := s.endPortal(ctx); err != nil {
			s.out = wire.AppendErrorResponse(s.out, wire.AsError(err))
		}
	}
	s.st.synced()
	if err := s.flushBeforeSync(); err != nil {
		return err
	}
	be := s.claim()
	if be == nil {
		s.retry.armed = nil
		s.stmts.ran = nil
		s.out = wire.AppendReadyForQuery(s.out, s.idleStatus())
		return s.flushClient()
	}
	s.mu.Lock()
	override := s.syncOverrideLocked()
	ends := s.st.copyEnds
	s.mu.Unlock()
	set := s.stmts.ran
	s.stmts.ran = nil
	if retry = retry && override == 0 && set == nil; !retry {
		s.retry.armed = nil
	}
	s.pushSync(be, syncEntry{status: override, clientSync: true, copyEnds: ends, setting: set, retry: retry})
	s.bout = append(s.bout, frame...)
	s.captureLSN()
	return s.maybeFlush()
}

func (s *session) handleQuery(ctx context.Context, frame []byte) error {
	// A view of the frame, valid until the next client read: whatever
	// keeps part of it (sessionEffect) clones that part.
	sql := cstringView(frame[wire.HeaderLen:])
	if s.srv.cacheOn.Load() && s.cacheQuery(sql) {
		return nil // answered from the cache
	}
	if done, err := s.multiStatementQuery(ctx, sql); done || err != nil {
		return err
	}
	if err := s.settleBeforeBegin(ctx, sql); err != nil {
		return err
	}
	retryable := s.retryStartOK()
	if done, err := s.endTxOverShards(ctx, sql); done || err != nil {
		return err
	}
	info := router.Classify(sql)
	if done, err := s.deferredTransaction(ctx, info, sql); done || err != nil {
		return err
	}
	if info.Class == router.ClassDeallocate && s.deallocateLocally(info.Param) {
		return nil
	}
	be, plan, err := s.attachPlan(ctx, router.Query{SQL: sql})
	if err != nil {
		return err
	}
	if plan.Kind.Several() && be == nil {
		if s.srv.cacheOn.Load() {
			s.cacheNoteSeveral(plan)
		}
		return s.runScatter(ctx, plan, sql)
	}
	if s.cache.next != nil {
		s.cacheStartFill(plan)
	}
	s.noteTxSetting(be, info, sql)
	var e syncEntry
	if info.Class != 0 {
		e, err = s.sessionEffect(info, sql)
		if err != nil {
			return err
		}
		if e.deallocateAll {
			all := s.stmts.all()
			e.drops = &all
		} else if st := s.stmts.named[info.Param]; st != nil && info.Class == router.ClassDeallocate && s.sessionPool {
			// The server has the statement under the client's name
			// (backendName): forgotten once the server dropped it.
			e.drops = &[]*stmt{st}
		}
	}
	be.UnnamedGen++ // a simple query replaces the unnamed statement
	e.retry = s.armQuery(retryable && info.Class == 0, frame)
	s.pushSync(be, e)
	if s.rewrite != "" {
		s.bout = wire.AppendString(s.bout, 'Q', s.rewrite)
		s.rewrite = ""
	} else {
		s.bout = append(s.bout, frame...)
	}
	s.captureLSN()
	return s.maybeFlush()
}

// sessionEffect turns a statement's classification into what the relay
// must do when it completes, pinning the session where needed.
func (s *session) sessionEffect(info router.Info, sql string) (syncEntry, error) {
	var e syncEntry
	switch {
	case info.Has(router.ClassPin):
		s.pin(info.PinReason)
	case info.Has(router.ClassMulti):
		s.pin("session state change in a multi-statement query")
	case info.Has(router.ClassDeallocate):
		// Not one of the client's protocol-level statements (see
		// deallocateLocally): an SQL-level one, on its pinned backend.
		s.pin("SQL-level prepared statement")
	case info.Class&(router.ClassSet|router.ClassReset|router.ClassResetAll|router.ClassDiscardAll) != 0:
		if info.Class&(router.ClassResetAll|router.ClassDiscardAll) != 0 {
			s.hints = nil
		}
		info.Param = strings.Clone(info.Param)
		e.setting = &settingChange{info: info, sql: strings.Clone(sql)}
	}
	// Statements dropped on the server are no longer there, pinned or not.
	e.deallocateAll = info.Class&(router.ClassDeallocateAll|router.ClassDiscardAll) != 0
	return e, nil
}

// pin keeps the current backend for the rest of the session.
func (s *session) pin(reason string) {
	s.mu.Lock()
	already := s.st.pin()
	s.mu.Unlock()
	if !already && !s.sessionPool {
		s.srv.metrics.pinned(reason)
	}
}

func (s *session) reportError(e *wire.Error, typ byte) error {
	s.srv.metrics.errorCode(e.Code)
	s.out = wire.AppendErrorResponse(s.out, e)
	s.mu.Lock()
	status := s.st.failDeferred()
	s.mu.Unlock()
	switch typ {
	case 'Q', 'F':
		s.out = wire.AppendReadyForQuery(s.out, status)
	default:
		s.st.skipBatch()
	}
	return s.flushClient()
}

// flushClient writes serve's own client output. Only called while no
// relay is running (no backend attached).
func (s *session) flushClient() error {
	if s.cache.serveInv {
		s.cacheServeInvalidate()
	}
	if s.multi.active.Load() {
		s.out = s.multi.filter(s.out)
	}
	if len(s.out) == 0 {
		return nil
	}
	_, err := s.conn.Write(s.out)
	s.out = s.out[:0]
	if err != nil {
		return fmt.Errorf("write to client: %w", err)
	}
	return nil
}

// fatal reports err to the client as a FATAL error when possible.
func (s *session) fatal(err error) {
	e := wire.AsError(err)
	if e.Code == wire.SQLStateInternalError {
		s.log.Error("session failed", "err", err)
	}
	e2 := *e
	e2.Severity = "FATAL"
	s.srv.metrics.errorCode(e.Code)
	s.stopRelay()
	s.out = wire.AppendErrorResponse(s.out[:0], &e2)
	_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = s.conn.Write(s.out)
}

func (s *session) clientReadError(err error) {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return
	case errors.Is(err, os.ErrDeadlineExceeded):
		if s.srv.shuttingDown() {
			s.fatal(wire.Fatalf(wire.SQLStateAdminShutdown, "terminating connection due to administrator command"))
		}
		return
	case errors.Is(err, wire.ErrMessageTooLarge):
		s.fatal(&wire.Error{Code: wire.SQLStateProgramLimitExceeded, Message: "message too large", Detail: err.Error()})
	case errors.Is(err, wire.ErrMalformed):
		s.fatal(&wire.Error{Code: wire.SQLStateProtocolViolation, Message: "invalid message format", Detail: err.Error()})
	default:
		s.log.Debug("client read failed", "err", err)
	}
}

// finish ends the session: it stops the relay and returns or discards the
// backends.
func (s *session) finish() {
	s.stopRelay()
	s.mu.Lock()
	busy := s.dirty || s.queue.syncs > 0 || s.unsynced
	needReset := s.st.life == statePinned
	atts := s.st.close()
	s.dtxEnd() // no longer a transaction for the deadlock detector to watch
	s.mu.Unlock()
	_ = s.conn.Close()
	for i := range atts {
		be := atts[i].conn
		clean := !busy && !be.Broken() && !atts[i].inTx()
		switch {
		case !clean:
			// Stop whatever the server still runs for the client, then
			// close the connection.
			s.srv.discardBusy(be)
		case needReset && s.resetBackend(be) != nil:
			be.Pool().Discard(be)
		default:
			be.Pool().Release(be)
		}
	}
	s.srv.forget(s)
}

// stopRelay stops relaying the attached backends (if any) to the client
// and leaves them to serve. Afterwards serve owns client output.
func (s *session) stopRelay() {
	s.mu.Lock()
	s.closing = true
	var buf [1]*pool.Conn
	conns := buf[:0]
	for i := range s.st.atts {
		conns = append(conns, s.st.atts[i].conn)
	}
	s.mu.Unlock()
	if len(conns) == 0 {
		return
	}
	// A relay call blocked on a slow client gives up after a second.
	_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	for _, be := range conns {
		// Only if the session is still be's handler: the relay may have
		// detached be at a ReadyForQuery meanwhile, and then be is back
		// in the pool or already another session's.
		be.ClearHandler(s)
	}
	_ = s.conn.SetWriteDeadline(time.Time{})
}

// resetBackend makes a backend that a session held for long (session
// mode, or pinned) fit for another client.
func (s *session) resetBackend(be *pool.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := be.Exec(ctx, "DISCARD ALL"); err != nil {
		return err
	}
	clear(be.Prepared)
	be.SettingsKey = ""
	be.UnnamedGen++
	return nil
}

// cstringView returns the NUL-terminated string at the start of b without
// copying: it is valid only while b is.
func cstringView(b []byte) string {
	n := bytes.IndexByte(b, 0)
	if n < 0 {
		n = len(b)
	}
	if n == 0 {
		return ""
	}
	return unsafe.String(&b[0], n)
}

// cstring returns the NUL-terminated string at the start of b.
func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
