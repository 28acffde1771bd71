package merge

// Spec says how to combine the result sets that the shards return for the
// same (possibly rewritten) SELECT into the one result the client would
// have got from a single server. The planner (router) builds it; the
// merger executes it. Column numbers are 0-based.
//
// Order of operations, as in SQL: combine aggregates per group → build
// the final columns → DISTINCT → ORDER BY → OFFSET/LIMIT.
type Spec struct {
	// Combine has one entry per column the shards return. With no entry
	// other than CombineNone there is no aggregation: rows are passed
	// through (concatenated or merged by OrderBy). Otherwise rows are
	// grouped by the CombineNone columns (the GROUP BY keys; one group
	// when there are none) and the other columns are combined per group.
	Combine []Combine
	// Group groups rows by the CombineNone columns even when no column is
	// combined (GROUP BY without aggregates: a group on several shards
	// must come out once).
	Group bool
	// Final lists the columns sent to the client, in order. Nil means all
	// shard columns unchanged. Columns the planner added only for merging
	// (a hidden count for avg) are simply not listed; a hidden sort key
	// (ORDER BY an expression not in the select list) is listed with
	// Hidden set, so that OrderBy can name it.
	Final []FinalColumn
	// Distinct removes duplicate final rows.
	Distinct bool
	// OrderBy sorts final rows. When there is no aggregation and no
	// DISTINCT the shards return rows already sorted the same way and the
	// merger does a streaming k-way merge.
	OrderBy []SortKey
	// Offset and Limit apply after ordering; Limit < 0 means no limit.
	Offset int64
	Limit  int64
	// HiddenTail, with Final nil, says that the last HiddenTail shard
	// columns are hidden sort keys (ORDER BY under SELECT *, whose column
	// count only the shards' RowDescription tells): SortKeys with Tail
	// set name them, 0 for the first.
	HiddenTail int
	// ByteOrder, indexed like Combine, marks min/max columns whose
	// argument is explicitly COLLATE "C" (or "POSIX"): they compare text
	// bytewise whatever the database's collation. Nil: none.
	ByteOrder []bool
}

// Compares reports whether merging compares values that may be text:
// ORDER BY keys, min and max. Text compares bytewise, which is right only
// under the "C" collation (see Merger.CheckTextOrder).
func (s *Spec) Compares() bool {
	if len(s.OrderBy) > 0 {
		return true
	}
	for _, c := range s.Combine {
		if c == CombineMin || c == CombineMax {
			return true
		}
	}
	return false
}

// Combine is how a column's values from several shards (and several rows
// of one group) become one value.
type Combine uint8

// Ways to combine a column.
const (
	CombineNone    Combine = iota // a group key or plain value: rows with equal keys form a group
	CombineCount                  // count(...): sum of the shards' counts (int8)
	CombineSum                    // sum(...): sum, NULL if all inputs are NULL
	CombineMin                    // min(...): least non-NULL value
	CombineMax                    // max(...): greatest non-NULL value
	CombineBoolAnd                // bool_and / every
	CombineBoolOr                 // bool_or
	// CombineCheck columns are not merged: the shards compute them only
	// to raise the errors PostgreSQL would (avg's float overflow, 22003).
	CombineCheck
	// CombineFloatDigits holds the session's extra_float_digits as the
	// shards report it (current_setting('extra_float_digits')): computed
	// float values are written in text as PostgreSQL writes them under it.
	CombineFloatDigits
)

// FinalKind says how a final column is computed.
type FinalKind uint8

// Final column kinds.
const (
	FinalColumnValue FinalKind = iota // the combined value of shard column Source
	FinalAvg                          // avg: combined sum (Source) / combined count (CountSource)
	// FinalExpr computes Expr over other final columns (hidden aggregates)
	// after combining: count(*)::int, round(avg(x), 2), max(x) - min(x).
	// Source is one of the shard columns it reads, whose result format
	// the client's format for this column sets.
	FinalExpr
)

// FinalColumn is one column of the client's result.
type FinalColumn struct {
	Kind        FinalKind
	Source      int // shard column
	CountSource int // FinalAvg: the shard column holding count(x)
	// Name is the column name the client sees (from the original query;
	// the shards' RowDescription may name rewritten columns differently).
	Name string
	// Expr is the expression of a FinalExpr column.
	Expr *Expr
	// Hidden columns are computed and can be sorted by, but are not sent
	// to the client. Not allowed with Distinct (SQL requires DISTINCT's
	// ORDER BY items to be in the select list).
	Hidden bool
}

// SortKey is one ORDER BY item over final columns.
type SortKey struct {
	Column     int
	Desc       bool
	NullsFirst bool // PostgreSQL's default: NULLS FIRST only for DESC
	// Tail says Column counts among Spec.HiddenTail's columns.
	Tail bool
	// ByteOrder says the key is explicitly COLLATE "C" (or "POSIX"): a
	// text key sorts in byte order whatever the database's collation.
	ByteOrder bool
}
