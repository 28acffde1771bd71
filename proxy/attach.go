package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/proxy/scatter"
	"github.com/pgshard/pgshard/router"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// Attaching a backend: routing each statement, switching shards, refusing
// what must not run, and running reads over several shards.

// attach returns the backend for the statement sql, and claims it. It
// routes sql; when the session holds a backend of another shard it waits
// for that backend's work to finish and switches, or — inside a
// transaction, a pipeline or a pinned session — refuses the statement
// with 0A000 (raised by the current server, so the refusal arrives in
// order and aborts the transaction as any error would). It is for
// messages whose statement cannot run over several shards; see
// attachPlan.
func (s *session) attach(ctx context.Context, q router.Query) (*pool.Conn, error) {
	be, _, err := s.attachPlan(ctx, q)
	if err == nil && be == nil {
		return nil, errors.New("statement needs several shards")
	}
	return be, err
}

// attachPlan is attach for a simple query or a Bind, whose statement may
// run over several shards: it then attaches nothing and returns the plan
// (a Scatter, Utility, CopyIn or CopyOut in a simple query, a Scatter or
// Utility in a Bind) for the caller to run.
func (s *session) attachPlan(ctx context.Context, q router.Query) (*pool.Conn, rplan.Plan, error) {
	q.HintShard, q.HintKey = s.hint()
	routedBy := s.routedBy()
	plan, err := s.routerFor().Route(q)
	if err != nil {
		// An INSERT without a column list: learn the key column's
		// position from the catalog, then route again.
		plan, err = s.routeWithKeyPosition(ctx, q, plan, err)
	}
	if err == nil && (plan.Moving != "" || s.txRouter != nil && s.srv.anyMoving()) {
		plan, err = s.holdMoving(ctx, q, plan)
	}
	if err == nil && plan.Hint != nil {
		s.setHint(*plan.Hint)
	}
	if err == nil && plan.InTx {
		err = s.inTxOnly(&plan)
	}
	if err == nil && plan.Kind.Several() {
		err = sessionStateOverShards(q.SQL)
	}
	if err == nil {
		err = s.srv.failClosed(plan)
	}
	s.rewrite = ""
	if err == nil && (plan.Kind == rplan.Single || plan.Kind == rplan.Any) && plan.SQL != "" && s.curType == 'Q' {
		s.rewrite = plan.SQL
	}
	for err == nil && plan.Kind.Several() {
		s.mu.Lock()
		use := s.st.canScatter(s.pipe())
		switch {
		case use == useNew && (s.curType == 'Q' || s.curType == 'B' && (plan.Kind == rplan.Scatter || plan.Kind == rplan.Utility)):
			s.mu.Unlock()
			return nil, plan, nil
		case use == useNew:
			err = &rplan.RefusalError{Code: wire.SQLStateFeatureNotSupported,
				Message: "this statement over several shards runs only through the simple query protocol (COPY over several shards)",
				Hint:    "Send it as a simple query, or add a condition on the sharding key."}
		case use == useWait:
			// Earlier pipelined statements still run: wait, then look again.
			wait := s.waitChan()
			s.mu.Unlock()
			if werr := s.waitZ(ctx, wait); werr != nil {
				return nil, plan, werr
			}
			continue
		case use == useTx:
			// Inside a transaction over several shards (multitx.go).
			s.mu.Unlock()
			if err = s.txScatterAllowed(plan); err == nil {
				if err = s.txScatterWriteRefusal(plan); err == nil {
					return nil, plan, nil
				}
			}
			s.mu.Lock()
		case plan.Kind == rplan.Utility:
			err = &rplan.RefusalError{Code: wire.SQLStateFeatureNotSupported,
				Message: "DDL refused: it runs on every shard (of its tables, or of the map when it names no table of the map), which it cannot inside a transaction, a pipeline or a pinned session",
				Hint:    "Run it outside the transaction; name a temporary object as pg_temp.name; or route it to one shard with a /* pgshard: shard=NAME */ comment."}
		default:
			err = &rplan.RefusalError{Code: wire.SQLStateFeatureNotSupported,
				Message: "cross-shard statement refused: a statement over several shards cannot run inside a transaction, a pipeline or a pinned session",
				Hint:    "Run it outside the transaction, or add a condition on the sharding key."}
		}
		s.mu.Unlock()
	}
	if err != nil {
		we := routeError(err)
		if be := s.attached(); be != nil {
			// The relay owns client output: let the server raise it.
			return nil, plan, s.raiseViaServer(be, we)
		}
		return nil, plan, we
	}
	s.noteRoute(q, routedBy, plan)
	be, err := s.attachRouted(ctx, plan, q, s.readTarget)
	return be, plan, err
}

