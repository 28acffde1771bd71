package proxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/proxy/scatter"
	"github.com/pgshard/pgshard/replication/twophase"
	"github.com/pgshard/pgshard/router"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// Transactions over several shards (transactions.cross_shard: two_phase).
// A transaction starts as always: the deferred BEGIN goes to the shard of
// its first statement. A statement for another shard, once every earlier
// request is answered, parks the current attachment (idle in the
// transaction, without a handler) and runs on that shard's attachment,
// opened with the same BEGIN on first use (sessionState.canUse:
// useSwitch). Statements over several shards run on the session's
// attachments (scatterInTx). COMMIT of a transaction on several shards
// goes through the two-phase coordinator (replication/twophase): one
// phase when at most one shard wrote, else PREPARE TRANSACTION
// everywhere, the commit record, COMMIT PREPARED; ROLLBACK rolls every
// attachment back. A transaction on one shard keeps the usual path.

// The transactions.cross_shard values.
const (
	CrossShardRefuse   = "refuse"    // statements for another shard in a transaction: 0A000
	CrossShardTwoPhase = "two_phase" // transactions span shards; two-phase commit
)

// TransactionsConfig configures transactions.
type TransactionsConfig struct {
	// CrossShard is refuse (default) or two_phase.
	CrossShard string `yaml:"cross_shard"`
	// DeadlockTimeout is how long a statement of a transaction over
	// several shards waits before the proxy looks for a deadlock across
	// shards (deadlock.go); 0 means 1 s, negative never.
	DeadlockTimeout Duration `yaml:"deadlock_timeout"`
}

// twoPhaseState is the server's two-phase commit coordinator.
type twoPhaseState struct {
	mu      sync.Mutex
	id      string // the proxy's ID in GIDs: its meta heartbeat ID
	coord   *twophase.Coordinator
	metrics *twophase.Metrics
}

// setProxyID sets the ID the coordinator names the proxy by (the ID it
// heartbeats meta with, so that meta's recovery can judge its lease).
func (t *twoPhaseState) setProxyID(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id != t.id {
		t.id, t.coord = id, nil
	}
}

// coordinator returns the coordinator, made on first use.
func (t *twoPhaseState) coordinator(s *Server) *twophase.Coordinator {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.coord == nil {
		if t.id == "" {
			host, _ := os.Hostname()
			t.id = "pgshard-proxy-" + host
		}
		t.coord = twophase.New(t.id, twophase.RecordStore{}, twophase.Options{}, s.log)
		if t.metrics != nil {
			t.coord.OnOutcome = t.metrics.Observe
		}
	}
	return t.coord
}

// noteTxWrite marks the current attachment as written when the
// statement routed as plan, about to run there, may write. Callers hold
// s.mu.
func (s *session) noteTxWrite(plan rplan.Plan, q router.Query) {
	if a := s.st.cur(); a != nil && !a.wrote && !plan.ReadOnly && (q.Bind != nil || s.curType == 'Q') {
		a.wrote = true
	}
}

// txStatementRefusal refuses what a transaction over several shards
// cannot do: savepoints, and ending it other than with a plain COMMIT or
// ROLLBACK (those are handled by endTxOverShards). A savepoint in a
// transaction on one shard keeps it there. Callers hold s.mu.
func (s *session) txStatementRefusal(plan rplan.Plan, sql string) *wire.Error {
	if len(s.st.atts) < 2 {
		if plan.Tx == rplan.TxSavepoint && s.st.crossShard {
			s.st.savepoint = true // canUse keeps the transaction here
		}
		return nil
	}
	switch plan.Tx {
	case rplan.TxSavepoint, rplan.TxRelease, rplan.TxRollbackTo:
		return errSavepointOverShards()
	case rplan.TxCommit, rplan.TxRollback, rplan.TxPrepare, rplan.TxCommitPrepared, rplan.TxRollbackPrepared, rplan.TxBegin:
		return txEndRefusal()
	}
	if sql != "" && router.Classify(sql).Class&txControl != 0 {
		return txEndRefusal()
	}
	return nil
}

func txEndRefusal() *wire.Error {
	return &wire.Error{Code: wire.SQLStateFeatureNotSupported,
		Message: "a transaction over several shards ends only with COMMIT or ROLLBACK, alone in its query",
		Hint:    "Send COMMIT or ROLLBACK as a statement of its own (no AND CHAIN, no PREPARE TRANSACTION)."}
}

