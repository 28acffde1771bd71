package plan

import (
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// selectStmt plans a SELECT (or VALUES).
func (b *builder) selectStmt(sel *pg.SelectStmt) *template {
	a := &analysis{b: b}
	a.selectStmt(sel, nil, true)
	rt := a.decide()
	ro := !a.locking && !a.writableCTE && !a.volatile && !a.into
	rs := ro && !a.unknownFunc
	if rt.refusal != nil {
		t := refusedTemplate(StmtSelect, rt.refusal.Message, rt.refusal.Hint)
		return t
	}
	if rt.dist == nil {
		return &template{hintable: true, describeAnywhere: rt.needShard == "",
			base: Plan{Kind: Single, Reach: ReachDefault, Stmt: StmtSelect, ReadOnly: ro, ReplicaSafe: rs, Shards: b.st.shardList(rt.defaultShard),
				Anywhere: rt.needShard == "" && !a.into && !a.writableCTE && !a.userFunc}}
	}
	// (SELECT INTO: see createAs.)
	dist := rt.dist.dist
	t := &template{hintable: true, dist: dist, needShard: rt.needShard}
	single := Plan{Kind: Single, Reach: ReachKey, Stmt: StmtSelect, ReadOnly: ro, ReplicaSafe: rs, Table: rt.table}
	// The plan for several shards.
	multi := Plan{Kind: Scatter, Reach: ReachAll, Stmt: StmtSelect, ReadOnly: ro, ReplicaSafe: rs, Table: rt.table, Shards: b.st.distShards[dist]}
	var segs []segment
	var lim *limitSrc
	var kl *keyList
	if rt.scatterOK != nil {
		multi = Plan{Kind: Refused, Stmt: StmtSelect, Table: rt.table, Err: rt.scatterOK}
	} else {
		a.keyList = a.keyListCond(&rt, sel.WhereClause)
		spec, s, l, err := b.scatterSpec(sel, a)
		if err != nil {
			multi = Plan{Kind: Refused, Stmt: StmtSelect, Table: rt.table, Err: err}
		} else {
			multi.Merge, segs, lim = spec, s, l
			multi.Calls = scatterCalls(sel)
			switch {
			case a.keyList == nil:
			case segs != nil:
				kl = a.keyList.split // of the statement rewritten for the merge
			default:
				kl = b.keyListSplit(sel, a.keyList.cond, a.keyList.srcs)
			}
		}
	}
	if rt.classes == nil {
		t.base = multi
		t.shardSQL, t.limit = segs, lim
		return t
	}
	t.base = single
	t.classes = rt.classes
	if cacheable(rt.dist) {
		t.rowKey = cacheKeySource(rt.classes)
		t.pointRead = t.rowKey != nil && rs && rt.needShard == "" && pointReadShape(sel, a)
	}
	onKeyError := multi
	if ro {
		t.union = b.unionTemplate(sel, &rt)
		if t.union != nil && multi.Kind == Refused {
			// The template of a UNION ALL over several shards (unionPlan).
			multi = Plan{Kind: Scatter, Reach: ReachKey, Stmt: StmtSelect, ReadOnly: ro, ReplicaSafe: rs, Table: rt.table}
		}
	}
	t.multi = &multi
	t.multiSQL, t.multiLimit = segs, lim
	if t.union == nil {
		t.keyList = kl
	}
	t.onKeyError, t.keyErrorMulti = &onKeyError, true
	return t
}

// modify plans UPDATE and DELETE.
func (b *builder) modify(kind Stmt, rel *pg.RangeVar, from []*pg.Node, where *pg.Node, with *pg.WithClause, set []*pg.Node, stmt *pg.Node) *template {
	a := &analysis{b: b}
	sc := &scope{}
	a.with(with, sc)
	target := a.addRef(rel, sc, true)
	for _, f := range from {
		a.fromItem(f, sc, true, true)
	}
	a.where(where, sc, true)
	for _, n := range set {
		a.exprs(n, sc)
	}
	if r := stmt.GetUpdateStmt(); r != nil {
		for _, n := range r.ReturningList {
			a.exprs(n, sc)
		}
	} else if r := stmt.GetDeleteStmt(); r != nil {
		for _, n := range r.ReturningList {
			a.exprs(n, sc)
		}
	}
	if target.sharded() {
		key := target.ti.t.KeyColumn
		for _, n := range set {
			rt := n.GetResTarget()
			if rt == nil {
				continue
			}
			if strings.ToLower(rt.Name) == key {
				return refusedTemplate(kind, "UPDATE of "+target.name+" changes its sharding key "+key+", which could move the row to another shard",
					"DELETE the row and INSERT it with the new key")
			}
			if ml := rt.Val.GetMultiAssignRef(); ml != nil && strings.ToLower(rt.Name) == key {
				return refusedTemplate(kind, "UPDATE changes sharding key "+key, "DELETE and INSERT instead")
			}
		}
	}
	rt := a.decide()
	if rt.refusal != nil {
		return refusedTemplate(kind, rt.refusal.Message, rt.refusal.Hint)
	}
	if rt.dist == nil {
		return &template{hintable: true, base: Plan{Kind: Single, Reach: ReachDefault, Stmt: kind, Shards: b.st.shardList(rt.defaultShard)}}
	}
	dist := rt.dist.dist
	t := &template{hintable: true, dist: dist, needShard: rt.needShard}
	broadcast := Plan{Kind: Scatter, Reach: ReachAll, Stmt: kind, Broadcast: true, Table: rt.table, Shards: b.st.distShards[dist]}
	if rt.scatterOK != nil {
		broadcast = Plan{Kind: Refused, Stmt: kind, Table: rt.table, Err: rt.scatterOK}
	}
	if rt.classes == nil {
		t.base = broadcast
		return t
	}
	t.base = Plan{Kind: Single, Reach: ReachKey, Stmt: kind, Table: rt.table}
	t.classes = rt.classes
	if cacheable(rt.dist) {
		t.rowKey = cacheKeySource(rt.classes)
	}
	m := broadcast
	if m.Kind != Refused {
		m.Broadcast = false
	}
	t.multi = &m
	t.onKeyError = &broadcast
	return t
}
