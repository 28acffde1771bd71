package plan

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	pg "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgshard/pgshard/wire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// builder builds the template of one statement on a cache miss.
type builder struct {
	st    *state
	sql   string
	norm  *normalized
	litAt map[int32]int // original offset → literal index
	// mapped literals became A_Const nodes; pinned literals' values decide
	// the plan. Every literal that is not mapped is pinned.
	mapped  []bool
	pinned  []bool
	version int32 // of the parse tree, for Deparse
	// expires: the template uses a key position known until then.
	expires time.Time
}

// buildTemplate parses sql and plans it. It never panics on input: a
// panic inside the analysis (a bug) becomes a refusal.
func buildTemplate(st *state, sql string, n *normalized) (t *template) {
	b := &builder{st: st, sql: sql, norm: n, litAt: make(map[int32]int, len(n.lits)),
		mapped: make([]bool, len(n.lits)), pinned: make([]bool, len(n.lits))}
	for i, l := range n.lits {
		b.litAt[l.start] = i
	}
	defer func() {
		if r := recover(); r != nil {
			t = &template{base: Plan{Kind: Refused, Err: refusal(fmt.Sprintf("pgshard cannot plan this statement (internal error: %v)", r),
				"report it; a pgshard.shard hint routes it anyway")}}
			b.pinAll(t)
		}
	}()
	res, err := pg.Parse(sql)
	explain := false
	if err != nil {
		// EXPLAIN (pgshard) of a statement PostgreSQL cannot EXPLAIN
		// (DDL): the statement's plan, as for any other.
		if inner, ok := explainPgshardInner(sql); ok {
			if r, ierr := pg.Parse(inner); ierr == nil {
				res, err, explain = r, nil, true
			}
		}
	}
	if err != nil {
		t = &template{parseErr: &RefusalError{Code: wire.SQLStateSyntaxError, Message: err.Error()}}
		b.pinAll(t)
		return t
	}
	b.version = res.Version
	walk(res.ProtoReflect(), func(m protoreflect.Message) bool {
		if c, ok := m.Interface().(*pg.A_Const); ok {
			if i, ok := b.litAt[c.Location]; ok {
				b.mapped[i] = true
			}
		}
		return true
	})
	t = b.plan(res)
	t.explain = t.explain || explain
	t.expires = b.expires
	b.setPins(t)
	return t
}

// explainPgshardRE matches "EXPLAIN (pgshard)" at the start of a
// statement, after blanks, comments and hint comments.
var explainPgshardRE = regexp.MustCompile(`(?is)^(?:\s|/\*.*?\*/|--[^\n]*(?:\n|$))*(explain\s*\(\s*pgshard\s*\))`)

// explainPgshardInner returns sql with its leading "EXPLAIN (pgshard)"
// blanked out (same length: literal offsets stay valid), or false.
func explainPgshardInner(sql string) (string, bool) {
	m := explainPgshardRE.FindStringSubmatchIndex(sql)
	if m == nil {
		return "", false
	}
	return sql[:m[2]] + strings.Repeat(" ", m[3]-m[2]) + sql[m[3]:], true
}

func (b *builder) pinAll(t *template) {
	for i := range b.pinned {
		b.pinned[i] = true
	}
	b.setPins(t)
}

func (b *builder) setPins(t *template) {
	t.nlits = len(b.norm.lits)
	t.pins = t.pins[:0]
	for i := range b.norm.lits {
		if b.pinned[i] || !b.mapped[i] {
			t.pins = append(t.pins, pin{lit: int32(i), text: strings.Clone(b.norm.text(b.sql, i))})
		}
	}
}

// constLit returns the literal index of A_Const c, or -1.
func (b *builder) constLit(c *pg.A_Const) int {
	if i, ok := b.litAt[c.Location]; ok && b.mapped[i] {
		return i
	}
	return -1
}

