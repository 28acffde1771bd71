package difffuzz

import (
	"fmt"
	"strconv"
	"strings"
)

// columnOf returns a column of kind k from sc, if any.
func (g *gen) columnOf(sc *scope, k kind) (string, bool) {
	var cs []string
	for _, s := range sc.srcs {
		for _, c := range s.cols {
			if c.k == k {
				cs = append(cs, s.ref(c.name))
			}
		}
	}
	if len(cs) == 0 {
		return "", false
	}
	return cs[g.r.IntN(len(cs))], true
}

// anyColumn returns some column of sc and its kind.
func (g *gen) anyColumn(sc *scope) expr {
	s := sc.srcs[g.r.IntN(len(sc.srcs))]
	c := s.cols[g.r.IntN(len(s.cols))]
	return expr{s.ref(c.name), c.k}
}

// scalar generates a row-level expression.
func (g *gen) scalar(sc *scope, depth int) expr {
	if depth > 2 || g.pct(45) {
		return g.anyColumn(sc)
	}
	k := kind(g.r.IntN(int(nKinds)))
	return g.scalarOf(sc, k, depth+1)
}

// scalarOf generates a row-level expression of kind k.
func (g *gen) scalarOf(sc *scope, k kind, depth int) expr {
	col := func() string {
		if c, ok := g.columnOf(sc, k); ok {
			return c
		}
		return g.literal(k)
	}
	if depth > 2 || g.pct(35) {
		return expr{col(), k}
	}
	switch k {
	case kInt:
		switch g.r.IntN(9) {
		case 0:
			return expr{g.literal(kInt), k}
		case 1:
			// % keeps the edge keys from overflowing.
			return expr{fmt.Sprintf("(%s %% %d)", col(), 2+g.c.IntN(9)), k}
		case 2:
			return expr{fmt.Sprintf("length(%s)", g.scalarOf(sc, kText, depth+1).sql), k}
		case 3:
			return expr{fmt.Sprintf("coalesce(%s, %s)", col(), g.literal(kInt)), k}
		case 4:
			return expr{fmt.Sprintf("extract(month FROM %s)::int", g.scalarOf(sc, kTime, depth+1).sql), k}
		case 5:
			return expr{fmt.Sprintf("CASE WHEN %s THEN %s ELSE %s END", g.pred(sc), col(), g.literal(kInt)), k}
		case 6:
			// NaN has no bigint value.
			return expr{fmt.Sprintf("nullif(%s, 'NaN')::bigint", g.scalarOf(sc, kNum, depth+1).sql), k}
		case 7:
			return expr{fmt.Sprintf("nullif(%s %% 3, 0)", col()), k}
		}
		return expr{fmt.Sprintf("greatest(%s %% 50, %d)", col(), g.c.IntN(50)), k}
	case kNum:
		switch g.r.IntN(7) {
		case 0:
			return expr{g.literal(kNum), k}
		case 1:
			return expr{fmt.Sprintf("(%s * %d)", col(), 1+g.c.IntN(5)), k}
		case 2:
			return expr{fmt.Sprintf("round(%s * 1.5, 2)", col()), k}
		case 3:
			return expr{fmt.Sprintf("(%s %% 1000)::numeric(10,2)", g.scalarOf(sc, kInt, depth+1).sql), k}
		case 4:
			return expr{fmt.Sprintf("coalesce(%s, 0.00)", col()), k}
		case 5:
			return expr{fmt.Sprintf("(%s - 0.5)", col()), k}
		}
		return expr{fmt.Sprintf("abs(%s)", col()), k}
	case kFloat:
		switch g.r.IntN(4) {
		case 0:
			return expr{fmt.Sprintf("(%s * 2)", col()), k}
		case 1:
			return expr{fmt.Sprintf("abs(%s)", col()), k}
		case 2:
			return expr{fmt.Sprintf("(%s %% 100)::float8", g.scalarOf(sc, kInt, depth+1).sql), k}
		}
		return expr{"NULL::float8", k}
	case kText:
		switch g.r.IntN(9) {
		case 0:
			return expr{g.literal(kText), k}
		case 1:
			return expr{fmt.Sprintf("lower(%s)", col()), k}
		case 2:
			return expr{fmt.Sprintf("coalesce(%s, '?')", col()), k}
		case 3:
			return expr{fmt.Sprintf("substr(%s, 1, %d)", col(), 1+g.c.IntN(8)), k}
		case 4:
			return expr{fmt.Sprintf("(%s)::text", g.scalarOf(sc, kInt, depth+1).sql), k}
		case 5:
			return expr{fmt.Sprintf("(%s || '-' || %s)", col(), col()), k}
		case 6:
			return expr{fmt.Sprintf("upper(%s)", col()), k}
		case 7:
			return expr{fmt.Sprintf("CAST(%s AS text)", g.scalarOf(sc, kNum, depth+1).sql), k}
		}
		return expr{fmt.Sprintf("nullif(%s, '%s')", col(), g.cpick(countries)), k}
	case kBool:
		switch g.r.IntN(3) {
		case 0:
			return expr{g.literal(kBool), k}
		case 1:
			return expr{"(" + g.simplePredOf(sc) + ")", k}
		}
		return expr{fmt.Sprintf("(%s IS NULL)", g.anyColumn(sc).sql), k}
	default:
		switch g.r.IntN(3) {
		case 0:
			return expr{fmt.Sprintf("date_trunc('month', %s)", col()), k}
		case 1:
			return expr{fmt.Sprintf("(%s + interval '%d days')", col(), g.c.IntN(30)), k}
		}
		return expr{g.literal(kTime), k}
	}
}

