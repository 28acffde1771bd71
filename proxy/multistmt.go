package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"
	pg "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgshard/pgshard/router"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// Query strings of several statements over several shards. With
// transactions.cross_shard: two_phase, a simple query whose statements
// are not all for one shard (the router refuses it as one:
// RefusalError.MultiStatement), or any string of several statements
// inside a transaction that already spans shards, runs statement by
// statement through the session's usual path (handleQuery), with
// PostgreSQL's semantics of a query string (exec_simple_query and
// xact.c):
//
//   - outside a transaction block, the statements form one implicit
//     transaction: the proxy opens it (a deferred BEGIN, so it may span
//     shards) before the first statement, commits it after the last one
//     (two-phase commit when it wrote on several shards) and rolls it
//     back after an error; the client sees neither;
//   - a BEGIN in the string makes the block the client's (statements
//     before it are part of it); a COMMIT or ROLLBACK ends it (in an
//     implicit block with PostgreSQL's warning) and later statements
//     start a new implicit one;
//   - the first error skips the rest of the string;
//   - the client gets every statement's answers in order and one
//     ReadyForQuery at the end, with the status the session has then;
//   - what PostgreSQL refuses in a transaction block (VACUUM, CREATE
//     INDEX CONCURRENTLY, ...) or in an implicit one (SAVEPOINT) gets
//     PostgreSQL's error.
//
// The ReadyForQuery of each statement (and the answers of the implicit
// BEGIN and COMMIT) are taken out of the client's output where every
// path writes it (flushClient, flushRelay: multiStmtState.filter), so
// each path runs unchanged. A string with COPY FROM STDIN is refused as
// before: its data would come from the client in the middle.

// multiStmtState is the output filter of a query string run statement
// by statement. Its fields are read by the relay (flushRelay) too.
type multiStmtState struct {
	active atomic.Bool // the filter is on: ReadyForQuery frames are taken out
	// mute: the statement running is the proxy's own (the implicit
	// BEGIN, COMMIT or ROLLBACK): only errors and asynchronous messages
	// pass.
	mute   atomic.Bool
	status atomic.Uint32 // of the last ReadyForQuery taken out
	failed atomic.Bool   // an ErrorResponse passed
}

// filter takes out of b, in place, the frames the client must not see,
// and returns what is left. b holds whole frames (a partial tail is
// passed on as it is).
func (m *multiStmtState) filter(b []byte) []byte {
	out := b[:0]
	for len(b) > 0 {
		n := wire.HeaderLen
		if len(b) >= wire.HeaderLen {
			n = int(binary.BigEndian.Uint32(b[1:wire.HeaderLen])) + 1
		}
		if len(b) < wire.HeaderLen || n < wire.HeaderLen || n > len(b) {
			out = append(out, b...)
			break
		}
		f := b[:n]
		b = b[n:]
		switch f[0] {
		case 'Z':
			if n > wire.HeaderLen {
				m.status.Store(uint32(f[wire.HeaderLen]))
			}
			continue
		case 'E':
			m.failed.Store(true)
		case 'N', 'A', 'S': // notices, notifications, parameter status
		default:
			if m.mute.Load() {
				continue
			}
		}
		out = append(out, f...) // (copy handles the overlap)
	}
	return out
}

// msPart is one statement of a query string.
type msPart struct {
	sql  string
	node *pg.Node
}

// multiStatementQuery runs sql statement by statement when it is a
// query string of several statements that the session runs so (see
// above), and reports whether it did. The error is serve's (a FATAL
// one, or a lost client).
func (s *session) multiStatementQuery(ctx context.Context, sql string) (bool, error) {
	if s.multi.active.Load() || s.sessionPool || !s.srv.runtime().twoPhase ||
		!strings.Contains(strings.TrimRight(sql, "; \t\r\n"), ";") {
		return false, nil
	}
	s.mu.Lock()
	pinned, spans := s.st.life == statePinned, s.st.crossShard && len(s.st.atts) >= 2
	s.mu.Unlock()
	if pinned {
		return false, nil
	}
	if !spans {
		hs, hk := s.hint()
		_, err := s.routerFor().Route(router.Query{SQL: sql, HintShard: hs, HintKey: hk})
		var re *rplan.RefusalError
		if !errors.As(err, &re) || !re.MultiStatement {
			return false, nil
		}
	}
	parts, ok := splitStatements(strings.Clone(sql))
	if !ok {
		return false, nil
	}
	return true, s.runStatements(ctx, parts)
}

