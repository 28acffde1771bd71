package plan

import (
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgshard/pgshard/router/merge"
)

// aggExpr translates a select-list expression of aggregates into a
// merge.Expr the merger evaluates after combining them: casts to integer,
// numeric (with or without precision), double precision or text;
// round(x) and round(x, n); +, -, * and / with integer or decimal
// constants.
// agg adds an aggregate's columns and returns its index among the
// expression's aggregates. Anything else is refused.
func (b *builder) aggExpr(n *pg.Node, agg func(*pg.FuncCall) (int, *RefusalError)) (*merge.Expr, *RefusalError) {
	no := func(what string) (*merge.Expr, *RefusalError) {
		return nil, refusal("an aggregate inside "+what+" cannot be merged exactly from several shards",
			"select the aggregate itself and compute the expression in the application, or add a condition on the sharding key so that the query runs on one shard, or use SET pgshard.shard")
	}
	switch x := n.GetNode().(type) {
	case *pg.Node_FuncCall:
		fc := x.FuncCall
		if isAggCall(fc) {
			i, err := agg(fc)
			if err != nil {
				return nil, err
			}
			return &merge.Expr{Op: merge.ExprColumn, Column: i}, nil
		}
		name := funcName(fc)
		if name != "round" || len(fc.Funcname) > 2 || len(fc.Funcname) == 2 && fc.Funcname[0].GetString_().GetSval() != "pg_catalog" ||
			fc.AggOrder != nil || fc.AggFilter != nil || fc.Over != nil || fc.FuncVariadic || len(fc.Args) == 0 || len(fc.Args) > 2 {
			return no("function " + name + "()")
		}
		e := &merge.Expr{Op: merge.ExprRound}
		arg, err := b.aggExpr(fc.Args[0], agg)
		if err != nil {
			return nil, err
		}
		e.Args = append(e.Args, arg)
		if len(fc.Args) == 2 {
			c := b.intConst(fc.Args[1])
			if c == nil {
				return no("round() to a number of digits that is not an integer constant")
			}
			e.Args = append(e.Args, c)
		}
		return e, nil
	case *pg.Node_TypeCast:
		tc := x.TypeCast
		if tc.TypeName == nil || len(tc.TypeName.ArrayBounds) > 0 || tc.TypeName.Setof || tc.TypeName.PctType {
			return no("this cast")
		}
		names := tc.TypeName.Names
		if len(names) == 0 || len(names) > 2 || len(names) == 2 && names[0].GetString_().GetSval() != "pg_catalog" {
			return no("this cast")
		}
		typ := map[string]string{"int2": "int2", "smallint": "int2", "int4": "int4", "int": "int4", "integer": "int4",
			"int8": "int8", "bigint": "int8", "numeric": "numeric", "decimal": "numeric", "float8": "float8", "text": "text"}[strings.ToLower(names[len(names)-1].GetString_().GetSval())]
		if typ == "" {
			return no("a cast to " + names[len(names)-1].GetString_().GetSval())
		}
		e := &merge.Expr{Op: merge.ExprCast, Type: typ, Typmod: -1}
		if mods := tc.TypeName.Typmods; len(mods) > 0 {
			if typ != "numeric" || len(mods) > 2 {
				return no("a cast with a type modifier")
			}
			var pv [2]int64
			for i, m := range mods {
				c := m.GetAConst()
				if c != nil {
					b.pinConst(c) // its value decides the plan, even a refusal
				}
				if c == nil || c.GetIval() == nil {
					return no("a cast with a type modifier")
				}
				pv[i] = int64(c.GetIval().Ival)
			}
			if pv[0] < 1 || pv[0] > 1000 || pv[1] < -1000 || pv[1] > 1000 {
				return no("a cast with this type modifier") // PostgreSQL's own error, from a shard
			}
			e.Typmod = int32((pv[0]<<16 | pv[1]&0x7ff) + 4)
		}
		arg, err := b.aggExpr(tc.Arg, agg)
		if err != nil {
			return nil, err
		}
		e.Args = []*merge.Expr{arg}
		return e, nil
	case *pg.Node_AExpr:
		ae := x.AExpr
		op := opName(ae)
		ops := map[string]merge.ExprOp{"+": merge.ExprAdd, "-": merge.ExprSub, "*": merge.ExprMul, "/": merge.ExprDiv}
		eop, ok := ops[op]
		if ae.Kind != pg.A_Expr_Kind_AEXPR_OP || !ok || len(ae.Name) != 1 || ae.Lexpr == nil || ae.Rexpr == nil {
			return no("operator " + op)
		}
		var args []*merge.Expr
		for _, side := range []*pg.Node{ae.Lexpr, ae.Rexpr} {
			if c := side.GetAConst(); c != nil {
				e := b.numConst(c)
				if e == nil {
					return no("an expression with this constant")
				}
				args = append(args, e)
				continue
			}
			e, err := b.aggExpr(side, agg)
			if err != nil {
				return nil, err
			}
			args = append(args, e)
		}
		if args[0].Op == merge.ExprConst && args[1].Op == merge.ExprConst {
			return no("an expression of constants")
		}
		return &merge.Expr{Op: eop, Args: args}, nil
	}
	return no("this expression")
}

// intConst returns an integer constant as an expression (pinned: the plan
// depends on its value).
func (b *builder) intConst(n *pg.Node) *merge.Expr {
	c := n.GetAConst()
	if c != nil {
		b.pinConst(c) // its value decides the plan, even a refusal
	}
	if c == nil || c.GetIval() == nil {
		return nil
	}
	return &merge.Expr{Op: merge.ExprConst, Text: strconv.FormatInt(int64(c.GetIval().Ival), 10)}
}

// numConst returns an integer or decimal constant as an expression.
func (b *builder) numConst(c *pg.A_Const) *merge.Expr {
	b.pinConst(c) // its value decides the plan, even a refusal
	switch v := c.Val.(type) {
	case *pg.A_Const_Ival:
		return &merge.Expr{Op: merge.ExprConst, Text: strconv.FormatInt(int64(v.Ival.Ival), 10)}
	case *pg.A_Const_Fval:
		t := v.Fval.Fval
		if strings.ContainsAny(t, "eE") {
			return nil // numeric, but the merger reads plain decimals only
		}
		return &merge.Expr{Op: merge.ExprConst, Text: t}
	}
	return nil
}

// shiftColumns adds base to the column numbers of e's aggregates.
func shiftColumns(e *merge.Expr, base int) {
	if e.Op == merge.ExprColumn {
		e.Column += base
	}
	for _, a := range e.Args {
		shiftColumns(a, base)
	}
}