// pinConst marks the literal of c (if any) as deciding the plan.
func (b *builder) pinConst(c *pg.A_Const) {
	if i := b.constLit(c); i >= 0 {
		b.pinned[i] = true
	}
}

func (b *builder) plan(res *pg.ParseResult) *template {
	if len(res.Stmts) == 0 {
		t := b.defaultTemplate(StmtOther) // empty query
		t.base.Anywhere = true
		return t
	}
	if len(res.Stmts) > 1 {
		return b.multiStatement(res)
	}
	return b.statement(res.Stmts[0].Stmt)
}

// multiDDL plans a query string of DDL statements that each run on the
// same several shards (a migration script): the whole string on those
// shards, all or none. Else nil.
func (b *builder) multiDDL(res *pg.ParseResult) *template {
	var first *template
	for _, s := range res.Stmts {
		t := b.statement(s.Stmt)
		if t.base.Reach != ReachAll || !t.base.Broadcast || t.base.Stmt != StmtOther || t.classes != nil ||
			(first != nil && !slices.Equal(t.base.Shards, first.base.Shards)) {
			return nil
		}
		if first == nil {
			first = t
		}
	}
	return &template{hintable: true, dist: first.dist, base: Plan{Kind: Utility, Reach: ReachAll, Stmt: StmtOther, Broadcast: true,
		Shards: first.base.Shards, Table: first.base.Table}}
}

func (b *builder) defaultTemplate(s Stmt) *template {
	return &template{hintable: true, base: Plan{Kind: defaultKind(s), Reach: ReachDefault, Stmt: s, Shards: b.st.shardList(b.st.defaultShard)}}
}

func refusedTemplate(s Stmt, msg, hint string) *template {
	return &template{hintable: true, base: Plan{Kind: Refused, Stmt: s, Err: refusal(msg, hint)}}
}

// multiStatement plans a query string with several statements: the
// whole string runs on one shard when every statement is for that shard
// (by its key values, or an unsharded table there) or runs alike on any
// (no table of the map, transaction control, SET); otherwise it is
// refused. The shard of each keyed statement is read per execution, as
// for one statement with several key conditions (its classes).
func (b *builder) multiStatement(res *pg.ParseResult) *template {
	if t := b.multiDDL(res); t != nil {
		return t
	}
	refused := refusedTemplate(StmtOther, "a query string with several statements that touch sharded or unsharded tables cannot be routed as one unless all of them are for one shard",
		"send the statements one at a time, or use a pgshard.shard hint")
	refused.base.Err.MultiStatement = true
	ro, anywhere := true, true
	static := ""        // the shard of the statements not decided by a key
	onDefault := true   // every statement as today: the default shard
	var keyed *template // the first statement decided by its key values
	var classes [][]valueSrc
	for _, s := range res.Stmts {
		t := b.statement(s.Stmt)
		p := &t.base
		if p.Kind == Refused || t.explain || t.union != nil || t.creates != nil || p.Hint != nil || p.Show != ShowNone || p.Explain {
			return refused
		}
		ro = ro && p.ReadOnly
		anywhere = anywhere && p.Anywhere
		if p.Reach != ReachDefault || t.classes != nil || p.Shards == nil || p.Shards[0] != b.st.defaultShard {
			onDefault = false
		}
		switch {
		case t.classes != nil:
			if keyed != nil && t.dist != keyed.dist {
				return refused
			}
			if keyed == nil {
				keyed = t
			}
			classes = append(classes, t.classes...)
			if t.needShard != "" {
				if static != "" && static != t.needShard {
					return refused
				}
				static = t.needShard
			}
		case p.Anywhere || p.Kind == Any:
			// Runs alike on any shard (SELECT 1, BEGIN, SET).
		case p.Kind == Single && len(p.Shards) == 1:
			if static != "" && static != p.Shards[0] {
				return refused
			}
			static = p.Shards[0]
		default:
			return refused
		}
	}
	if onDefault {
		t := b.defaultTemplate(StmtOther)
		t.base.ReadOnly, t.base.Anywhere = ro, anywhere
		return t
	}
	if keyed == nil {
		t := b.defaultTemplate(StmtOther)
		t.base.ReadOnly = ro
		if static != "" {
			t.base.Shards = b.st.shardList(static)
		}
		return t
	}
	// No Table: the statements may name several (the row cache then
	// invalidates every cacheable table a write may touch).
	multi := refused.base
	return &template{hintable: true, dist: keyed.dist, classes: classes, needShard: static, multi: &multi,
		multiStmt: true, base: Plan{Kind: Single, Reach: ReachKey, Stmt: StmtOther, ReadOnly: ro}}
}

