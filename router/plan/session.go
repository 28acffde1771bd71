package plan

import (
	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Statements that keep the answer of a query for later — a prepared
// statement (PREPARE), a cursor (DECLARE), a new table or materialized
// view (CREATE TABLE AS, SELECT INTO) — and code the planner cannot look
// into (DO, CALL). Run on several shards, the first kind would keep one
// shard's rows on each, and a later EXECUTE, FETCH or read of the new
// table would answer from one of them: so they run only where their
// query runs on one shard, and the object is then where the session (or
// the map) will look for it.

// cursorOptHold is PostgreSQL's CURSOR_OPT_HOLD (DECLARE ... WITH HOLD).
const cursorOptHold = 0x0020

// oneShard makes the template of query q (planned by b.statement) the
// template of a statement that keeps q's answer (what): it runs where q
// runs on one shard, and is refused where q would need several shards or
// where the shard depends on values not in the statement (parameters).
func (b *builder) oneShard(q *template, what, hint string) *template {
	t := *q
	t.explain = false
	t.shardSQL, t.limit, t.multiSQL, t.multiLimit, t.insert, t.keyList = nil, nil, nil, nil, nil, nil
	t.union = nil // its per-shard statements would lose the wrapper
	several := Plan{Kind: Refused, Stmt: q.base.Stmt, Table: q.base.Table,
		Err: refusal(what+" would run on several shards and keep only one shard's rows on each", hint)}
	if q.dist != nil && len(b.st.distShards[q.dist]) == 1 {
		// The distribution has one shard: every row is there.
		several = Plan{Kind: Single, Reach: ReachKey, Stmt: q.base.Stmt, Table: q.base.Table, Shards: b.st.distShards[q.dist]}
	}
	base := t.base
	switch base.Kind {
	case Scatter, Utility, CopyOut:
		base = several
	case Refused:
	default:
		base.Merge, base.ShardSQL, base.PerShardSQL, base.PerShardRows, base.Calls = nil, "", nil, nil, nil
		base.Broadcast = false
	}
	base.ReadOnly, base.ReplicaSafe = false, false
	t.base = base
	if t.multi != nil {
		t.multi = &several
	}
	if t.classes != nil || t.onKeyError != nil {
		// The key is a parameter (or cannot be read): no one shard.
		unknown := several
		if unknown.Kind == Refused {
			unknown.Err = refusal(what+" cannot be routed to one shard from the statement alone", hint)
		}
		t.onKeyError = &unknown
	}
	return &t
}

// prepareStmt plans SQL-level PREPARE: on the one shard its statement
// names, where the session then stays (the statement pins it); refused
// when that shard depends on the parameters of each EXECUTE.
func (b *builder) prepareStmt(p *pg.PrepareStmt) *template {
	if p.Query == nil {
		return b.defaultTemplate(StmtOther)
	}
	return b.oneShard(b.statement(p.Query), "PREPARE "+p.Name,
		"Use protocol-level prepared statements (Parse/Bind, as drivers do), which pgshard routes by each execution's parameters; "+
			"or put the key in the statement, or route it with SET pgshard.shard.")
}

// declareStmt plans DECLARE CURSOR: on the one shard its query names
// (a WITH HOLD cursor then pins the session there).
func (b *builder) declareStmt(d *pg.DeclareCursorStmt) *template {
	if d.Query == nil {
		return b.defaultTemplate(StmtOther)
	}
	what := "DECLARE " + d.Portalname + " CURSOR"
	if d.Options&cursorOptHold != 0 {
		what += " WITH HOLD"
	}
	return b.oneShard(b.statement(d.Query), what,
		"Run the query itself (pgshard merges reads over several shards), add a condition on the sharding key, or route it with SET pgshard.shard.")
}

// createTarget is where the table (or materialized view) a CREATE TABLE
// AS or SELECT INTO creates must be made for pgshard to find it later.
type createTarget struct {
	name  string
	shard string // "" for a temporary table: the session's own server
}

// check refuses plan p when it would create the table elsewhere.
func (c *createTarget) check(p Plan) Plan {
	if p.Kind == Refused || p.Explain || c == nil {
		return p
	}
	if len(p.Shards) != 1 || !(p.Reach == ReachDefault || p.Kind == Single && p.Reach == ReachKey) {
		return Plan{Kind: Refused, Stmt: p.Stmt, Err: refusal("creating "+c.name+" from a query over several shards would keep only one shard's rows on each",
			"Add a condition on the sharding key so that the query reads one shard.")}
	}
	if c.shard != "" && p.Shards[0] != c.shard {
		return Plan{Kind: Refused, Stmt: p.Stmt, Err: refusal("creating "+c.name+" on shard "+p.Shards[0]+", where the query's rows are, but pgshard looks for "+c.name+" on shard "+c.shard,
			"Create the table on shard "+c.shard+" and fill it with INSERT through pgshard, or add "+c.name+" to the shard map on shard "+p.Shards[0]+" first.")}
	}
	return p
}

// createAs plans CREATE TABLE/MATERIALIZED VIEW ... AS query and SELECT
// INTO: allowed when the query reads one shard and the new table is made
// where pgshard will look for it — the shard of the map's entry for it,
// the default shard for a table not in the map, the session's server for
// a temporary table (which pins the session).
func (b *builder) createAs(into *pg.IntoClause, q *template, what string) *template {
	if into == nil || into.Rel == nil {
		return q
	}
	rv := into.Rel
	name := b.qualify(rv)
	c := &createTarget{name: name, shard: b.st.defaultShard}
	if rv.Relpersistence == "t" || rv.Schemaname == "pg_temp" {
		c.shard = ""
	} else if ti := b.st.tables[name]; ti != nil {
		if ti.sharded() {
			return &template{base: Plan{Kind: Refused, Stmt: StmtOther, Err: refusal(what+" into sharded table "+name+" would put every row on one shard",
				"Create the table on every shard, then INSERT the rows through pgshard, which routes each by its key.")}}
		}
		c.shard = ti.dist.DefaultShard
		if c.shard == "" {
			c.shard = b.st.defaultShard
		}
	}
	t := b.oneShard(q, what+" "+name, "Add a condition on the sharding key so that the query reads one shard.")
	if c.shard == "" {
		t.base.Anywhere = t.base.Anywhere && t.base.Reach == ReachDefault
	} else {
		t.base.Anywhere = false
	}
	t.creates = c
	return t
}

// createTableAs plans CREATE TABLE AS and CREATE MATERIALIZED VIEW AS.
func (b *builder) createTableAs(c *pg.CreateTableAsStmt) *template {
	what := "CREATE TABLE AS"
	if c.Objtype == pg.ObjectType_OBJECT_MATVIEW {
		what = "CREATE MATERIALIZED VIEW AS"
	}
	if c.Query.GetSelectStmt() == nil {
		// CREATE TABLE ... AS EXECUTE: the statement's shard is not known
		// here.
		if len(b.st.allShards) <= 1 {
			return b.defaultTemplate(StmtOther)
		}
		return refusedTemplate(StmtSelect, what+" EXECUTE is not supported over a shard map", "Use CREATE TABLE ... AS SELECT.")
	}
	return b.createAs(c.Into, b.statement(c.Query), what)
}

// viewStmt plans CREATE [OR REPLACE] VIEW. A view over a sharded table,
// made on every shard, would hold each shard's rows, and a read of the
// view (a table not in the map) would answer from the default shard only:
// refused. A view over unsharded tables only is DDL like any other.
func (b *builder) viewStmt(n *pg.Node) *template {
	v := n.GetViewStmt()
	var sharded string
	walk(v.Query.ProtoReflect(), func(m protoreflect.Message) bool {
		if rv, ok := m.Interface().(*pg.RangeVar); ok && sharded == "" {
			if ti := b.st.tables[b.qualify(rv)]; ti != nil && ti.sharded() {
				sharded = b.qualify(rv)
			}
		}
		return sharded == ""
	})
	if sharded == "" {
		return b.utility(n)
	}
	name := "a view"
	if v.View != nil {
		name = "view " + b.qualify(v.View)
	}
	return refusedTemplate(StmtOther, name+" over sharded table "+sharded+" would hold each shard's own rows, and a read of it would answer from one shard",
		"Query the tables themselves (pgshard merges reads over several shards), or keep the view's query in the application.")
}

// selectInto returns the INTO clause of a SELECT ... INTO, or nil.
func selectInto(sel *pg.SelectStmt) *pg.IntoClause {
	var into *pg.IntoClause
	walk(sel.ProtoReflect(), func(m protoreflect.Message) bool {
		if x, ok := m.Interface().(*pg.IntoClause); ok && into == nil {
			into = x
		}
		return into == nil
	})
	return into
}

// procStmt plans DO and CALL: pgshard cannot see which tables their code
// touches, so they run only where the client says (a hint), or on the
// shard of the session's open transaction (Plan.InTx); with one shard,
// there.
func (b *builder) procStmt(what string) *template {
	if len(b.st.allShards) <= 1 {
		return b.defaultTemplate(StmtOther)
	}
	t := refusedTemplate(StmtProc, what+" cannot be routed: pgshard does not see which shard's rows its code reads or writes",
		"Route it with SET pgshard.shard or a /* pgshard: shard=NAME */ comment, or run it inside a transaction that already runs on its shard.")
	t.base.InTx = true
	return t
}

// sessionObjectStmt reports whether n uses a prepared statement or
// cursor of the session (EXECUTE, FETCH, MOVE, CLOSE, DEALLOCATE): it
// runs where the session is, like a statement without a table.
func sessionObjectStmt(n *pg.Node) bool {
	return n.GetExecuteStmt() != nil || n.GetFetchStmt() != nil || n.GetClosePortalStmt() != nil || n.GetDeallocateStmt() != nil
}
