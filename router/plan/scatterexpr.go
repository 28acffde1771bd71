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
			if num == keyListMarker {
				segs = append(segs, segment{text: text[last:i], lit: -1, gate: -1})
				last = j
			} else if num >= gateBase {
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