func (b *builder) statement(n *pg.Node) *template {
	switch {
	case n.GetSelectStmt() != nil:
		if into := selectInto(n.GetSelectStmt()); into != nil {
			return b.createAs(into, b.selectStmt(n.GetSelectStmt()), "SELECT INTO")
		}
		return b.selectStmt(n.GetSelectStmt())
	case n.GetPrepareStmt() != nil:
		return b.prepareStmt(n.GetPrepareStmt())
	case n.GetDeclareCursorStmt() != nil:
		return b.declareStmt(n.GetDeclareCursorStmt())
	case n.GetCreateTableAsStmt() != nil:
		return b.createTableAs(n.GetCreateTableAsStmt())
	case n.GetViewStmt() != nil:
		return b.viewStmt(n)
	case n.GetDoStmt() != nil:
		return b.procStmt("DO")
	case n.GetCallStmt() != nil:
		return b.procStmt("CALL")
	case n.GetInsertStmt() != nil:
		return b.insertStmt(n.GetInsertStmt())
	case n.GetUpdateStmt() != nil:
		u := n.GetUpdateStmt()
		return b.modify(StmtUpdate, u.Relation, u.FromClause, u.WhereClause, u.WithClause, u.TargetList, n)
	case n.GetDeleteStmt() != nil:
		d := n.GetDeleteStmt()
		return b.modify(StmtDelete, d.Relation, d.UsingClause, d.WhereClause, d.WithClause, nil, n)
	case n.GetCopyStmt() != nil:
		return b.copyStmt(n.GetCopyStmt())
	case n.GetTransactionStmt() != nil:
		t := b.defaultTemplate(StmtTx)
		t.base.Tx = txOp(n.GetTransactionStmt().Kind)
		t.base.ReadOnly = true
		return t
	case n.GetVariableSetStmt() != nil:
		return b.setStmt(n.GetVariableSetStmt())
	case n.GetVariableShowStmt() != nil:
		name := strings.ToLower(n.GetVariableShowStmt().Name)
		if name == "pgshard.route" {
			return &template{base: Plan{Kind: Any, Show: ShowRoute, Stmt: StmtShow, ReadOnly: true}}
		}
		if name == "pgshard.shards" || name == "shards" { // SHOW SHARDS, as in pgshard's admin console
			return &template{base: Plan{Kind: Any, Show: ShowShards, Stmt: StmtShow, ReadOnly: true}}
		}
		t := b.defaultTemplate(StmtShow)
		t.base.ReadOnly = true
		return t
	case n.GetExplainStmt() != nil:
		for _, o := range n.GetExplainStmt().Options {
			if d := o.GetDefElem(); d != nil && strings.EqualFold(d.Defname, "pgshard") {
				// EXPLAIN (pgshard) stmt: where stmt would go.
				t := b.statement(n.GetExplainStmt().Query)
				t.explain = true
				return t
			}
		}
		t := b.statement(n.GetExplainStmt().Query)
		t.dropUnion()
		// EXPLAIN output is per shard: concatenate, never merge.
		t.base.Merge, t.shardSQL, t.limit, t.insert = nil, nil, nil, nil
		if t.multi != nil && t.multi.Kind != Refused {
			m := *t.multi
			m.Merge = nil
			t.multi, t.multiSQL, t.multiLimit = &m, nil, nil
		}
		if t.base.Kind == Refused && t.base.Err != nil && t.classes == nil {
			return t
		}
		if t.base.Kind == CopyIn {
			return refusedTemplate(StmtOther, "EXPLAIN of COPY", "")
		}
		return t
	}
	return b.utility(n)
}

