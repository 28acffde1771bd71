package plan

import (
	"fmt"
	"maps"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgshard/pgshard/shardmap"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Stale rows. While a move runs, a shard may hold rows of an interval it
// does not own (shardmap.StaleRows): the target's copy before the
// cutover, the source's rows until cleanup. A statement without a key
// that reaches such a shard (a scatter SELECT, a COPY TO, an UPDATE or
// DELETE without a key condition) runs there with those rows left out,
// so that every row is read or changed once, on its owner:
//
//   - each reference to a sharded table of the marker's distribution in
//     a FROM list (at any depth: joins, subqueries, CTEs, USING) becomes
//     (SELECT * FROM t WHERE (<interval predicate>) IS NOT TRUE) AS
//     <alias or t>;
//   - the target table of an UPDATE or DELETE gets AND (<interval
//     predicate>) IS NOT TRUE in its WHERE;
//   - COPY t [(cols)] TO STDOUT becomes COPY (SELECT cols FROM t WHERE
//     ...) TO STDOUT.
//
// Only the shards with markers get a rewritten statement
// (Plan.PerShardSQL, with Plan.PerShardStale); the others get the
// statement as planned. A statement that cannot be rewritten exactly (a
// TABLESAMPLE of such a table, a CTE named like one, a column named
// schema.table.column) is refused with SQLSTATE 0A000 until the move's
// cleanup. Statements with a key run on the key's owner, which holds no
// stale rows of it, and are left alone, as are statements routed by a
// pgshard.shard hint (the operator named the shard) and the interval's
// own writes during the hold (see moving.go). Maps without markers skip
// all of this (state.stale is nil).

// staleOn is a stale-rows marker of a distribution, as a shard sees it.
type staleOn struct {
	dist *shardmap.Distribution
	rows *shardmap.StaleRows
}

// staleIndex returns, for each shard holding stale rows of m, its
// markers; nil when m has none.
func staleIndex(m *shardmap.Map) map[string][]staleOn {
	var idx map[string][]staleOn
	for i := range m.Distributions {
		d := &m.Distributions[i]
		for j := range d.Stale {
			if idx == nil {
				idx = make(map[string][]staleOn)
			}
			s := &d.Stale[j]
			idx[s.Shard] = append(idx[s.Shard], staleOn{dist: d, rows: s})
		}
	}
	return idx
}

// excludeStale rewrites p, planned for sql, for the shards of p that hold
// stale rows (st.stale is not nil).
func (st *state) excludeStale(p *Plan, sql string) {
	if p.Hinted || !p.Kind.Several() || p.Kind == Utility || p.Kind == CopyIn {
		return
	}
	switch p.Stmt {
	case StmtSelect, StmtUpdate, StmtDelete, StmtCopy:
	default:
		return
	}
	defer func() {
		if r := recover(); r != nil {
			*p = Plan{Kind: Refused, Stmt: p.Stmt, Table: p.Table, Err: refusal(fmt.Sprintf("pgshard cannot leave a moving interval's stale rows out of this statement (internal error: %v)", r),
				"report it; run it after the move's reshard cleanup")}
		}
	}()
	var per map[string]string
	for _, s := range p.Shards {
		marks := st.stale[s]
		if len(marks) == 0 {
			continue
		}
		base, ok := p.PerShardSQL[s]
		switch {
		case ok:
		case p.ShardSQL != "":
			base = p.ShardSQL
		default:
			base = sql
		}
		out, changed, err := st.rewriteStaleCached(s, base, marks)
		if err != nil {
			*p = Plan{Kind: Refused, Stmt: p.Stmt, Table: p.Table, Err: err}
			return
		}
		if !changed {
			continue
		}
		if per == nil {
			per = make(map[string]string, len(p.PerShardSQL)+1)
			maps.Copy(per, p.PerShardSQL) // shared with the plan cache
		}
		per[s] = out
	}
	if per == nil {
		return
	}
	// A UNION ALL's parts (PerShardSQL without PerShardKeys) stay what
	// they are: the router concatenates them.
	p.PerShardStale = p.PerShardSQL == nil || p.PerShardKeys
	p.PerShardSQL = per
}

// staleRefusal is the refusal of a statement that cannot leave out the
// stale rows marks names.
func staleRefusal(marks []staleOn, why string) *RefusalError {
	s := marks[0].rows
	return refusal(fmt.Sprintf("pgshard cannot run this statement on shard %s while it holds rows of %s [%s, %s) of move %s, until reshard cleanup: %s",
		s.Shard, marks[0].dist.Name, s.Lo, s.Hi, s.ID, why),
		"Add a condition on the sharding key, or run it after the move's reshard cleanup (or cancel).")
}

// staleCacheSize bounds the rewritten statements a map's state keeps;
// when it is reached they are dropped and rewritten again.
const staleCacheSize = 1024

// staleRewrite is a rewritten statement (rewriteStale's results).
type staleRewrite struct {
	out     string
	changed bool
	err     *RefusalError
}

// rewriteStaleCached is rewriteStale for shard's markers, remembered by
// shard and text for the map's life: a prepared statement (one text) is
// parsed once per shard, not at every execution.
func (st *state) rewriteStaleCached(shard, sql string, marks []staleOn) (string, bool, *RefusalError) {
	key := shard + "\x00" + sql
	st.staleMu.Lock()
	r, ok := st.staleCache[key]
	st.staleMu.Unlock()
	if ok {
		return r.out, r.changed, r.err
	}
	r.out, r.changed, r.err = st.rewriteStale(sql, marks)
	st.staleMu.Lock()
	if st.staleCache == nil || len(st.staleCache) >= staleCacheSize {
		st.staleCache = make(map[string]staleRewrite)
	}
	st.staleCache[key] = r
	st.staleMu.Unlock()
	return r.out, r.changed, r.err
}

// rewriteStale returns sql with the rows marks names left out, and
// whether it changed anything.
func (st *state) rewriteStale(sql string, marks []staleOn) (string, bool, *RefusalError) {
	res, err := pg.Parse(sql)
	if err != nil || len(res.Stmts) != 1 {
		return "", false, staleRefusal(marks, "its text cannot be rewritten")
	}
	r := staleRewriter{st: st, marks: marks, ctes: make(map[string]bool)}
	var stmts []protoreflect.Message
	walk(res.ProtoReflect(), func(m protoreflect.Message) bool {
		switch x := m.Interface().(type) {
		case *pg.SelectStmt, *pg.UpdateStmt, *pg.DeleteStmt, *pg.CopyStmt, *pg.RangeTableSample:
			stmts = append(stmts, m)
		case *pg.CommonTableExpr:
			r.ctes[strings.ToLower(x.Ctename)] = true
		case *pg.ColumnRef:
			if len(x.Fields) >= 3 {
				r.longRef = true
			}
		}
		return true
	})
	for _, m := range stmts {
		switch x := m.Interface().(type) {
		case *pg.SelectStmt:
			r.fromList(x.FromClause)
		case *pg.UpdateStmt:
			r.fromList(x.FromClause)
			x.WhereClause = r.target(x.Relation, x.WhereClause)
		case *pg.DeleteStmt:
			r.fromList(x.UsingClause)
			x.WhereClause = r.target(x.Relation, x.WhereClause)
		case *pg.CopyStmt:
			r.copyTo(x)
		case *pg.RangeTableSample:
			if rv := x.Relation.GetRangeVar(); rv != nil && r.marksOf(rv) != "" {
				r.fail("TABLESAMPLE of a table whose stale rows must be left out")
			}
		}
	}
	if r.err != nil {
		return "", false, r.err
	}
	if !r.changed {
		return "", false, nil
	}
	if r.longRef && r.wrapped {
		return "", false, staleRefusal(marks, "a column named schema.table.column cannot refer to a table read through a subquery")
	}
	out, err := pg.Deparse(res)
	if err != nil {
		return "", false, staleRefusal(marks, err.Error())
	}
	return out, true, nil
}

// staleRewriter rewrites one statement's parse tree.
type staleRewriter struct {
	st      *state
	marks   []staleOn
	ctes    map[string]bool // names of the statement's CTEs
	longRef bool            // a column reference of 3 or more names
	changed bool
	wrapped bool // a FROM reference became a subquery
	err     *RefusalError
}

func (r *staleRewriter) fail(why string) {
	if r.err == nil {
		r.err = staleRefusal(r.marks, why)
	}
}

// marksOf returns the condition (SQL, on key expression key — "" for
// the bare quoted key column) true for the rows of rv that are not
// stale on this shard, or "" when rv is no sharded table with stale rows
// here.
func (r *staleRewriter) marksOf(rv *pg.RangeVar) string {
	return r.cond(rv, "")
}

func (r *staleRewriter) cond(rv *pg.RangeVar, qual string) string {
	if rv == nil || rv.Catalogname != "" {
		return ""
	}
	schema := strings.ToLower(rv.Schemaname)
	if schema == "" {
		schema = r.st.opts.DefaultSchema
	}
	ti := r.st.tables[schema+"."+strings.ToLower(rv.Relname)]
	if !ti.sharded() || ti.dist == nil {
		return ""
	}
	key := shardmap.QuoteIdent(ti.t.KeyColumn)
	if qual != "" {
		key = shardmap.QuoteIdent(qual) + "." + key
	}
	var conds []string
	for _, m := range r.marks {
		if m.dist == ti.dist {
			conds = append(conds, m.dist.StalePredicate(m.rows, key)+" IS NOT TRUE")
		}
	}
	if len(conds) == 0 {
		return ""
	}
	if rv.Schemaname == "" && r.ctes[strings.ToLower(rv.Relname)] {
		r.fail(fmt.Sprintf("a WITH query is named %s like a sharded table", rv.Relname))
		return ""
	}
	return strings.Join(conds, " AND ")
}

// condNode parses a condition made by cond.
func (r *staleRewriter) condNode(cond string) *pg.Node {
	res, err := pg.Parse("SELECT WHERE " + cond)
	if err != nil || len(res.Stmts) != 1 || res.Stmts[0].Stmt.GetSelectStmt() == nil {
		r.fail("its condition cannot be built")
		return nil
	}
	return res.Stmts[0].Stmt.GetSelectStmt().WhereClause
}

// fromList replaces the references to tables with stale rows in a FROM
// (or USING) list, joins included.
func (r *staleRewriter) fromList(items []*pg.Node) {
	for _, n := range items {
		r.fromItem(n)
	}
}

func (r *staleRewriter) fromItem(n *pg.Node) {
	switch x := n.Node.(type) {
	case *pg.Node_JoinExpr:
		if x.JoinExpr.Larg != nil {
			r.fromItem(x.JoinExpr.Larg)
		}
		if x.JoinExpr.Rarg != nil {
			r.fromItem(x.JoinExpr.Rarg)
		}
	case *pg.Node_RangeVar:
		rv := x.RangeVar
		cond := r.marksOf(rv)
		if cond == "" {
			return
		}
		where := r.condNode(cond)
		if where == nil {
			return
		}
		alias := rv.Alias
		if alias == nil {
			alias = &pg.Alias{Aliasname: rv.Relname}
		}
		inner := &pg.RangeVar{Catalogname: rv.Catalogname, Schemaname: rv.Schemaname, Relname: rv.Relname, Inh: rv.Inh, Relpersistence: rv.Relpersistence}
		sel := &pg.SelectStmt{
			TargetList:  []*pg.Node{{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: &pg.Node{Node: &pg.Node_ColumnRef{ColumnRef: &pg.ColumnRef{Fields: []*pg.Node{{Node: &pg.Node_AStar{AStar: &pg.A_Star{}}}}}}}}}}},
			FromClause:  []*pg.Node{{Node: &pg.Node_RangeVar{RangeVar: inner}}},
			WhereClause: where,
			LimitOption: pg.LimitOption_LIMIT_OPTION_DEFAULT,
			Op:          pg.SetOperation_SETOP_NONE,
		}
		n.Node = &pg.Node_RangeSubselect{RangeSubselect: &pg.RangeSubselect{
			Subquery: &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: sel}},
			Alias:    alias,
		}}
		r.changed, r.wrapped = true, true
	}
}