// txScatterAllowed says whether a statement over several shards may run
// in the session's transaction (on its attachments): reads, writes, DDL
// (utility.go) and COPY FROM (copyin.go) over several shards run there;
// COPY TO does not.
func (s *session) txScatterAllowed(plan rplan.Plan) error {
	switch {
	case plan.Kind == rplan.Scatter && s.curType == 'Q' || plan.Kind == rplan.Scatter && s.curType == 'B':
		return nil
	case plan.Kind == rplan.Utility && (s.curType == 'Q' || s.curType == 'B'), plan.Kind == rplan.CopyIn && s.curType == 'Q':
		return nil
	case plan.Kind == rplan.Utility:
		return &rplan.RefusalError{Code: wire.SQLStateFeatureNotSupported,
			Message: "DDL refused: it runs on every shard, which it cannot inside a transaction",
			Hint:    "Run it outside the transaction; name a temporary object as pg_temp.name; or route it to one shard with a /* pgshard: shard=NAME */ comment."}
	}
	return &rplan.RefusalError{Code: wire.SQLStateFeatureNotSupported,
		Message: "cross-shard statement refused: COPY TO over several shards cannot run inside a transaction",
		Hint:    "Run it outside the transaction, or add a condition on the sharding key."}
}

// switchShard runs the statement routed as plan on its shard inside the
// session's transaction: the current attachment is parked, and the
// shard's attachment becomes the current one — opened with the
// transaction's BEGIN if the session had none there. Nothing of the
// session's is in flight (sessionState.spansShards).
func (s *session) switchShard(ctx context.Context, plan rplan.Plan, q router.Query, target func(rplan.Plan) string) (*pool.Conn, error) {
	s.mu.Lock()
	old, oldShard := s.st.conn(), s.st.cur().shard
	s.mu.Unlock()
	if !old.ClearHandler(s) {
		// Lost meanwhile: Fail tells the client and ends the session.
		return nil, wire.Errorf(wire.SQLStateConnectionFailure, "server connection lost")
	}
	s.relay = relayState{out: s.relay.out[:0]}
	if err := s.dtxTagParked(ctx, old); err != nil {
		return nil, s.restoreAndRaise(old, wire.AsError(err))
	}
	s.mu.Lock()
	if a := s.st.switchTo(plan.Shard); a != nil {
		be := a.conn
		s.parkedNowCurrent(plan, q)
		s.mu.Unlock()
		if err := s.txCatchUp(ctx, be, plan.Shard); err != nil {
			s.mu.Lock()
			s.st.switchTo(oldShard)
			s.mu.Unlock()
			return nil, s.restoreAndRaise(old, wire.AsError(err))
		}
		if err := be.SetHandler(s); err != nil {
			s.mu.Lock()
			s.st.switchTo(oldShard)
			s.mu.Unlock()
			return nil, s.restoreAndRaise(old, wire.Errorf(wire.SQLStateConnectionFailure,
				"server connection of shard %s lost during the transaction", plan.Shard))
		}
		return be, nil
	}
	s.mu.Unlock()
	restore := func(e *wire.Error) error { return s.restoreAndRaise(old, e) }
	replica := target(plan)
	be, err := s.lendFor(ctx, plan.Shard, &replica)
	if err != nil {
		return nil, restore(wire.AsError(err))
	}
	if err := s.prepareBackend(ctx, be); err != nil {
		be.Pool().Discard(be)
		return nil, restore(wire.AsError(err))
	}
	s.mu.Lock()
	begin := s.st.txBegin
	tagged := s.txOpenSQL(begin, plan.Shard, replica != "")
	s.mu.Unlock()
	if !plainBegin(begin) {
		// A BEGIN with options may be refused (READ WRITE on a
		// replica): open the transaction before the statement is sent.
		if _, err := be.ExecInTx(ctx, tagged); err != nil {
			if be.Broken() {
				be.Pool().Discard(be)
			} else {
				be.Pool().Release(be)
			}
			return nil, restore(wire.AsError(asPgError(err)))
		}
		begin = ""
	}
	s.mu.Lock()
	s.st.attachMore(be, plan.Shard, replica != "")
	s.dtxTagged(be)
	if begin == "" {
		s.st.cur().txStatus = 'T'
	}
	s.parkedNowCurrent(plan, q)
	s.mu.Unlock()
	if begin != "" {
		s.relay.swallow = 1
	}
	if err := be.SetHandler(s); err != nil {
		s.mu.Lock()
		s.st.detach(be)
		s.mu.Unlock()
		be.Pool().Discard(be)
		return nil, restore(wire.Errorf(wire.SQLStateConnectionFailure, "could not get a working server connection"))
	}
	if begin != "" {
		s.mu.Lock()
		s.queue.push(entry{kind: entrySync, swallow: true})
		s.mu.Unlock()
		s.bout = wire.AppendString(s.bout, 'Q', tagged)
	}
	return be, nil
}