var countries = []string{"DE", "FR", "US", "BR", "JP", "IN", "ZA", "NZ"}

func (g *gen) literal(k kind) string {
	if g.pct(8) {
		return "NULL::" + typeName(k)
	}
	switch k {
	case kInt:
		return strconv.Itoa(g.c.IntN(20) - 5)
	case kNum:
		// Scale 2 like the numeric columns: equal numerics of different
		// scales (0 and 0.00) sort as ties yet print differently.
		return fmt.Sprintf("%d.%02d", g.c.IntN(500), g.c.IntN(100))
	case kFloat:
		return fmt.Sprintf("%d.5::float8", g.c.IntN(100))
	case kText:
		return "'" + g.cpick(tags) + "'"
	case kBool:
		return g.cpick([]string{"true", "false"})
	}
	return fmt.Sprintf("'2024-%02d-%02d 12:00:00+00'::timestamptz", 1+g.c.IntN(12), 1+g.c.IntN(28))
}

func typeName(k kind) string {
	return [...]string{"bigint", "numeric", "float8", "text", "boolean", "timestamptz"}[k]
}

// simplePred is a condition on one column of t.
func (g *gen) simplePred(t source) string {
	return g.simplePredOf(&scope{srcs: []source{t}})
}

func (g *gen) simplePredOf(sc *scope) string {
	c := g.anyColumn(sc)
	switch g.r.IntN(10) {
	case 0:
		return c.sql + " IS NULL"
	case 1:
		return c.sql + " IS NOT NULL"
	case 2:
		return fmt.Sprintf("%s IS DISTINCT FROM %s", c.sql, g.literal(c.k))
	}
	switch c.k {
	case kInt:
		if strings.HasSuffix(c.sql, ".id") || strings.HasSuffix(c.sql, ".user_id") {
			return fmt.Sprintf("%s %s %d", c.sql, g.pick([]string{"<", ">", "<=", ">=", "<>"}), g.c.IntN(Users))
		}
		return fmt.Sprintf("%s %s %d", c.sql, g.pick([]string{"<", ">", "=", "<>"}), g.c.IntN(10))
	case kNum, kFloat:
		return fmt.Sprintf("%s %s %d", c.sql, g.pick([]string{"<", ">", ">="}), g.c.IntN(500)-50)
	case kText:
		switch g.r.IntN(4) {
		case 0:
			return fmt.Sprintf("%s IN ('%s', '%s', 'paid')", c.sql, g.cpick(countries), g.cpick(countries))
		case 1:
			return fmt.Sprintf("%s LIKE '%s%%'", c.sql, g.cpick([]string{"name-00", "user1", "n", "S", "note 1", "p"}))
		case 2:
			return fmt.Sprintf("%s > '%s'", c.sql, g.cpick([]string{"M", "m", "name-005", "paid", ""}))
		}
		return fmt.Sprintf("%s = '%s'", c.sql, g.cpick(append(countries, statuses...)))
	case kBool:
		return g.pick([]string{"", "NOT "}) + c.sql
	}
	return fmt.Sprintf("%s < '2024-%02d-01 00:00:00+00'", c.sql, 1+g.c.IntN(12))
}

