package proxy

import (
	"context"
	"errors"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/wire"
)

// Transactions the proxy defers: BEGIN is acknowledged by the proxy and
// sent to the shard of the transaction's first statement.

// deferredTransaction handles transaction control while no backend is
// attached, in transaction pooling: BEGIN is acknowledged by the proxy and
// sent later to the shard of the transaction's first statement; COMMIT or
// ROLLBACK of a transaction that never reached a shard is answered by the
// proxy. It reports whether it answered the statement.
func (s *session) deferredTransaction(ctx context.Context, info router.Info, sql string) (bool, error) {
	if !s.canDeferTx(info, sql) {
		return false, nil
	}
	tag, werr := s.applyDeferredTx(ctx, info, sql)
	if werr != nil {
		return true, werr
	}
	s.out = wire.AppendString(s.out, 'C', tag)
	s.out = wire.AppendReadyForQuery(s.out, s.idleStatus())
	return true, nil
}

// settleBeforeBegin waits, before a BEGIN, until a backend kept only for
// the answers of earlier requests (separated by Sync, outside a
// transaction) has given them and gone back to the pool: the BEGIN is
// then deferred, and the transaction goes to the shard of its first
// statement rather than to that backend's.
func (s *session) settleBeforeBegin(ctx context.Context, sql string) error {
	if s.sessionPool {
		return nil
	}
	for checked := false; ; checked = true {
		s.mu.Lock()
		busy := s.st.betweenRequests(s.pipe()) && s.st.deferredBegin == ""
		var wait chan struct{}
		if busy {
			wait = s.waitChan()
		}
		s.mu.Unlock()
		// Classified only in a pipeline, between requests.
		if !busy || !checked && !router.Classify(sql).Has(router.ClassBegin) {
			return nil
		}
		if err := s.waitZ(ctx, wait); err != nil {
			return err
		}
	}
}

// canDeferTx reports whether the proxy answers the transaction-control
// statement sql itself (see deferredTransaction).
func (s *session) canDeferTx(info router.Info, sql string) bool {
	sp := info.Class&txControl == 0 && (savepointWord(sql) || setLocalWord(sql))
	if s.sessionPool || info.Class&txControl == 0 && !sp ||
		strings.Contains(strings.TrimRight(sql, "; \t\r\n"), ";") {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.cur() != nil || s.st.life == statePinned {
		return false
	}
	if sp {
		// A savepoint statement of a transaction that has not reached a
		// shard yet: the proxy answers it, and it follows the BEGIN.
		if s.st.deferredBegin == "" {
			return false
		}
		if _, _, ok := parseSavepoint(sql); ok {
			return true
		}
		return parseSetLocal(sql) || s.deferSetTransaction(sql)
	}
	if info.Has(router.ClassBegin) {
		// A nested BEGIN: let the server warn. A BEGIN that does not
		// parse: let the server refuse it, so the client hears its error
		// on the BEGIN, and no transaction is open.
		return s.st.deferredBegin == "" && (plainBegin(sql) || beginParses(sql))
	}
	return s.st.deferredBegin != "" && !containsFoldASCII(sql, "chain")
}

// applyDeferredTx does what a statement canDeferTx accepted does to the
// session, and returns its command tag or the error PostgreSQL would
// give it (a savepoint statement).
func (s *session) applyDeferredTx(ctx context.Context, info router.Info, sql string) (string, *wire.Error) {
	if info.Class&txControl == 0 && (parseSetLocal(sql) || parseSetTransaction(sql)) {
		return s.deferSetLocal(ctx, sql)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if info.Has(router.ClassBegin) {
		s.st.openDeferred(strings.Clone(sql))
		s.st.crossShard = s.srv.runtime().twoPhase
		s.txRouter = s.srv.router() // the transaction's map
		return "BEGIN", nil
	}
	if info.Class&txControl == 0 {
		if op, name, ok := parseSavepoint(sql); ok {
			return s.st.deferredSavepoint(op, name)
		}
	}
	return s.st.endDeferred(info.Has(router.ClassCommit)), nil
}

// deferSetLocal answers a SET LOCAL of the deferred transaction: the
// server checks it (outside a transaction, where it has no effect) on
// a connection of the transaction's default shard, and the proxy sends
// it after the BEGIN; its error is the server's.
func (s *session) deferSetLocal(ctx context.Context, sql string) (string, *wire.Error) {
	s.mu.Lock()
	failed := s.st.deferredFailed
	s.mu.Unlock()
	if failed {
		return "", wire.Errorf(wire.SQLStateInFailedTransaction, "current transaction is aborted, commands ignored until end of transaction block")
	}
	r := s.txRouter
	if r == nil {
		r = s.srv.router()
	}
	plan, err := r.Route(router.Query{})
	if err != nil {
		return "", wire.AsError(err)
	}
	be, err := s.srv.acquirePrimary(ctx, plan.Shard, s.user, s.db)
	if err != nil {
		return "", wire.AsError(err)
	}
	prepErr := s.prepareBackend(ctx, be)
	if prepErr == nil {
		err = be.Exec(ctx, sql)
		be.UnnamedGen++
	}
	if be.Broken() {
		be.Pool().Discard(be)
	} else {
		be.Pool().Release(be)
	}
	var se *pool.ServerError
	switch {
	case prepErr != nil:
		return "", wire.AsError(prepErr)
	case errors.As(err, &se):
		return "", &wire.Error{Code: se.Code, Message: se.Message}
	case err != nil:
		return "", wire.AsError(err)
	}
	s.mu.Lock()
	s.st.deferredSetLocal(strings.Clone(sql))
	s.mu.Unlock()
	return "SET", nil
}

// setLocalWord reports whether sql starts with SET (a cheap test before
// parseSetLocal).
func setLocalWord(sql string) bool {
	sql = strings.TrimLeft(sql, " \t\r\n")
	return len(sql) > 4 && strings.EqualFold(sql[:4], "set ")
}

// parseSetLocal reports whether sql is one SET LOCAL of a server
// parameter (not a pgshard.* routing hint).
func parseSetLocal(sql string) bool {
	res, err := pg.Parse(sql)
	if err != nil || len(res.Stmts) != 1 {
		return false
	}
	vs := res.Stmts[0].Stmt.GetVariableSetStmt()
	return vs != nil && vs.IsLocal && vs.Name != "" && !strings.HasPrefix(strings.ToLower(vs.Name), "pgshard.") &&
		(vs.Kind == pg.VariableSetKind_VAR_SET_VALUE || vs.Kind == pg.VariableSetKind_VAR_SET_DEFAULT)
}

// savepointWord reports whether sql starts with SAVEPOINT, RELEASE or
// ROLLBACK (a cheap test before parseSavepoint).
func savepointWord(sql string) bool {
	sql = strings.TrimLeft(sql, " \t\r\n")
	for _, w := range []string{"savepoint", "release", "rollback"} {
		if len(sql) > len(w) && strings.EqualFold(sql[:len(w)], w) {
			return true
		}
	}
	return false
}

// parseSavepoint parses a SAVEPOINT, RELEASE [SAVEPOINT] or ROLLBACK TO
// [SAVEPOINT] statement: its operation and the savepoint's name as the
// server folds it. A name the server would truncate (with a NOTICE) is
// not handled here.
func parseSavepoint(sql string) (savepointOp, string, bool) {
	res, err := pg.Parse(sql)
	if err != nil || len(res.Stmts) != 1 {
		return 0, "", false
	}
	ts := res.Stmts[0].Stmt.GetTransactionStmt()
	if ts == nil || ts.SavepointName == "" || len(ts.SavepointName) >= 64 {
		return 0, "", false
	}
	switch ts.Kind {
	case pg.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		return savepointDefine, ts.SavepointName, true
	case pg.TransactionStmtKind_TRANS_STMT_RELEASE:
		return savepointRelease, ts.SavepointName, true
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		return savepointRollbackTo, ts.SavepointName, true
	}
	return 0, "", false
}

func containsFoldASCII(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), sub)
}

