package plan

import (
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// tableRef is one reference to a table in a statement.
type tableRef struct {
	name   string // schema.table
	alias  string // alias, or the table name
	ti     *tableInfo
	top    bool // in the top-level FROM (or the target of a write)
	parent *tableRef
	// renamed: the reference has a column alias list (orders o(a, b)),
	// which renames columns by position. The planner does not know the
	// table's column order, so it cannot tell which name is the key: no
	// condition on this reference counts as a key condition or a link.
	renamed bool
	// nullable: on the nullable side of an outer join (its key may be
	// NULL-extended on every shard).
	nullable bool
	rv       *pg.RangeVar
}

func (r *tableRef) root() *tableRef {
	for r.parent != nil {
		r = r.parent
	}
	return r
}

func (r *tableRef) sharded() bool { return r.ti.sharded() }

// scope is the FROM scope of one (sub)query.
type scope struct {
	parent *scope
	refs   []*tableRef
	ctes   []string
	opaque []string // aliases of subqueries, functions and CTE references
	// nested: the scope of a subquery, CTE or set-operation part, whose
	// key conditions limit only its own tables.
	nested bool
}

func (s *scope) isCTE(name string) bool {
	for ; s != nil; s = s.parent {
		if slices.Contains(s.ctes, name) {
			return true
		}
	}
	return false
}

// constraint is a condition limiting the key of refs to srcs' values.
type constraint struct {
	refs []*tableRef
	srcs []valueSrc
	sc   *scope   // where the condition is
	cond *pg.Node // the condition
}

// analysis collects what routing needs from one statement.
type analysis struct {
	b           *builder
	refs        []*tableRef
	constraints []constraint
	setOp       bool // a UNION/INTERSECT/EXCEPT somewhere
	writableCTE bool
	volatile    bool
	unknownFunc bool // calls a function not in replicaSafeFuncs
	locking     bool
	into        bool // SELECT INTO
	// userFunc: a call of a function that may be the user's own (which
	// may write tables of the map): neither on the replica-safe list nor
	// qualified with pg_catalog or information_schema nor a known
	// built-in with side effects (nextval, advisory locks, ...).
	userFunc bool
	// outerUnsharded names an outer join whose preserved side reads no
	// sharded table while the other side does: each shard would return
	// every preserved row (VALUES, generate_series, a CTE, ...).
	outerUnsharded string
	// topScope is the FROM scope of the top-level SELECT.
	topScope *scope
	// keyList, when set, is the key condition whose list each shard's
	// statement keeps only that shard's keys of (see scatterkeys.go).
	keyList *keyListCond
}

func (b *builder) qualify(rv *pg.RangeVar) string {
	schema := strings.ToLower(rv.Schemaname)
	if schema == "" {
		schema = b.st.opts.DefaultSchema
	}
	return schema + "." + strings.ToLower(rv.Relname)
}

// addRef records a reference to rv in sc.
func (a *analysis) addRef(rv *pg.RangeVar, sc *scope, top bool) *tableRef {
	name := a.b.qualify(rv)
	alias := strings.ToLower(rv.Relname)
	if rv.Alias != nil && rv.Alias.Aliasname != "" {
		alias = strings.ToLower(rv.Alias.Aliasname)
	}
	r := &tableRef{name: name, alias: alias, ti: a.b.st.tables[name], top: top, rv: rv,
		renamed: rv.Alias != nil && len(rv.Alias.Colnames) > 0}
	sc.refs = append(sc.refs, r)
	a.refs = append(a.refs, r)
	return r
}

// selectStmt analyzes a SELECT in scope parent.
func (a *analysis) selectStmt(sel *pg.SelectStmt, parent *scope, top bool) {
	if sel == nil {
		return
	}
	if sel.Op != pg.SetOperation_SETOP_NONE && sel.Op != pg.SetOperation_SET_OPERATION_UNDEFINED {
		// A set operation matters only when its parts read a sharded
		// table: over constants or unsharded data (a recursive CTE's
		// UNION ALL, ...) every shard computes the same rows.
		before := len(a.refs)
		sc := &scope{parent: parent, nested: !top}
		a.with(sel.WithClause, sc)
		a.selectStmt(sel.Larg, sc, false)
		a.selectStmt(sel.Rarg, sc, false)
		if top || anySharded(a.refs[before:]) {
			a.setOp = true
		}
		return
	}
	sc := &scope{parent: parent, nested: !top}
	if top && a.topScope == nil {
		a.topScope = sc
	}
	a.with(sel.WithClause, sc)
	if len(sel.LockingClause) > 0 {
		a.locking = true
	}
	if sel.IntoClause != nil {
		a.into = true
	}
	// A nested SELECT's own key conditions limit the rows it reads from
	// its own tables: they count for those tables (constrained below).
	for _, f := range sel.FromClause {
		a.fromItem(f, sc, top, true)
	}
	a.where(sel.WhereClause, sc, true)
	for _, l := range [][]*pg.Node{sel.TargetList, sel.GroupClause, sel.SortClause, sel.DistinctClause, sel.WindowClause, sel.ValuesLists} {
		for _, n := range l {
			a.exprs(n, sc)
		}
	}
	a.exprs(sel.HavingClause, sc)
	a.exprs(sel.LimitCount, sc)
	a.exprs(sel.LimitOffset, sc)
}

func (a *analysis) with(w *pg.WithClause, sc *scope) {
	if w == nil {
		return
	}
	for _, c := range w.Ctes {
		cte := c.GetCommonTableExpr()
		if cte == nil {
			continue
		}
		sc.ctes = append(sc.ctes, strings.ToLower(cte.Ctename))
		a.subquery(cte.Ctequery, sc)
	}
}

// subquery analyzes a nested statement: its tables are not top-level.
func (a *analysis) subquery(n *pg.Node, sc *scope) {
	if n == nil {
		return
	}
	switch {
	case n.GetSelectStmt() != nil:
		a.selectStmt(n.GetSelectStmt(), sc, false)
	case n.GetInsertStmt() != nil, n.GetUpdateStmt() != nil, n.GetDeleteStmt() != nil, n.GetMergeStmt() != nil:
		a.writableCTE = true
		a.tablesIn(n, sc)
	default:
		a.tablesIn(n, sc)
	}
}

// tablesIn records every table named under n as a nested reference.
func (a *analysis) tablesIn(n *pg.Node, sc *scope) {
	inner := &scope{parent: sc}
	walk(n.ProtoReflect(), func(m protoreflect.Message) bool {
		switch x := m.Interface().(type) {
		case *pg.RangeVar:
			if x.Schemaname == "" && sc.isCTE(strings.ToLower(x.Relname)) {
				return false
			}
			a.addRef(x, inner, false)
		case *pg.FuncCall:
			a.funcCall(x)
		}
		return true
	})
}

// fromItem analyzes one FROM item. top: its tables are in the top-level
// FROM; constrain: a key condition in its join conditions limits the
// whole statement (not so on the nullable side of an outer join, whose
// conditions only decide which rows are NULL-extended).
func (a *analysis) fromItem(n *pg.Node, sc *scope, top, constrain bool) {
	switch {
	case n.GetRangeVar() != nil:
		rv := n.GetRangeVar()
		if rv.Schemaname == "" && sc.isCTE(strings.ToLower(rv.Relname)) {
			alias := strings.ToLower(rv.Relname)
			if rv.Alias != nil {
				alias = strings.ToLower(rv.Alias.Aliasname)
			}
			sc.opaque = append(sc.opaque, alias)
			return
		}
		r := a.addRef(rv, sc, top)
		r.nullable = !constrain
	case n.GetJoinExpr() != nil:
		j := n.GetJoinExpr()
		lc, rc := constrain, constrain
		switch j.Jointype {
		case pg.JoinType_JOIN_LEFT:
			rc = false
		case pg.JoinType_JOIN_RIGHT:
			lc = false
		case pg.JoinType_JOIN_FULL:
			lc, rc = false, false
		}
		before := len(sc.refs)
		a.fromItem(j.Larg, sc, top, lc)
		mid := len(sc.refs)
		a.fromItem(j.Rarg, sc, top, rc)
		for _, u := range j.UsingClause {
			col := strings.ToLower(u.GetString_().GetSval())
			var l, r *tableRef
			for _, ref := range sc.refs[before:mid] {
				if ref.sharded() && !ref.renamed && ref.ti.t.KeyColumn == col {
					l = ref
				}
			}
			for _, ref := range sc.refs[mid:] {
				if ref.sharded() && !ref.renamed && ref.ti.t.KeyColumn == col {
					r = ref
				}
			}
			if l != nil && r != nil && l.ti.dist == r.ti.dist {
				link(l, r)
			}
		}
		// The preserved side of an outer join must read a sharded table
		// when the other side does: otherwise every shard returns its
		// rows, NULL-extended or not.
		ls, rs := anySharded(sc.refs[before:mid]), anySharded(sc.refs[mid:])
		switch {
		case j.Jointype == pg.JoinType_JOIN_LEFT && !ls && rs,
			j.Jointype == pg.JoinType_JOIN_RIGHT && ls && !rs,
			j.Jointype == pg.JoinType_JOIN_FULL && ls != rs:
			if a.outerUnsharded == "" {
				a.outerUnsharded = strings.ToUpper(strings.TrimPrefix(j.Jointype.String(), "JOIN_")) + " JOIN"
			}
		}
		a.where(j.Quals, sc, constrain && j.Jointype == pg.JoinType_JOIN_INNER)
		if j.Alias != nil && len(j.Alias.Colnames) > 0 {
			// (a JOIN b) AS j(x, y, ...) renames the join's columns by
			// position: outside it, names no longer mean the tables' own.
			for _, r := range sc.refs[before:] {
				r.renamed = true
			}
		}
	case n.GetRangeSubselect() != nil:
		rs := n.GetRangeSubselect()
		a.subquery(rs.Subquery, sc)
		if rs.Alias != nil {
			sc.opaque = append(sc.opaque, strings.ToLower(rs.Alias.Aliasname))
		}
	default:
		if rf := n.GetRangeFunction(); rf != nil && rf.Alias != nil {
			sc.opaque = append(sc.opaque, strings.ToLower(rf.Alias.Aliasname))
		}
		a.exprs(n, sc)
	}
}

func anySharded(refs []*tableRef) bool {
	for _, r := range refs {
		if r.sharded() {
			return true
		}
	}
	return false
}

func link(x, y *tableRef) {
	rx, ry := x.root(), y.root()
	if rx != ry {
		rx.parent = ry
	}
}

// where analyzes a WHERE or ON condition: equalities between key columns
// link their tables (colocated rows); at the top level, conditions on the
// key are constraints. An equality links two tables only when one of them
// is in sc's own FROM: a condition in a subquery (EXISTS, NOT EXISTS, ...)
// on two tables of outer queries does not say how those are combined.
func (a *analysis) where(n *pg.Node, sc *scope, top bool) {
	if n == nil {
		return
	}
	for _, c := range conjuncts(n, nil) {
		if e := c.GetAExpr(); e != nil && e.Kind == pg.A_Expr_Kind_AEXPR_OP && opName(e) == "=" {
			l, r := a.keyRef(e.Lexpr, sc), a.keyRef(e.Rexpr, sc)
			inL, inR := slices.Contains(sc.refs, l), slices.Contains(sc.refs, r)
			// A subquery's condition on an outer table links it only
			// where every row the subquery reads satisfies it (a WHERE
			// or inner join term, not an outer join's ON).
			if l != nil && r != nil && l.ti.dist == r.ti.dist && (inL || inR) && (inL && inR || top || !sc.nested) {
				link(l, r)
				continue
			}
		}
		if top {
			// Only a condition on this scope's own tables limits them: in
			// a subquery, one on an outer table may be negated (NOT
			// EXISTS) or only decide a value.
			if refs, srcs, ok := a.keyTargets(c, sc); ok && !slices.ContainsFunc(refs, func(r *tableRef) bool { return !slices.Contains(sc.refs, r) }) {
				a.constraints = append(a.constraints, constraint{refs: refs, srcs: srcs, sc: sc, cond: c})
			}
		}
	}
	a.exprs(n, sc)
}

func conjuncts(n *pg.Node, out []*pg.Node) []*pg.Node {
	if be := n.GetBoolExpr(); be != nil && be.Boolop == pg.BoolExprType_AND_EXPR {
		for _, x := range be.Args {
			out = conjuncts(x, out)
		}
		return out
	}
	return append(out, n)
}

func opName(e *pg.A_Expr) string {
	if len(e.Name) == 0 {
		return ""
	}
	return e.Name[len(e.Name)-1].GetString_().GetSval()
}

// exprs walks an expression for subqueries and function calls.
func (a *analysis) exprs(n *pg.Node, sc *scope) {
	if n == nil {
		return
	}
	walk(n.ProtoReflect(), func(m protoreflect.Message) bool {
		switch x := m.Interface().(type) {
		case *pg.SubLink:
			a.subquery(x.Subselect, sc)
			a.exprs(x.Testexpr, sc)
			return false
		case *pg.RangeSubselect:
			a.subquery(x.Subquery, sc)
			return false
		case *pg.SelectStmt:
			a.selectStmt(x, sc, false)
			return false
		case *pg.FuncCall:
			a.funcCall(x)
		}
		return true
	})
}

// unsafeFuncs are functions that change state or depend on the session:
// a statement calling one is not read-only (not for a replica, not
// retried).
var unsafeFuncs = map[string]bool{
	"nextval": true, "setval": true, "set_config": true, "pg_notify": true,
	"txid_current": true, "pg_current_xact_id": true, "lo_create": true, "lo_import": true,
	"lo_unlink": true, "lo_export": true, "lo_open": true, "lo_write": true, "lo_put": true,
	"pg_terminate_backend": true, "pg_cancel_backend": true, "pg_reload_conf": true,
	"pg_switch_wal": true, "pg_create_restore_point": true, "dblink_exec": true, "dblink": true,
	"pg_logical_emit_message": true, "pg_stat_reset": true,
}

func (a *analysis) funcCall(f *pg.FuncCall) {
	name := funcName(f)
	volatile := unsafeFuncs[name] || strings.HasPrefix(name, "pg_advisory") || strings.HasPrefix(name, "pg_try_advisory") ||
		strings.HasPrefix(name, "pg_create_") || strings.HasPrefix(name, "pg_drop_")
	if !replicaSafeFunc(f, name) && !a.b.st.configuredSafe(f) {
		a.unknownFunc = true
		builtin := len(f.Funcname) == 2 && systemSchema(f.Funcname[0].GetString_().GetSval()) ||
			len(f.Funcname) == 1 && volatile && !strings.HasPrefix(name, "dblink")
		if !builtin {
			a.userFunc = true
		}
	}
	if volatile {
		a.volatile = true
	}
}

// systemSchema reports whether schema holds PostgreSQL's own functions.
func systemSchema(schema string) bool {
	return strings.EqualFold(schema, "pg_catalog") || strings.EqualFold(schema, "information_schema")
}

func funcName(f *pg.FuncCall) string {
	if len(f.Funcname) == 0 {
		return ""
	}
	return strings.ToLower(f.Funcname[len(f.Funcname)-1].GetString_().GetSval())
}

// route is the routing decision common to SELECT, UPDATE and DELETE.
type route struct {
	refusal      *RefusalError
	dist         *tableInfo // a sharded table of the statement (its distribution), nil if none
	table        string
	classes      [][]valueSrc // nil: no key (scatter)
	cond         constraint   // the constraint of the first class
	scatterOK    *RefusalError
	needShard    string      // unsharded tables' shard, "" if none
	defaultShard string      // when nothing is sharded
	roots        []*tableRef // of the classes, in their order
}

// decide turns the analysis into a route.
func (a *analysis) decide() route {
	var sharded, unsharded []*tableRef
	for _, r := range a.refs {
		switch {
		case r.ti == nil:
		case r.sharded():
			sharded = append(sharded, r)
		default:
			unsharded = append(unsharded, r)
		}
	}
	var rt route
	for _, u := range unsharded {
		s := ""
		if u.ti.dist != nil {
			s = u.ti.dist.DefaultShard
		}
		if rt.needShard != "" && s != rt.needShard {
			rt.refusal = refusal("unsharded tables "+unsharded[0].name+" and "+u.name+" live on different shards", "query them separately")
			return rt
		}
		rt.needShard = s
	}
	if len(sharded) == 0 {
		rt.defaultShard = a.b.st.defaultShard
		if rt.needShard != "" {
			rt.defaultShard = rt.needShard
		}
		return rt
	}
	first := sharded[0]
	rt.dist, rt.table = first.ti, first.name
	for _, r := range sharded[1:] {
		if r.ti.dist != first.ti.dist {
			rt.refusal = refusal("the statement uses "+first.name+" and "+r.name+", which are sharded by different distributions ("+
				first.ti.dist.Name+", "+r.ti.dist.Name+"): their rows are not colocated", "query them separately")
			return rt
		}
	}
	// Classes of linked tables, each with its constraint.
	var roots []*tableRef
	for _, r := range sharded {
		if !slices.Contains(roots, r.root()) {
			roots = append(roots, r.root())
		}
	}
	rt.classes = make([][]valueSrc, 0, len(roots))
	for _, root := range roots {
		var srcs []valueSrc
		var cond constraint
		for _, c := range a.constraints {
			ok := true
			for _, r := range c.refs {
				ok = ok && r.root() == root
			}
			if c.sc != nil && c.sc.nested {
				// A subquery's condition limits only its own tables: the
				// class may hold no table of an outer query (a correlated
				// NOT EXISTS reads every outer row).
				for _, r := range sharded {
					ok = ok && (r.root() != root || slices.Contains(c.sc.refs, r))
				}
			}
			if ok {
				srcs, cond = c.srcs, c
				break
			}
		}
		if srcs == nil {
			rt.classes, rt.cond = nil, constraint{}
			break
		}
		if len(rt.classes) == 0 {
			rt.cond = cond
		}
		rt.classes = append(rt.classes, srcs)
	}
	rt.roots = roots
	// Can it run on several shards and be merged?
	switch {
	case a.setOp:
		rt.scatterOK = refusal("UNION/INTERSECT/EXCEPT over a sharded table cannot run on several shards",
			"add a condition on "+rt.table+"."+first.ti.t.KeyColumn+", or run each part separately")
		if rt.classes == nil {
			rt.refusal = rt.scatterOK
		}
	case len(roots) > 1:
		var other *tableRef
		for _, r := range sharded {
			if r.root() != first.root() {
				other = r
				break
			}
		}
		rt.scatterOK = refusal("the statement combines rows of "+first.name+" and "+other.name+
			" without an equality between their sharding keys ("+first.ti.t.KeyColumn+", "+other.ti.t.KeyColumn+"), and they may be on different shards",
			"join them on the key columns, add a condition on "+first.name+"."+first.ti.t.KeyColumn+", or use SET pgshard.shard")
		if rt.classes == nil {
			rt.refusal = rt.scatterOK
		}
	case len(unsharded) > 0:
		rt.scatterOK = refusal("the statement joins sharded table "+rt.table+" with unsharded table "+unsharded[0].name+
			", which lives only on shard "+rt.needShard, "add a condition on "+rt.table+"."+first.ti.t.KeyColumn+" that selects rows of that shard, or query the tables separately")
	case a.outerUnsharded != "":
		rt.scatterOK = refusal("a "+a.outerUnsharded+" whose preserved side reads no sharded table (VALUES, a function, a CTE or a subquery) would return its rows once per shard",
			"add a condition on "+rt.table+"."+first.ti.t.KeyColumn+" that selects one shard, start the join from the sharded table, or use SET pgshard.shard")
	default:
		// A subquery or CTE reading a sharded table is exact on every
		// shard when its rows are linked by key equalities to a table of
		// the top-level FROM (a correlated subquery on the key): each
		// outer row's subquery reads rows of the outer row's shard only.
		anchored := slices.ContainsFunc(sharded, func(r *tableRef) bool { return r.top })
		for _, r := range sharded {
			if !r.top && !anchored {
				rt.scatterOK = refusal("a subquery or CTE reads sharded table "+r.name+" in a statement that runs on several shards; each shard would see only its own rows",
					"add a condition on "+rt.table+"."+first.ti.t.KeyColumn+", or use SET pgshard.shard")
				break
			}
		}
	}
	return rt
}
