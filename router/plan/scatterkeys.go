package plan

import (
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgshard/pgshard/shardmap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// IN-list pruning. A statement whose key condition is a list of keys —
// key IN (7, 900) or key = ANY(ARRAY[7, 900]) — and whose keys lie on
// several shards runs on each of them with only that shard's keys in the
// list: the other keys' rows are not on the shard, so the list matches
// the same rows there. The planner does it where that is plainly so: the
// list is a condition ANDed at the top of the statement's WHERE, its
// items are all literals, and the statement is a plain SELECT (no
// UNION, ...). A list under OR or NOT, one in a subquery, NOT IN, a
// parameter in the list or an array parameter (= ANY($1)) keep the whole
// list on every shard.

// keyListMarker stands for the items of the pruned list while the
// statement is deparsed (see deparseMarked).
const keyListMarker = 3 * markerBase

// keyList is the statement for the shards of a scatter whose key
// condition is a list of literals: before, the items of this shard
// (separated by ", "), after.
type keyList struct {
	before, after []segment
	items         []valueSrc  // each item's key value
	itemSegs      [][]segment // each item's text
}

// keyListCond is the key condition whose list is pruned: the list, the
// key values of its items, and the split scatterSpec made of the
// statement it rewrote for the shards (if it did).
type keyListCond struct {
	cond  *pg.A_Expr
	srcs  []valueSrc
	split *keyList
}

// keyListCond returns the key condition of rt whose list the shards'
// statements may be pruned to their own keys, or nil: the only key
// class's condition, when it is a key IN list or = ANY(ARRAY[...]) of at
// least two literals ANDed at the top of where, the WHERE of the
// statement's top scope.
func (a *analysis) keyListCond(rt *route, where *pg.Node) *keyListCond {
	if a.setOp || len(rt.classes) != 1 || where == nil {
		return nil
	}
	c := rt.cond
	e := c.cond.GetAExpr()
	if e == nil || opName(e) != "=" || len(e.Name) != 1 {
		return nil
	}
	items := listItems(e)
	if len(items) < 2 || len(items) != len(c.srcs) || c.sc != a.topScope || !isConjunct(where, c.cond) {
		return nil
	}
	for _, s := range c.srcs {
		if s.lit < 0 || s.array {
			return nil
		}
	}
	return &keyListCond{cond: e, srcs: c.srcs}
}

// isConjunct reports whether c is where or one of the terms ANDed in it
// (as conjuncts lists them).
func isConjunct(where, c *pg.Node) bool {
	if be := where.GetBoolExpr(); be != nil && be.Boolop == pg.BoolExprType_AND_EXPR {
		return slices.ContainsFunc(be.Args, func(x *pg.Node) bool { return isConjunct(x, c) })
	}
	return where == c
}

// listItems returns the items of an IN list or of the ARRAY[...] of
// = ANY(...), or nil.
func listItems(e *pg.A_Expr) []*pg.Node {
	if a := listArray(e); a != nil {
		return a.Elements
	}
	if e.Kind == pg.A_Expr_Kind_AEXPR_IN {
		if l := e.Rexpr.GetList(); l != nil {
			return l.Items
		}
	}
	return nil
}

// listArray returns the ARRAY[...] of = ANY(ARRAY[...]), or nil.
func listArray(e *pg.A_Expr) *pg.A_ArrayExpr {
	if e.Kind != pg.A_Expr_Kind_AEXPR_OP_ANY {
		return nil
	}
	x := e.Rexpr
	for x.GetTypeCast() != nil {
		x = x.GetTypeCast().Arg
	}
	return x.GetAArrayExpr()
}

// keyListSplit builds the keyList of stmt (the statement for the shards,
// which it leaves unchanged) for condition cond (from keyListCond, found
// in stmt by its location), whose items' key values are srcs. It returns
// nil when the statement cannot be split.
func (b *builder) keyListSplit(stmt *pg.SelectStmt, cond *pg.A_Expr, srcs []valueSrc) *keyList {
	out := proto.Clone(stmt).(*pg.SelectStmt)
	var found []*pg.A_Expr
	walk(out.ProtoReflect(), func(m protoreflect.Message) bool {
		if e, ok := m.Interface().(*pg.A_Expr); ok && e.Location == cond.Location && e.Kind == cond.Kind {
			found = append(found, e)
		}
		return true
	})
	if len(found) != 1 {
		return nil
	}
	e := found[0]
	items := listItems(e)
	if len(items) != len(srcs) {
		return nil
	}
	marker := []*pg.Node{{Node: &pg.Node_ParamRef{ParamRef: &pg.ParamRef{Number: keyListMarker}}}}
	if a := listArray(e); a != nil {
		a.Elements = marker
	} else {
		e.Rexpr.GetList().Items = marker
	}
	segs, err := b.deparseMarked(out)
	if err != nil {
		return nil
	}
	at := slices.IndexFunc(segs, func(s segment) bool { return s.gate < 0 })
	if at < 0 {
		return nil
	}
	kl := &keyList{before: segs[:at+1], after: segs[at+1:], items: srcs, itemSegs: make([][]segment, len(items))}
	for i, it := range items {
		s, err := b.deparseMarked(&pg.SelectStmt{TargetList: []*pg.Node{{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: it}}}}})
		if err != nil || !strings.HasPrefix(s[0].text, "SELECT ") || slices.ContainsFunc(s, func(x segment) bool { return x.gate != 0 }) {
			return nil
		}
		s[0].text = s[0].text[len("SELECT "):]
		kl.itemSegs[i] = s
	}
	return kl
}

// render returns the statement of each shard of shards: the list with
// only the keys of that shard.
func (kl *keyList) render(st *state, d *shardmap.Distribution, in *execInput, shards []string) (map[string]string, error) {
	of := make([]string, len(kl.items))
	for i, src := range kl.items {
		if err := st.resolve(d, src, in, func(s string) { of[i] = s }); err != nil {
			return nil, err
		}
	}
	before, after := renderSegments(kl.before, in), renderSegments(kl.after, in)
	per := make(map[string]string, len(shards))
	for _, s := range shards {
		var b strings.Builder
		b.WriteString(before)
		n := 0
		for i, is := range kl.itemSegs {
			if of[i] != s {
				continue
			}
			if n > 0 {
				b.WriteString(", ")
			}
			b.WriteString(renderSegments(is, in))
			n++
		}
		b.WriteString(after)
		per[s] = b.String()
	}
	return per, nil
}