// parkedNowCurrent is the bookkeeping of a switch to another attachment
// of the transaction. Callers hold s.mu.
func (s *session) parkedNowCurrent(plan rplan.Plan, q router.Query) {
	s.queue.reset()
	s.unsynced = true
	s.dirty = false
	s.noteWrite(plan, q.SQL)
	s.noteTxWrite(plan, q)
}

// restoreAndRaise makes old, the attachment a failed switch left,
// current again and has its server raise e: the transaction fails, as
// on PostgreSQL, and the client gets e in order.
func (s *session) restoreAndRaise(old *pool.Conn, e *wire.Error) error {
	s.relay = relayState{out: s.relay.out[:0]}
	if err := old.SetHandler(s); err != nil {
		return wire.Fatalf(wire.SQLStateConnectionFailure, "server connection lost during the transaction")
	}
	s.mu.Lock()
	s.unsynced = true
	s.mu.Unlock()
	return s.raiseViaServer(old, e)
}

// multiTxEnd reports whether sql is a plain COMMIT or ROLLBACK of a
// transaction the session runs on several shards, and which.
func (s *session) multiTxEnd(sql string) (commit, ok bool) {
	if !s.st.crossShard { // (written by serve only, which runs this)
		return false, false
	}
	s.mu.Lock()
	n, aborted := len(s.st.atts), s.st.txAborted
	s.mu.Unlock()
	if n < 2 && !(aborted && n == 1) {
		return false, false
	}
	info := router.Classify(sql)
	if info.Class&(router.ClassCommit|router.ClassRollback) == 0 ||
		strings.Contains(strings.TrimRight(sql, "; \t\r\n"), ";") || containsFoldASCII(sql, "chain") {
		return false, false
	}
	return info.Has(router.ClassCommit), true
}

