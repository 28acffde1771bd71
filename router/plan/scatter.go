package plan

import (
	"slices"

	pg "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgshard/pgshard/router/merge"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Aggregates the merger combines exactly.
var mergeableAggs = map[string]merge.Combine{
	"count": merge.CombineCount, "sum": merge.CombineSum, "min": merge.CombineMin, "max": merge.CombineMax,
	"bool_and": merge.CombineBoolAnd, "every": merge.CombineBoolAnd, "bool_or": merge.CombineBoolOr,
	"avg": merge.CombineSum, // rewritten as sum and count
}

// Aggregates whose result cannot be rebuilt from per-shard results (or
// depends on row order across shards).
var unmergeableAggs = map[string]bool{
	"string_agg": true, "array_agg": true, "json_agg": true, "jsonb_agg": true, "json_object_agg": true,
	"jsonb_object_agg": true, "xmlagg": true, "percentile_cont": true, "percentile_disc": true, "mode": true,
	"stddev": true, "stddev_pop": true, "stddev_samp": true, "variance": true, "var_pop": true, "var_samp": true,
	"corr": true, "covar_pop": true, "covar_samp": true, "regr_avgx": true, "regr_avgy": true, "regr_count": true,
	"regr_intercept": true, "regr_r2": true, "regr_slope": true, "regr_sxx": true, "regr_sxy": true, "regr_syy": true,
	"bit_and": true, "bit_or": true, "bit_xor": true, "range_agg": true, "range_intersect_agg": true,
	"rank": true, "dense_rank": true, "percent_rank": true, "cume_dist": true, "json_arrayagg": true, "json_objectagg": true,
	"any_value": true,
}

// markerBase numbers the parameters that stand for literals while a
// rewritten statement is deparsed; real parameters are at most 65535.
const markerBase = 1000000

// gateBase numbers the parameters that stand for the LIMIT of UNION ALL
// parts (see unionSplit).
const gateBase = 2 * markerBase

// scatterKeyHint is the hint of most refusals of a scatter: run on one
// shard instead.
const scatterKeyHint = "add a condition on the sharding key so that the query runs on one shard, or use SET pgshard.shard"

// cannotMerge refuses a SELECT on several shards because of what.
func cannotMerge(what, hint string) *RefusalError {
	return refusal(what+" cannot be merged exactly from several shards", hint)
}

// scatterSpec builds the merge.Spec of a SELECT that runs on several
// shards, and the rewritten statement for the shards when it differs.
//
// a is the statement's analysis: it tells which columns are sharding keys
// (GROUP BY, DISTINCT ON and window partitions on a key need no merging).
//
// The steps, in order (each may refuse the statement): the clauses that
// cannot be merged at all (checkMergeable), the select list (targets),
// GROUP BY (groupBy), ORDER BY (orderBy), LIMIT/OFFSET (limit), and then
// the spec and the shards' statement (finish).
func (b *builder) scatterSpec(sel *pg.SelectStmt, a *analysis) (*merge.Spec, []segment, *limitSrc, *RefusalError) {
	if sel.Op != pg.SetOperation_SETOP_NONE {
		return nil, nil, nil, cannotMerge("UNION/INTERSECT/EXCEPT", scatterKeyHint)
	}
	if len(sel.ValuesLists) > 0 {
		return nil, nil, nil, nil
	}
	m := &mergeBuild{b: b, sel: sel, a: a, spec: &merge.Spec{Limit: -1}}
	if err := m.checkMergeable(); err != nil {
		return nil, nil, nil, err
	}
	if err := m.targets(); err != nil {
		return nil, nil, nil, err
	}
	if err := m.groupBy(); err != nil {
		return nil, nil, nil, err
	}
	if err := m.orderBy(); err != nil {
		return nil, nil, nil, err
	}
	if err := m.limit(); err != nil {
		return nil, nil, nil, err
	}
	return m.finish()
}

// shardCol is a column of the shards' rows: how the merge combines it,
// and its expression (nil for ones the merge never evaluates).
type shardCol struct {
	combine merge.Combine
	expr    *pg.Node
}

// aggExprArgs are the aggregates of an expression of aggregates in the
// select list, which the shards compute and the merge combines.
type aggExprArgs struct {
	final int                 // the FinalExpr column
	args  []merge.FinalColumn // its aggregates, hidden, appended after the select list
}

// mergeBuild is the state of scatterSpec's steps.
type mergeBuild struct {
	b   *builder
	sel *pg.SelectStmt
	a   *analysis

	spec        *merge.Spec
	partitioned bool // GROUP BY a key column: each shard's groups are final
	aggregated  bool // the shards' rows are groups the merge combines

	cols          []shardCol          // the shards' columns
	final         []merge.FinalColumn // the client's columns (and hidden ones)
	byteOrderCols []int               // min/max of COLLATE "C" arguments
	newTargets    []*pg.Node          // the shards' select list ...
	hidden        []*pg.Node          // ... and the hidden columns after it
	exprArgs      []aggExprArgs

	star, qualifiedStar bool
	rewrite             bool // the shards run a rewritten statement
	tail                int  // hidden sort columns after SELECT *

	lim            *limitSrc
	hasCnt, hasOff bool
}

// checkMergeable refuses the clauses whose result the merge cannot
// rebuild, and values that differ from shard to shard. It sets
// partitioned and spec.Distinct.
func (m *mergeBuild) checkMergeable() *RefusalError {
	sel, a := m.sel, m.a
	// Groups (GROUP BY a key column) each on one shard: each shard's rows
	// are final, whatever the aggregates, HAVING or DISTINCT inside.
	m.partitioned = a.groupedByKey(sel)
	if window, byKey := a.windowsByKey(sel); window && !byKey || len(sel.WindowClause) > 0 && !window {
		return cannotMerge("a window function not partitioned by the sharding key", "add the sharding key to PARTITION BY, or "+scatterKeyHint)
	}
	if sel.LimitOption == pg.LimitOption_LIMIT_OPTION_WITH_TIES {
		return cannotMerge("FETCH ... WITH TIES", "use LIMIT")
	}
	if len(sel.DistinctClause) > 0 {
		if len(sel.DistinctClause) == 1 && sel.DistinctClause[0].GetNode() == nil {
			m.spec.Distinct = true
		} else if !slices.ContainsFunc(sel.DistinctClause, func(n *pg.Node) bool { return a.keyedOutput(n, sel.TargetList) }) {
			return cannotMerge("SELECT DISTINCT ON without the sharding key", "add the sharding key to DISTINCT ON, use GROUP BY, or "+scatterKeyHint)
		}
		// DISTINCT ON a key: each shard keeps the right row of its own
		// groups; the merge only orders.
	}
	for _, g := range sel.GroupClause {
		if g.GetGroupingSet() != nil {
			return cannotMerge("GROUPING SETS, ROLLUP and CUBE", scatterKeyHint)
		}
	}
	aggregated := len(sel.GroupClause) > 0 || sel.HavingClause != nil
	for _, n := range sel.TargetList {
		aggregated = aggregated || hasAggregate(n)
	}
	if err := m.checkPerShardValues(aggregated); err != nil {
		return err
	}
	if windowed, _ := a.windowsByKey(sel); windowed && aggregated && !m.partitioned {
		return cannotMerge("a window function over groups merged from several shards", "group by the sharding key, or "+scatterKeyHint)
	}
	if len(sel.DistinctClause) > 0 && !m.spec.Distinct && aggregated && !m.partitioned {
		return cannotMerge("SELECT DISTINCT ON over groups merged from several shards", "group by the sharding key, or "+scatterKeyHint)
	}
	if sel.HavingClause != nil && hasAggregate(sel.HavingClause) && !m.partitioned {
		return cannotMerge("HAVING with an aggregate", "filter the merged groups in the application, or "+scatterKeyHint)
	}
	return nil
}

// checkPerShardValues refuses a value each shard computes differently
// (its clock, its address, its settings): it is not PostgreSQL's one
// value, and as a group key it would split groups by shard. aggregated
// says the statement has groups.
func (m *mergeBuild) checkPerShardValues(aggregated bool) *RefusalError {
	sel := m.sel
	if c := systemColumn(sel); c != "" {
		return cannotMerge("system column "+c+" (its values are each shard's own)", scatterKeyHint)
	}
	// ... also when it comes from a subquery, function or CTE in FROM.
	var derived []*pg.Node
	if sel.WithClause != nil {
		for _, c := range sel.WithClause.Ctes {
			if cte := c.GetCommonTableExpr(); cte != nil {
				derived = append(derived, cte.Ctequery)
			}
		}
	}
	for _, f := range sel.FromClause {
		walk(f.ProtoReflect(), func(pm protoreflect.Message) bool {
			switch x := pm.Interface().(type) {
			case *pg.RangeSubselect:
				derived = append(derived, x.Subquery)
				return false
			case *pg.RangeFunction:
				derived = append(derived, x.Functions...)
				return false
			}
			return true
		})
	}
	for _, l := range [][]*pg.Node{sel.TargetList, sel.GroupClause, sel.SortClause, derived} {
		for _, n := range l {
			if f := perShardCall(n, aggregated); f != "" {
				return cannotMerge(f+" (a value that differs from shard to shard, or from row to row"+
					" where PostgreSQL computes it once per group)", scatterKeyHint)
			}
		}
	}
	return nil
}

// addAgg adds the shard columns of aggregate fc (rt: the select-list
// item it is, or nil inside an expression) and returns its final
// column.
func (m *mergeBuild) addAgg(fc *pg.FuncCall, rt *pg.ResTarget) (merge.FinalColumn, *RefusalError) {
	fname := funcName(fc)
	c, ok := mergeableAggs[fname]
	switch {
	case !ok || unmergeableAggs[fname]:
		return merge.FinalColumn{}, refusal("aggregate "+fname+"() cannot be merged exactly from several shards", "compute it per shard with a pgshard.shard hint, or "+scatterKeyHint)
	case fc.AggDistinct && (fname == "bool_and" || fname == "bool_or" || fname == "every" || !m.a.keyedAggArg(fc)):
		// Over the sharding key, each shard's distinct values are
		// none of another's: the shards' results combine as usual.
		return merge.FinalColumn{}, refusal(fname+"(DISTINCT ...) cannot be merged exactly from several shards", "count distinct values of the sharding key, or per key with GROUP BY, or "+scatterKeyHint)
	case fc.AggWithinGroup:
		return merge.FinalColumn{}, refusal(fname+" WITHIN GROUP cannot be merged exactly from several shards", scatterKeyHint)
	case hasAggregate(&pg.Node{Node: &pg.Node_List{List: &pg.List{Items: fc.Args}}}):
		return merge.FinalColumn{}, refusal("a nested aggregate cannot be merged exactly from several shards", "")
	}
	m.aggregated = true
	val := &pg.Node{Node: &pg.Node_FuncCall{FuncCall: fc}}
	target := &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: val}}}
	if rt != nil {
		val = rt.Val
		target = &pg.Node{Node: &pg.Node_ResTarget{ResTarget: rt}}
	}
	if fname == "avg" {
		m.rewrite = true
		sum := proto.Clone(fc).(*pg.FuncCall)
		sum.Funcname = []*pg.Node{pg.MakeStrNode("sum")}
		cnt := proto.Clone(fc).(*pg.FuncCall)
		cnt.Funcname = []*pg.Node{pg.MakeStrNode("count")}
		// avg itself too, unmerged: over double precision it
		// raises PostgreSQL's overflow error (22003) where the
		// sum alone would not.
		chk := proto.Clone(fc).(*pg.FuncCall)
		f := merge.FinalColumn{Kind: merge.FinalAvg, Source: len(m.cols), CountSource: len(m.cols) + 1, Name: "avg"}
		alias := ""
		if rt != nil {
			alias, _ = outputName(rt)
			f.Name = alias
			alias = rt.Name
		}
		m.cols = append(m.cols, shardCol{merge.CombineSum, val}, shardCol{merge.CombineCount, nil}, shardCol{merge.CombineCheck, nil})
		m.newTargets = append(m.newTargets,
			&pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Name: alias, Val: &pg.Node{Node: &pg.Node_FuncCall{FuncCall: sum}}}}},
			&pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: &pg.Node{Node: &pg.Node_FuncCall{FuncCall: cnt}}}}},
			&pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: &pg.Node{Node: &pg.Node_FuncCall{FuncCall: chk}}}}})
		return f, nil
	}
	if byteOrder, err := minMaxCollation(fc, scatterKeyHint); err != nil {
		return merge.FinalColumn{}, err
	} else if byteOrder {
		m.byteOrderCols = append(m.byteOrderCols, len(m.cols))
	}
	f := merge.FinalColumn{Kind: merge.FinalColumnValue, Source: len(m.cols)}
	m.cols = append(m.cols, shardCol{c, val})
	m.newTargets = append(m.newTargets, target)
	return f, nil
}

