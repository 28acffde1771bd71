package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/router"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// Prepared statements in transaction pooling: a client's named statement
// is prepared on backends under a name derived from its text and
// parameter types, so every client with the same statement shares it.
// The session remembers each client statement's Parse message and injects
// it (hiding the ParseComplete) on whichever backend it is lent before a
// Bind or Describe that needs it. The unnamed statement is re-injected
// the same way when the backend's unnamed statement is no longer the
// client's.

// stmt is one client statement.
type stmt struct {
	name   string // the client's name
	global string // name on backends
	sql    string
	parse  []byte // Parse frame under the global name
	// setting is the parameter change the statement makes (SET, RESET),
	// replayed on other backends once it ran; nil for other statements.
	setting *router.Info
	// pin says why running the statement pins the session ("" when it
	// does not): it is pinned at Bind, when the statement is about to
	// run, not at Parse, which may only describe it.
	pin string
}

// statements is a session's view of its prepared statements. Owned by
// serve.
type statements struct {
	named      map[string]*stmt
	unnamed    []byte     // last unnamed Parse frame
	unnamedSQL string     // its text
	unnamedBE  *pool.Conn // backend it was last parsed on
	unnamedGen uint64     // that backend's UnnamedGen after the parse
	// unnamedSet is the unnamed statement's parameter change (see stmt).
	unnamedSet *router.Info
	unnamedPin string // the unnamed statement's pin reason (see stmt)
	// bound is the parameter change of the statement bound to the
	// unnamed portal; running it moves it to ran, which the next Sync's
	// sync point carries (applied if the segment succeeds).
	bound, ran *settingChange
}

// globalName derives the backend name of a statement from its Parse body
// after the name (query text and parameter types).
func globalName(rest []byte) string {
	sum := sha256.Sum256(rest)
	var b [4 + 32]byte
	copy(b[:], "pgs_")
	hex.Encode(b[4:], sum[:16])
	return string(b[:])
}

