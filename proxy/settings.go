package proxy

import (
	"context"
	"slices"
	"sort"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/router"
)

// unknownSettings marks a backend whose session parameters are not known
// (after RESET or DISCARD ALL ran on it); it matches no session's key.
const unknownSettings = "?"

// settings is an immutable snapshot of a client's session parameters:
// the ones from its startup packet and the SET statements it ran since.
// Sessions with equal keys can share a backend without any SET.
type settings struct {
	key     string
	startup [][2]string // name, value; sorted by name
	sets    []setStmt   // in execution order, one per parameter
}

type setStmt struct {
	param string
	sql   string
}

// settingChange is a completed statement that changes session parameters.
type settingChange struct {
	info router.Info
	sql  string
}

// resets reports whether the change resets parameters to server defaults,
// after which the backend's state is no longer any snapshot's.
func (c *settingChange) resets() bool {
	return c.info.Class&(router.ClassReset|router.ClassResetAll|router.ClassDiscardAll) != 0
}

// discardsStatements reports whether the change drops prepared statements.
func (c *settingChange) discardsStatements() bool {
	return c.info.Has(router.ClassDiscardAll)
}

// startupIgnored are startup parameters that are not session settings.
var startupIgnored = map[string]bool{
	"user": true, "database": true, "replication": true, "options": true,
}

// newSettings builds the snapshot for a client's startup parameters.
func newSettings(params map[string]string) *settings {
	st := &settings{}
	for k, v := range params {
		if startupIgnored[k] {
			continue
		}
		st.startup = append(st.startup, [2]string{k, v})
	}
	for k, v := range parseOptions(params["options"]) {
		if _, direct := params[k]; direct {
			continue // a parameter given directly wins over options, as in PostgreSQL
		}
		st.startup = append(st.startup, [2]string{k, v})
	}
	sort.Slice(st.startup, func(i, j int) bool { return st.startup[i][0] < st.startup[j][0] })
	st.key = st.makeKey()
	return st
}