// targets maps the select list to the shards' columns and the client's
// (final) columns: aggregates become the parts the merge combines, an
// expression of aggregates is computed by the merge over hidden
// aggregate columns.
func (m *mergeBuild) targets() *RefusalError {
	sel := m.sel
	m.aggregated = len(sel.GroupClause) > 0
	m.newTargets = make([]*pg.Node, 0, len(sel.TargetList)+2)
	for _, n := range sel.TargetList {
		rt := n.GetResTarget()
		if rt == nil {
			return cannotMerge("this target list", "")
		}
		if cr := rt.Val.GetColumnRef(); cr != nil && len(cr.Fields) > 0 && cr.Fields[len(cr.Fields)-1].GetAStar() != nil {
			m.star = true
			m.qualifiedStar = m.qualifiedStar || len(cr.Fields) > 1
			m.newTargets = append(m.newTargets, n)
			continue
		}
		name, _ := outputName(rt)
		if fc := rt.Val.GetFuncCall(); fc != nil && isAggCall(fc) && !m.partitioned {
			f, err := m.addAgg(fc, rt)
			if err != nil {
				return err
			}
			if f.Kind != merge.FinalAvg {
				f.Name = ""
			}
			m.final = append(m.final, f)
			continue
		}
		if hasAggregate(rt.Val) && !m.partitioned {
			// An expression of aggregates: the shards compute the
			// aggregates, the merge the expression.
			var args []merge.FinalColumn
			first := len(m.cols)
			e, err := m.b.aggExpr(rt.Val, func(fc *pg.FuncCall) (int, *RefusalError) {
				f, err := m.addAgg(fc, nil)
				if err != nil {
					return 0, err
				}
				f.Hidden, f.Name = true, ""
				args = append(args, f)
				return len(args) - 1, nil
			})
			if err != nil {
				return err
			}
			m.final = append(m.final, merge.FinalColumn{Kind: merge.FinalExpr, Source: first, Name: name, Expr: e})
			m.exprArgs = append(m.exprArgs, aggExprArgs{final: len(m.final) - 1, args: args})
			m.rewrite = true
			continue
		}
		m.final = append(m.final, merge.FinalColumn{Kind: merge.FinalColumnValue, Source: len(m.cols)})
		m.cols = append(m.cols, shardCol{merge.CombineNone, rt.Val})
		m.newTargets = append(m.newTargets, n)
	}
	if m.spec.Distinct && len(m.exprArgs) > 0 {
		return cannotMerge("SELECT DISTINCT with an expression of aggregates", "select the aggregates themselves, group by the sharding key, or "+scatterKeyHint)
	}
	// The aggregates of expressions are hidden final columns after the
	// select list's.
	for _, x := range m.exprArgs {
		base := len(m.final)
		m.final = append(m.final, x.args...)
		shiftColumns(m.final[x.final].Expr, base)
	}
	if m.partitioned {
		m.aggregated = false
	}
	if m.star && (m.aggregated || len(sel.GroupClause) > 0 && !m.partitioned) {
		return cannotMerge("SELECT * with aggregates", "list the columns")
	}
	return nil
}

