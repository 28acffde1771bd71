package shardmap

import (
	"slices"
	"strconv"
	"strings"
)

// This file says which rows a map change takes away from the shard that
// holds them: the key intervals that change owner (Diff's moves) with the
// tables of their distribution, and the SQL predicate that selects an
// interval's rows on a server. `pgshard map apply` counts those rows on
// the old owner and refuses a change that would strand any.

// DataMove is a key interval [Lo, Hi) of a distribution (of hash values
// for a hash distribution) that a map change gives to another shard, with
// the tables whose rows in it would have to move.
type DataMove struct {
	Distribution string
	KeyType      KeyType
	Strategy     Strategy
	IntervalMove
	// Unsharded says that the move is the distribution's default shard
	// changing: the whole of its unsharded tables moves (Lo and Hi are
	// -inf and +inf).
	Unsharded bool
	// Tables are the distribution's sharded tables in either map (the
	// unsharded ones for Unsharded), in name order, each with its key
	// column.
	Tables []Table
}

// Interval describes the moving interval for people: "[401, 501)", or
// "hash [-inf, 0)" for a hash distribution.
func (m *DataMove) Interval() string {
	if m.Unsharded {
		return "(its unsharded tables, default shard)"
	}
	s := "[" + m.Lo.String() + ", " + m.Hi.String() + ")"
	if m.Strategy == Hash {
		s = "hash " + s
	}
	return s
}

// Predicate is the SQL condition that selects table's rows in the moving
// interval (see [IntervalPredicate]); "true" for an unsharded table.
func (m *DataMove) Predicate(t Table) string {
	if m.Unsharded {
		return "true"
	}
	return IntervalPredicate(m.KeyType, m.Strategy, QuoteIdent(t.KeyColumn), m.Lo, m.Hi)
}

// DataMoves returns the intervals that change owner from cur to next
// (both valid maps), in distribution and key order, each with the sharded
// tables of its distribution. A distribution added or removed, an
// interval split or merged without a change of owner, and shards added or
// removed move no data. A distribution whose key type or strategy changes
// places every key anew: unless one shard owns every key in both maps,
// each of its current intervals counts as moving (To is ""). A default
// shard that changes moves the distribution's unsharded tables whole
// (Unsharded).
func DataMoves(cur, next *Map) []DataMove {
	if cur == nil || next == nil {
		return nil
	}
	var out []DataMove
	for _, dd := range Diff(cur, next).Distributions {
		if dd.Change != ChangeChanged {
			continue
		}
		o, n := dd.Old, dd.New
		if o.DefaultShard != "" && o.DefaultShard != n.DefaultShard {
			if tables := distTables(cur, next, dd.Name, Unsharded); len(tables) > 0 {
				out = append(out, DataMove{Distribution: dd.Name, KeyType: o.KeyType, Strategy: o.Strategy, Unsharded: true,
					IntervalMove: IntervalMove{Lo: NegInf(), Hi: PosInf(), From: o.DefaultShard, To: n.DefaultShard}, Tables: tables})
			}
		}
		moves := dd.Moves
		if o.KeyType != n.KeyType || o.Strategy != n.Strategy {
			moves = nil
			if owner := soleOwner(o); owner == "" || owner != soleOwner(n) {
				for _, iv := range o.Intervals {
					moves = append(moves, IntervalMove{Lo: iv.Lo, Hi: iv.Hi, From: iv.Shard})
				}
			}
		}
		if len(moves) == 0 {
			continue
		}
		tables := distTables(cur, next, dd.Name, Sharded)
		for _, mv := range moves {
			out = append(out, DataMove{Distribution: dd.Name, KeyType: o.KeyType, Strategy: o.Strategy, IntervalMove: mv, Tables: tables})
		}
	}
	return out
}

// soleOwner is the shard owning every interval of d, or "".
func soleOwner(d *Distribution) string {
	owner := ""
	for i, iv := range d.Intervals {
		if i > 0 && iv.Shard != owner {
			return ""
		}
		owner = iv.Shard
	}
	return owner
}

// distTables lists the tables of kind of distribution dist in cur and in
// next (cur's entry where both have one), in name order.
func distTables(cur, next *Map, dist string, kind TableKind) []Table {
	seen := make(map[string]bool)
	var out []Table
	for _, m := range []*Map{cur, next} {
		for _, t := range m.Tables {
			if t.Kind == kind && t.Distribution == dist && !seen[t.Name] {
				seen[t.Name] = true
				out = append(out, t)
			}
		}
	}
	slices.SortFunc(out, func(a, b Table) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// IntervalPredicate returns a SQL boolean expression, true for the rows
// whose key expr (a quoted column name) lies in [lo, hi) of a
// distribution of key type kt and strategy st: the key itself for Range
// (text compared as COLLATE "C", as pgshard orders keys), the key's hash
// as pgshard computes it ([KeyType.HashSQL]) for Hash. An infinite bound
// adds no condition; [-inf, +inf) is "(expr) IS NOT NULL": a NULL key is
// outside every interval, as the router places none. The expression is
// parenthesized, and bounds are written as literals, so it also fits
// where no parameters can be given (a publication's row filter).
func IntervalPredicate(kt KeyType, st Strategy, expr string, lo, hi Bound) string {
	subject := expr
	switch {
	case st == Hash:
		subject = kt.HashSQL(expr)
	case kt == KeyText:
		subject = "(" + expr + `)::text COLLATE "C"`
	case kt == KeyUUID:
		subject = "(" + expr + ")::uuid"
	}
	var conds []string
	if !lo.IsNegInf() {
		conds = append(conds, subject+" >= "+boundLiteral(lo))
	}
	if !hi.IsPosInf() {
		conds = append(conds, subject+" < "+boundLiteral(hi))
	}
	if len(conds) == 0 {
		return "((" + expr + ") IS NOT NULL)"
	}
	return "(" + strings.Join(conds, " AND ") + ")"
}

// boundLiteral writes a finite bound as a SQL literal: an integer, an
// escape string constant (E'...', the same whatever
// standard_conforming_strings says) or a uuid.
func boundLiteral(b Bound) string {
	if v, ok := b.Int64(); ok {
		return "(" + strconv.FormatInt(v, 10) + ")::int8"
	}
	if s, ok := b.Text(); ok {
		return "E'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + `'::text COLLATE "C"`
	}
	if u, ok := b.UUID(); ok {
		return "'" + u.String() + "'::uuid"
	}
	return "NULL"
}

// QuoteIdent quotes an identifier for SQL: "users", "Odd""Name".
func QuoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// QuoteTable quotes a map table name (schema-qualified, lower-case, as
// PostgreSQL folds it): public.users becomes "public"."users".
func QuoteTable(name string) string {
	schema, table, ok := strings.Cut(name, ".")
	if !ok {
		return QuoteIdent(name)
	}
	return QuoteIdent(schema) + "." + QuoteIdent(table)
}