// splitStatements splits sql into its statements (their text from the
// parse tree's locations); false when it does not parse, has fewer than
// two statements, or has a COPY FROM STDIN.
func splitStatements(sql string) ([]msPart, bool) {
	res, err := pg.Parse(sql)
	if err != nil || len(res.Stmts) < 2 {
		return nil, false
	}
	parts := make([]msPart, 0, len(res.Stmts))
	for _, rs := range res.Stmts {
		start, end := int(rs.StmtLocation), len(sql)
		if rs.StmtLen > 0 {
			end = start + int(rs.StmtLen)
		}
		if start < 0 || start > end || end > len(sql) {
			return nil, false
		}
		if c := rs.Stmt.GetCopyStmt(); c != nil && c.IsFrom && c.Filename == "" {
			return nil, false
		}
		parts = append(parts, msPart{sql: strings.TrimSpace(sql[start:end]), node: rs.Stmt})
	}
	return parts, true
}

// runStatements runs the statements of a query string in order (see
// above) and ends with one ReadyForQuery.
func (s *session) runStatements(ctx context.Context, parts []msPart) error {
	// Earlier requests (a pipeline) are answered first, with their own
	// ReadyForQuery.
	if err := s.answered(ctx, nil); err != nil {
		return err
	}
	m := &s.multi
	m.status.Store(uint32(s.clientTxStatus()))
	m.failed.Store(false)
	m.mute.Store(false)
	m.active.Store(true)
	defer m.active.Store(false)
	implicit := false // the proxy opened the transaction block
	for _, p := range parts {
		status := byte(m.status.Load())
		// (In a failed block the usual path answers 25P02 first.)
		if e := notInTxBlock(p.node); e != nil && status != 'E' {
			if err := s.multiFail(ctx, e); err != nil {
				return err
			}
			break
		}
		ts := p.node.GetTransactionStmt()
		if implicit || status == 'I' {
			if e := notInImplicitBlock(ts); e != nil {
				if err := s.multiFail(ctx, e); err != nil {
					return err
				}
				break
			}
		}
		switch {
		case implicit && isBegin(ts) && len(ts.Options) > 0:
			// Its options would apply to the transaction already open,
			// on every shard: not done (PostgreSQL too refuses an
			// isolation level after the first query).
			if err := s.multiFail(ctx, &wire.Error{Code: wire.SQLStateFeatureNotSupported,
				Message: "BEGIN with options after other statements of the same query string is not supported when its statements are for several shards",
				Hint:    "Put the BEGIN first in the query string."}); err != nil {
				return err
			}
		case implicit && isBegin(ts):
			// The block becomes the client's, with what ran in it.
			implicit = false
			s.out = wire.AppendString(s.out, 'C', "BEGIN")
			if err := s.flushClient(); err != nil {
				return err
			}
			continue
		case implicit && isEnd(ts):
			s.out = appendNotice(s.out, "WARNING", wire.SQLStateNoActiveSQLTransaction, "there is no transaction in progress")
			if err := s.flushClient(); err != nil {
				return err
			}
			implicit = false
		case status == 'I' && ts == nil:
			if err := s.runHidden(ctx, "BEGIN"); err != nil {
				return err
			}
			if m.failed.Load() {
				break
			}
			implicit = true
		}
		if m.failed.Load() {
			break
		}
		if err := s.runOne(ctx, p.sql); err != nil {
			return err
		}
		if m.failed.Load() {
			break
		}
	}
	if implicit {
		end := "COMMIT"
		if m.failed.Load() {
			end = "ROLLBACK"
		}
		if err := s.runHidden(ctx, end); err != nil {
			return err
		}
	}
	m.active.Store(false)
	s.out = wire.AppendReadyForQuery(s.out, byte(m.status.Load()))
	return s.flushClient()
}

