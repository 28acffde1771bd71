package difffuzz

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Statement is one generated SELECT.
type Statement struct {
	Seed uint64
	SQL  string
	// Args are the values of the statement's parameters ($1, ...), which
	// stand for key values in some statements of the extended protocol.
	Args []any
	// Ordered: the statement's ORDER BY fixes the order of the output
	// rows completely (ties only between identical rows), so rows are
	// compared as sequences; otherwise as multisets.
	Ordered bool
}

// Generate returns the statement of seed: the same seed gives the same
// statement on every run. Seeds 2k and 2k+1 give statements of the same
// shape (and protocol mode) that differ in their constants, run one
// after the other: the second one may reuse the first one's cached plan.
func Generate(seed uint64) Statement {
	g := &gen{r: rand.New(rand.NewPCG(seed/2, 0x6469666666757a7a)), c: rand.New(rand.NewPCG(seed, 0x636f6e7374))}
	g.params = Mode(seed) != pgx.QueryExecModeSimpleProtocol && g.pct(50)
	sql, ordered := g.statement()
	return Statement{Seed: seed, SQL: sql, Ordered: ordered, Args: g.args}
}

// kind is the type of an expression, as far as the generator cares.
type kind int

const (
	kInt   kind = iota // bigint or int
	kNum               // numeric
	kFloat             // double precision (sums exact: multiples of 1/64)
	kText
	kBool
	kTime // timestamptz
	nKinds
)

type column struct {
	name string
	k    kind
}

var (
	userColumns = []column{{"id", kInt}, {"name", kText}, {"email", kText}, {"country", kText}, {"city", kText},
		{"score", kNum}, {"active", kBool}, {"created_at", kTime}}
	orderColumns = []column{{"id", kInt}, {"user_id", kInt}, {"amount", kNum}, {"quantity", kInt}, {"weight", kFloat},
		{"status", kText}, {"note", kText}, {"created_at", kTime}}
)

// source is a relation in a FROM clause.
type source struct {
	alias string
	table string // "users", "orders", or "" for derived rows
	cols  []column
	key   string // the sharding key column, "" if none
	// uniq is a column unique within the source ("" if none).
	uniq string
	// nullable: the source is on the nullable side of an outer join.
	nullable bool
	// joinCol is a column holding user ids (a CTE's), "" if none.
	joinCol string
}

func (s source) ref(c string) string { return s.alias + "." + c }

// scope is what expressions of a query level may name.
type scope struct {
	srcs []source
	// pending is a CTE the FROM clause must read.
	pending []source
	// joinConds are join conditions of a comma join, for WHERE.
	joinConds []string
}

// expr is a generated expression and its kind.
type expr struct {
	sql string
	k   kind
}

type gen struct {
	// r decides the statement's shape, c its constants (key values,
	// comparison values, LIMIT counts), so that statements that share a
	// shape differ only in constants.
	r, c   *rand.Rand
	aliasN int
	depth  int
	// params: key values become parameters, their values go to args.
	params bool
	args   []any
}

func (g *gen) pct(p int) bool          { return g.r.IntN(100) < p }
func (g *gen) pick(xs []string) string { return xs[g.r.IntN(len(xs))] }

// cpick picks a constant: from the stream of constants, not of shapes.
func (g *gen) cpick(xs []string) string { return xs[g.c.IntN(len(xs))] }
func (g *gen) alias(base string) string {
	g.aliasN++
	return base + strconv.Itoa(g.aliasN)
}

// Key values: mostly ids of the dataset (users 1..Users), sometimes the
// edge rows' keys, ids next to the range maps' bounds or ids that hold no
// row; in statements with parameters, mostly a parameter.
func (g *gen) keyValue() string { return g.key(false) }

// key is keyValue; bare allows a parameter without a cast (where the
// key column gives its type).
func (g *gen) key(bare bool) string {
	k := g.keyLiteral()
	if !g.params || g.pct(20) {
		return k
	}
	v, err := strconv.ParseInt(k, 10, 64)
	if err != nil {
		panic(err)
	}
	// The parameter's Go type decides its type and format on the wire.
	switch q := g.c.IntN(10); {
	case q < 2:
		g.args = append(g.args, k)
	case q < 4 && int64(int32(v)) == v:
		g.args = append(g.args, int32(v))
	default:
		g.args = append(g.args, v)
	}
	if bare && g.pct(50) {
		return fmt.Sprintf("$%d", len(g.args))
	}
	return fmt.Sprintf("$%d::bigint", len(g.args))
}