// quiesce waits until every request sent to the session's servers is
// answered; a batch with unsynced messages cannot end the transaction.
func (s *session) quiesce(ctx context.Context) error {
	for {
		s.mu.Lock()
		p := s.pipe()
		if p.syncs == 0 {
			be := s.st.conn()
			s.mu.Unlock()
			if p.unsynced && be != nil {
				return s.raiseViaServer(be, &wire.Error{Code: wire.SQLStateFeatureNotSupported,
					Message: "COMMIT or ROLLBACK of a transaction over several shards must start a batch of its own",
					Hint:    "Send a Sync before it."})
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

// endTxOverShards answers a simple-protocol COMMIT or ROLLBACK of a
// transaction over several shards (see endMultiTx). It reports whether
// sql was one.
func (s *session) endTxOverShards(ctx context.Context, sql string) (bool, error) {
	commit, ok := s.multiTxEnd(sql)
	if !ok {
		return false, nil
	}
	if err := s.quiesce(ctx); err != nil {
		return true, err
	}
	tag, err := s.endMultiTx(ctx, commit)
	if err != nil {
		return true, err
	}
	s.out = wire.AppendString(s.out, 'C', tag)
	s.out = wire.AppendReadyForQuery(s.out, 'I')
	return true, s.flushClient()
}

// txParticipant is an attachment as a two-phase commit participant.
type txParticipant struct {
	shard string
	be    *pool.Conn
	wrote bool
}

func (p *txParticipant) Shard() string  { return p.shard }
func (p *txParticipant) ReadOnly() bool { return !p.wrote }

// Exec runs sql on the attachment's connection (no handler, idle in the
// transaction); a server's error is a *pgconn.PgError, which the
// coordinator tells from a lost answer. The coordinator's statements may
// leave the transaction open (ROLLBACK TO SAVEPOINT while it waits for the
// decision table), so any transaction status is accepted.
func (p *txParticipant) Exec(ctx context.Context, sql string) (string, error) {
	tag, err := p.be.ExecTagAnyState(ctx, sql)
	return tag, asPgError(err)
}

// asPgError turns a server's error to a statement the proxy ran into a
// *pgconn.PgError; other errors are returned as they are.
func asPgError(err error) error {
	var se *pool.ServerError
	if errors.As(err, &se) {
		return &pgconn.PgError{Severity: "ERROR", Code: se.Code, Message: se.Message}
	}
	return err
}

// endMultiTx ends the session's transaction over several shards, once
// nothing is in flight: COMMIT through the coordinator (a failed
// transaction rolls back: tag ROLLBACK, as on PostgreSQL), ROLLBACK on
// every attachment. Every attachment goes back to its pool (or is
// closed) and the session is idle, whatever the outcome. The error is
// the client's: the server's error of a participant that could not
// prepare (everything rolled back), or 08007 when the outcome is unknown.
func (s *session) endMultiTx(ctx context.Context, commit bool) (string, error) {
	s.mu.Lock()
	cur := s.st.conn()
	s.mu.Unlock()
	if cur != nil && !cur.ClearHandler(s) {
		return "", wire.Fatalf(wire.SQLStateConnectionFailure, "server connection lost during the transaction")
	}
	s.relay = relayState{out: s.relay.out[:0]}
	s.mu.Lock()
	failed := s.st.txFailed()
	atts := s.st.endAll()
	s.dtxEnd()
	tentative := s.tentative
	s.tentative = nil
	s.queue.reset()
	s.unsynced = false
	s.txRouter = nil
	s.mu.Unlock()
	// The cache invalidations of the transaction's writes are applied
	// (again, and for good) before the client hears how it ended.
	s.cache.serveInv = s.cache.pending.Load()
	giveBack := func() {
		for i := range atts {
			be := atts[i].conn
			if be.Broken() || atts[i].lost {
				be.Pool().Discard(be)
			} else {
				be.Pool().Release(be)
			}
		}
	}
	s.srv.metrics.transaction()
	if !commit || failed {
		var wg sync.WaitGroup
		for i := range atts {
			be := atts[i].conn
			if atts[i].lost {
				continue
			}
			wg.Go(func() {
				if err := be.Exec(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
					s.log.Debug("rollback of a transaction over several shards failed", "server", be.Addr, "err", err)
				}
			})
		}
		wg.Wait()
		giveBack()
		return "ROLLBACK", nil
	}
	ps := make([]twophase.Participant, len(atts))
	var wrote []string
	for i := range atts {
		ps[i] = &txParticipant{shard: atts[i].shard, be: atts[i].conn, wrote: atts[i].wrote}
		if atts[i].wrote {
			wrote = append(wrote, atts[i].shard)
		}
	}
	_, err := s.srv.tpc.coordinator(s.srv).Commit(ctx, ps)
	giveBack()
	var ae *twophase.AbortError
	var ie *twophase.InDoubtError
	switch {
	case errors.As(err, &ie):
		return "", &wire.Error{Code: ie.SQLState(), Message: ie.Error(),
			Hint: "The transaction is committed or rolled back on every shard once recovery has resolved it; check before retrying."}
	case errors.As(err, &ae):
		return "", &wire.Error{Code: ae.SQLState(), Message: ae.Error()}
	case err != nil:
		return "", wire.Errorf(wire.SQLStateConnectionFailure, "commit over several shards: %v", err)
	}
	if len(tentative) > 0 {
		// Parameters set in the transaction count now; the servers'
		// are not known any more.
		s.mu.Lock()
		for _, c := range tentative {
			s.sets = s.sets.with(c)
		}
		for i := range atts {
			atts[i].conn.SettingsKey = unknownSettings
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.wrote, s.txEnding = false, false
	s.mu.Unlock()
	if len(wrote) > 0 {
		s.learnLSNs(ctx, wrote)
	}
	return "COMMIT", nil
}

// check validates transactions.cross_shard.
func (c TransactionsConfig) check() error {
	switch c.CrossShard {
	case CrossShardRefuse, CrossShardTwoPhase:
		return nil
	}
	return fmt.Errorf("transactions.cross_shard: %q is not %s or %s", c.CrossShard, CrossShardRefuse, CrossShardTwoPhase)
}

// txBackends lends a statement over several shards the session's
// connections in its transaction (scatter.TxBackends), opening the
// transaction on shards it has none on.
type txBackends struct {
	scatterBackends
	s     *session
	write bool // the statement may write: its shards count as written
}

// Held implements scatter.TxBackends.
func (b *txBackends) Held(ctx context.Context, shard string) (*pool.Conn, error) {
	s := b.s
	s.mu.Lock()
	a := s.st.byShard(shard)
	begin := s.st.txBegin
	s.mu.Unlock()
	if a != nil {
		if err := s.txCatchUp(ctx, a.conn, shard); err != nil {
			return nil, err
		}
		return a.conn, nil
	}
	if err := s.srv.waitSwitch(ctx, shard); err != nil {
		return nil, err
	}
	be, err := s.srv.acquirePrimary(ctx, shard, s.user, s.db)
	if err != nil {
		return nil, err
	}
	if err := s.prepareBackend(ctx, be); err != nil {
		be.Pool().Discard(be)
		return nil, err
	}
	s.mu.Lock()
	begin = s.txOpenSQL(begin, shard, false)
	s.mu.Unlock()
	if _, err := be.ExecInTx(ctx, begin); err != nil {
		if be.Broken() {
			be.Pool().Discard(be)
		} else {
			be.Pool().Release(be)
		}
		return nil, asWireError(err)
	}
	s.mu.Lock()
	s.st.attachParked(be, shard)
	s.dtxTagged(be)
	s.mu.Unlock()
	return be, nil
}

// Return implements scatter.TxBackends.
func (b *txBackends) Return(shard string, be *pool.Conn, status byte, ok bool) {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.st.byConn(be)
	if a == nil {
		return
	}
	if b.write {
		a.wrote = true
	}
	switch {
	case !ok:
		// Its state is unknown: the transaction cannot commit, and the
		// connection is closed when it ends.
		a.txStatus, a.lost = 'E', true
	case status == 'T' || status == 'E':
		a.txStatus = status
	default:
		a.txStatus = 'E' // the statement ended the transaction there
	}
}

// asWireError turns a server's error to a statement the proxy ran into
// the client's error.
func asWireError(err error) error {
	var se *pool.ServerError
	if errors.As(err, &se) {
		return &wire.Error{Code: se.Code, Message: se.Message}
	}
	return err
}

// scatter runs req over several shards: inside the session's
// transaction over several shards on its attachments, else on
// connections of the pools (Server.scatter). write says the statement
// may write.
func (s *session) scatter(ctx context.Context, write bool, req scatter.Request) ([]byte, error) {
	s.mu.Lock()
	inTx := s.st.inTxOverShards()
	s.mu.Unlock()
	if !inTx {
		return s.srv.scatter(ctx, s.user, s.db, req)
	}
	return s.scatterInTx(ctx, write, req)
}

// scatterInTxDrain is how long a statement over several shards in a
// transaction may take to send rows the merge no longer needs: it is not
// cancelled sooner, since a cancel would fail the transaction.
const scatterInTxDrain = 30 * time.Second

// scatterInTx runs req on the session's attachments, in its transaction
// (opened on the shards it had none on). Nothing of the session's is in
// flight. A failure fails the transaction.
func (s *session) scatterInTx(ctx context.Context, write bool, req scatter.Request) ([]byte, error) {
	req.Atomic = false // the session's transaction is the statement's
	req.Replicas = nil // the transaction runs on the primaries
	req.Prepare = nil  // done when each attachment was lent
	req.DrainTimeout = scatterInTxDrain
	if req.Log == nil {
		req.Log = s.log
	}
	out := req.Dst
	err := s.withSessionTx(ctx, write, func(tb *txBackends) error {
		var err error
		out, err = scatter.Run(ctx, tb, req)
		return err
	})
	return out, err
}

// flushBeforeSync writes serve's client output (a statement over several
// shards that ran in the transaction, through the extended protocol)
// before the client's Sync goes to the current attachment, whose
// ReadyForQuery comes after it.
func (s *session) flushBeforeSync() error {
	if len(s.out) == 0 {
		return nil
	}
	s.mu.Lock()
	inTx := s.st.crossShard && s.st.txBegin != "" && len(s.st.atts) > 0
	s.mu.Unlock()
	if !inTx {
		return nil
	}
	return s.flushClient()
}

// holdInTx reports whether a Parse or a Describe of a statement is held
// until the client's Bind names the shard (with a router that routes by
// parameter values): in a transaction over several shards with every
// request answered, it would otherwise go to the current attachment,
// which a Bind for another shard cannot leave with messages in flight.
func (s *session) holdInTx() bool {
	// (crossShard is written by serve only, which runs this.)
	if !s.st.crossShard || !s.srv.runtime().deferParse {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.spansShards(s.pipe())
}

// sendPendingInTx sends held-back Parse and Describe messages in a
// transaction over several shards: the Bind q is routed first (switching
// to its shard), and they go where it runs; before a statement over
// several shards they are answered by the current attachment first.
func (s *session) sendPendingInTx(ctx context.Context, q router.Query, pending [][]byte) error {
	be, plan, err := s.attachPlan(ctx, q)
	if err != nil {
		return err
	}
	if be == nil && plan.Kind.Several() {
		if cur := s.claim(); cur != nil {
			return s.sendPendingBefore(ctx, cur, pending)
		}
	}
	return s.forwardPending(ctx, pending)
}