// inTxOnly places a statement the router allows only on the shard of
// the session's open transaction (DO, CALL): there, or nowhere.
func (s *session) inTxOnly(plan *rplan.Plan) error {
	s.mu.Lock()
	shard, inTx := s.st.txShard(s.pipe())
	s.mu.Unlock()
	if !inTx {
		return plan.Err
	}
	plan.Shard, plan.InTx, plan.Err = shard, false, nil
	return nil
}

// sessionStateOverShards refuses a statement over several shards that
// would leave session state (a temporary table, a session advisory lock,
// a session setting, ...) on each shard's server connection: a session
// can be pinned to one connection only, and the others would go back to
// the pool with it.
func sessionStateOverShards(sql string) error {
	info := router.Classify(sql)
	if !info.Has(router.ClassPin) {
		return nil
	}
	return &rplan.RefusalError{Code: wire.SQLStateFeatureNotSupported,
		Message: fmt.Sprintf("statement refused: it would create session state (%s) on several shards, and a session can stay on one server connection only", info.PinReason),
		Hint:    "Add a condition on the sharding key, or route it with SET pgshard.shard."}
}

// attachRouted is attach for a statement routed as plan: it keeps or
// switches the attached backend, or lends one of plan.Shard — of the
// replica whose address target gives, or of the primary when that is "".
func (s *session) attachRouted(ctx context.Context, plan rplan.Plan, q router.Query, target func(rplan.Plan) string) (*pool.Conn, error) {
	statement := q.SQL != "" || q.Bind != nil
	for {
		s.mu.Lock()
		p := s.pipe()
		if statement && s.st.waitsForDescribe(p) {
			// Describing is done on a backend outside the client's
			// transaction: wait until it goes back, then start the
			// transaction for real.
			wait := s.waitChan()
			s.mu.Unlock()
			if err := s.waitZ(ctx, wait); err != nil {
				return nil, err
			}
			continue
		}
		a := s.st.cur()
		// A statement that names no table of the map (SELECT 1, catalog
		// queries, NOTIFY) runs where the session must stay — its
		// transaction, pipeline or pinned backend — rather than be
		// refused for not being there.
		if a != nil && plan.Anywhere && !a.outsideTx && s.st.bound(p) {
			plan.Shard = a.shard
		}
		fits := false
		if a != nil {
			// A replica's backend serves only reads, except inside its
			// (READ ONLY) transaction, where the server itself refuses
			// writes.
			onReplicaOK := !a.replica || plan.ReplicaSafe || plan.Kind == rplan.Any || a.inTx() || a.readOnlyTx
			// A statement that would start a new transaction on a
			// primary whose shard switches waits for the switch
			// (buffer.go) rather than run on the server being replaced:
			// the backend is let go once its earlier requests are
			// answered.
			newTxOnSwitching := !a.replica && !a.inTx() && !p.unsynced && s.st.deferredBegin == "" &&
				s.st.life != statePinned && p.syncs > 0 && s.srv.switching(a.shard)
			fits = (a.shard == plan.Shard || plan.Kind == rplan.Any) && onReplicaOK && !newTxOnSwitching
		}
		use, refusal := s.st.canUse(plan.Shard, fits, p)
		if use == useAttached || use == useSwitch {
			refusal = s.txStatementRefusal(plan, q.SQL)
			if shard := plan.Shard; refusal == nil {
				if use == useAttached && a != nil {
					shard = a.shard
				}
				refusal = s.txWriteRefusal(plan, q, shard)
			}
			if refusal != nil {
				use = useRefused
			}
		}
		be := s.st.conn()
		switch use {
		case useSwitch:
			s.mu.Unlock()
			return s.switchShard(ctx, plan, q, target)
		case useAttached:
			s.unsynced = true
			s.noteWrite(plan, q.SQL)
			s.noteTxWrite(plan, q)
			s.mu.Unlock()
			return be, nil
		case useRefused:
			s.mu.Unlock()
			if be == nil {
				return nil, refusal
			}
			return nil, s.raiseViaServer(be, refusal)
		case useWait:
			// Earlier statements still run on the other shard: wait for
			// them.
			wait := s.waitChan()
			s.mu.Unlock()
			if err := s.waitZ(ctx, wait); err != nil {
				return nil, err
			}
			continue
		}
		s.mu.Unlock()
		break
	}
	s.mu.Lock()
	deferred := s.st.deferredBegin != ""
	s.mu.Unlock()
	if s.srv.shuttingDown() && !deferred {
		return nil, wire.Fatalf(wire.SQLStateAdminShutdown, "terminating connection due to administrator command")
	}
	// Responses serve produced itself come before the backend's.
	if err := s.flushClient(); err != nil {
		return nil, err
	}
	replica := target(plan)
	for attempt := 0; ; attempt++ {
		be, err := s.lendFor(ctx, plan.Shard, &replica)
		if err != nil {
			return nil, err
		}
		p := be.Pool()
		if err := s.prepareBackend(ctx, be); err != nil {
			p.Discard(be)
			if be.Broken() && attempt < 3 {
				continue // it died just now; nothing of the client's was sent
			}
			return nil, err
		}
		s.mu.Lock()
		begin := s.st.attach(be, plan.Shard, replica != "", s.noBegin, s.sessionPool)
		s.noteWrite(plan, q.SQL)
		s.noteTxWrite(plan, q)
		s.queue.reset()
		s.unsynced = true
		s.dirty = false
		s.mu.Unlock()
		s.relay = relayState{out: s.relay.out[:0]}
		if begin != "" {
			s.relay.swallow = 1
		}
		if err := be.SetHandler(s); err != nil {
			s.mu.Lock()
			s.st.detach(be)
			s.mu.Unlock()
			p.Discard(be)
			if attempt < 3 {
				continue
			}
			return nil, wire.Errorf(wire.SQLStateConnectionFailure, "could not get a working server connection")
		}
		if begin != "" {
			// The transaction the proxy acknowledged starts here; the
			// client has seen BEGIN's reply already, so hide this one.
			s.mu.Lock()
			replay := s.st.beginSent()
			s.queue.push(entry{kind: entrySync, swallow: true})
			s.mu.Unlock()
			if replay != "" {
				// The SAVEPOINTs and SET LOCALs the proxy acknowledged,
				// in the same query: one answer, swallowed.
				s.bout = wire.AppendString(s.bout, 'Q', begin+"\n;"+replay)
			} else {
				s.bout = wire.AppendString(s.bout, 'Q', begin)
			}
			if !plainBegin(begin) {
				if err := s.probeBegin(ctx, begin); err != nil {
					return nil, err
				}
			}
		}
		return be, nil
	}
}