// pred generates a WHERE condition.
func (g *gen) pred(sc *scope) string {
	p := g.r.IntN(100)
	switch {
	case p < 50:
		return g.simplePredOf(sc)
	case p < 60:
		return fmt.Sprintf("(%s OR %s)", g.simplePredOf(sc), g.simplePredOf(sc))
	case p < 65:
		return fmt.Sprintf("NOT (%s)", g.simplePredOf(sc))
	case p < 85:
		return g.simplePredOf(sc)
	}
	// Subqueries, on a user or order of sc when there is one.
	var t source
	found := false
	for _, s := range sc.srcs {
		if s.key != "" && (!found || g.pct(50)) {
			t, found = s, true
		}
	}
	if !found || g.depth > 0 {
		return g.simplePredOf(sc)
	}
	g.depth++
	defer func() { g.depth-- }()
	x := g.alias("x")
	xo := orders(x)
	extra := ""
	if g.pct(50) {
		extra = " AND " + g.simplePred(xo)
	}
	switch g.r.IntN(7) {
	case 0, 1:
		return fmt.Sprintf("%sEXISTS (SELECT 1 FROM orders %s WHERE %s = %s%s)", g.pick([]string{"", "NOT "}), x, xo.ref("user_id"), t.ref(t.key), extra)
	case 2:
		return fmt.Sprintf("%s %sIN (SELECT %s FROM orders %s WHERE %s%s)", t.ref(t.key), g.pick([]string{"", "NOT "}), xo.ref("user_id"), x, g.simplePred(xo), extra)
	case 3:
		return fmt.Sprintf("%s IN (SELECT %s FROM orders %s WHERE %s%s)", t.ref(t.key), xo.ref("user_id"), x, g.keyCond(xo), extra)
	case 4:
		return fmt.Sprintf("(SELECT count(*) FROM orders %s WHERE %s = %s%s) > %d", x, xo.ref("user_id"), t.ref(t.key), extra, g.c.IntN(6))
	case 5:
		return fmt.Sprintf("%s IN (SELECT n FROM generate_series(1, %d) %s(n))", t.ref(t.key), 1+g.c.IntN(Users), x)
	}
	return fmt.Sprintf("EXISTS (SELECT 1 FROM (VALUES (1), (2), (3)) %s(n) WHERE %s.n = %s %% 4)", x, x, t.ref(t.key))
}

// nonConstant is a row-level expression that is not a bare literal
// (which ORDER BY and GROUP BY would read as a position).
func (g *gen) nonConstant(sc *scope) expr {
	e := g.scalar(sc, 1)
	if isLiteral(e.sql) {
		return g.anyColumn(sc)
	}
	return e
}

func isLiteral(s string) bool {
	if s == "" {
		return false
	}
	c := s[0]
	return c >= '0' && c <= '9' || c == '\'' || c == '-' || strings.HasPrefix(s, "NULL") || s == "true" || s == "false"
}

// groupKey is a GROUP BY expression.
func (g *gen) groupKey(sc *scope) expr {
	if g.pct(20) {
		if t, ok := g.tableSource(sc); ok {
			return expr{t.ref(t.key), kInt}
		}
	}
	var cs []expr
	for _, s := range sc.srcs {
		for _, c := range s.cols {
			switch c.name {
			case "country", "city", "status", "active", "quantity", "tag", "n", "user_id", "note":
				cs = append(cs, expr{s.ref(c.name), c.k})
			}
		}
	}
	if len(cs) == 0 || g.pct(25) {
		return g.nonConstant(sc)
	}
	c := cs[g.r.IntN(len(cs))]
	if c.k == kText && g.pct(25) {
		return expr{"lower(" + c.sql + ")", kText}
	}
	return c
}

