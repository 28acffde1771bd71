package plan

import (
	"slices"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgshard/pgshard/router/merge"
	"github.com/pgshard/pgshard/router/sqllex"
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

// scatterSpec builds the merge.Spec of a SELECT that runs on several
// shards, and the rewritten statement for the shards when it differs.
//
// a is the statement's analysis: it tells which columns are sharding keys
// (GROUP BY, DISTINCT ON and window partitions on a key need no merging).
func (b *builder) scatterSpec(sel *pg.SelectStmt, a *analysis) (*merge.Spec, []segment, *limitSrc, *RefusalError) {
	no := func(what, hint string) (*merge.Spec, []segment, *limitSrc, *RefusalError) {
		return nil, nil, nil, refusal(what+" cannot be merged exactly from several shards", hint)
	}
	keyHint := "add a condition on the sharding key so that the query runs on one shard, or use SET pgshard.shard"
	if sel.Op != pg.SetOperation_SETOP_NONE {
		return no("UNION/INTERSECT/EXCEPT", keyHint)
	}
	if len(sel.ValuesLists) > 0 {
		return nil, nil, nil, nil
	}
	// Groups (GROUP BY a key column) each on one shard: each shard's rows
	// are final, whatever the aggregates, HAVING or DISTINCT inside.
	partitioned := a.groupedByKey(sel)
	if window, byKey := a.windowsByKey(sel); window && !byKey || len(sel.WindowClause) > 0 && !window {
		return no("a window function not partitioned by the sharding key", "add the sharding key to PARTITION BY, or "+keyHint)
	}
	if sel.LimitOption == pg.LimitOption_LIMIT_OPTION_WITH_TIES {
		return no("FETCH ... WITH TIES", "use LIMIT")
	}
	spec := &merge.Spec{Limit: -1}
	if len(sel.DistinctClause) > 0 {
		if len(sel.DistinctClause) == 1 && sel.DistinctClause[0].GetNode() == nil {
			spec.Distinct = true
		} else if !slices.ContainsFunc(sel.DistinctClause, func(n *pg.Node) bool { return a.keyedOutput(n, sel.TargetList) }) {
			return no("SELECT DISTINCT ON without the sharding key", "add the sharding key to DISTINCT ON, use GROUP BY, or "+keyHint)
		}
		// DISTINCT ON a key: each shard keeps the right row of its own
		// groups; the merge only orders.
	}
	for _, g := range sel.GroupClause {
		if g.GetGroupingSet() != nil {
			return no("GROUPING SETS, ROLLUP and CUBE", keyHint)
		}
	}
	// A value each shard computes differently (its clock, its address,
	// its settings) is not PostgreSQL's one value, and as a group key it
	// would split groups by shard.
	aggregated := len(sel.GroupClause) > 0 || sel.HavingClause != nil
	for _, n := range sel.TargetList {
		aggregated = aggregated || hasAggregate(n)
	}
	if c := systemColumn(sel); c != "" {
		return no("system column "+c+" (its values are each shard's own)", keyHint)
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
		walk(f.ProtoReflect(), func(m protoreflect.Message) bool {
			switch x := m.Interface().(type) {
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
				return no(f+" (a value that differs from shard to shard, or from row to row"+
					" where PostgreSQL computes it once per group)", keyHint)
			}
		}
	}
	if windowed, _ := a.windowsByKey(sel); windowed && aggregated && !partitioned {
		return no("a window function over groups merged from several shards", "group by the sharding key, or "+keyHint)
	}
	if len(sel.DistinctClause) > 0 && !spec.Distinct && aggregated && !partitioned {
		return no("SELECT DISTINCT ON over groups merged from several shards", "group by the sharding key, or "+keyHint)
	}
	if sel.HavingClause != nil && hasAggregate(sel.HavingClause) && !partitioned {
		return no("HAVING with an aggregate", "filter the merged groups in the application, or "+keyHint)
	}

	type col struct {
		combine merge.Combine
		expr    *pg.Node
	}
	var cols []col // shard columns
	var final []merge.FinalColumn
	var byteOrderCols []int // min/max of COLLATE "C" arguments
	star, qualifiedStar, rewrite := false, false, false
	tail := 0 // hidden sort columns after SELECT *
	aggregated = len(sel.GroupClause) > 0
	newTargets := make([]*pg.Node, 0, len(sel.TargetList)+2)
	// addAgg adds the shard columns of aggregate fc (rt: the select-list
	// item it is, or nil inside an expression) and returns its final
	// column.
	addAgg := func(fc *pg.FuncCall, rt *pg.ResTarget) (merge.FinalColumn, *RefusalError) {
		fname := funcName(fc)
		c, ok := mergeableAggs[fname]
		switch {
		case !ok || unmergeableAggs[fname]:
			return merge.FinalColumn{}, refusal("aggregate "+fname+"() cannot be merged exactly from several shards", "compute it per shard with a pgshard.shard hint, or "+keyHint)
		case fc.AggDistinct && (fname == "bool_and" || fname == "bool_or" || fname == "every" || !a.keyedAggArg(fc)):
			// Over the sharding key, each shard's distinct values are
			// none of another's: the shards' results combine as usual.
			return merge.FinalColumn{}, refusal(fname+"(DISTINCT ...) cannot be merged exactly from several shards", "count distinct values of the sharding key, or per key with GROUP BY, or "+keyHint)
		case fc.AggWithinGroup:
			return merge.FinalColumn{}, refusal(fname+" WITHIN GROUP cannot be merged exactly from several shards", keyHint)
		case hasAggregate(&pg.Node{Node: &pg.Node_List{List: &pg.List{Items: fc.Args}}}):
			return merge.FinalColumn{}, refusal("a nested aggregate cannot be merged exactly from several shards", "")
		}
		aggregated = true
		val := &pg.Node{Node: &pg.Node_FuncCall{FuncCall: fc}}
		target := &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: val}}}
		if rt != nil {
			val = rt.Val
			target = &pg.Node{Node: &pg.Node_ResTarget{ResTarget: rt}}
		}
		if fname == "avg" {
			rewrite = true
			sum := proto.Clone(fc).(*pg.FuncCall)
			sum.Funcname = []*pg.Node{pg.MakeStrNode("sum")}
			cnt := proto.Clone(fc).(*pg.FuncCall)
			cnt.Funcname = []*pg.Node{pg.MakeStrNode("count")}
			// avg itself too, unmerged: over double precision it
			// raises PostgreSQL's overflow error (22003) where the
			// sum alone would not.
			chk := proto.Clone(fc).(*pg.FuncCall)
			f := merge.FinalColumn{Kind: merge.FinalAvg, Source: len(cols), CountSource: len(cols) + 1, Name: "avg"}
			alias := ""
			if rt != nil {
				alias, _ = outputName(rt)
				f.Name = alias
				alias = rt.Name
			}
			cols = append(cols, col{merge.CombineSum, val}, col{merge.CombineCount, nil}, col{merge.CombineCheck, nil})
			newTargets = append(newTargets,
				&pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Name: alias, Val: &pg.Node{Node: &pg.Node_FuncCall{FuncCall: sum}}}}},
				&pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: &pg.Node{Node: &pg.Node_FuncCall{FuncCall: cnt}}}}},
				&pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: &pg.Node{Node: &pg.Node_FuncCall{FuncCall: chk}}}}})
			return f, nil
		}
		if byteOrder, err := minMaxCollation(fc, keyHint); err != nil {
			return merge.FinalColumn{}, err
		} else if byteOrder {
			byteOrderCols = append(byteOrderCols, len(cols))
		}
		f := merge.FinalColumn{Kind: merge.FinalColumnValue, Source: len(cols)}
		cols = append(cols, col{c, val})
		newTargets = append(newTargets, target)
		return f, nil
	}
	type exprArg struct {
		final int                 // the FinalExpr column
		args  []merge.FinalColumn // its aggregates, hidden, appended after the select list
	}
	var exprArgs []exprArg
	for _, n := range sel.TargetList {
		rt := n.GetResTarget()
		if rt == nil {
			return no("this target list", "")
		}
		if cr := rt.Val.GetColumnRef(); cr != nil && len(cr.Fields) > 0 && cr.Fields[len(cr.Fields)-1].GetAStar() != nil {
			star = true
			qualifiedStar = qualifiedStar || len(cr.Fields) > 1
			newTargets = append(newTargets, n)
			continue
		}
		name, _ := outputName(rt)
		if fc := rt.Val.GetFuncCall(); fc != nil && isAggCall(fc) && !partitioned {
			f, err := addAgg(fc, rt)
			if err != nil {
				return nil, nil, nil, err
			}
			if f.Kind != merge.FinalAvg {
				f.Name = ""
			}
			final = append(final, f)
			continue
		}
		if hasAggregate(rt.Val) && !partitioned {
			// An expression of aggregates: the shards compute the
			// aggregates, the merge the expression.
			var args []merge.FinalColumn
			first := len(cols)
			e, err := b.aggExpr(rt.Val, func(fc *pg.FuncCall) (int, *RefusalError) {
				f, err := addAgg(fc, nil)
				if err != nil {
					return 0, err
				}
				f.Hidden, f.Name = true, ""
				args = append(args, f)
				return len(args) - 1, nil
			})
			if err != nil {
				return nil, nil, nil, err
			}
			final = append(final, merge.FinalColumn{Kind: merge.FinalExpr, Source: first, Name: name, Expr: e})
			exprArgs = append(exprArgs, exprArg{final: len(final) - 1, args: args})
			rewrite = true
			continue
		}
		final = append(final, merge.FinalColumn{Kind: merge.FinalColumnValue, Source: len(cols)})
		cols = append(cols, col{merge.CombineNone, rt.Val})
		newTargets = append(newTargets, n)
	}
	if spec.Distinct && len(exprArgs) > 0 {
		return no("SELECT DISTINCT with an expression of aggregates", "select the aggregates themselves, group by the sharding key, or "+keyHint)
	}
	// The aggregates of expressions are hidden final columns after the
	// select list's.
	for _, x := range exprArgs {
		base := len(final)
		final = append(final, x.args...)
		shiftColumns(final[x.final].Expr, base)
	}
	if partitioned {
		aggregated = false
	}
	if star && (aggregated || len(sel.GroupClause) > 0 && !partitioned) {
		return no("SELECT * with aggregates", "list the columns")
	}
	var hidden []*pg.Node
	addHidden := func(e *pg.Node, c merge.Combine) int {
		hidden = append(hidden, &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: proto.Clone(e).(*pg.Node)}}})
		cols = append(cols, col{c, e})
		return len(cols) - 1
	}
	// finalIndex finds the final column an ORDER BY / GROUP BY item names.
	// A bare name in GROUP BY means the input column when there is one
	// (PostgreSQL's rule; in ORDER BY the output column wins): group is
	// set for GROUP BY items, and a name that is also an output alias of
	// a different expression is ambiguous to the planner, which does not
	// know the tables' columns (refuse is set).
	finalIndex := func(n *pg.Node, group bool) (int, bool, bool) {
		if c := n.GetAConst(); c != nil {
			b.pinConst(c) // ORDER BY 1 is a position, ORDER BY 1.5 an error
			if iv := c.GetIval(); iv != nil {
				k := int(iv.Ival) - 1
				if k < 0 || k >= len(final) || star {
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
					k, ok := finalOf(final, i, sel.TargetList)
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
				k, ok := finalOf(final, i, sel.TargetList)
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
	for _, g := range sel.GroupClause {
		if partitioned {
			break // no merging of groups
		}
		_, ok, ambiguous := finalIndex(g, true)
		if ambiguous {
			name := g.GetColumnRef().Fields[0].GetString_().Sval
			return no("GROUP BY "+name+", which names both an output column and possibly an input column,",
				"group by the expression itself or by its position (GROUP BY 1), or give the output column another name")
		}
		if ok {
			continue
		}
		if g.GetAConst() != nil {
			return no("GROUP BY a position out of range", "")
		}
		if star {
			return no("SELECT * with GROUP BY", "list the columns")
		}
		addHidden(g, merge.CombineNone)
		rewrite = true
	}
	for _, s := range sel.SortClause {
		sb := s.GetSortBy()
		if sb == nil || sb.SortbyDir == pg.SortByDir_SORTBY_USING {
			return no("ORDER BY ... USING", "")
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
		if c := sb.Node.GetAConst(); star && c != nil {
			b.pinConst(c) // a position, or a constant refused
		}
		if c := sb.Node.GetAConst(); star && c != nil && c.GetIval() != nil && c.GetIval().Ival > 0 {
			// ORDER BY a position under SELECT *: the same column of the
			// shards' rows (hidden columns come after the client's; the
			// merge checks that the position is among those).
			key.Column = int(c.GetIval().Ival) - 1
			spec.OrderBy = append(spec.OrderBy, key)
			continue
		}
		if star {
			// The shards sort by a hidden column after the star's, which
			// the merge finds from the end of their RowDescription.
			if err := b.starSortKey(sel, sb.Node, qualifiedStar, spec.Distinct); err != nil {
				return nil, nil, nil, err
			}
			if coll != "" && !byteOrder {
				return no(`ORDER BY under collation "`+coll+`"`, `sort by byte order with COLLATE "C", or `+keyHint)
			}
			key.ByteOrder = byteOrder
			addHidden(sb.Node, merge.CombineNone)
			key.Column, key.Tail = tail, true
			tail++
			rewrite = true
			spec.OrderBy = append(spec.OrderBy, key)
			continue
		}
		k, ok, ambiguous := finalIndex(sb.Node, false)
		if ambiguous {
			return no("ORDER BY a name that several output columns have (or that a scalar subquery's column may have)", "order by position or by a qualified column")
		}
		if ok && k < len(sel.TargetList) && coll == "" {
			if rt := sel.TargetList[k].GetResTarget(); rt != nil {
				coll, byteOrder = explicitCollation(rt.Val)
			}
		}
		key.ByteOrder = byteOrder
		if coll != "" && !byteOrder {
			// The merge compares bytes: exact for "C" only.
			return no(`ORDER BY under collation "`+coll+`"`, `sort by byte order with COLLATE "C", or `+keyHint)
		}
		if ok {
			key.Column = k
		} else {
			if star {
				return no("ORDER BY a column of SELECT *", "list the columns in the select list instead of *, or "+keyHint)
			}
			if sb.Node.GetAConst() != nil {
				return no("ORDER BY a position out of range", "")
			}
			c := merge.CombineNone
			if aggregated {
				fc := sb.Node.GetFuncCall()
				if fc == nil || !isAggCall(fc) {
					if hasAggregate(sb.Node) {
						return no("ORDER BY an expression of aggregates", "select the aggregate and order by its position")
					}
					// An expression of group keys: a group key column too.
				} else {
					fname := funcName(fc)
					cc, ok := mergeableAggs[fname]
					if !ok || fname == "avg" || fc.AggDistinct || unmergeableAggs[fname] {
						return no("ORDER BY aggregate "+fname+"() not in the select list", "add it to the select list")
					}
					byteOrder, err := minMaxCollation(fc, keyHint)
					if err != nil {
						return nil, nil, nil, err
					}
					if byteOrder {
						byteOrderCols = append(byteOrderCols, len(cols))
					}
					c = cc
				}
			}
			// A hidden column, listed in Final with Hidden set.
			final = append(final, merge.FinalColumn{Kind: merge.FinalColumnValue, Source: addHidden(sb.Node, c), Hidden: true})
			key.Column = len(final) - 1
			rewrite = true
		}
		spec.OrderBy = append(spec.OrderBy, key)
	}
	// LIMIT and OFFSET.
	var lim *limitSrc
	limitVal := func(n *pg.Node) (valueSrc, bool, bool) {
		if n == nil {
			return valueSrc{}, false, true
		}
		if c := n.GetAConst(); c != nil && c.Isnull {
			return valueSrc{}, false, true // LIMIT NULL / ALL
		}
		v, ok := b.value(n)
		return v, ok, ok
	}
	cnt, hasCnt, ok1 := limitVal(sel.LimitCount)
	off, hasOff, ok2 := limitVal(sel.LimitOffset)
	if !ok1 || !ok2 {
		return no("LIMIT or OFFSET with an expression", "use a constant or a parameter")
	}
	if hasCnt || hasOff {
		lim = &limitSrc{count: cnt, offset: off, hasCount: hasCnt, hasOffset: hasOff}
		if hasOff || aggregated {
			rewrite = true
		}
	}
	if !aggregated {
		for i := range cols {
			cols[i].combine = merge.CombineNone
		}
	}
	if aggregated && (len(exprArgs) > 0 || slices.ContainsFunc(cols, func(c col) bool { return c.combine == merge.CombineSum })) {
		// Sums and averages of floats are written by the merger: in text
		// as the session's extra_float_digits says, which the shards
		// report in a hidden column.
		setting := &pg.Node{Node: &pg.Node_FuncCall{FuncCall: &pg.FuncCall{
			Funcname: []*pg.Node{pg.MakeStrNode("pg_catalog"), pg.MakeStrNode("current_setting")},
			Args:     []*pg.Node{pg.MakeAConstStrNode("extra_float_digits", -1)}, Location: -1}}}
		addHidden(setting, merge.CombineFloatDigits)
		rewrite = true
	}
	if !aggregated && !rewrite && !spec.Distinct && len(spec.OrderBy) == 0 && lim == nil {
		return nil, nil, nil, nil // plain concatenation
	}
	spec.Group = len(sel.GroupClause) > 0 && !partitioned
	spec.HiddenTail = tail
	if !star {
		spec.Combine = make([]merge.Combine, len(cols))
		for i, c := range cols {
			spec.Combine[i] = c.combine
		}
		spec.Final = final
		if len(byteOrderCols) > 0 {
			spec.ByteOrder = make([]bool, len(cols))
			for _, c := range byteOrderCols {
				spec.ByteOrder[c] = true
			}
		}
	}
	if !rewrite {
		return spec, nil, lim, nil
	}
	// The statement for the shards.
	out := proto.Clone(sel).(*pg.SelectStmt)
	out.TargetList = append(cloneNodes(newTargets), hidden...)
	if aggregated {
		out.SortClause, out.LimitCount, out.LimitOffset = nil, nil, nil
		out.LimitOption = pg.LimitOption_LIMIT_OPTION_DEFAULT
	} else if hasOff {
		if hasCnt {
			// Cast both sides: "$1 + $2" of untyped parameters is
			// ambiguous to the server, while LIMIT $1 alone is bigint.
			out.LimitCount = &pg.Node{Node: &pg.Node_AExpr{AExpr: &pg.A_Expr{Kind: pg.A_Expr_Kind_AEXPR_OP,
				Name: []*pg.Node{pg.MakeStrNode("+")}, Lexpr: castInt8(sel.LimitCount), Rexpr: castInt8(sel.LimitOffset)}}}
		}
		out.LimitOffset = nil
	}
	segs, err := b.deparseMarked(out)
	if err != nil {
		return no("this statement (it could not be rewritten for the shards: "+err.Error()+")", keyHint)
	}
	return spec, segs, lim, nil
}

// starSortKey checks an ORDER BY item of a SELECT * on several shards:
// it becomes a hidden column, which must mean what PostgreSQL's ORDER BY
// means. A position cannot be found without the table's columns, and a
// bare name must not be one of the other select-list items' names nor
// possibly another table's column of the same name than the star's.
func (b *builder) starSortKey(sel *pg.SelectStmt, n *pg.Node, qualifiedStar, distinct bool) *RefusalError {
	hint := "list the columns in the select list instead of *, or add a condition on the sharding key"
	switch {
	case distinct:
		return refusal("SELECT DISTINCT * with ORDER BY cannot be merged exactly from several shards", hint)
	case n.GetAConst() != nil:
		return refusal("ORDER BY this constant with SELECT * cannot be merged exactly from several shards", "order by the column's name, or "+hint)
	}
	if cr := n.GetColumnRef(); cr != nil && len(cr.Fields) == 1 {
		name := cr.Fields[0].GetString_().GetSval()
		for _, t := range sel.TargetList {
			if rt := t.GetResTarget(); rt != nil {
				if on, known := outputName(rt); on == name || !known {
					return refusal("ORDER BY "+name+", the name of a select-list item next to * (or possibly of a scalar subquery's column), cannot be merged exactly from several shards", "order by the expression itself, or "+hint)
				}
			}
		}
		if qualifiedStar && (len(sel.FromClause) != 1 || sel.FromClause[0].GetRangeVar() == nil) {
			return refusal("ORDER BY "+name+" with a qualified * over several tables cannot be merged exactly from several shards", "qualify the ORDER BY column, or "+hint)
		}
	}
	return nil
}

// isColumn reports whether n is a reference to a column named name.
func isColumn(n *pg.Node, name string) bool {
	cr := n.GetColumnRef()
	if cr == nil || len(cr.Fields) == 0 {
		return false
	}
	s := cr.Fields[len(cr.Fields)-1].GetString_()
	return s != nil && s.Sval == name
}

// refersTo reports whether expression n reads a column named name
// (outside subqueries).
func refersTo(n *pg.Node, name string) bool {
	found := false
	walk(n.ProtoReflect(), func(m protoreflect.Message) bool {
		switch x := m.Interface().(type) {
		case *pg.ColumnRef:
			if len(x.Fields) > 0 {
				if s := x.Fields[len(x.Fields)-1].GetString_(); s != nil && s.Sval == name {
					found = true
				}
			}
		case *pg.SubLink:
			return false
		}
		return !found
	})
	return found
}

// perShardFuncs return a value that depends on the server or on the time
// its transaction started: each shard computes its own.
var perShardFuncs = map[string]bool{
	"now": true, "transaction_timestamp": true, "statement_timestamp": true, "current_setting": true,
	"current_database": true, "current_schema": true, "current_schemas": true, "current_user": true,
	"session_user": true, "current_role": true, "version": true, "inet_server_addr": true,
	"inet_server_port": true, "inet_client_addr": true, "inet_client_port": true, "pg_backend_pid": true,
	"pg_postmaster_start_time": true, "pg_conf_load_time": true, "pg_is_in_recovery": true,
	"pg_my_temp_schema": true, "pg_trigger_depth": true, "pg_jit_available": true, "age": true,
	"nextval": true, "currval": true, "lastval": true, "pg_database_size": true, "pg_relation_size": true,
	"pg_total_relation_size": true, "pg_table_size": true, "pg_indexes_size": true, "pg_blocking_pids": true,
	"pg_notification_queue_usage": true, "pg_listening_channels": true, "to_regclass": true, "to_regproc": true,
	"to_regtype": true, "to_regnamespace": true, "to_regrole": true, "pg_get_userbyid": true,
	"has_table_privilege": true, "pg_has_role": true, "pg_export_snapshot": true,
}

var perShardPrefixes = []string{"txid_", "pg_current_", "pg_stat_", "pg_last_", "pg_wal_", "pg_get_"}

// volatileFuncs give a new value at each call: any value is PostgreSQL's
// answer, but where PostgreSQL computes the value once per group (next
// to an aggregate) the shards compute one each.
var volatileFuncs = map[string]bool{
	"random": true, "random_normal": true, "clock_timestamp": true, "timeofday": true, "gen_random_uuid": true,
	"uuid_generate_v1": true, "uuid_generate_v1mc": true, "uuid_generate_v4": true, "setseed": true,
}

// perShardCall returns the first call in n whose value differs from
// shard to shard ("now()", "CURRENT_TIMESTAMP", ...), or "". With
// aggregated, volatile functions outside aggregate arguments count too.
func perShardCall(n *pg.Node, aggregated bool) string {
	found := ""
	var visit func(m protoreflect.Message, inAgg bool) bool
	visit = func(m protoreflect.Message, inAgg bool) bool {
		switch x := m.Interface().(type) {
		case *pg.SQLValueFunction:
			found = sqlValueFuncName(x.Op)
		case *pg.FuncCall:
			name := funcName(x)
			switch {
			case perShardFuncs[name]:
				found = name + "()"
			case !inAgg && aggregated && volatileFuncs[name]:
				found = name + "()"
			default:
				for _, p := range perShardPrefixes {
					if strings.HasPrefix(name, p) {
						found = name + "()"
					}
				}
			}
			if found == "" && isAggCall(x) && !inAgg {
				for _, arg := range x.Args {
					walk(arg.ProtoReflect(), func(m protoreflect.Message) bool { return visit(m, true) })
				}
				if x.AggFilter != nil {
					walk(x.AggFilter.ProtoReflect(), func(m protoreflect.Message) bool { return visit(m, true) })
				}
				return false
			}
		}
		return found == ""
	}
	walk(n.ProtoReflect(), func(m protoreflect.Message) bool { return visit(m, false) })
	return found
}

// systemColumns are the columns every table has whose values are
// physical or per server: each shard's differ, and clash.
var systemColumns = map[string]bool{"ctid": true, "xmin": true, "xmax": true, "cmin": true, "cmax": true, "tableoid": true}

// systemColumn returns the first system column sel reads anywhere, or "".
// (A table cannot have a column of these names.)
func systemColumn(sel *pg.SelectStmt) string {
	found := ""
	walk(sel.ProtoReflect(), func(m protoreflect.Message) bool {
		if cr, ok := m.Interface().(*pg.ColumnRef); ok && len(cr.Fields) > 0 {
			if s := cr.Fields[len(cr.Fields)-1].GetString_(); s != nil && systemColumns[strings.ToLower(s.Sval)] {
				found = strings.ToLower(s.Sval)
			}
		}
		return found == ""
	})
	return found
}

func sqlValueFuncName(op pg.SQLValueFunctionOp) string {
	return strings.TrimSuffix(strings.TrimPrefix(op.String(), "SVFOP_"), "_N")
}

// pinConsts marks every literal in n as deciding the plan.
func (b *builder) pinConsts(n *pg.Node) {
	walk(n.ProtoReflect(), func(m protoreflect.Message) bool {
		if c, ok := m.Interface().(*pg.A_Const); ok {
			b.pinConst(c)
		}
		return true
	})
}

// finalOf maps target list item i to its final column.
func finalOf(final []merge.FinalColumn, i int, targets []*pg.Node) (int, bool) {
	if i < len(final) && !final[i].Hidden {
		return i, true
	}
	return -1, false
}

func cloneNodes(l []*pg.Node) []*pg.Node {
	out := make([]*pg.Node, len(l))
	for i, n := range l {
		out[i] = proto.Clone(n).(*pg.Node)
	}
	return out
}

func isAggCall(fc *pg.FuncCall) bool {
	name := funcName(fc)
	_, ok := mergeableAggs[name]
	return fc.Over == nil && (ok || unmergeableAggs[name] || fc.AggStar || fc.AggDistinct || fc.AggWithinGroup || fc.AggFilter != nil)
}

func hasAggregate(n *pg.Node) bool {
	found := false
	walk(n.ProtoReflect(), func(m protoreflect.Message) bool {
		switch x := m.Interface().(type) {
		case *pg.FuncCall:
			if isAggCall(x) {
				found = true
			}
		case *pg.SubLink:
			return false
		}
		return !found
	})
	return found
}

// exprKey is a string equal for two expressions that differ only in
// source positions.
func exprKey(n *pg.Node) string {
	c := proto.Clone(n)
	walk(c.ProtoReflect(), func(m protoreflect.Message) bool {
		if fd := m.Descriptor().Fields().ByName("location"); fd != nil {
			m.Clear(fd)
		}
		return true
	})
	out, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	return string(out)
}

// shapeKey is exprKey with the values of literals left out: equal for
// expressions that differ only in their literals.
func shapeKey(n *pg.Node) string {
	c := proto.Clone(n)
	walk(c.ProtoReflect(), func(m protoreflect.Message) bool {
		if ac, ok := m.Interface().(*pg.A_Const); ok {
			ac.Val = nil
		}
		if fd := m.Descriptor().Fields().ByName("location"); fd != nil {
			m.Clear(fd)
		}
		return true
	})
	out, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	return string(out)
}

// deparseMarked deparses sel with every literal replaced by a marker
// parameter, and returns it as segments that splice each execution's
// literals back in.
func (b *builder) deparseMarked(sel *pg.SelectStmt) ([]segment, error) {
	walk(sel.ProtoReflect(), func(m protoreflect.Message) bool {
		if n, ok := m.Interface().(*pg.Node); ok {
			if c := n.GetAConst(); c != nil {
				if i := b.constLit(c); i >= 0 {
					n.Node = &pg.Node_ParamRef{ParamRef: &pg.ParamRef{Number: int32(markerBase + i)}}
				}
			}
		}
		return true
	})
	text, err := pg.Deparse(&pg.ParseResult{Version: b.version, Stmts: []*pg.RawStmt{{Stmt: &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: sel}}}}})
	if err != nil {
		return nil, err
	}
	var segs []segment
	last := 0
	for i := 0; i < len(text); {
		c := text[i]
		switch {
		case c == '\'':
			i = sqllex.Skip(text, i)
		case c == '"':
			i = sqllex.Skip(text, i)
		case c == '$' && i+1 < len(text) && sqllex.IsDigit(text[i+1]) && (i == 0 || !sqllex.IsIdentByte(text[i-1])):
			j := i + 1
			for j < len(text) && sqllex.IsDigit(text[j]) {
				j++
			}
			num, _ := strconv.Atoi(text[i+1 : j])
			if num >= gateBase {
				segs = append(segs, segment{text: text[last:i], lit: -1, gate: int32(num-gateBase) + 1})
				last = j
			} else if num >= markerBase {
				segs = append(segs, segment{text: text[last:i], lit: int32(num - markerBase)})
				last = j
			}
			i = j
		case c == '$':
			i = max(sqllex.Skip(text, i), i+1)
		default:
			i++
		}
	}
	segs = append(segs, segment{text: strings.Clone(text[last:]), lit: -1})
	return segs, nil
}

// castInt8 wraps n in a cast to bigint.
func castInt8(n *pg.Node) *pg.Node {
	return &pg.Node{Node: &pg.Node_TypeCast{TypeCast: &pg.TypeCast{Arg: n, Location: -1,
		TypeName: &pg.TypeName{Names: []*pg.Node{pg.MakeStrNode("pg_catalog"), pg.MakeStrNode("int8")}, Typemod: -1, Location: -1}}}}
}

// scatterCalls lists the functions a scatter SELECT calls in its target
// list, ORDER BY and HAVING that are not aggregates the planner knows:
// one of them could be a user-defined aggregate, whose per-shard results
// must not be concatenated (the proxy checks them in the catalog).
func scatterCalls(sel *pg.SelectStmt) []string {
	var names []string
	for _, l := range [][]*pg.Node{sel.TargetList, sel.SortClause, {sel.HavingClause}} {
		for _, n := range l {
			if n == nil {
				continue
			}
			walk(n.ProtoReflect(), func(m protoreflect.Message) bool {
				switch x := m.Interface().(type) {
				case *pg.FuncCall:
					name := funcName(x)
					if _, known := mergeableAggs[name]; !known && !unmergeableAggs[name] && name != "" && !slices.Contains(names, name) {
						names = append(names, name)
					}
				case *pg.SubLink:
					return false
				}
				return true
			})
		}
	}
	return names
}

// minMaxCollation checks the argument of aggregate fc when it is min or
// max: the merge compares text bytewise, which is right under "C" only
// (the proxy checks the database's collation). byteOrder is true for an
// explicit COLLATE "C" argument; another explicit collation is refused.
func minMaxCollation(fc *pg.FuncCall, keyHint string) (byteOrder bool, err *RefusalError) {
	fname := funcName(fc)
	if fname != "min" && fname != "max" || len(fc.Args) != 1 {
		return false, nil
	}
	coll, byteOrder := explicitCollation(fc.Args[0])
	if coll != "" && !byteOrder {
		return false, refusal(fname+`() under collation "`+coll+`" cannot be merged exactly from several shards`, `use COLLATE "C" for byte order, or `+keyHint)
	}
	return byteOrder, nil
}

// explicitCollation returns the collation an expression is explicitly
// COLLATEd to ("" when none) and whether it sorts in byte order ("C",
// "POSIX").
func explicitCollation(n *pg.Node) (name string, byteOrder bool) {
	cc := n.GetCollateClause()
	if cc == nil || len(cc.Collname) == 0 {
		return "", false
	}
	name = cc.Collname[len(cc.Collname)-1].GetString_().GetSval()
	return name, name == "C" || name == "POSIX"
}