// target adds the condition of an UPDATE's or DELETE's table to where.
func (r *staleRewriter) target(rv *pg.RangeVar, where *pg.Node) *pg.Node {
	qual := ""
	if rv != nil {
		qual = rv.Relname
		if rv.Alias != nil && rv.Alias.Aliasname != "" {
			qual = rv.Alias.Aliasname
		}
	}
	cond := r.cond(rv, qual)
	if cond == "" {
		return where
	}
	c := r.condNode(cond)
	if c == nil {
		return where
	}
	if where != nil && where.GetCurrentOfExpr() != nil {
		r.fail("WHERE CURRENT OF cannot leave rows out")
		return where
	}
	r.changed = true
	if where == nil {
		return c
	}
	return &pg.Node{Node: &pg.Node_BoolExpr{BoolExpr: &pg.BoolExpr{Boolop: pg.BoolExprType_AND_EXPR, Args: []*pg.Node{where, c}}}}
}

// copyTo turns COPY t [(cols)] TO into COPY (SELECT cols FROM t WHERE
// ...) TO.
func (r *staleRewriter) copyTo(c *pg.CopyStmt) {
	if c.IsFrom || c.Relation == nil {
		return
	}
	cond := r.marksOf(c.Relation)
	if cond == "" {
		return
	}
	where := r.condNode(cond)
	if where == nil {
		return
	}
	var targets []*pg.Node
	for _, a := range c.Attlist {
		targets = append(targets, &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{
			Val: &pg.Node{Node: &pg.Node_ColumnRef{ColumnRef: &pg.ColumnRef{Fields: []*pg.Node{a}}}}}}})
	}
	if len(targets) == 0 {
		targets = []*pg.Node{{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: &pg.Node{Node: &pg.Node_ColumnRef{ColumnRef: &pg.ColumnRef{Fields: []*pg.Node{{Node: &pg.Node_AStar{AStar: &pg.A_Star{}}}}}}}}}}}
	}
	rel := c.Relation
	rel.Alias = nil
	c.Query = &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: &pg.SelectStmt{
		TargetList:  targets,
		FromClause:  []*pg.Node{{Node: &pg.Node_RangeVar{RangeVar: rel}}},
		WhereClause: where,
		LimitOption: pg.LimitOption_LIMIT_OPTION_DEFAULT,
		Op:          pg.SetOperation_SETOP_NONE,
	}}}
	c.Relation, c.Attlist = nil, nil
	r.changed = true
}