// kindOfGroupKey: only the kinds of set operations' columns matter, and
// aggregate queries are not used in set operations.
func (g *gen) kindOfGroupKey(string) kind { return kText }

// aggExpr generates an aggregate, maybe inside an expression.
func (g *gen) aggExpr(sc *scope) expr {
	num := func() expr {
		for i := 0; i < 4; i++ {
			k := []kind{kInt, kNum, kFloat}[g.r.IntN(3)]
			if c, ok := g.columnOf(sc, k); ok {
				return expr{c, k}
			}
		}
		return g.scalarOf(sc, kNum, 1)
	}
	var a expr
	switch g.r.IntN(17) {
	case 0, 1:
		a = expr{"count(*)", kInt}
	case 2:
		a = expr{"count(" + g.anyColumn(sc).sql + ")", kInt}
	case 3, 4:
		a = expr{"sum(" + num().sql + ")", kNum}
	case 5:
		a = expr{"avg(" + num().sql + ")", kNum}
	case 6, 7:
		c := g.anyColumn(sc)
		if c.k == kBool {
			a = expr{"bool_and(" + c.sql + ")", kBool}
		} else {
			a = expr{g.pick([]string{"min", "max"}) + "(" + c.sql + ")", c.k}
		}
	case 8:
		a = expr{g.pick([]string{"bool_or", "every"}) + "(" + g.simplePredOf(sc) + ")", kBool}
	case 9:
		a = expr{"count(DISTINCT " + g.anyColumn(sc).sql + ")", kInt}
	case 10:
		c, ok := g.columnOf(sc, kText)
		if !ok {
			c = "'x'"
		}
		a = expr{fmt.Sprintf("string_agg(%s, ',' ORDER BY %s)", c, c), kText}
	case 11:
		a = expr{g.pick([]string{"stddev", "variance"}) + "(" + g.scalarOf(sc, kNum, 3).sql + ")", kNum}
	case 12:
		a = expr{fmt.Sprintf("count(*) FILTER (WHERE %s)", g.simplePredOf(sc)), kInt}
	case 13:
		c := num()
		a = expr{fmt.Sprintf("max(%s) - min(%s)", c.sql, c.sql), c.k}
	case 15:
		switch g.r.IntN(3) {
		case 0:
			if c, ok := g.columnOf(sc, kFloat); ok {
				a = expr{"avg(" + c + "::real)", kFloat}
				break
			}
			fallthrough
		case 1:
			if c, ok := g.columnOf(sc, kText); ok {
				a = expr{fmt.Sprintf("%s(%s COLLATE \"und-x-icu\")", g.pick([]string{"min", "max"}), c), kText}
				break
			}
			fallthrough
		default:
			a = expr{"sum(" + g.scalarOf(sc, kInt, 1).sql + ")", kNum}
		}
	case 14:
		c := num()
		if c.k == kFloat {
			c.sql += "::numeric"
		}
		a = expr{fmt.Sprintf("round(avg(%s), %d)", c.sql, g.c.IntN(4)), kNum}
	default:
		a = expr{"sum(" + g.scalarOf(sc, kInt, 1).sql + ")", kNum}
	}
	if g.pct(15) {
		switch g.r.IntN(4) {
		case 0:
			a = expr{"(" + a.sql + ")::text", kText}
		case 1:
			if a.k == kInt || a.k == kNum {
				a = expr{"(" + a.sql + " + 1)", a.k}
			}
		case 2:
			if a.k == kInt {
				a = expr{"(" + a.sql + ")::int", kInt}
			}
		default:
			if a.k == kInt || a.k == kNum {
				a = expr{"coalesce(" + a.sql + ", 0)", a.k}
			}
		}
	}
	return a
}

func (g *gen) havingPred(sc *scope, groupBy []string) string {
	switch g.r.IntN(4) {
	case 0:
		return fmt.Sprintf("count(*) > %d", g.c.IntN(5))
	case 1:
		if c, ok := g.columnOf(sc, kNum); ok {
			return fmt.Sprintf("sum(%s) > %d", c, g.c.IntN(1000))
		}
	case 2:
		if len(groupBy) > 0 {
			return groupBy[0] + " IS NOT NULL"
		}
	}
	return fmt.Sprintf("count(%s) > 0", g.anyColumn(sc).sql)
}