// keyLiteral is a key value written as an integer literal.
func (g *gen) keyLiteral() string {
	switch g.c.IntN(20) {
	case 0:
		return g.cpick(edgeKeys)
	case 1:
		return strconv.Itoa(Users + 1 + g.c.IntN(50))
	case 2:
		// Next to a bound of the range maps over 2 and 4 shards.
		return strconv.Itoa((1+g.c.IntN(3))*Users/4 + g.c.IntN(3) - 1)
	}
	return strconv.Itoa(1 + g.c.IntN(Users))
}

var edgeKeys = []string{"0", "-1", "-9223372036854775808", "9223372036854775807"}

// statement returns a top-level statement and whether it is ordered.
func (g *gen) statement() (string, bool) {
	if g.pct(12) {
		return g.setOp()
	}
	var with []string
	sc := &scope{}
	if g.pct(10) {
		name := g.alias("c")
		def, src := g.cteDef(name)
		with = append(with, def)
		sc.pending = append(sc.pending, src)
	}
	q := g.selectCore(sc, true)
	sql := q.sql
	if len(with) > 0 {
		prefix := "WITH "
		if strings.Contains(with[0], "UNION ALL") {
			prefix = "WITH RECURSIVE "
		}
		sql = prefix + strings.Join(with, ", ") + " " + sql
	}
	return sql, q.ordered
}

// cteDef returns a CTE definition and the source it provides.
func (g *gen) cteDef(name string) (string, source) {
	switch g.r.IntN(3) {
	case 0:
		return fmt.Sprintf("%s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM %s WHERE n < %d)", name, name, 2+g.c.IntN(30)),
			source{alias: name, cols: []column{{"n", kInt}}, uniq: "n", joinCol: "n"}
	case 1:
		sql, cols := g.groupedOrders()
		return name + " AS (" + sql + ")", source{alias: name, cols: cols, uniq: "user_id", joinCol: "user_id"}
	}
	t := g.table()
	where := ""
	if g.pct(70) {
		where = " WHERE " + g.keyCond(t)
	}
	return fmt.Sprintf("%s AS (SELECT * FROM %s %s%s)", name, t.table, t.alias, where),
		source{alias: name, cols: t.cols, uniq: t.uniq, joinCol: t.key}
}

// groupedOrders is a per-user aggregate of orders.
func (g *gen) groupedOrders() (string, []column) {
	a := g.alias("x")
	where := ""
	if g.pct(50) {
		where = fmt.Sprintf(" WHERE %s.status <> '%s'", a, g.cpick(statuses))
	}
	if g.pct(40) {
		where = addCond(where, g.keyCond(orders(a)))
	}
	sql := fmt.Sprintf("SELECT %[1]s.user_id, count(*) AS n, sum(%[1]s.amount) AS total FROM orders %[1]s%[2]s GROUP BY %[1]s.user_id", a, where)
	return sql, []column{{"user_id", kInt}, {"n", kInt}, {"total", kNum}}
}

func addCond(where, c string) string {
	if where == "" {
		return " WHERE " + c
	}
	return where + " AND " + c
}

var statuses = []string{"new", "paid", "shipped", "cancelled"}

func (g *gen) table() source {
	if g.pct(50) {
		return source{alias: g.alias("u"), table: "users", cols: userColumns, key: "id", uniq: "id"}
	}
	return source{alias: g.alias("o"), table: "orders", cols: orderColumns, key: "user_id", uniq: "id"}
}

func users(alias string) source {
	return source{alias: alias, table: "users", cols: userColumns, key: "id", uniq: "id"}
}

func orders(alias string) source {
	return source{alias: alias, table: "orders", cols: orderColumns, key: "user_id", uniq: "id"}
}