// routerFor returns the router for the session's next statement: the
// current one, except inside a transaction, which keeps routing by the
// router (shard map) it started with.
func (s *session) routerFor() router.Router {
	s.mu.Lock()
	inTx := s.st.inTx()
	s.mu.Unlock()
	if inTx && s.txRouter != nil {
		return s.txRouter
	}
	r := s.srv.router()
	s.txRouter = nil
	if inTx {
		s.txRouter = r
	}
	return r
}

// setHint records a routing hint the client set (optimistically: the SET
// itself runs on the server like any other).
func (s *session) setHint(h rplan.HintSet) {
	shard, key := s.hint()
	switch h.Name {
	case "shard":
		shard = h.Value
	case "key":
		key = h.Value
	default:
		return
	}
	if shard == "" && key == "" {
		s.hints = nil
		return
	}
	s.hints = &routingHints{shard: shard, key: key}
}

// attachAny is attach for messages that name no statement (Execute,
// Describe of a portal, FunctionCall): they go to the attached backend, or
// to the default route when none is attached.
func (s *session) attachAny(ctx context.Context) (*pool.Conn, error) {
	if be := s.claim(); be != nil {
		return be, nil
	}
	return s.attach(ctx, router.Query{})
}

// forwardAny sends a frame that names no statement (see attachAny).
func (s *session) forwardAny(ctx context.Context, frame []byte) error {
	if _, err := s.attachAny(ctx); err != nil {
		return err
	}
	return s.forwardRaw(frame)
}