// window generates a window function whose result does not depend on
// the order of peers.
func (g *gen) window(sc *scope) expr {
	var part string
	switch g.r.IntN(3) {
	case 0:
		if t, ok := g.tableSource(sc); ok {
			part = "PARTITION BY " + t.ref(t.key)
		}
	case 1:
		part = "PARTITION BY " + g.anyColumn(sc).sql
	}
	var uniq []string
	for _, s := range sc.srcs {
		if s.uniq != "" {
			uniq = append(uniq, s.ref(s.uniq))
		}
	}
	order := "ORDER BY " + strings.Join(uniq, ", ")
	switch g.r.IntN(6) {
	case 0:
		return expr{fmt.Sprintf("row_number() OVER (%s %s)", part, order), kInt}
	case 1:
		c := g.anyColumn(sc)
		return expr{fmt.Sprintf("rank() OVER (%s ORDER BY %s)", part, c.sql), kInt}
	case 2:
		c := g.anyColumn(sc)
		return expr{fmt.Sprintf("lag(%s) OVER (%s %s)", c.sql, part, order), c.k}
	case 3:
		return expr{fmt.Sprintf("count(*) OVER (%s)", part), kInt}
	case 4:
		if c, ok := g.columnOf(sc, kNum); ok {
			return expr{fmt.Sprintf("sum(%s) OVER (%s)", c, part), kNum}
		}
	}
	return expr{fmt.Sprintf("dense_rank() OVER (%s ORDER BY %s)", part, g.anyColumn(sc).sql), kInt}
}

// scalarSubquery is a subquery in the select list that returns one row.
func (g *gen) scalarSubquery(sc *scope) expr {
	x := g.alias("x")
	if t, ok := g.tableSource(sc); ok && g.pct(70) {
		return expr{fmt.Sprintf("(SELECT count(*) FROM orders %s WHERE %s.user_id = %s)", x, x, t.ref(t.key)), kInt}
	}
	if g.pct(50) {
		return expr{fmt.Sprintf("(SELECT max(%s.n) FROM generate_series(1, %d) %s(n))", x, 1+g.c.IntN(9), x), kInt}
	}
	return expr{fmt.Sprintf("(SELECT %s.name FROM users %s WHERE %s.id = %s)", x, x, x, g.keyValue()), kText}
}

// setOp generates UNION/INTERSECT/EXCEPT [ALL] of two SELECTs of the
// same column kinds.
func (g *gen) setOp() (string, bool) {
	n := 1 + g.r.IntN(2)
	kinds := make([]kind, n)
	for i := range kinds {
		kinds[i] = []kind{kInt, kText, kNum}[g.r.IntN(3)]
	}
	shared := ""
	if g.pct(50) {
		shared = g.keyValue()
	}
	side := func() string {
		t := g.table()
		sc := &scope{srcs: []source{t}}
		cols := make([]string, n)
		for i, k := range kinds {
			cols[i] = g.scalarOf(sc, k, 1).sql
		}
		where := ""
		if shared != "" {
			where = fmt.Sprintf(" WHERE %s = %s", t.ref(t.key), shared)
		} else if g.pct(60) {
			where = " WHERE " + g.keyCond(t)
		} else if g.pct(60) {
			where = " WHERE " + g.simplePred(t)
		}
		return fmt.Sprintf("SELECT %s FROM %s %s%s", strings.Join(cols, ", "), t.table, t.alias, where)
	}
	op := g.pick([]string{"UNION", "UNION ALL", "INTERSECT", "EXCEPT", "UNION", "UNION ALL", "INTERSECT ALL", "EXCEPT ALL"})
	sql := side() + " " + op + " " + side()
	if !g.pct(50) {
		return sql, false
	}
	var order []string
	for _, i := range g.r.Perm(n) {
		order = append(order, strconv.Itoa(i+1)+g.dir())
	}
	sql += " ORDER BY " + strings.Join(order, ", ")
	if g.pct(40) {
		sql += fmt.Sprintf(" LIMIT %d", g.c.IntN(10))
	}
	return sql, true
}