// addHidden adds a column the shards compute for the merge only, after
// the select list, and returns its shard column.
func (m *mergeBuild) addHidden(e *pg.Node, c merge.Combine) int {
	m.hidden = append(m.hidden, &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: proto.Clone(e).(*pg.Node)}}})
	m.cols = append(m.cols, shardCol{c, e})
	return len(m.cols) - 1
}

// finalIndex finds the final column an ORDER BY / GROUP BY item names.
// A bare name in GROUP BY means the input column when there is one
// (PostgreSQL's rule; in ORDER BY the output column wins): group is
// set for GROUP BY items, and a name that is also an output alias of
// a different expression is ambiguous to the planner, which does not
// know the tables' columns (the third result is set).
func (m *mergeBuild) finalIndex(n *pg.Node, group bool) (int, bool, bool) {
	b, sel := m.b, m.sel
	if c := n.GetAConst(); c != nil {
		b.pinConst(c) // ORDER BY 1 is a position, ORDER BY 1.5 an error
		if iv := c.GetIval(); iv != nil {
			k := int(iv.Ival) - 1
			if k < 0 || k >= len(m.final) || m.star {
				return -1, false, false
			}
			return k, true, false
		}
		return -1, false, false
	}
	if cr := n.GetColumnRef(); cr != nil && len(cr.Fields) == 1 && cr.Fields[0].GetString_() != nil {
		name := cr.Fields[0].GetString_().Sval
		if !group {
			same, unknown := 0, false
			for _, t := range sel.TargetList {
				if rt := t.GetResTarget(); rt != nil {
					on, known := outputName(rt)
					if on == name {
						same++
					}
					unknown = unknown || !known
				}
			}
			if same > 1 || same == 0 && unknown {
				// PostgreSQL: ORDER BY "name" is ambiguous; or an item
				// whose name the planner cannot tell (a scalar
				// subquery's column) may be the one named.
				return -1, false, true
			}
		}
		for i, t := range sel.TargetList {
			rt := t.GetResTarget()
			if rt == nil {
				continue
			}
			// ORDER BY names an output column by its name, given or
			// PostgreSQL's own (count, lower, ?column?, ...); GROUP BY
			// only by a given one (else it is an input column).
			on, _ := outputName(rt)
			if rt.Name != "" && rt.Name == name || !group && on == name {
				if group && !isColumn(rt.Val, name) {
					if refersTo(rt.Val, name) {
						// The input column exists: group by it (hidden).
						return -1, false, false
					}
					return -1, false, true
				}
				k, ok := finalOf(m.final, i, sel.TargetList)
				return k, ok, false
			}
		}
	}
	k := exprKey(n)
	for i, t := range sel.TargetList {
		if rt := t.GetResTarget(); rt != nil && exprKey(rt.Val) == k {
			// The match depends on the literals in both expressions
			// (id % 5 is not id % 7): the plan applies only to them.
			b.pinConsts(n)
			b.pinConsts(rt.Val)
			k, ok := finalOf(m.final, i, sel.TargetList)
			return k, ok, false
		}
	}
	// No match: a hidden column, right for any literals. Where other
	// literals would match an item (id % 7 against id % 5), those
	// literals get their own plan, as the cache must give the plan a
	// fresh parse gives.
	shape := shapeKey(n)
	for _, t := range sel.TargetList {
		if rt := t.GetResTarget(); rt != nil && shapeKey(rt.Val) == shape {
			b.pinConsts(n)
			b.pinConsts(rt.Val)
		}
	}
	return -1, false, false
}