// multiFail answers the statement with e, PostgreSQL's refusal: raised
// by the attached server, if any, so that its transaction fails too.
func (s *session) multiFail(ctx context.Context, e *wire.Error) error {
	if be := s.attached(); be != nil {
		return s.answered(ctx, s.raiseViaServer(be, e))
	}
	return s.answered(ctx, e)
}

// runHidden runs the proxy's own statement of the implicit block: the
// client sees only its errors.
func (s *session) runHidden(ctx context.Context, sql string) error {
	s.multi.mute.Store(true)
	defer s.multi.mute.Store(false)
	return s.runOne(ctx, sql)
}

// runOne runs one statement of the string as a simple query through
// the session's usual path and waits until it is answered.
func (s *session) runOne(ctx context.Context, sql string) error {
	return s.answered(ctx, s.handleQuery(ctx, wire.AppendString(nil, 'Q', sql)))
}

// answered does with err, handleQuery's, what serve does (an error the
// proxy answers with is reported), waits until every request sent is
// answered, and writes serve's client output.
func (s *session) answered(ctx context.Context, err error) error {
	var we *wire.Error
	switch {
	case err == nil, errors.Is(err, errAnswered):
	case errors.As(err, &we) && we.Severity != "FATAL":
		if err := s.reportError(we, 'Q'); err != nil {
			return err
		}
	default:
		return err
	}
	for {
		s.mu.Lock()
		if s.queue.syncs == 0 {
			s.mu.Unlock()
			break
		}
		if s.st.conn() == nil {
			// The relay lost the server (Fail told the client).
			s.mu.Unlock()
			return wire.Fatalf(wire.SQLStateConnectionFailure, "server connection lost")
		}
		wait := s.waitChan()
		s.mu.Unlock()
		if err := s.waitZ(ctx, wait); err != nil {
			return err
		}
	}
	return s.flushClient()
}

// clientTxStatus is the transaction status the client was last told,
// with nothing in flight.
func (s *session) clientTxStatus() byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.st.cur()
	switch {
	case a == nil || a.outsideTx:
		return s.st.clientStatus()
	case s.st.txFailed():
		return 'E'
	case a.inTx():
		return 'T'
	}
	return 'I'
}

func isBegin(ts *pg.TransactionStmt) bool {
	return ts != nil && (ts.Kind == pg.TransactionStmtKind_TRANS_STMT_BEGIN || ts.Kind == pg.TransactionStmtKind_TRANS_STMT_START)
}

func isEnd(ts *pg.TransactionStmt) bool {
	return ts != nil && (ts.Kind == pg.TransactionStmtKind_TRANS_STMT_COMMIT || ts.Kind == pg.TransactionStmtKind_TRANS_STMT_ROLLBACK)
}

// notInImplicitBlock is PostgreSQL's error for a transaction statement
// that needs a block the client opened (xact.c), or nil.
func notInImplicitBlock(ts *pg.TransactionStmt) *wire.Error {
	if ts == nil {
		return nil
	}
	what := ""
	switch {
	case ts.Kind == pg.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		what = "SAVEPOINT"
	case ts.Kind == pg.TransactionStmtKind_TRANS_STMT_RELEASE:
		what = "RELEASE SAVEPOINT"
	case ts.Kind == pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		what = "ROLLBACK TO SAVEPOINT"
	case ts.Kind == pg.TransactionStmtKind_TRANS_STMT_COMMIT && ts.Chain:
		what = "COMMIT AND CHAIN"
	case ts.Kind == pg.TransactionStmtKind_TRANS_STMT_ROLLBACK && ts.Chain:
		what = "ROLLBACK AND CHAIN"
	default:
		return nil
	}
	return wire.Errorf(wire.SQLStateNoActiveSQLTransaction, "%s can only be used in transaction blocks", what)
}