// waitChan returns a channel closed at the next ReadyForQuery. Callers
// hold s.mu.
func (s *session) waitChan() chan struct{} {
	if s.zWait == nil {
		s.zWait = make(chan struct{})
	}
	return s.zWait
}

// waitZ flushes what is buffered for the backend (its answers cannot come
// back otherwise) and waits for the next ReadyForQuery.
func (s *session) waitZ(ctx context.Context, wait chan struct{}) error {
	if err := s.flushBackend(); err != nil {
		return err
	}
	select {
	case <-wait:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the previous statement: %w", ctx.Err())
	}
}

// routeError turns a router error into the client's error.
func routeError(err error) *wire.Error {
	var re *rplan.RefusalError
	if errors.As(err, &re) {
		return &wire.Error{Code: re.Code, Message: re.Message, Hint: re.Hint}
	}
	return wire.AsError(err)
}

// lendFor lends a backend of shard: of the replica *replica, or of the
// primary when *replica is "" — also when the replica cannot be reached,
// which sets *replica to "".
func (s *session) lendFor(ctx context.Context, shard string, replica *string) (*pool.Conn, error) {
	if *replica != "" {
		p, err := s.srv.poolAt(ctx, shard, *replica, s.user, s.db)
		if err != nil {
			return nil, err
		}
		be, err := s.srv.acquire(ctx, p)
		if err == nil {
			return be, nil
		}
		*replica = "" // the primary can serve it
	}
	return s.srv.acquirePrimary(ctx, shard, s.user, s.db)
}

// raiseViaServer answers the client's current request with e while a
// backend is attached: the server raises it (a DO block), so it arrives
// in order after earlier responses and aborts an open transaction as any
// error would. When the backend went back to the pool meanwhile, e is
// returned for serve to report itself.
//
// A simple query gets the DO block as a Query, whose ReadyForQuery
// answers it. In the extended protocol the block runs as the unnamed
// statement (Parse, Bind, Execute; their ParseComplete and BindComplete
// hidden) before the client's coming Sync, which is forwarded: a server
// that is already skipping to Sync after an earlier error of the batch
// discards the block and answers that Sync, as it would have answered
// the client's own messages.
func (s *session) raiseViaServer(be *pool.Conn, e *wire.Error) error {
	s.mu.Lock()
	if s.st.byConn(be) == nil {
		s.mu.Unlock()
		return e
	}
	simple := s.curType == 'Q' || s.curType == 'F'
	if simple {
		s.queue.push(entry{kind: entrySync, sent: time.Now()})
		s.unsynced = false
	} else {
		s.queue.push(entry{kind: entryParse, swallow: true})
		s.queue.push(entry{kind: entryBind, swallow: true})
		s.unsynced = true
		if s.curType == 'S' {
			// The refused request came with the client's Sync.
			s.queue.push(entry{kind: entrySync, sent: time.Now(), sync: syncEntry{clientSync: true, copyEnds: s.st.copyEnds}})
			s.unsynced = false
		}
	}
	s.raised = append(s.raised, e.Message)
	s.raises.Store(int32(len(s.raised)))
	s.mu.Unlock()
	s.srv.metrics.errorCode(e.Code)
	sql := "DO $pgshard$ BEGIN RAISE EXCEPTION USING ERRCODE = " + quoteLiteral(e.Code) +
		", MESSAGE = " + quoteLiteral(e.Message)
	if e.Hint != "" {
		sql += ", HINT = " + quoteLiteral(e.Hint)
	}
	sql += "; END $pgshard$"
	be.UnnamedGen++
	if simple {
		s.bout = wire.AppendString(s.bout, 'Q', sql)
		return errAnswered
	}
	s.bout = appendRun(s.bout, sql)
	if s.curType == 'S' {
		s.bout = append(s.bout, 'S', 0, 0, 0, 4)
	} else {
		// Drop the rest of the client's batch; its Sync is forwarded.
		s.st.skipBatch()
	}
	return errAnswered
}