// groupBy finds the final column of each GROUP BY item, or adds a hidden
// column the merge groups by.
func (m *mergeBuild) groupBy() *RefusalError {
	for _, g := range m.sel.GroupClause {
		if m.partitioned {
			break // no merging of groups
		}
		_, ok, ambiguous := m.finalIndex(g, true)
		if ambiguous {
			name := g.GetColumnRef().Fields[0].GetString_().Sval
			return cannotMerge("GROUP BY "+name+", which names both an output column and possibly an input column,",
				"group by the expression itself or by its position (GROUP BY 1), or give the output column another name")
		}
		if ok {
			continue
		}
		if g.GetAConst() != nil {
			return cannotMerge("GROUP BY a position out of range", "")
		}
		if m.star {
			return cannotMerge("SELECT * with GROUP BY", "list the columns")
		}
		m.addHidden(g, merge.CombineNone)
		m.rewrite = true
	}
	return nil
}

// orderBy builds the merge's sort keys: each ORDER BY item is a final
// column, or a hidden one the shards add.
func (m *mergeBuild) orderBy() *RefusalError {
	b, sel, spec := m.b, m.sel, m.spec
	for _, s := range sel.SortClause {
		sb := s.GetSortBy()
		if sb == nil || sb.SortbyDir == pg.SortByDir_SORTBY_USING {
			return cannotMerge("ORDER BY ... USING", "")
		}
		key := merge.SortKey{Desc: sb.SortbyDir == pg.SortByDir_SORTBY_DESC}
		key.NullsFirst = key.Desc
		switch sb.SortbyNulls {
		case pg.SortByNulls_SORTBY_NULLS_FIRST:
			key.NullsFirst = true
		case pg.SortByNulls_SORTBY_NULLS_LAST:
			key.NullsFirst = false
		}
		coll, byteOrder := explicitCollation(sb.Node)
		if c := sb.Node.GetAConst(); m.star && c != nil {
			b.pinConst(c) // a position, or a constant refused
		}
		if c := sb.Node.GetAConst(); m.star && c != nil && c.GetIval() != nil && c.GetIval().Ival > 0 {
			// ORDER BY a position under SELECT *: the same column of the
			// shards' rows (hidden columns come after the client's; the
			// merge checks that the position is among those).
			key.Column = int(c.GetIval().Ival) - 1
			spec.OrderBy = append(spec.OrderBy, key)
			continue
		}
		if m.star {
			// The shards sort by a hidden column after the star's, which
			// the merge finds from the end of their RowDescription.
			if err := b.starSortKey(sel, sb.Node, m.qualifiedStar, spec.Distinct); err != nil {
				return err
			}
			if coll != "" && !byteOrder {
				return cannotMerge(`ORDER BY under collation "`+coll+`"`, `sort by byte order with COLLATE "C", or `+scatterKeyHint)
			}
			key.ByteOrder = byteOrder
			m.addHidden(sb.Node, merge.CombineNone)
			key.Column, key.Tail = m.tail, true
			m.tail++
			m.rewrite = true
			spec.OrderBy = append(spec.OrderBy, key)
			continue
		}
		k, ok, ambiguous := m.finalIndex(sb.Node, false)
		if ambiguous {
			return cannotMerge("ORDER BY a name that several output columns have (or that a scalar subquery's column may have)", "order by position or by a qualified column")
		}
		if ok && k < len(sel.TargetList) && coll == "" {
			if rt := sel.TargetList[k].GetResTarget(); rt != nil {
				coll, byteOrder = explicitCollation(rt.Val)
			}
		}
		key.ByteOrder = byteOrder
		if coll != "" && !byteOrder {
			// The merge compares bytes: exact for "C" only.
			return cannotMerge(`ORDER BY under collation "`+coll+`"`, `sort by byte order with COLLATE "C", or `+scatterKeyHint)
		}
		if ok {
			key.Column = k
		} else {
			if err := m.hiddenSortColumn(sb.Node); err != nil {
				return err
			}
			key.Column = len(m.final) - 1
		}
		spec.OrderBy = append(spec.OrderBy, key)
	}
	return nil
}