// utility plans any other statement (DDL, VACUUM, ...). A statement that
// names tables of the map runs where they are: on every shard of their
// distribution (a broadcast) for a sharded table, on the table's shard
// for an unsharded one. DDL that names no table of the map — a table not
// in the map (which pgshard assumes exists on every shard), an index, a
// sequence, a view, a function, a type, a schema, ... — runs on every
// shard of the map when it has several, all or none like DDL on sharded
// tables, so that the shards' schemas never diverge; a temporary object
// (CREATE TEMP ..., a pg_temp name) stays on the session's server. Other
// utility statements (VACUUM, LISTEN, ...) go to the default shard.
func (b *builder) utility(n *pg.Node) *template {
	var tables []*tableInfo
	var names []string
	add := func(name string) {
		if ti := b.st.tables[name]; ti != nil && !slices.Contains(names, name) {
			tables = append(tables, ti)
			names = append(names, name)
		}
	}
	walk(n.ProtoReflect(), func(m protoreflect.Message) bool {
		switch x := m.Interface().(type) {
		case *pg.RangeVar:
			add(b.qualify(x))
		case *pg.DropStmt:
			// DROP names its objects as lists of strings, not RangeVars.
			for _, obj := range x.Objects {
				if name := b.objectTable(x.RemoveType, obj); name != "" {
					add(name)
				}
			}
		case *pg.CommentStmt:
			if name := b.objectTable(x.Objtype, x.Object); name != "" {
				add(name)
			}
		}
		return true
	})
	if len(tables) == 0 {
		if len(b.st.allShards) > 1 && schemaDDL(n) && !tempObject(n) {
			t := &template{hintable: true, base: Plan{Kind: Utility, Reach: ReachAll, Stmt: StmtOther, Broadcast: true, Shards: b.st.sortedAllShards()}}
			t.base.PerShardSQL = b.dropWhereExists(n.GetDropStmt(), t.base.Shards)
			return t
		}
		t := b.defaultTemplate(StmtOther)
		// NOTIFY acts alike on every shard (a listener pins its session
		// to one), and EXECUTE, FETCH, CLOSE, ... use the session's own
		// objects, wherever it is, as do temporary objects.
		t.base.Anywhere = n.GetNotifyStmt() != nil || sessionObjectStmt(n) || tempObject(n)
		return t
	}
	var dist = tables[0].dist
	sharded := false
	for _, ti := range tables {
		if ti.dist != dist {
			return refusedTemplate(StmtOther, "the statement names tables of different distributions ("+strings.Join(names, ", ")+")", "run it once per table")
		}
		sharded = sharded || ti.sharded()
	}
	if !sharded {
		return &template{hintable: true, base: Plan{Kind: Single, Reach: ReachDefault, Stmt: StmtOther, Shards: b.st.shardList(dist.DefaultShard)}}
	}
	return &template{hintable: true, dist: dist, base: Plan{Kind: Utility, Reach: ReachAll, Stmt: StmtOther, Broadcast: true,
		Shards: b.st.distShards[dist], Table: names[0]}}
}

