package plan

import (
	"encoding/binary"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/pgshard/pgshard/shardmap"
)

// Point reads for the proxy's cache. Only statements on a table the map
// marks cacheable get a row key (Plan.RowKey), so the planner does no
// more work for the others.

// cacheable reports whether table info ti is a sharded table the map
// marks cacheable.
func cacheable(ti *tableInfo) bool { return ti.sharded() && ti.t.Cache.Enabled }

// cacheKeySource returns the one source of a statement's key value when
// the statement names exactly one key value (one class with one
// non-array source); else nil.
func cacheKeySource(classes [][]valueSrc) *valueSrc {
	if len(classes) != 1 || len(classes[0]) != 1 || classes[0][0].array {
		return nil
	}
	src := classes[0][0]
	return &src
}

// pointReadShape reports whether sel reads only rows of its one table,
// by their key, and nothing else: a plain SELECT ... FROM table WHERE
// key = value [AND ...], without a set operation, CTE, join, subquery,
// locking clause, INTO, function call (any: volatile, stable or the
// user's own), SQL value function (CURRENT_TIMESTAMP, ...) or a cast to
// a date/time type (which may read the clock: 'now'::timestamptz). Such
// a result changes only when a row with that key changes.
func pointReadShape(sel *pg.SelectStmt, a *analysis) bool {
	if sel.Op != pg.SetOperation_SETOP_NONE && sel.Op != pg.SetOperation_SET_OPERATION_UNDEFINED {
		return false
	}
	if sel.WithClause != nil || len(sel.LockingClause) > 0 || sel.IntoClause != nil || len(sel.ValuesLists) > 0 ||
		len(sel.FromClause) != 1 || sel.FromClause[0].GetRangeVar() == nil || len(a.refs) != 1 {
		return false
	}
	ok := true
	walk(sel.ProtoReflect(), func(m protoreflect.Message) bool {
		switch n := m.Interface().(type) {
		case *pg.FuncCall, *pg.SubLink, *pg.SQLValueFunction, *pg.RangeFunction, *pg.RangeSubselect,
			*pg.RangeTableSample, *pg.CurrentOfExpr, *pg.XmlExpr, *pg.JsonFuncExpr:
			ok = false
		case *pg.TypeCast:
			if n.TypeName != nil {
				for _, x := range n.TypeName.Names {
					name := strings.ToLower(x.GetString_().GetSval())
					if strings.Contains(name, "time") || strings.Contains(name, "date") || name == "interval" {
						ok = false
					}
				}
			}
		}
		return ok
	})
	return ok
}

// rowKeyText returns the PostgreSQL text output of the key value src
// gives in this execution (bigint in decimal, uuid lower-case with
// hyphens, text as is): what the cache and its invalidation stream key
// rows by. "" when the value cannot be read.
func rowKeyText(kt shardmap.KeyType, src valueSrc, in *execInput) string {
	v, bin, err := src.raw(in)
	if err != nil {
		return ""
	}
	switch kt {
	case shardmap.KeyBigint:
		var i int64
		switch {
		case bin && len(v) == 8:
			i = int64(binary.BigEndian.Uint64([]byte(v)))
		case bin && len(v) == 4:
			i = int64(int32(binary.BigEndian.Uint32([]byte(v))))
		case bin && len(v) == 2:
			i = int64(int16(binary.BigEndian.Uint16([]byte(v))))
		case bin:
			return ""
		default:
			if i, err = parseInt(v); err != nil {
				return ""
			}
		}
		return strconv.FormatInt(i, 10)
	case shardmap.KeyText:
		if v == "" {
			return "" // (the empty key is not told apart from no key: not cached)
		}
		return strings.Clone(v) // v may alias the client's message
	case shardmap.KeyUUID:
		var u shardmap.UUID
		if bin {
			if len(v) != 16 {
				return ""
			}
			copy(u[:], v)
		} else if u, err = shardmap.ParseUUID(strings.TrimSpace(v)); err != nil {
			return ""
		}
		return u.String()
	}
	return ""
}