// appendRenamed appends frame with the NUL-terminated string at offset
// off of its body replaced by name.
func appendRenamed(dst []byte, frame []byte, off int, name string) []byte {
	body := frame[wire.HeaderLen:]
	old := len(cstring(body[off:]))
	start := len(dst)
	dst = append(dst, frame[0], 0, 0, 0, 0)
	dst = append(dst, body[:off]...)
	dst = append(dst, name...)
	dst = append(dst, body[off+old:]...)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

func malformed(what string) error {
	return wire.Fatalf(wire.SQLStateProtocolViolation, "invalid %s message format", what)
}

func (s *session) handleParse(ctx context.Context, frame []byte) error {
	body := frame[wire.HeaderLen:]
	name := cstring(body)
	if len(name) >= len(body) {
		return malformed("Parse")
	}
	rest := body[len(name)+1:]
	sql := cstring(rest)
	if len(sql) >= len(rest) {
		return malformed("Parse")
	}
	if name != "" {
		if err := s.checkNewName(ctx, name); err != nil {
			return err
		}
	}
	be := s.claimRequest()
	if be == nil && s.srv.runtime().deferParse {
		// The shard is known only at Bind (parameters): hold the Parse.
		s.pending = append(s.pending, bytes.Clone(frame))
		return nil
	}
	if be == nil {
		if _, ok := s.localTx(sql); ok {
			// Transaction control the proxy answers (a COMMIT or
			// ROLLBACK of a deferred transaction, failed or not).
			s.parseLocal(frame)
			return nil
		}
		var err error
		if be, err = s.attach(ctx, router.Query{SQL: sql, Parse: body}); err != nil {
			return err
		}
	}
	info := router.Classify(sql)
	var set *router.Info
	var pin string
	switch {
	case info.Has(router.ClassPin):
		pin = info.PinReason
	case info.Class&^settingClasses == 0 && info.Class != 0:
		// SET and RESET: replayed like a simple query's when they run
		// (handleBind, handleExecute, handleSync).
		info.Param = strings.Clone(info.Param)
		set = &info
	case info.Class&^txControl != 0:
		pin = "session state change in the extended protocol"
	}
	if name == "" {
		s.stmts.unnamed = append(s.stmts.unnamed[:0], frame...)
		s.stmts.unnamedSQL = sql
		s.stmts.unnamedSet = set
		s.stmts.unnamedPin = pin
		be.UnnamedGen++
		s.stmts.unnamedBE = be
		s.stmts.unnamedGen = be.UnnamedGen
		s.pushEntry(entry{kind: entryParse})
		return s.forwardRaw(frame)
	}
	global := globalName(rest)
	st := &stmt{name: name, global: global, sql: sql, parse: appendRenamed(nil, frame, 0, global), setting: set, pin: pin}
	if s.stmts.named == nil {
		s.stmts.named = make(map[string]*stmt)
	}
	s.stmts.named[name] = st
	s.mu.Lock()
	_, has := be.Prepared[global]
	be.Prepared[global] = struct{}{}
	if has {
		// The backend has it already but the client expects a fresh
		// ParseComplete: close and parse again, hiding the close.
		s.queue.push(entry{kind: entryClose, swallow: true})
	}
	s.queue.push(entry{kind: entryParse, name: global, stmt: st})
	s.mu.Unlock()
	if has {
		s.bout = appendClose(s.bout, 'S', global)
	}
	return s.forwardRaw(st.parse)
}

// txControl are the classes of transaction control statements.
const txControl = router.ClassBegin | router.ClassCommit | router.ClassRollback

// settingClasses are the classes of statements that change session
// parameters the proxy replays on other backends, when they come through
// the extended protocol (DISCARD ALL, which also drops the backend's
// prepared statements, pins the session there).
const settingClasses = router.ClassSet | router.ClassReset | router.ClassResetAll

// deallocateLocally answers DEALLOCATE name for one of the client's
// protocol-level prepared statements while no backend is attached: the
// statement exists on backends under a shared name (and stays there for
// other sessions), so the proxy forgets the client's name and answers
// itself. It reports false when it did not (the statement is not the
// client's, or a backend is attached: then the server answers).
func (s *session) deallocateLocally(name string) bool {
	if s.stmts.named[name] == nil || s.attached() != nil || len(s.pending) > 0 {
		return false
	}
	delete(s.stmts.named, name)
	s.out = wire.AppendString(s.out, 'C', "DEALLOCATE")
	s.out = wire.AppendReadyForQuery(s.out, s.idleStatus())
	return true
}

// stmtPin returns why running statement name pins the session, or "".
func (s *session) stmtPin(name string) string {
	if name == "" {
		return s.stmts.unnamedPin
	}
	if st := s.stmts.named[name]; st != nil {
		return st.pin
	}
	return ""
}

// stmtSetting returns the parameter change statement name makes, or nil.
func (s *session) stmtSetting(name string) *router.Info {
	if name == "" {
		return s.stmts.unnamedSet
	}
	if st := s.stmts.named[name]; st != nil {
		return st.setting
	}
	return nil
}

// parseLocal records a client statement without a backend and answers
// ParseComplete itself: transaction control the proxy answers (a
// deferred BEGIN) needs no server. The statement is sent to a backend the
// first time one needs it (ensurePrepared).
func (s *session) parseLocal(frame []byte) {
	body := frame[wire.HeaderLen:]
	name := cstring(body)
	rest := body[len(name)+1:]
	if name == "" {
		s.stmts.unnamed = append(s.stmts.unnamed[:0], frame...)
		s.stmts.unnamedSQL = cstring(rest)
		s.stmts.unnamedBE = nil
		s.stmts.unnamedSet, s.stmts.unnamedPin = nil, ""
	} else {
		global := globalName(rest)
		if s.stmts.named == nil {
			s.stmts.named = make(map[string]*stmt)
		}
		s.stmts.named[name] = &stmt{name: name, global: global, sql: cstring(rest), parse: appendRenamed(nil, frame, 0, global)}
	}
	s.out = append(s.out, '1', 0, 0, 0, 4)
}

// localTx reports whether the proxy answers statement sql itself (a
// deferred BEGIN, or COMMIT/ROLLBACK of a transaction that never reached
// a shard), and its classification.
func (s *session) localTx(sql string) (router.Info, bool) {
	if len(sql) == 0 || s.attached() != nil {
		return router.Info{}, false
	}
	info := router.Classify(sql)
	return info, info.Class&txControl != 0 && s.canDeferTx(info, sql)
}

// answerPendingLocally answers held-back Parse and Describe messages
// itself when they are all about transaction control the proxy answers
// (see localTx); it reports false, answering nothing, otherwise.
func (s *session) answerPendingLocally(pending [][]byte) bool {
	for _, f := range pending {
		sql := s.pendingFrameSQL(pending, f)
		if _, ok := s.localTx(sql); !ok {
			return false
		}
	}
	for _, f := range pending {
		if f[0] == 'P' {
			s.parseLocal(f)
		} else {
			// No parameters, no rows.
			s.out = append(s.out, 't', 0, 0, 0, 6, 0, 0, 'n', 0, 0, 0, 4)
		}
	}
	return true
}

func appendClose(dst []byte, kind byte, name string) []byte {
	start := len(dst)
	dst = append(dst, 'C', 0, 0, 0, 0, kind)
	dst = append(dst, name...)
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

// ensurePrepared makes sure the statement the client calls name exists on
// be, injecting its Parse when it does not, and returns the backend name.
func (s *session) ensurePrepared(be *pool.Conn, name string) string {
	if name == "" {
		u := &s.stmts
		if u.unnamed != nil && (u.unnamedBE != be || u.unnamedGen != be.UnnamedGen) {
			be.UnnamedGen++
			u.unnamedBE = be
			u.unnamedGen = be.UnnamedGen
			s.pushEntry(entry{kind: entryParse, swallow: true})
			s.bout = append(s.bout, u.unnamed...)
		}
		return ""
	}
	st := s.stmts.named[name]
	if st == nil {
		return name // unknown to us: let the server report it
	}
	s.mu.Lock()
	_, has := be.Prepared[st.global]
	if !has {
		be.Prepared[st.global] = struct{}{}
		s.queue.push(entry{kind: entryParse, swallow: true, name: st.global})
	}
	s.mu.Unlock()
	if !has {
		s.bout = append(s.bout, st.parse...)
	}
	return st.global
}

// stmtParse returns the Parse body of a client statement, for its
// parameter types.
func (s *session) stmtParse(name string) []byte {
	f := s.stmts.unnamed
	if name != "" {
		st := s.stmts.named[name]
		if st == nil {
			return nil
		}
		f = st.parse
	}
	if len(f) < wire.HeaderLen {
		return nil
	}
	return f[wire.HeaderLen:]
}

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
		portal := cstring(body)
		if len(portal) < len(body) {
			name := cstring(body[len(portal)+1:])
			// The statement may be one of the pending ones.
			q = router.Query{SQL: pendingSQL(pending, name, s.stmtSQL(name)), Bind: body}
		}
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
	if s.be != nil && !s.unsynced && s.queue.syncs > 0 && s.state != statePinned {
		return s.be
	}
	return nil
}

// bindStays reports whether the Bind q, the first statement of a new
// request, runs on the backend still attached for earlier requests (its
// shard, and a primary or a replica as the statement allows).
func (s *session) bindStays(q router.Query) bool {
	q.HintShard, q.HintKey = s.hintShard, s.hintKey
	plan, err := s.routerFor().Route(q)
	if err != nil || plan.InTx {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case plan.Kind == rplan.Any:
		return true
	case plan.Kind != rplan.Single || plan.Shard != s.beShard:
		return false
	}
	return !s.beReplica || plan.ReplicaSafe
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
		if s.be != be || s.queue.syncs == 0 {
			failed := s.lastFailed
			s.mu.Unlock()
			if failed {
				s.skipToSync = true
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
		s.skipToSync = true
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
		body := f[wire.HeaderLen:]
		n := cstring(body)
		if n == name && len(n) < len(body) {
			sql = cstring(body[len(n)+1:])
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
		return cstring(body[len(cstring(body))+1:])
	}
	name := cstring(body[1:])
	return pendingSQL(pending, name, s.stmtSQL(name))
}

// stmtSQL returns the text of a client statement, for routing.
func (s *session) stmtSQL(name string) string {
	if name == "" {
		return s.stmts.unnamedSQL
	}
	if st := s.stmts.named[name]; st != nil {
		return st.sql
	}
	return ""
}

func (s *session) handleBind(ctx context.Context, frame []byte) error {
	body := frame[wire.HeaderLen:]
	portal := cstring(body)
	if len(portal) >= len(body) {
		return malformed("Bind")
	}
	off := len(portal) + 1
	name := cstring(body[off:])
	if s.portal != nil && s.portal.name == portal {
		if err := s.endPortal(ctx); err != nil {
			return err
		}
	}
	if info, ok := s.localTx(s.stmtSQL(name)); ok {
		s.portal = &scatterPortal{name: portal, txInfo: info, txSQL: strings.Clone(s.stmtSQL(name))}
		s.out = append(s.out, '2', 0, 0, 0, 4)
		return nil
	}
	be, plan, err := s.attachPlan(ctx, router.Query{SQL: s.stmtSQL(name), Parse: s.stmtParse(name), Bind: body})
	if err != nil {
		return err
	}
	if plan.Kind.Several() && be == nil {
		return s.bindScatter(ctx, portal, name, plan, body, off)
	}
	if r := s.stmtPin(name); r != "" {
		s.pin(r)
	}
	if portal == "" {
		s.stmts.bound = nil
		if info := s.stmtSetting(name); info != nil {
			e, err := s.sessionEffect(*info, s.stmtSQL(name))
			if err != nil {
				return err
			}
			s.stmts.bound = e.setting
		}
	}
	global := s.ensurePrepared(be, name)
	if global == name {
		return s.forwardRaw(frame)
	}
	s.bout = appendRenamed(s.bout, frame, off, global)
	return s.maybeFlush()
}

func (s *session) handleDescribe(ctx context.Context, frame []byte) error {
	body := frame[wire.HeaderLen:]
	if len(body) < 2 {
		return malformed("Describe")
	}
	if body[0] != 'S' {
		if p := s.scatterPortalFor(cstring(body[1:])); p != nil {
			if p.txSQL != "" || p.plan.Kind == rplan.Utility {
				s.out = append(s.out, 'n', 0, 0, 0, 4) // NoData
				return nil
			}
			p.described = true // answered when it runs
			return nil
		}
		return s.forwardAny(ctx, frame)
	}
	name := cstring(body[1:])
	be := s.claimRequest()
	if be == nil && s.srv.runtime().deferParse {
		// Held with the Parse: a Bind may follow and name the shard.
		s.pending = append(s.pending, bytes.Clone(frame))
		return nil
	}
	if be == nil {
		var err error
		if be, err = s.attach(ctx, router.Query{SQL: s.stmtSQL(name)}); err != nil {
			return err
		}
	}
	global := s.ensurePrepared(be, name)
	if global == name {
		return s.forwardRaw(frame)
	}
	s.bout = appendRenamed(s.bout, frame, 1, global)
	return s.maybeFlush()
}

func (s *session) handleClose(ctx context.Context, frame []byte) error {
	body := frame[wire.HeaderLen:]
	if len(body) < 2 || (body[0] != 'S' && body[0] != 'P') {
		return malformed("Close")
	}
	kind := body[0]
	name := cstring(body[1:])
	if kind == 'P' && s.portal != nil && s.portal.name == name {
		s.portal = nil
	}
	var st *stmt
	if kind == 'S' {
		if name == "" {
			s.stmts.unnamed = nil
		} else if st = s.stmts.named[name]; st != nil {
			delete(s.stmts.named, name)
		}
	}
	s.mu.Lock()
	be := s.be
	if be == nil {
		s.mu.Unlock()
		// Nothing to close on a backend (statements stay cached there;
		// portals do not outlive transactions): answer ourselves.
		s.out = append(s.out, '3', 0, 0, 0, 4)
		return nil
	}
	s.unsynced = true
	if st != nil {
		delete(be.Prepared, st.global)
	}
	s.queue.push(entry{kind: entryClose})
	s.mu.Unlock()
	if st == nil {
		return s.forwardRaw(frame)
	}
	s.bout = appendRenamed(s.bout, frame, 1, st.global)
	return s.maybeFlush()
}

func (s *session) maybeFlush() error {
	if len(s.bout) >= flushThreshold {
		return s.flushBackend()
	}
	return nil
}

// checkNewName refuses, as PostgreSQL does (42P05), a Parse of a
// statement name the client already uses: the error comes after the
// answers to the client's earlier messages, and the rest of the batch is
// skipped up to its Sync. A name whose statement's Parse, or a DEALLOCATE
// ALL, is still on its way is decided once its answer came.
func (s *session) checkNewName(ctx context.Context, name string) error {
	for s.stmts.named[name] != nil {
		s.mu.Lock()
		if s.be == nil || s.queue.syncs == 0 {
			s.mu.Unlock()
			break
		}
		wait := s.waitChan()
		s.mu.Unlock()
		if err := s.waitZ(ctx, wait); err != nil {
			return err
		}
		s.forgetStatements()
	}
	if s.stmts.named[name] == nil && !pendingParses(s.pending, name) {
		return nil
	}
	e := wire.Errorf(wire.SQLStateDuplicatePreparedStmt, "prepared statement \"%s\" already exists", name)
	if len(s.pending) > 0 {
		// Held-back messages are answered first.
		if err := s.sendPending(ctx, 'P', nil); err != nil {
			return err
		}
	}
	if be := s.claim(); be != nil {
		return s.raiseViaServer(be, e)
	}
	return e
}

// pendingParses reports whether held-back messages parse statement name.
func pendingParses(pending [][]byte, name string) bool {
	for _, f := range pending {
		if f[0] == 'P' && cstring(f[wire.HeaderLen:]) == name {
			return true
		}
	}
	return false
}

// forgetStatements drops the client statements the server does not have
// (see respQueue.gone).
func (s *session) forgetStatements() {
	if !s.forget.Load() {
		return
	}
	s.mu.Lock()
	gone := s.queue.gone
	s.queue.gone = nil
	s.forget.Store(false)
	s.mu.Unlock()
	for _, st := range gone {
		if s.stmts.named[st.name] == st {
			delete(s.stmts.named, st.name)
		}
	}
}

// all returns the client's named statements.
func (st *statements) all() []*stmt {
	out := make([]*stmt, 0, len(st.named))
	for _, x := range st.named {
		out = append(out, x)
	}
	return out
}