// hiddenSortColumn adds an ORDER BY item that is no final column as a
// hidden one (listed in Final with Hidden set).
func (m *mergeBuild) hiddenSortColumn(n *pg.Node) *RefusalError {
	if m.star {
		return cannotMerge("ORDER BY a column of SELECT *", "list the columns in the select list instead of *, or "+scatterKeyHint)
	}
	if n.GetAConst() != nil {
		return cannotMerge("ORDER BY a position out of range", "")
	}
	c := merge.CombineNone
	if m.aggregated {
		fc := n.GetFuncCall()
		if fc == nil || !isAggCall(fc) {
			if hasAggregate(n) {
				return cannotMerge("ORDER BY an expression of aggregates", "select the aggregate and order by its position")
			}
			// An expression of group keys: a group key column too.
		} else {
			fname := funcName(fc)
			cc, ok := mergeableAggs[fname]
			if !ok || fname == "avg" || fc.AggDistinct || unmergeableAggs[fname] {
				return cannotMerge("ORDER BY aggregate "+fname+"() not in the select list", "add it to the select list")
			}
			byteOrder, err := minMaxCollation(fc, scatterKeyHint)
			if err != nil {
				return err
			}
			if byteOrder {
				m.byteOrderCols = append(m.byteOrderCols, len(m.cols))
			}
			c = cc
		}
	}
	m.final = append(m.final, merge.FinalColumn{Kind: merge.FinalColumnValue, Source: m.addHidden(n, c), Hidden: true})
	m.rewrite = true
	return nil
}