// objectTable returns the qualified name of the table that object obj
// (a list of strings, as DROP and COMMENT give it) of type typ is or
// belongs to: the object itself for a relation, all but the last name
// for a trigger, policy, rule, column or constraint; else "".
func (b *builder) objectTable(typ pg.ObjectType, obj *pg.Node) string {
	l := obj.GetList()
	if l == nil {
		return ""
	}
	var parts []string
	for _, it := range l.Items {
		parts = append(parts, strings.ToLower(it.GetString_().GetSval()))
	}
	switch typ {
	case pg.ObjectType_OBJECT_TABLE, pg.ObjectType_OBJECT_VIEW, pg.ObjectType_OBJECT_MATVIEW, pg.ObjectType_OBJECT_FOREIGN_TABLE:
	case pg.ObjectType_OBJECT_TRIGGER, pg.ObjectType_OBJECT_POLICY, pg.ObjectType_OBJECT_RULE,
		pg.ObjectType_OBJECT_COLUMN, pg.ObjectType_OBJECT_TABCONSTRAINT:
		if len(parts) < 2 {
			return ""
		}
		parts = parts[:len(parts)-1]
	default:
		return ""
	}
	switch len(parts) {
	case 1:
		return b.st.opts.DefaultSchema + "." + parts[0]
	case 2:
		return parts[0] + "." + parts[1]
	}
	return ""
}

func txOp(k pg.TransactionStmtKind) TxOp {
	switch k {
	case pg.TransactionStmtKind_TRANS_STMT_BEGIN, pg.TransactionStmtKind_TRANS_STMT_START:
		return TxBegin
	case pg.TransactionStmtKind_TRANS_STMT_COMMIT:
		return TxCommit
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		return TxRollback
	case pg.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		return TxSavepoint
	case pg.TransactionStmtKind_TRANS_STMT_RELEASE:
		return TxRelease
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		return TxRollbackTo
	case pg.TransactionStmtKind_TRANS_STMT_PREPARE:
		return TxPrepare
	case pg.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED:
		return TxCommitPrepared
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED:
		return TxRollbackPrepared
	}
	return TxNone
}

// setStmt plans SET/RESET; pgshard.shard and pgshard.key are hints.
func (b *builder) setStmt(s *pg.VariableSetStmt) *template {
	name := strings.ToLower(s.Name)
	if name == "pgshard.shard" || name == "pgshard.key" {
		h := &HintSet{Name: strings.TrimPrefix(name, "pgshard.")}
		switch s.Kind {
		case pg.VariableSetKind_VAR_RESET, pg.VariableSetKind_VAR_SET_DEFAULT:
			h.Reset = true
		case pg.VariableSetKind_VAR_SET_VALUE:
			if len(s.Args) != 1 {
				return refusedTemplate(StmtSet, "SET "+name+" takes one value", "")
			}
			v, ok := b.setValue(s.Args[0])
			if !ok {
				return refusedTemplate(StmtSet, "SET "+name+" needs a constant value", "SET "+name+" = 'value'")
			}
			h.Value = v
		default:
			return refusedTemplate(StmtSet, "unsupported form of SET "+name, "")
		}
		if s.IsLocal {
			return refusedTemplate(StmtSet, "SET LOCAL "+name+" is not supported", "use SET "+name+" and RESET it after the transaction")
		}
		return &template{base: Plan{Kind: Any, Stmt: StmtSet, Hint: h, ReadOnly: true}}
	}
	t := b.defaultTemplate(StmtSet)
	t.base.ReadOnly = true
	return t
}

func (b *builder) setValue(n *pg.Node) (string, bool) {
	c := n.GetAConst()
	if c == nil {
		return "", false
	}
	b.pinConst(c)
	switch v := c.Val.(type) {
	case *pg.A_Const_Sval:
		return v.Sval.Sval, true
	case *pg.A_Const_Ival:
		return fmt.Sprint(v.Ival.Ival), true
	case *pg.A_Const_Fval:
		return v.Fval.Fval, true
	}
	return "", false
}

// walk calls f for every message in the tree rooted at m, depth first;
// f returns false to skip a message's children.
func walk(m protoreflect.Message, f func(protoreflect.Message) bool) {
	if !m.IsValid() || !f(m) {
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walk(l.Get(i).Message(), f)
			}
		case fd.IsMap():
		default:
			walk(v.Message(), f)
		}
		return true
	})
}