// syncOverrideLocked is the ReadyForQuery status to show the client for a
// Sync sent now (sessionState.syncOverride), counted in s.overrides for
// the relay when it is not 0, the server's own. s.mu must be held.
func (s *session) syncOverrideLocked() byte {
	o := s.st.syncOverride()
	if o != 0 {
		s.overrides.Add(1)
	}
	return o
}

// idleStatus is the transaction status to report while no backend is
// attached: in a transaction the proxy acknowledged but did not send yet,
// or idle.
func (s *session) idleStatus() byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.clientStatus()
}

// plainBegin reports whether sql is a BEGIN without options, which a
// server always accepts.
func plainBegin(sql string) bool {
	switch strings.Join(strings.Fields(strings.ToLower(strings.TrimRight(sql, "; \t\r\n"))), " ") {
	case "begin", "begin transaction", "begin work", "start transaction":
		return true
	}
	return false
}

// beginParses reports whether a BEGIN or START TRANSACTION with options
// is valid syntax (isolation level names, access modes).
func beginParses(sql string) bool {
	_, err := pg.Parse(sql)
	return err == nil
}

// probeBegin sends a deferred BEGIN with options (queued by attach on the
// backend just attached) alone and waits for its answer before the
// client's statement is sent: the server may refuse it (READ WRITE or
// SERIALIZABLE on a hot standby), and a statement whose transaction
// could not be opened must not run. This costs one round trip, for
// BEGINs with options only. When the server refuses, the backend goes
// back to the pool, the client's statement gets the server's error and
// the client's transaction is failed (the client was told BEGIN
// succeeded): it ends with ROLLBACK, as after any error.
func (s *session) probeBegin(ctx context.Context, begin string) error {
	s.mu.Lock()
	// Nothing of the client's is on its way: a refused BEGIN (status
	// idle) detaches the backend.
	s.unsynced = false
	s.beginErr = nil
	s.probingBegin.Store(true)
	wait := s.waitChan()
	s.mu.Unlock()
	err := s.waitZ(ctx, wait)
	s.probingBegin.Store(false)
	if err != nil {
		return err
	}
	s.mu.Lock()
	failed, errFrame := s.lastFailed, s.beginErr
	s.beginErr = nil
	if !failed {
		s.unsynced = true
		s.mu.Unlock()
		return nil
	}
	s.st.beginRefused(begin)
	s.mu.Unlock()
	if errFrame == nil {
		errFrame = wire.AppendErrorResponse(nil, wire.Errorf(wire.SQLStateInFailedTransaction,
			"current transaction is aborted, commands ignored until end of transaction block"))
	}
	s.out = append(s.out, errFrame...)
	switch s.curType {
	case 'Q', 'F':
		s.out = wire.AppendReadyForQuery(s.out, s.idleStatus())
	default:
		s.st.skipBatch()
	}
	return errAnswered
}
