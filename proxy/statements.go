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

// backendName is the name on backends of the client's statement name
// whose Parse body after the name is rest: in session pooling the client
// owns its server connection, so the statement keeps the client's name
// (SQL DEALLOCATE and pg_prepared_statements see it as on PostgreSQL; the
// connection is reset with DISCARD ALL when the client leaves).
func (s *session) backendName(name string, rest []byte) string {
	if s.sessionPool {
		return name
	}
	return globalName(rest)
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

// malformed is the error for an extended-protocol message whose fields do
// not decode: an ERROR, as PostgreSQL reports it (the frame itself was
// whole, so the session skips to the next Sync and goes on).
func malformed(what string) error {
	return wire.Errorf(wire.SQLStateProtocolViolation, "invalid %s message format", what)
}

func (s *session) handleParse(ctx context.Context, frame []byte) error {
	body := frame[wire.HeaderLen:]
	parse, err := wire.DecodeParse(body)
	if err != nil {
		return malformed("Parse")
	}
	name, sql := string(parse.Name), string(parse.Query)
	rest := body[len(name)+1:]
	if name != "" {
		if err := s.checkNewName(ctx, name); err != nil {
			return err
		}
	}
	if _, ok := s.multiTxEnd(sql); ok {
		// COMMIT or ROLLBACK of a transaction over several shards: the
		// proxy runs it (multitx.go).
		if err := s.quiesce(ctx); err != nil {
			return err
		}
		s.parseLocal(frame)
		return nil
	}
	if s.holdInTx() {
		// In a transaction over several shards: held until the Bind
		// names the shard (multitx.go).
		s.pending = append(s.pending, bytes.Clone(frame))
		return nil
	}
	be := s.claimRequest()
	if be == nil && s.srv.runtime().deferParse {
		// The shard is known only at Bind (parameters): hold the Parse.
		s.pending = append(s.pending, bytes.Clone(frame))
		return nil
	}
	var info router.Info
	classified := false
	if be == nil {
		if len(sql) > 0 && s.attached() == nil {
			// localTx, keeping the classification for below.
			info, classified = router.Classify(sql), true
			if s.canDeferTx(info, sql) {
				// Transaction control the proxy answers (a COMMIT or
				// ROLLBACK of a deferred transaction, failed or not).
				s.parseLocal(frame)
				return nil
			}
		}
		var err error
		if be, err = s.attach(ctx, router.Query{SQL: sql, Parse: body}); err != nil {
			return err
		}
	}
	if !classified {
		info = router.Classify(sql) // once per Parse: it is on every extended-protocol request
	}
	var set *router.Info
	var pin string
	switch {
	case info.Has(router.ClassPin):
		pin = info.PinReason
	case info.Class&^settingClasses == 0 && info.Class != 0:
		// SET and RESET: replayed like a simple query's when they run
		// (handleBind, handleExecute, handleSync).
		// A copy: taking info's address would put it on the heap for
		// every Parse.
		set = &router.Info{Class: info.Class, Param: strings.Clone(info.Param), PinReason: info.PinReason}
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
	global := s.backendName(name, rest)
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
	parse, _ := wire.DecodeParse(body) // checked by handleParse
	name := string(parse.Name)
	rest := body[len(name)+1:]
	if name == "" {
		s.stmts.unnamed = append(s.stmts.unnamed[:0], frame...)
		s.stmts.unnamedSQL = string(parse.Query)
		s.stmts.unnamedBE = nil
		s.stmts.unnamedSet, s.stmts.unnamedPin = nil, ""
	} else {
		global := s.backendName(name, rest)
		if s.stmts.named == nil {
			s.stmts.named = make(map[string]*stmt)
		}
		s.stmts.named[name] = &stmt{name: name, global: global, sql: string(parse.Query), parse: appendRenamed(nil, frame, 0, global)}
	}
	s.out = append(s.out, '1', 0, 0, 0, 4)
}

// localTx reports whether the proxy answers statement sql itself (a
// deferred BEGIN, a savepoint statement of it, or COMMIT/ROLLBACK of a
// transaction that never reached a shard), and its classification.
func (s *session) localTx(sql string) (router.Info, bool) {
	if len(sql) == 0 || s.attached() != nil {
		return router.Info{}, false
	}
	info := router.Classify(sql)
	return info, s.canDeferTx(info, sql)
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
	bind, err := wire.DecodeBind(body)
	if err != nil {
		return malformed("Bind")
	}
	portal, name := string(bind.Portal), string(bind.Statement)
	off := len(portal) + 1
	if s.portal != nil && s.portal.name == portal {
		if err := s.endPortal(ctx); err != nil {
			return err
		}
	}
	if err := s.settleBeforeBegin(ctx, s.stmtSQL(name)); err != nil {
		return err
	}
	if commit, ok := s.multiTxEnd(s.stmtSQL(name)); ok {
		if err := s.quiesce(ctx); err != nil {
			return err
		}
		s.portal = &scatterPortal{name: portal, txSQL: strings.Clone(s.stmtSQL(name)), txMulti: true, txCommit: commit}
		s.out = append(s.out, '2', 0, 0, 0, 4)
		return nil
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
		if s.srv.cacheOn.Load() {
			s.cacheNoteSeveral(plan)
		}
		return s.bindScatter(ctx, portal, name, plan, &bind)
	}
	if r := s.stmtPin(name); r != "" {
		s.pin(r)
	}
	if s.st.crossShard {
		s.noteTxSetting(be, router.Classify(s.stmtSQL(name)), s.stmtSQL(name))
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
	if s.cache.next != nil {
		return s.cacheBindMiss(plan, frame, name, off)
	}
	global := s.ensurePrepared(be, name)
	if global == name {
		return s.forwardRaw(frame)
	}
	s.bout = appendRenamed(s.bout, frame, off, global)
	return s.maybeFlush()
}

func (s *session) handleDescribe(ctx context.Context, frame []byte) error {
	d, err := wire.DecodeDescribe(frame[wire.HeaderLen:])
	if err != nil {
		return malformed("Describe")
	}
	if d.Kind != 'S' {
		if p := s.scatterPortalFor(string(d.Name)); p != nil {
			if p.cached != nil {
				s.cachedDescribe(p)
				return nil
			}
			if p.txSQL != "" || p.plan.Kind == rplan.Utility {
				s.out = append(s.out, 'n', 0, 0, 0, 4) // NoData
				return nil
			}
			p.described = true // answered when it runs
			return nil
		}
		return s.forwardAny(ctx, frame)
	}
	name := string(d.Name)
	if s.holdInTx() {
		s.pending = append(s.pending, bytes.Clone(frame))
		return nil
	}
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
	c, err := wire.DecodeClose(frame[wire.HeaderLen:])
	if err != nil {
		return malformed("Close")
	}
	kind, name := c.Kind, string(c.Name)
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
	be := s.st.conn()
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
		if s.st.cur() == nil || s.queue.syncs == 0 {
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
		if f[0] != 'P' {
			continue
		}
		if p, err := wire.DecodeParse(f[wire.HeaderLen:]); err == nil && string(p.Name) == name {
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