// limit reads LIMIT and OFFSET (constants or parameters, filled in at
// execution).
func (m *mergeBuild) limit() *RefusalError {
	limitVal := func(n *pg.Node) (valueSrc, bool, bool) {
		if n == nil {
			return valueSrc{}, false, true
		}
		if c := n.GetAConst(); c != nil && c.Isnull {
			return valueSrc{}, false, true // LIMIT NULL / ALL
		}
		v, ok := m.b.value(n)
		return v, ok, ok
	}
	cnt, hasCnt, ok1 := limitVal(m.sel.LimitCount)
	off, hasOff, ok2 := limitVal(m.sel.LimitOffset)
	if !ok1 || !ok2 {
		return cannotMerge("LIMIT or OFFSET with an expression", "use a constant or a parameter")
	}
	m.hasCnt, m.hasOff = hasCnt, hasOff
	if hasCnt || hasOff {
		m.lim = &limitSrc{count: cnt, offset: off, hasCount: hasCnt, hasOffset: hasOff}
		if hasOff || m.aggregated {
			m.rewrite = true
		}
	}
	return nil
}

// finish completes the spec and deparses the shards' statement when it
// differs from the client's. A statement the merge only concatenates
// has no spec.
func (m *mergeBuild) finish() (*merge.Spec, []segment, *limitSrc, *RefusalError) {
	spec, cols := m.spec, m.cols
	if !m.aggregated {
		for i := range cols {
			cols[i].combine = merge.CombineNone
		}
	}
	if m.aggregated && (len(m.exprArgs) > 0 || slices.ContainsFunc(cols, func(c shardCol) bool { return c.combine == merge.CombineSum })) {
		// Sums and averages of floats are written by the merger: in text
		// as the session's extra_float_digits says, which the shards
		// report in a hidden column.
		setting := &pg.Node{Node: &pg.Node_FuncCall{FuncCall: &pg.FuncCall{
			Funcname: []*pg.Node{pg.MakeStrNode("pg_catalog"), pg.MakeStrNode("current_setting")},
			Args:     []*pg.Node{pg.MakeAConstStrNode("extra_float_digits", -1)}, Location: -1}}}
		m.addHidden(setting, merge.CombineFloatDigits)
		cols = m.cols
		m.rewrite = true
	}
	if !m.aggregated && !m.rewrite && !spec.Distinct && len(spec.OrderBy) == 0 && m.lim == nil {
		return nil, nil, nil, nil // plain concatenation
	}
	spec.Group = len(m.sel.GroupClause) > 0 && !m.partitioned
	spec.HiddenTail = m.tail
	if !m.star {
		spec.Combine = make([]merge.Combine, len(cols))
		for i, c := range cols {
			spec.Combine[i] = c.combine
		}
		spec.Final = m.final
		if len(m.byteOrderCols) > 0 {
			spec.ByteOrder = make([]bool, len(cols))
			for _, c := range m.byteOrderCols {
				spec.ByteOrder[c] = true
			}
		}
	}
	if !m.rewrite {
		return spec, nil, m.lim, nil
	}
	out := m.shardStatement()
	if kl := m.a.keyList; kl != nil {
		kl.split = m.b.keyListSplit(out, kl.cond, kl.srcs)
	}
	segs, err := m.b.deparseMarked(out)
	if err != nil {
		return nil, nil, nil, cannotMerge("this statement (it could not be rewritten for the shards: "+err.Error()+")", scatterKeyHint)
	}
	return spec, segs, m.lim, nil
}

// shardStatement is the statement the shards run: the rewritten select
// list and hidden columns; groups are merged before ORDER BY and LIMIT,
// and each shard returns OFFSET+LIMIT rows.
func (m *mergeBuild) shardStatement() *pg.SelectStmt {
	sel := m.sel
	out := proto.Clone(sel).(*pg.SelectStmt)
	out.TargetList = append(cloneNodes(m.newTargets), m.hidden...)
	if m.aggregated {
		out.SortClause, out.LimitCount, out.LimitOffset = nil, nil, nil
		out.LimitOption = pg.LimitOption_LIMIT_OPTION_DEFAULT
	} else if m.hasOff {
		if m.hasCnt {
			// Cast both sides: "$1 + $2" of untyped parameters is
			// ambiguous to the server, while LIMIT $1 alone is bigint.
			out.LimitCount = &pg.Node{Node: &pg.Node_AExpr{AExpr: &pg.A_Expr{Kind: pg.A_Expr_Kind_AEXPR_OP,
				Name: []*pg.Node{pg.MakeStrNode("+")}, Lexpr: castInt8(sel.LimitCount), Rexpr: castInt8(sel.LimitOffset)}}}
		}
		out.LimitOffset = nil
	}
	return out
}
