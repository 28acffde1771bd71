package proxy

import (
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// READ ONLY transactions and the cache: the point reads of a READ ONLY
// transaction at READ COMMITTED (BEGIN READ ONLY, SET TRANSACTION READ
// ONLY after BEGIN, or default_transaction_read_only on) are answered from
// the cache while the transaction has not reached a server yet (its BEGIN
// is deferred). Each statement at READ COMMITTED takes its own snapshot
// and the transaction writes nothing, so such a read may be what an
// autocommit read would be: the same coherence rules apply (staleness
// bound, the session's earlier commits). Under REPEATABLE READ or
// SERIALIZABLE every read must come from one snapshot, and cached rows
// read at different times are not one: never served. The isolation level
// is taken from the BEGIN, SET TRANSACTION and the session's
// default_transaction_isolation; a server whose configuration makes
// another level the default must be given it in the session (the proxy
// assumes PostgreSQL's default, READ COMMITTED). A miss in such a
// transaction is not filled: it runs in the transaction, on its server.

// txChars are the characteristics of a transaction that decide whether
// the cache may answer its reads.
type txChars struct {
	readOnly      bool
	readCommitted bool
}

// defaultTxChars are PostgreSQL's defaults.
var defaultTxChars = txChars{readCommitted: true}

// set applies characteristic name's (transaction_read_only,
// transaction_isolation) new value v ("" resets it to PostgreSQL's
// default); other names are ignored.
func (c *txChars) set(name, v string) {
	v = strings.ToLower(strings.Join(strings.Fields(v), " "))
	switch strings.ToLower(name) {
	case "transaction_read_only":
		switch v {
		case "on", "true", "yes", "1", "t", "y":
			c.readOnly = true
		default:
			c.readOnly = false
		}
	case "transaction_isolation":
		c.readCommitted = v == "" || v == "read committed" || v == "read uncommitted"
	}
}

// constText returns an A_Const's value as text.
func constText(n *pg.Node) (string, bool) {
	a := n.GetAConst()
	if a == nil {
		if tc := n.GetTypeCast(); tc != nil && tc.Arg != nil {
			return constText(tc.Arg)
		}
		return "", false
	}
	switch {
	case a.GetSval() != nil:
		return a.GetSval().GetSval(), true
	case a.GetIval() != nil:
		return strconv.Itoa(int(a.GetIval().GetIval())), true
	case a.GetBoolval() != nil:
		return strconv.FormatBool(a.GetBoolval().GetBoolval()), true
	}
	return "", false
}

// applySQL applies what statement sql does to the characteristics: of
// the session (session: SET [SESSION] default_transaction_read_only or
// default_transaction_isolation, SET SESSION CHARACTERISTICS, their
// RESET) or of the transaction (its BEGIN, SET TRANSACTION, SET LOCAL
// transaction_read_only or transaction_isolation). It reports false for
// anything else, which the caller takes as "not known to be a READ ONLY
// transaction at READ COMMITTED" (a SET LOCAL of another parameter, say
// search_path, would change the results the cache holds).
func (c *txChars) applySQL(sql string, session bool) bool {
	res, err := pg.Parse(sql)
	if err != nil || len(res.Stmts) != 1 {
		return false
	}
	n := res.Stmts[0].Stmt
	elems := func(args []*pg.Node) bool {
		for _, a := range args {
			d := a.GetDefElem()
			if d == nil {
				return false
			}
			if v, ok := constText(d.Arg); ok {
				c.set(d.Defname, v)
			} else if d.Defname != "transaction_deferrable" {
				return false
			}
		}
		return true
	}
	if ts := n.GetTransactionStmt(); ts != nil {
		return !session && elems(ts.Options)
	}
	vs := n.GetVariableSetStmt()
	if vs == nil {
		return false
	}
	name := strings.ToLower(vs.Name)
	if vs.Kind == pg.VariableSetKind_VAR_SET_MULTI {
		switch {
		case name == "transaction" && !session, name == "session characteristics" && session:
			return elems(vs.Args)
		}
		return false
	}
	if session {
		if name != "default_transaction_read_only" && name != "default_transaction_isolation" {
			return false
		}
		name = strings.TrimPrefix(name, "default_")
	} else if name != "transaction_read_only" && name != "transaction_isolation" {
		return false
	}
	switch vs.Kind {
	case pg.VariableSetKind_VAR_SET_VALUE:
		if len(vs.Args) != 1 {
			return false
		}
		v, ok := constText(vs.Args[0])
		if !ok {
			return false
		}
		c.set(name, v)
		return true
	case pg.VariableSetKind_VAR_SET_DEFAULT, pg.VariableSetKind_VAR_RESET:
		c.set(name, "")
		return true
	}
	return false
}

// sessionTxChars returns the session's default transaction
// characteristics (its startup parameters and SETs).
func sessionTxChars(st *settings) (txChars, bool) {
	c := defaultTxChars
	if st == nil {
		return c, true
	}
	for _, kv := range st.startup {
		if name, ok := strings.CutPrefix(strings.ToLower(kv[0]), "default_"); ok {
			c.set(name, kv[1])
		}
	}
	for _, x := range st.sets {
		switch x.param {
		case "default_transaction_read_only", "default_transaction_isolation", "default_transaction_characteristics":
			if !c.applySQL(x.sql, true) {
				return c, false
			}
		}
	}
	return c, true
}

// txMemo remembers the last answer of cacheReadOnlyTx for one
// transaction (its BEGIN, the statements after it, the session's
// parameters).
type txMemo struct {
	begin   string
	replays int
	sets    *settings
	ok      bool
}

// cacheReadOnlyTx reports whether the session's deferred transaction is
// READ ONLY at READ COMMITTED and has not failed, so that the cache may
// answer its point reads. Callers hold s.mu.
func (s *session) cacheReadOnlyTx() bool {
	st := &s.st
	if st.deferredBegin == "" || st.deferredFailed || st.txAborted {
		return false
	}
	m := s.cache.tx
	if m == nil {
		m = new(txMemo)
		s.cache.tx = m
	}
	if m.begin == st.deferredBegin && m.replays == len(st.replay) && m.sets == s.sets {
		return m.ok
	}
	*m = txMemo{begin: st.deferredBegin, replays: len(st.replay), sets: s.sets}
	c, ok := sessionTxChars(s.sets)
	if !ok || !c.applySQL(st.deferredBegin, false) {
		return false
	}
	for _, r := range st.replay {
		if r.savepoint != "" {
			continue
		}
		if !c.applySQL(r.sql, false) {
			return false
		}
	}
	m.ok = c.readOnly && c.readCommitted
	return m.ok
}

// deferSetTransaction reports whether the proxy answers sql, a SET
// TRANSACTION of a deferred transaction, and sends it after the BEGIN
// (as a SET LOCAL): while the cache is on, so that SET TRANSACTION READ
// ONLY does not take the transaction to a server before its first
// statement. Not after a savepoint (SET TRANSACTION ISOLATION LEVEL is
// refused in a subtransaction, which must be the statement's error).
// Callers hold s.mu.
func (s *session) deferSetTransaction(sql string) bool {
	if !s.srv.cacheOn.Load() || !parseSetTransaction(sql) {
		return false
	}
	for _, r := range s.st.replay {
		if r.savepoint != "" {
			return false
		}
	}
	return true
}

// parseSetTransaction reports whether sql is one SET TRANSACTION of
// transaction characteristics (not SET TRANSACTION SNAPSHOT).
func parseSetTransaction(sql string) bool {
	res, err := pg.Parse(sql)
	if err != nil || len(res.Stmts) != 1 {
		return false
	}
	vs := res.Stmts[0].Stmt.GetVariableSetStmt()
	return vs != nil && vs.Kind == pg.VariableSetKind_VAR_SET_MULTI && strings.EqualFold(vs.Name, "transaction")
}