// from generates a FROM clause and adds its sources to sc.
func (g *gen) from(sc *scope) string {
	if len(sc.pending) > 0 {
		c := sc.pending[0]
		sc.pending = nil
		sc.srcs = append(sc.srcs, c)
		if g.pct(50) {
			return c.alias
		}
		u := users(g.alias("u"))
		join := "JOIN"
		if g.pct(20) {
			join, u.nullable = "LEFT JOIN", true
		}
		sc.srcs = append(sc.srcs, u)
		return fmt.Sprintf("%s %s users %s ON %s = %s", c.alias, join, u.alias, u.ref("id"), c.ref(c.joinCol))
	}
	p := g.r.IntN(100)
	switch {
	case p < 32:
		t := g.table()
		sc.srcs = append(sc.srcs, t)
		return t.table + " " + t.alias
	case p < 52: // users and orders on the key
		u, o := users(g.alias("u")), orders(g.alias("o"))
		on := fmt.Sprintf("%s = %s", o.ref("user_id"), u.ref("id"))
		if g.pct(50) {
			on = fmt.Sprintf("%s = %s", u.ref("id"), o.ref("user_id"))
		}
		if g.pct(25) {
			on += " AND " + g.simplePred(o)
		}
		join := "JOIN"
		switch q := g.r.IntN(100); {
		case q < 20:
			join, o.nullable = "LEFT JOIN", true
		case q < 27:
			join, u.nullable = "RIGHT JOIN", true
		case q < 32:
			join, u.nullable, o.nullable = "FULL JOIN", true, true
		}
		sc.srcs = append(sc.srcs, u, o)
		return fmt.Sprintf("users %s %s orders %s ON %s", u.alias, join, o.alias, on)
	case p < 57: // off the key
		a, b := g.table(), users(g.alias("u"))
		sc.srcs = append(sc.srcs, a, b)
		return fmt.Sprintf("%s %s JOIN users %s ON %s = %s %% 100", a.table, a.alias, b.alias, b.ref("id"), a.ref("id"))
	case p < 62: // users with users on the key
		a, b := users(g.alias("u")), users(g.alias("u"))
		sc.srcs = append(sc.srcs, a, b)
		return fmt.Sprintf("users %s JOIN users %s ON %s = %s", a.alias, b.alias, a.ref("id"), b.ref("id"))
	case p < 68: // grouped subquery, maybe joined to users
		sql, cols := g.groupedOrders()
		t := source{alias: g.alias("t"), cols: cols, uniq: "user_id"}
		sc.srcs = append(sc.srcs, t)
		if g.pct(60) {
			u := users(g.alias("u"))
			sc.srcs = append(sc.srcs, u)
			return fmt.Sprintf("(%s) %s JOIN users %s ON %s = %s", sql, t.alias, u.alias, u.ref("id"), t.ref("user_id"))
		}
		return fmt.Sprintf("(%s) %s", sql, t.alias)
	case p < 74: // VALUES or generate_series joined to a table on its key
		v, vsql := g.unshardedRows()
		t := g.table()
		join := "JOIN"
		if g.pct(25) {
			join, t.nullable = "LEFT JOIN", true
		} else if g.pct(10) {
			join, v.nullable = "RIGHT JOIN", true
		}
		sc.srcs = append(sc.srcs, v, t)
		return fmt.Sprintf("%s %s %s %s ON %s = %s", vsql, join, t.table, t.alias, t.ref(t.key), v.ref(v.cols[0].name))
	case p < 77: // unsharded rows only
		v, vsql := g.unshardedRows()
		sc.srcs = append(sc.srcs, v)
		return vsql
	case p < 81: // comma join with the key equality in WHERE
		u, o := users(g.alias("u")), orders(g.alias("o"))
		sc.srcs = append(sc.srcs, u, o)
		sc.joinConds = append(sc.joinConds, fmt.Sprintf("%s = %s", u.ref("id"), o.ref("user_id")))
		return fmt.Sprintf("users %s, orders %s", u.alias, o.alias)
	case p < 85: // LATERAL: a user's first orders
		u := users(g.alias("u"))
		l := g.alias("l")
		x := g.alias("x")
		lsrc := source{alias: l, cols: []column{{"id", kInt}, {"amount", kNum}}, uniq: "id"}
		join := "CROSS JOIN LATERAL"
		if g.pct(40) {
			join, lsrc.nullable = "LEFT JOIN LATERAL", true
		}
		on := ""
		if join == "LEFT JOIN LATERAL" {
			on = " ON true"
		}
		sc.srcs = append(sc.srcs, u, lsrc)
		return fmt.Sprintf("users %s %s (SELECT %s.id, %s.amount FROM orders %s WHERE %s.user_id = %s ORDER BY %s.id LIMIT %d) %s%s",
			u.alias, join, x, x, x, x, u.ref("id"), x, 1+g.c.IntN(3), l, on)
	case p < 87: // USING, NATURAL and nested joins
		switch g.r.IntN(4) {
		case 0:
			a, b := orders(g.alias("o")), orders(g.alias("o"))
			sc.srcs = append(sc.srcs, a, b)
			return fmt.Sprintf("orders %s JOIN orders %s USING (user_id)", a.alias, b.alias)
		case 1:
			a, b := users(g.alias("u")), users(g.alias("u"))
			sc.srcs = append(sc.srcs, a, b)
			return fmt.Sprintf("users %s NATURAL JOIN users %s", a.alias, b.alias)
		case 2:
			a, b := users(g.alias("u")), users(g.alias("u"))
			sc.srcs = append(sc.srcs, a, b)
			return fmt.Sprintf("users %s JOIN users %s USING (id)", a.alias, b.alias)
		}
		// A key constant inside a nested join on the nullable side.
		u, o, v := users(g.alias("u")), orders(g.alias("o")), users(g.alias("u"))
		o.nullable, v.nullable = true, true
		sc.srcs = append(sc.srcs, u, o, v)
		return fmt.Sprintf("users %s LEFT JOIN (orders %s JOIN users %s ON %s = %s AND %s = %s) ON %s = %s",
			u.alias, o.alias, v.alias, v.ref("id"), o.ref("user_id"), v.ref("id"), g.keyValue(), o.ref("user_id"), u.ref("id"))
	case p < 90: // a subquery over one table
		t := g.table()
		inner := t.table + " " + t.alias
		where := ""
		if g.pct(60) {
			where = " WHERE " + g.keyCond(t)
		} else if g.pct(50) {
			where = " WHERE " + g.simplePred(t)
		}
		s := source{alias: g.alias("s"), cols: t.cols, uniq: t.uniq, key: ""}
		sc.srcs = append(sc.srcs, s)
		return fmt.Sprintf("(SELECT * FROM %s%s) %s", inner, where, s.alias)
	default: // orders with its user and that user's other orders
		u, o, o2 := users(g.alias("u")), orders(g.alias("o")), orders(g.alias("o"))
		sc.srcs = append(sc.srcs, u, o, o2)
		return fmt.Sprintf("users %s JOIN orders %s ON %s = %s JOIN orders %s ON %s = %s AND %s < %s",
			u.alias, o.alias, o.ref("user_id"), u.ref("id"), o2.alias, o2.ref("user_id"), o.ref("user_id"), o2.ref("id"), o.ref("id"))
	}
}

