package plan

import (
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// keyTargets returns the tables and key values a condition limits the
// key to, when it does: key = v, v = key, key IN (v, ...), key = ANY(v),
// AND with at least one such term, OR of such terms.
func (a *analysis) keyTargets(n *pg.Node, sc *scope) ([]*tableRef, []valueSrc, bool) {
	if be := n.GetBoolExpr(); be != nil {
		switch be.Boolop {
		case pg.BoolExprType_AND_EXPR:
			for _, x := range be.Args {
				if refs, srcs, ok := a.keyTargets(x, sc); ok {
					return refs, srcs, true
				}
			}
		case pg.BoolExprType_OR_EXPR:
			var refs []*tableRef
			var srcs []valueSrc
			for _, x := range be.Args {
				r, s, ok := a.keyTargets(x, sc)
				if !ok {
					return nil, nil, false
				}
				refs, srcs = append(refs, r...), append(srcs, s...)
			}
			return refs, srcs, len(srcs) > 0
		}
		return nil, nil, false
	}
	e := n.GetAExpr()
	if e == nil || opName(e) != "=" {
		return nil, nil, false
	}
	switch e.Kind {
	case pg.A_Expr_Kind_AEXPR_OP:
		if r := a.keyRef(e.Lexpr, sc); r != nil {
			if v, ok := a.b.value(e.Rexpr); ok {
				return []*tableRef{r}, []valueSrc{v}, true
			}
		}
		if r := a.keyRef(e.Rexpr, sc); r != nil {
			if v, ok := a.b.value(e.Lexpr); ok {
				return []*tableRef{r}, []valueSrc{v}, true
			}
		}
	case pg.A_Expr_Kind_AEXPR_IN:
		r := a.keyRef(e.Lexpr, sc)
		l := e.Rexpr.GetList()
		if r == nil || l == nil {
			return nil, nil, false
		}
		srcs := make([]valueSrc, 0, len(l.Items))
		for _, it := range l.Items {
			v, ok := a.b.value(it)
			if !ok {
				return nil, nil, false
			}
			srcs = append(srcs, v)
		}
		return []*tableRef{r}, srcs, true
	case pg.A_Expr_Kind_AEXPR_OP_ANY:
		r := a.keyRef(e.Lexpr, sc)
		if r == nil {
			return nil, nil, false
		}
		x := e.Rexpr
		for x.GetTypeCast() != nil {
			x = x.GetTypeCast().Arg
		}
		if arr := x.GetAArrayExpr(); arr != nil {
			srcs := make([]valueSrc, 0, len(arr.Elements))
			for _, it := range arr.Elements {
				v, ok := a.b.value(it)
				if !ok {
					return nil, nil, false
				}
				srcs = append(srcs, v)
			}
			return []*tableRef{r}, srcs, true
		}
		if v, ok := a.b.value(x); ok {
			v.array = true
			return []*tableRef{r}, []valueSrc{v}, true
		}
	}
	return nil, nil, false
}

// value returns where the value of a constant expression comes from:
// a literal or a parameter, possibly cast.
func (b *builder) value(n *pg.Node) (valueSrc, bool) {
	for n != nil && n.GetTypeCast() != nil {
		n = n.GetTypeCast().Arg
	}
	if n == nil {
		return valueSrc{}, false
	}
	if p := n.GetParamRef(); p != nil && p.Number > 0 {
		return paramSrc(int(p.Number)), true
	}
	if c := n.GetAConst(); c != nil && !c.Isnull {
		switch c.Val.(type) {
		case *pg.A_Const_Ival, *pg.A_Const_Sval, *pg.A_Const_Fval:
			if i := b.constLit(c); i >= 0 {
				return litSrc(i), true
			}
		}
	}
	return valueSrc{}, false
}

// keyRef returns the table whose key column n names, or nil.
func (a *analysis) keyRef(n *pg.Node, sc *scope) *tableRef {
	cr := n.GetColumnRef()
	if cr == nil {
		return nil
	}
	var f []string
	for _, x := range cr.Fields {
		s := x.GetString_()
		if s == nil {
			return nil
		}
		f = append(f, strings.ToLower(s.Sval))
	}
	isKey := func(r *tableRef, col string) *tableRef {
		if r.sharded() && !r.renamed && r.ti.t.KeyColumn == col {
			return r
		}
		return nil
	}
	switch len(f) {
	case 1:
		var found *tableRef
		for _, r := range sc.refs {
			if isKey(r, f[0]) != nil {
				if found != nil {
					return nil // ambiguous
				}
				found = r
			}
		}
		return found
	case 2:
		for s := sc; s != nil; s = s.parent {
			if slices.Contains(s.opaque, f[0]) {
				return nil
			}
			for _, r := range s.refs {
				if r.alias == f[0] {
					return isKey(r, f[1])
				}
			}
		}
	case 3:
		for s := sc; s != nil; s = s.parent {
			for _, r := range s.refs {
				if r.name == f[0]+"."+f[1] {
					return isKey(r, f[2])
				}
			}
		}
	}
	return nil
}