// parseOptions reads "-c name=value" and "--name=value" switches from the
// startup "options" parameter (backslash escapes spaces).
func parseOptions(opts string) map[string]string {
	out := map[string]string{}
	var args []string
	var cur strings.Builder
	esc := false
	for _, r := range opts {
		switch {
		case esc:
			cur.WriteRune(r)
			esc = false
		case r == '\\':
			esc = true
		case r == ' ' || r == '\t':
			if cur.Len() > 0 {
				args = append(args, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		args = append(args, cur.String())
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-c" && i+1 < len(args):
			i++
			a = args[i]
		case strings.HasPrefix(a, "-c"):
			a = a[2:]
		case strings.HasPrefix(a, "--"):
			a = a[2:]
		default:
			continue
		}
		if k, v, ok := strings.Cut(a, "="); ok {
			out[strings.ReplaceAll(k, "-", "_")] = v
		}
	}
	return out
}

func (st *settings) makeKey() string {
	if len(st.startup) == 0 && len(st.sets) == 0 {
		return ""
	}
	var b strings.Builder
	for _, kv := range st.startup {
		b.WriteString(kv[0])
		b.WriteByte('=')
		b.WriteString(kv[1])
		b.WriteByte(0)
	}
	for _, s := range st.sets {
		b.WriteByte(1)
		b.WriteString(s.sql)
	}
	return b.String()
}

// with returns the snapshot after change c.
func (st *settings) with(c *settingChange) *settings {
	n := &settings{startup: st.startup}
	switch {
	case c.info.Has(router.ClassResetAll), c.info.Has(router.ClassDiscardAll):
		// back to the startup parameters only
	case c.info.Has(router.ClassReset):
		n.sets = without(st.sets, c.info.Param)
	case c.info.Has(router.ClassSet):
		n.sets = append(without(st.sets, c.info.Param), setStmt{param: c.info.Param, sql: c.sql})
	default:
		n.sets = st.sets
	}
	n.key = n.makeKey()
	return n
}

func without(sets []setStmt, param string) []setStmt {
	out := make([]setStmt, 0, len(sets)+1)
	for _, s := range sets {
		if s.param != param {
			out = append(out, s)
		}
	}
	return out
}

// applySQL returns a simple-protocol query that puts a backend into this
// snapshot's state; reset first returns the backend to server defaults.
func (st *settings) applySQL(reset bool) string {
	var b strings.Builder
	if reset {
		b.WriteString("RESET ALL;RESET ROLE;RESET SESSION AUTHORIZATION;")
	}
	if len(st.startup) > 0 {
		b.WriteString("SELECT ")
		for i, kv := range st.startup {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString("set_config(")
			b.WriteString(quoteLiteral(kv[0]))
			b.WriteByte(',')
			b.WriteString(quoteLiteral(kv[1]))
			b.WriteString(",false)")
		}
		b.WriteByte(';')
	}
	for _, s := range st.sets {
		b.WriteString(strings.TrimRight(strings.TrimSpace(s.sql), ";"))
		b.WriteString("\n;") // a trailing -- comment must not swallow the rest
	}
	return b.String()
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string {
	if strings.ContainsRune(s, '\\') {
		return "E'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// clientEncoding returns the session's client_encoding as far as the proxy
// can tell: the value of its last SET of it (the statement's last word,
// unquoted), else its startup value, else "UTF8".
func (st *settings) clientEncoding() string {
	for i := len(st.sets) - 1; i >= 0; i-- {
		if st.sets[i].param == "client_encoding" {
			f := strings.Fields(strings.TrimRight(st.sets[i].sql, "; \t\r\n"))
			if len(f) > 0 {
				return strings.Trim(f[len(f)-1], `'"`)
			}
		}
	}
	for _, kv := range st.startup {
		if kv[0] == "client_encoding" {
			return kv[1]
		}
	}
	return "UTF8"
}

// Parameter changes inside a transaction over several shards. On
// PostgreSQL a SET, SET LOCAL, RESET or set_config inside a transaction
// affects every later statement of the session; through the proxy the
// statement runs on one participant only. Its text is logged
// (txSettings, from the start of the transaction) and replayed, inside
// the transaction, on every other participant before its next statement
// (all it misses in one query) and on a participant attached later
// (after its BEGIN): SET LOCAL reverts at the end everywhere, SET stays
// on commit, both revert on rollback, as on one server. After the
// transaction the session's snapshot (settings.with, fed by the
// tentative changes of a commit) is what later server connections get,
// as for any SET.

// txSettings is the log of a transaction's parameter changes and, by
// shard, how many of them its participant there has run.
type txSettings struct {
	log []string
	at  map[string]int
}

// record logs sql, run on shard's participant.
func (t *txSettings) record(shard, sql string) {
	t.log = append(t.log, strings.TrimRight(strings.TrimSpace(sql), ";"))
	if t.at == nil {
		t.at = make(map[string]int)
	}
	t.at[shard] = len(t.log)
}

// take returns the changes shard's participant has not run (one query,
// "" when none) and counts them as run.
func (t *txSettings) take(shard string) string {
	n := t.at[shard]
	if n >= len(t.log) {
		return ""
	}
	if t.at == nil {
		t.at = make(map[string]int)
	}
	t.at[shard] = len(t.log)
	return strings.Join(t.log[n:], "\n;") // a trailing -- comment must not swallow the rest
}

// reset forgets the log at the transaction's end.
func (t *txSettings) reset() {
	if len(t.log) == 0 && t.at == nil {
		return
	}
	clear(t.log)
	t.log, t.at = t.log[:0], nil
}

// txSettingSQL reports whether sql, classified as info, is a parameter
// change the transaction's other participants must run too: SET, SET
// LOCAL, RESET, RESET ALL, or a SELECT of set_config calls only, with
// constant arguments. A set_config with computed arguments, or inside
// another statement, is not replayed (README "Transactions across
// shards").
func txSettingSQL(info router.Info, sql string) bool {
	if info.Has(router.ClassMulti) || info.Has(router.ClassPin) {
		return false
	}
	if info.Class&(router.ClassSet|router.ClassReset|router.ClassResetAll) != 0 {
		return !strings.HasPrefix(info.Param, "pgshard.") // not a routing hint
	}
	if info.Class != 0 {
		return false
	}
	if setLocalWord(sql) {
		return parseSetLocal(sql)
	}
	return containsFoldASCII(sql, "set_config") && constSetConfig(sql)
}

// constSetConfig reports whether sql is one SELECT whose every output is
// a set_config call with constant arguments, and nothing else (no FROM,
// WHERE, ...): running it again elsewhere does exactly the same.
func constSetConfig(sql string) bool {
	res, err := pg.Parse(sql)
	if err != nil || len(res.Stmts) != 1 {
		return false
	}
	sel := res.Stmts[0].Stmt.GetSelectStmt()
	if sel == nil || len(sel.TargetList) == 0 || len(sel.FromClause) > 0 || sel.WhereClause != nil ||
		sel.GroupClause != nil || sel.HavingClause != nil || sel.Op != pg.SetOperation_SETOP_NONE ||
		len(sel.ValuesLists) > 0 || sel.IntoClause != nil || sel.LimitCount != nil || sel.WithClause != nil {
		return false
	}
	for _, t := range sel.TargetList {
		rt := t.GetResTarget()
		if rt == nil {
			return false
		}
		fc := rt.Val.GetFuncCall()
		if fc == nil || len(fc.Args) != 3 || len(fc.Funcname) == 0 {
			return false
		}
		name := fc.Funcname[len(fc.Funcname)-1].GetString_()
		if name == nil || name.Sval != "set_config" || len(fc.Funcname) > 2 ||
			len(fc.Funcname) == 2 && fc.Funcname[0].GetString_().GetSval() != "pg_catalog" {
			return false
		}
		for _, a := range fc.Args {
			if a.GetAConst() == nil && !(a.GetTypeCast() != nil && a.GetTypeCast().Arg.GetAConst() != nil) {
				return false
			}
		}
	}
	return true
}

// touchesAppName reports whether sql may change application_name (the
// deadlock detector's tag, deadlock.go).
func touchesAppName(info router.Info, sql string) bool {
	return info.Has(router.ClassResetAll) || containsFoldASCII(sql, "application_name")
}

// noteTxSetting logs sql, about to run on be, when it changes parameters
// inside a transaction that may span shards (transactions.cross_shard:
// two_phase) and be is its current participant. If it fails the
// transaction fails, and nothing more runs on the other participants.
// A change of application_name removes the deadlock detector's tag from
// be: it is set again (logged) when be is next parked or before a
// statement over several shards, and after every replay.
func (s *session) noteTxSetting(be *pool.Conn, info router.Info, sql string) {
	if !s.st.crossShard { // (written by serve only, which runs this)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.st.cur()
	if a == nil || a.conn != be || s.st.txBegin == "" || !txSettingSQL(info, sql) {
		return
	}
	m := s.dtx.extra()
	m.sets.record(a.shard, strings.Clone(sql))
	if s.dtx.id != "" && touchesAppName(info, sql) {
		if i := slices.Index(m.tagged, be); i >= 0 {
			m.tagged = slices.Delete(m.tagged, i, i+1)
			s.log.Info("application_name changed inside a transaction over several shards: the deadlock detector's tag is set again on the shard's connection when the transaction next leaves it",
				"shard", a.shard, "dtx", s.dtx.id)
		}
	}
}

// txOpenSQL returns what opens the session's transaction on shard's new
// participant: begin, the transaction's parameter changes so far, and the
// deadlock detector's tag (dtxBegin). Callers hold s.mu.
func (s *session) txOpenSQL(begin, shard string, replica bool) string {
	if begin == "" {
		return begin
	}
	if sets := s.dtx.takeSets(shard); sets != "" {
		begin += "\n;" + sets
	}
	return s.dtxBegin(begin, replica)
}

// txCatchUp runs on be, shard's participant idle in the transaction
// without a handler, the transaction's parameter changes it has not run,
// in one query, before its next statement; its tag is set again after
// them.
func (s *session) txCatchUp(ctx context.Context, be *pool.Conn, shard string) error {
	s.mu.Lock()
	sql := s.dtx.takeSets(shard)
	if sql != "" && s.dtx.id != "" && s.dtx.isTagged(be) {
		sql += "\n;" + dtxTagSQL(s.dtx.id)
	}
	s.mu.Unlock()
	if sql == "" {
		return nil
	}
	if _, err := be.ExecInTx(ctx, sql); err != nil {
		return asWireError(err)
	}
	return nil
}