// runScatter runs a read on several shards and answers the client with
// the merged result. No backend is attached, so serve owns client output.
func (s *session) runScatter(ctx context.Context, plan rplan.Plan, sql string) error {
	switch plan.Kind {
	case rplan.Utility:
		return s.runUtility(ctx, plan, sql)
	case rplan.CopyIn:
		return s.runCopyIn(ctx, plan, sql)
	}
	if err := s.checkAggregates(ctx, plan.Shards[0], plan.Calls); err != nil {
		return err
	}
	byteOrder, err := s.sortsBytewise(ctx, plan)
	if err != nil {
		return err
	}
	if plan.ShardSQL != "" {
		sql = plan.ShardSQL
	}
	start := time.Now()
	if err := s.flushClient(); err != nil { // earlier answers first
		return err
	}
	req := scatter.Request{
		Shards:        plan.Shards,
		Replicas:      s.scatterReplicas(plan),
		SQL:           strings.Clone(sql),
		PerShardSQL:   plan.PerShardSQL,
		Atomic:        plan.Atomic,
		RowOrder:      plan.PerShardRows,
		CopyOut:       plan.Kind == rplan.CopyOut,
		CopyHeader:    plan.Copy != nil && plan.Copy.Header,
		TextByteOrder: byteOrder,
		Spec:          plan.Merge,
		Prepare:       s.prepareBackend,
		Flush:         func(b []byte) error { _, err := s.conn.Write(b); return err },
		Canceler:      &s.scatterCancel,
		Dst:           s.out[:0],
	}
	if err := s.splitWrite(plan, &req); err != nil {
		return err
	}
	out, err := s.scatter(ctx, !plan.ReadOnly, req)
	s.out = out
	if !plan.ReadOnly || plan.Kind == rplan.CopyOut { // (COPY TO as well, as always)
		s.learnLSNs(ctx, plan.Shards)
	}
	if err != nil {
		var we *wire.Error
		if !errors.As(err, &we) {
			return err
		}
		return we // reportError appends it and ReadyForQuery
	}
	s.out = wire.AppendReadyForQuery(s.out, s.idleStatus())
	s.srv.metrics.query(time.Since(start))
	return s.flushClient()
}

// prepareBackend brings a freshly lent backend's session parameters in
// line with the client's, synchronously, before any client traffic.
func (s *session) prepareBackend(ctx context.Context, be *pool.Conn) error {
	if be.SettingsKey == s.sets.key {
		return nil
	}
	sql := s.sets.applySQL(be.SettingsKey != "")
	if err := be.Exec(ctx, sql); err != nil {
		var se *pool.ServerError
		if errors.As(err, &se) {
			// The server refuses the client's parameters (a startup
			// option): as PostgreSQL, which refuses such a connection,
			// the session ends with the server's error.
			return &wire.Error{Severity: "FATAL", Code: se.Code, Message: se.Message, Err: err}
		}
		return fmt.Errorf("apply session parameters on %s: %w", be.Addr, err)
	}
	be.SettingsKey = s.sets.key
	be.UnnamedGen++
	return nil
}
