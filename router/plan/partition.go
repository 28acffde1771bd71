package plan

import (
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Rows that agree on a sharding key column live on one shard: a GROUP BY,
// DISTINCT ON or window PARTITION BY that includes such a column has each
// of its groups on one shard, so each shard's answer for its groups is
// PostgreSQL's, and the shards' results only need concatenating (and
// ordering). keyed tells whether an expression is such a column.

// keyed reports whether n is the sharding key column of a sharded table
// in the top-level FROM that is not on the nullable side of an outer join
// (where a NULL-extended key would form a group on every shard).
func (a *analysis) keyed(n *pg.Node) bool {
	if a == nil || a.topScope == nil || n == nil || n.GetColumnRef() == nil {
		return false
	}
	r := a.keyRef(n, a.topScope)
	return r != nil && r.top && !r.nullable && !r.renamed && r.sharded()
}

// keyedOutput reports whether a DISTINCT ON item (resolved like ORDER BY:
// a position, then an output name, then an input expression) is a key
// column.
func (a *analysis) keyedOutput(n *pg.Node, targets []*pg.Node) bool {
	if c := n.GetAConst(); c != nil {
		a.b.pinConst(c) // the position decides the plan
		iv := c.GetIval()
		if iv == nil || iv.Ival < 1 || int(iv.Ival) > len(targets) {
			return false
		}
		rt := targets[iv.Ival-1].GetResTarget()
		return rt != nil && a.keyed(rt.Val)
	}
	if cr := n.GetColumnRef(); cr != nil && len(cr.Fields) == 1 && cr.Fields[0].GetString_() != nil {
		name := cr.Fields[0].GetString_().Sval
		for _, t := range targets {
			if rt := t.GetResTarget(); rt != nil {
				if on, _ := outputName(rt); on == name {
					return a.keyed(rt.Val)
				}
			}
		}
	}
	return a.keyed(n)
}

// groupedByKey reports whether a GROUP BY item is a key column: GROUP BY
// resolves a bare name as an input column first, a position as the
// select-list item.
func (a *analysis) groupedByKey(sel *pg.SelectStmt) bool {
	for _, g := range sel.GroupClause {
		if c := g.GetAConst(); c != nil {
			a.b.pinConst(c) // the position decides the plan
			if iv := c.GetIval(); iv != nil && iv.Ival >= 1 && int(iv.Ival) <= len(sel.TargetList) {
				if rt := sel.TargetList[iv.Ival-1].GetResTarget(); rt != nil && a.keyed(rt.Val) {
					return true
				}
			}
			continue
		}
		if a.keyed(g) {
			return true
		}
	}
	return false
}

// windowsByKey reports whether every window function in the select list
// and ORDER BY is partitioned by a key column (its partitions each on one
// shard); window is false when there is none.
func (a *analysis) windowsByKey(sel *pg.SelectStmt) (window, byKey bool) {
	byKey = true
	defs := map[string]*pg.WindowDef{}
	for _, w := range sel.WindowClause {
		if d := w.GetWindowDef(); d != nil {
			defs[d.Name] = d
		}
	}
	partition := func(d *pg.WindowDef) []*pg.Node {
		for i := 0; d != nil && i < 100; i++ {
			if len(d.PartitionClause) > 0 {
				return d.PartitionClause
			}
			ref := d.Refname
			if ref == "" && len(d.PartitionClause) == 0 && len(d.OrderClause) == 0 && d.Name != "" && defs[d.Name] != d {
				ref = d.Name // OVER w
			}
			if ref == "" {
				return nil
			}
			d = defs[ref]
		}
		return nil
	}
	for _, l := range [][]*pg.Node{sel.TargetList, sel.SortClause} {
		for _, n := range l {
			walk(n.ProtoReflect(), func(m protoreflect.Message) bool {
				switch x := m.Interface().(type) {
				case *pg.FuncCall:
					if x.Over != nil {
						window = true
						ok := false
						for _, p := range partition(x.Over) {
							ok = ok || a.keyed(p)
						}
						byKey = byKey && ok
					}
				case *pg.SubLink:
					return false
				}
				return true
			})
		}
	}
	return window, window && byKey
}

// keyedAggArg reports whether aggregate fc has one argument that is a key
// column: its DISTINCT values on one shard are none of another's.
func (a *analysis) keyedAggArg(fc *pg.FuncCall) bool {
	return len(fc.Args) == 1 && a.keyed(fc.Args[0]) && len(fc.AggOrder) == 0
}

// outputName is the column name PostgreSQL gives a select-list item
// (FigureColname); known is false where PostgreSQL's name depends on more
// than the parse tree (a scalar subquery's column).
func outputName(rt *pg.ResTarget) (name string, known bool) {
	if rt.Name != "" {
		return rt.Name, true
	}
	n, strength, known := figureColname(rt.Val)
	if strength == 0 {
		return "?column?", known
	}
	return n, known
}

// figureColname follows FigureColnameInternal (parser/parse_target.c):
// strength 2 is a real name, 1 a fallback (a type or keyword name).
func figureColname(n *pg.Node) (name string, strength int, known bool) {
	if n == nil {
		return "", 0, true
	}
	switch x := n.GetNode().(type) {
	case *pg.Node_ColumnRef:
		f := x.ColumnRef.Fields
		for i := len(f) - 1; i >= 0; i-- {
			if s := f[i].GetString_(); s != nil {
				return s.Sval, 2, true
			}
		}
	case *pg.Node_AIndirection:
		ind := x.AIndirection.Indirection
		for i := len(ind) - 1; i >= 0; i-- {
			if s := ind[i].GetString_(); s != nil {
				return s.Sval, 2, true
			}
		}
		return figureColname(x.AIndirection.Arg)
	case *pg.Node_FuncCall:
		if f := x.FuncCall.Funcname; len(f) > 0 {
			return f[len(f)-1].GetString_().GetSval(), 2, true // as written (a quoted name keeps its case)
		}
	case *pg.Node_AExpr:
		if x.AExpr.Kind == pg.A_Expr_Kind_AEXPR_NULLIF {
			return "nullif", 2, true
		}
	case *pg.Node_TypeCast:
		name, strength, known = figureColname(x.TypeCast.Arg)
		if strength <= 1 && x.TypeCast.TypeName != nil && len(x.TypeCast.TypeName.Names) > 0 {
			names := x.TypeCast.TypeName.Names
			return names[len(names)-1].GetString_().GetSval(), 1, known
		}
		return name, strength, known
	case *pg.Node_CollateClause:
		return figureColname(x.CollateClause.Arg)
	case *pg.Node_GroupingFunc:
		return "grouping", 2, true
	case *pg.Node_SubLink:
		switch x.SubLink.SubLinkType {
		case pg.SubLinkType_EXISTS_SUBLINK:
			return "exists", 2, true
		case pg.SubLinkType_ARRAY_SUBLINK:
			return "array", 2, true
		case pg.SubLinkType_EXPR_SUBLINK, pg.SubLinkType_MULTIEXPR_SUBLINK:
			if s := x.SubLink.Subselect.GetSelectStmt(); s != nil && len(s.TargetList) > 0 && s.Op == pg.SetOperation_SETOP_NONE {
				if rt := s.TargetList[0].GetResTarget(); rt != nil && !isStar(rt.Val) {
					// The subquery's own column name, "?column?" included
					// (a real name to PostgreSQL: a cast keeps it).
					nm, k := outputName(rt)
					return nm, 2, k
				}
			}
			return "", 0, false
		}
	case *pg.Node_CaseExpr:
		// CASE takes its ELSE's name when that is a real one.
		if name, strength, known = figureColname(x.CaseExpr.Defresult); strength > 1 {
			return name, strength, known
		}
		return "case", 1, known
	case *pg.Node_AArrayExpr:
		return "array", 2, true
	case *pg.Node_RowExpr:
		return "row", 2, true
	case *pg.Node_CoalesceExpr:
		return "coalesce", 2, true
	case *pg.Node_MinMaxExpr:
		if x.MinMaxExpr.Op == pg.MinMaxOp_IS_GREATEST {
			return "greatest", 2, true
		}
		return "least", 2, true
	case *pg.Node_SqlvalueFunction:
		return strings.ToLower(sqlValueFuncName(x.SqlvalueFunction.Op)), 2, true
	case *pg.Node_XmlExpr:
		return "", 0, false
	case *pg.Node_XmlSerialize:
		return "xmlserialize", 2, true
	}
	return "", 0, true
}

// isStar reports whether n is `*` or `t.*`.
func isStar(n *pg.Node) bool {
	cr := n.GetColumnRef()
	return cr != nil && len(cr.Fields) > 0 && cr.Fields[len(cr.Fields)-1].GetAStar() != nil
}