// notInTxBlock is PostgreSQL's error for a statement that cannot run
// inside a transaction block (PreventInTransactionBlock), as every
// statement of a query string of several is, or nil.
func notInTxBlock(n *pg.Node) *wire.Error {
	what := ""
	switch {
	case n.GetVacuumStmt() != nil && n.GetVacuumStmt().IsVacuumcmd:
		what = "VACUUM"
	case n.GetCreatedbStmt() != nil:
		what = "CREATE DATABASE"
	case n.GetDropdbStmt() != nil:
		what = "DROP DATABASE"
	case n.GetCreateTableSpaceStmt() != nil:
		what = "CREATE TABLESPACE"
	case n.GetDropTableSpaceStmt() != nil:
		what = "DROP TABLESPACE"
	case n.GetIndexStmt() != nil && n.GetIndexStmt().Concurrent:
		what = "CREATE INDEX CONCURRENTLY"
	case n.GetDropStmt() != nil && n.GetDropStmt().Concurrent:
		what = "DROP INDEX CONCURRENTLY"
	case n.GetReindexStmt() != nil:
		what = reindexInBlock(n.GetReindexStmt())
	case n.GetClusterStmt() != nil && n.GetClusterStmt().Relation == nil:
		what = "CLUSTER"
	case n.GetAlterSystemStmt() != nil:
		what = "ALTER SYSTEM"
	case n.GetAlterDatabaseStmt() != nil && hasOption(n.GetAlterDatabaseStmt().Options, "tablespace"):
		what = "ALTER DATABASE SET TABLESPACE"
	case n.GetDiscardStmt() != nil && n.GetDiscardStmt().Target == pg.DiscardMode_DISCARD_ALL:
		what = "DISCARD ALL"
	case n.GetTransactionStmt() != nil && n.GetTransactionStmt().Kind == pg.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED:
		what = "COMMIT PREPARED"
	case n.GetTransactionStmt() != nil && n.GetTransactionStmt().Kind == pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED:
		what = "ROLLBACK PREPARED"
	case n.GetAlterTableStmt() != nil && detachConcurrently(n.GetAlterTableStmt()):
		what = "ALTER TABLE ... DETACH CONCURRENTLY"
	}
	if what == "" {
		return nil
	}
	return wire.Errorf(wire.SQLStateActiveSQLTransaction, "%s cannot run inside a transaction block", what)
}

// reindexInBlock names a REINDEX that cannot run in a transaction
// block, or "".
func reindexInBlock(r *pg.ReindexStmt) string {
	for _, p := range r.Params {
		if d := p.GetDefElem(); d != nil && strings.EqualFold(d.Defname, "concurrently") && !defFalse(d) {
			return "REINDEX CONCURRENTLY"
		}
	}
	switch r.Kind {
	case pg.ReindexObjectType_REINDEX_OBJECT_SCHEMA:
		return "REINDEX SCHEMA"
	case pg.ReindexObjectType_REINDEX_OBJECT_SYSTEM:
		return "REINDEX SYSTEM"
	case pg.ReindexObjectType_REINDEX_OBJECT_DATABASE:
		return "REINDEX DATABASE"
	}
	return ""
}

// defFalse reports whether option d is given as false.
func defFalse(d *pg.DefElem) bool {
	if d.Arg == nil {
		return false
	}
	if b := d.Arg.GetBoolean(); b != nil {
		return !b.Boolval
	}
	if s := d.Arg.GetString_(); s != nil {
		v := strings.ToLower(s.Sval)
		return v == "false" || v == "off" || v == "0"
	}
	if i := d.Arg.GetInteger(); i != nil {
		return i.Ival == 0
	}
	return false
}

func hasOption(opts []*pg.Node, name string) bool {
	for _, o := range opts {
		if d := o.GetDefElem(); d != nil && strings.EqualFold(d.Defname, name) {
			return true
		}
	}
	return false
}

func detachConcurrently(a *pg.AlterTableStmt) bool {
	for _, c := range a.Cmds {
		if cmd := c.GetAlterTableCmd(); cmd != nil && cmd.Subtype == pg.AlterTableType_AT_DetachPartition {
			if pc := cmd.Def.GetPartitionCmd(); pc != nil && pc.Concurrent {
				return true
			}
		}
	}
	return false
}

// appendNotice appends a NoticeResponse.
func appendNotice(dst []byte, severity, code, msg string) []byte {
	out, err := (&pgproto3.NoticeResponse{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: msg}).Encode(dst)
	if err != nil {
		return dst
	}
	return out
}
