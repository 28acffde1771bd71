package difffuzz

import (
	"fmt"
	"strconv"
	"strings"
)

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