// unshardedRows returns VALUES or generate_series rows whose first
// column holds user ids.
func (g *gen) unshardedRows() (source, string) {
	a := g.alias("v")
	if g.pct(50) {
		n := 1 + g.r.IntN(4)
		seen := map[string]bool{}
		var rows []string
		for i := 0; i < n; i++ {
			k := g.keyValue()
			if seen[k] {
				continue
			}
			seen[k] = true
			rows = append(rows, fmt.Sprintf("(%s::bigint, '%s')", k, g.cpick(tags)))
		}
		return source{alias: a, cols: []column{{"vid", kInt}, {"tag", kText}}, uniq: "vid"},
			fmt.Sprintf("(VALUES %s) %s(vid, tag)", strings.Join(rows, ", "), a)
	}
	lo := 1 + g.c.IntN(Users)
	return source{alias: a, cols: []column{{"n", kInt}}, uniq: "n"},
		fmt.Sprintf("generate_series(%d::bigint, %d) %s(n)", lo, lo+g.c.IntN(12), a)
}

var tags = []string{"a", "b", "c", "DE", "x y"}

// query is a generated SELECT.
type query struct {
	sql     string
	kinds   []kind
	ordered bool
}

// selectCore generates a SELECT over a FROM clause (added to sc's
// sources); top says it is the whole statement (its order matters).
func (g *gen) selectCore(sc *scope, top bool) query {
	from := g.from(sc)
	where := append([]string(nil), sc.joinConds...)
	sc.joinConds = nil
	if g.pct(45) {
		if t, ok := g.tableSource(sc); ok {
			where = append(where, g.keyCond(t))
		}
	}
	for n := g.r.IntN(3); n > 0; n-- {
		where = append(where, g.pred(sc))
	}
	var b strings.Builder
	b.WriteString("SELECT ")
	var items []expr
	var orderBy []string
	ordered := top && g.pct(55)
	aggregate := g.pct(35)
	var groupBy []string
	var having string
	distinct, distinctOn := false, ""
	if aggregate {
		for n := g.r.IntN(3); n > 0; n-- {
			groupBy = append(groupBy, g.groupKey(sc).sql)
		}
		groupBy = dedup(groupBy)
		shown := 0
		for _, k := range groupBy {
			if g.pct(85) {
				items = append(items, expr{sql: k, k: g.kindOfGroupKey(k)})
				shown++
			}
		}
		for n := 1 + g.r.IntN(3); n > 0; n-- {
			items = append(items, g.aggExpr(sc))
		}
		if g.pct(15) {
			having = g.havingPred(sc, groupBy)
		}
		_ = shown
	} else {
		rare := g.r.IntN(100)
		if rare >= 3 && rare < 5 && len(sc.srcs) == 1 {
			for _, c := range sc.srcs[0].cols {
				items = append(items, expr{"*" + c.name, c.k})
			}
		} else {
			for n := 1 + g.r.IntN(4); n > 0; n-- {
				items = append(items, g.scalar(sc, 0))
			}
			if g.pct(12) {
				items = append(items, g.window(sc))
			}
			if g.pct(8) {
				items = append(items, g.scalarSubquery(sc))
			}
		}
		switch {
		case rare < 2:
			// The same on every server, yet a per-shard value to pgshard.
			items = append(items, expr{"(now() > '2020-01-01 00:00:00+00')", kBool})
		case rare < 3:
			if t, ok := g.tableSource(sc); ok {
				items = append(items, expr{t.ref("tableoid") + "::regclass::text", kText})
			}
		}
		switch q := g.r.IntN(100); {
		case q < 10:
			distinct = true
		case q < 16 && top:
			distinctOn = g.nonConstant(sc).sql
			ordered = true
		}
	}
	if distinct {
		b.WriteString("DISTINCT ")
	}
	if distinctOn != "" {
		b.WriteString("DISTINCT ON (" + distinctOn + ") ")
	}
	star := len(items) > 0 && strings.HasPrefix(items[0].sql, "*")
	aliased := make([]bool, len(items))
	if star {
		b.WriteString("*")
	}
	for i, it := range items {
		if star {
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(it.sql)
		switch {
		case g.pct(5):
			// An output name that is also an input column's name.
			fmt.Fprintf(&b, " AS %s", g.pick([]string{"id", "country", "status", "quantity", "name"}))
		case g.pct(30):
			fmt.Fprintf(&b, " AS c%d", i+1)
			aliased[i] = true
		}
	}
	b.WriteString(" FROM " + from)
	if len(where) > 0 {
		b.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	if len(groupBy) > 0 {
		keys := groupBy
		if g.pct(20) && len(items) > 0 && len(groupBy) > 0 {
			// GROUP BY position of the shown keys, when they lead.
			keys = nil
			for i, k := range groupBy {
				if i < len(items) && items[i].sql == k {
					keys = append(keys, strconv.Itoa(i+1))
				} else {
					keys = append(keys, k)
				}
			}
		}
		if g.pct(5) {
			// By name: an output alias or an input column.
			keys = append(keys, g.pick([]string{"country", "status", "quantity", "id"}))
		}
		if g.pct(3) {
			b.WriteString(" GROUP BY ROLLUP (" + strings.Join(groupBy, ", ") + ")")
		} else {
			b.WriteString(" GROUP BY " + strings.Join(keys, ", "))
		}
	}
	if having != "" {
		b.WriteString(" HAVING " + having)
	}
	kinds := make([]kind, len(items))
	for i, it := range items {
		kinds[i] = it.k
	}
	if ordered {
		switch {
		case distinctOn != "":
			orderBy = append(orderBy, distinctOn+g.dir())
			for _, s := range sc.srcs {
				if s.uniq != "" {
					orderBy = append(orderBy, s.ref(s.uniq)+g.dir())
				}
			}
		default:
			if !distinct && !aggregate && g.pct(30) {
				orderBy = append(orderBy, g.nonConstant(sc).sql+g.dir())
			}
			for _, i := range g.r.Perm(len(items)) {
				// By position, output name or the expression itself.
				key := strconv.Itoa(i + 1)
				switch q := g.r.IntN(100); {
				case q < 15 && aliased[i]:
					key = fmt.Sprintf("c%d", i+1)
				case q < 30 && !star && !isLiteral(items[i].sql):
					key = items[i].sql
				}
				orderBy = append(orderBy, key+g.dir())
			}
		}
		b.WriteString(" ORDER BY " + strings.Join(orderBy, ", "))
		if g.pct(45) {
			switch q := g.r.IntN(100); {
			case q < 3:
				fmt.Fprintf(&b, " FETCH FIRST %d ROWS WITH TIES", 1+g.c.IntN(10))
			case q < 5:
				fmt.Fprintf(&b, " LIMIT 1 + %d", g.c.IntN(10))
			case q < 85:
				fmt.Fprintf(&b, " LIMIT %d", g.c.IntN(25))
			default:
				fmt.Fprintf(&b, " FETCH FIRST %d ROWS ONLY", 1+g.c.IntN(10))
			}
			if g.pct(35) {
				fmt.Fprintf(&b, " OFFSET %d", g.c.IntN(10))
			}
		} else if g.pct(10) {
			fmt.Fprintf(&b, " OFFSET %d", g.c.IntN(10))
		}
	}
	return query{sql: b.String(), kinds: kinds, ordered: ordered}
}

func dedup(xs []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

func (g *gen) dir() string {
	s := ""
	switch g.r.IntN(4) {
	case 0:
		s = " DESC"
	case 1:
		s = " ASC"
	}
	switch g.r.IntN(6) {
	case 0:
		s += " NULLS FIRST"
	case 1:
		s += " NULLS LAST"
	}
	return s
}

// tableSource returns a sharded table of sc that is not on the nullable
// side of an outer join, if there is one.
func (g *gen) tableSource(sc *scope) (source, bool) {
	var ts []source
	for _, s := range sc.srcs {
		if s.key != "" {
			ts = append(ts, s)
		}
	}
	if len(ts) == 0 {
		return source{}, false
	}
	return ts[g.r.IntN(len(ts))], true
}

// keyCond is a condition on t's sharding key.
func (g *gen) keyCond(t source) string {
	k := t.ref(t.key)
	switch g.r.IntN(9) {
	case 0, 1, 2:
		return fmt.Sprintf("%s = %s", k, g.key(true))
	case 3:
		return fmt.Sprintf("%s IN (%s)", k, g.keyList())
	case 4:
		return fmt.Sprintf("%s = ANY(ARRAY[%s]::bigint[])", k, g.keyList())
	case 5:
		lo := 1 + g.c.IntN(Users)
		return fmt.Sprintf("%s BETWEEN %d AND %d", k, lo, lo+g.c.IntN(40))
	case 6:
		return fmt.Sprintf("(%s = %s OR %s = %s)", k, g.key(true), k, g.key(true))
	}
	// Other spellings of key conditions, some of which do not route.
	v := g.keyLiteral()
	switch g.r.IntN(12) {
	case 0:
		return fmt.Sprintf("%s = '%s'::bigint", k, v)
	case 1:
		return fmt.Sprintf("%s = %s.0", k, v)
	case 2:
		return fmt.Sprintf("%s::numeric = %s", k, v)
	case 3:
		return fmt.Sprintf("%s = %s + 0", k, v)
	case 4:
		return fmt.Sprintf("%s IN (%s, NULL)", k, v)
	case 5:
		return fmt.Sprintf("%s = ANY('{%s,%s}')", k, v, g.keyLiteral())
	case 6:
		return fmt.Sprintf("%s = %s AND %s = %s", k, v, k, g.keyLiteral())
	case 7:
		return fmt.Sprintf("%s IS NOT DISTINCT FROM %s", k, v)
	case 8:
		return fmt.Sprintf("NOT (%s <> %s)", k, v)
	case 9:
		return fmt.Sprintf("(%s = %s OR %s)", k, v, g.simplePred(t))
	case 10:
		return fmt.Sprintf("NOT (%s = %s)", k, v)
	}
	return fmt.Sprintf("%s = %s::int", k, v)
}

func (g *gen) keyList() string {
	n := 1 + g.r.IntN(5)
	ks := make([]string, n)
	for i := range ks {
		ks[i] = g.keyValue()
	}
	return strings.Join(ks, ", ")
}

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
