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
