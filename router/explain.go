package router

import (
	"fmt"
	"strings"

	"github.com/pgshard/pgshard/router/merge"
	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/shardmap"
)

// EXPLAIN (pgshard) and SHOW pgshard.route are answered by a shard
// running a VALUES query the router builds: the answer then arrives in
// order with everything else the session sends, in either protocol
// state, without the proxy producing result sets itself.

// explainColumns are the columns of EXPLAIN (pgshard).
const explainColumns = "shard, route, statement, detail"

// explainSQL returns the query that answers EXPLAIN (pgshard) for p, the
// plan of the statement in sql.
func explainSQL(p plan.Plan, sql string) string {
	inner := explainedText(sql)
	var rows [][4]string
	add := func(shard, route, stmt, detail string) {
		rows = append(rows, [4]string{shard, route, stmt, detail})
	}
	hinted := ""
	if p.Hinted {
		hinted = "chosen by a pgshard hint"
	}
	switch d := p.Decision(); {
	case p.Kind == plan.Utility:
		for _, shard := range p.Shards {
			stmt := inner
			if q, ok := p.PerShardSQL[shard]; ok {
				stmt = explainedText(q) // rendered from the whole text
			}
			add(shard, "utility", stmt, "on every shard, all or none (shard by shard when it cannot run in a transaction block)")
		}
	case d == "single" || d == "default":
		add(p.Shards[0], d, inner, hinted)
	case d == "multi" || d == "all":
		route := "scatter"
		if d == "multi" {
			route = "multi"
		}
		detail := mergeDetail(p)
		for _, shard := range p.Shards {
			stmt := inner
			if p.ShardSQL != "" {
				stmt = p.ShardSQL
			}
			if q, ok := p.PerShardSQL[shard]; ok && p.PerShardStale {
				if strings.HasPrefix(strings.ToUpper(q), "EXPLAIN") {
					q = explainedText(q) // rendered from the whole text
				}
				add(shard, route, q, detail+"; stale rows of a moving interval left out")
				continue
			}
			if q, ok := p.PerShardSQL[shard]; ok && p.PerShardKeys {
				stmt = q // deparsed from the statement alone
				add(shard, route, stmt, detail+"; only this shard's keys in the list")
				continue
			} else if ok {
				stmt = explainedText(q) // rendered from the whole text
				detail = "rows of this shard, one transaction per shard, all committed or none"
			}
			add(shard, route, stmt, detail)
		}
	case d == "copy-in":
		for _, shard := range p.Shards {
			add(shard, "copy-in", inner, fmt.Sprintf("rows split by column %d (%s format)", p.Copy.KeyColumn+1, p.Copy.Format))
		}
	case d == "refused":
		detail := "SQLSTATE " + p.Err.Code + ": " + p.Err.Message
		if p.Err.Hint != "" {
			detail += " (hint: " + p.Err.Hint + ")"
		}
		add("", "refused", inner, detail)
	default:
		add("", d, inner, "answered by the proxy")
	}
	var b strings.Builder
	b.WriteString("SELECT * FROM (VALUES ")
	for i, r := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for j, v := range r {
			if j > 0 {
				b.WriteString(", ")
			}
			if v == "" && j != 2 {
				b.WriteString("NULL::text")
			} else {
				b.WriteString(quoteLiteral(v))
			}
		}
		b.WriteByte(')')
	}
	b.WriteString(") AS route(" + explainColumns + ")")
	return b.String()
}

// showRouteSQL answers SHOW pgshard.route: the session's routing hints
// and how to see a statement's route.
func showRouteSQL(q Query) string {
	return "SELECT * FROM (VALUES ('pgshard.shard', " + quoteLiteral(q.HintShard) + "), ('pgshard.key', " + quoteLiteral(q.HintKey) +
		"), ('usage', 'EXPLAIN (pgshard) <statement> shows where a statement goes')) AS route(setting, value)"
}

// showShardsSQL answers SHOW pgshard.shards: every shard of the map in
// a VALUES query — name, primary, replicas, state, the map's epoch, and
// (from state, when set) the primary's and the replicas' health, the
// fenced former primaries and the switch in progress.
func showShardsSQL(m *shardmap.Map, state func(addr string) string) string {
	if state == nil {
		state = func(string) string { return "unknown" }
	}
	var b strings.Builder
	b.WriteString("SELECT * FROM (VALUES ")
	for i, sh := range m.Shards {
		if i > 0 {
			b.WriteString(", ")
		}
		var replicas, rstates, fenced []string
		for _, r := range sh.Replicas {
			replicas = append(replicas, r.String())
			rstates = append(rstates, r.String()+" "+state(r.String()))
		}
		for _, f := range sh.Fenced {
			fenced = append(fenced, f.String())
		}
		sw := ""
		if x := sh.Switch; x != nil {
			sw = fmt.Sprintf("%s from %s", x.Kind, x.From)
			if x.To != (shardmap.Endpoint{}) {
				sw += " to " + x.To.String()
			}
			if x.Step != "" {
				sw += " (" + x.Step + ")"
			}
		}
		fmt.Fprintf(&b, "(%s, %s, %s, %s, %d::bigint, %s, %s, %s, %s)", quoteLiteral(sh.Name), quoteLiteral(sh.Primary.String()),
			quoteLiteral(strings.Join(replicas, ",")), quoteLiteral(string(sh.State)), m.Epoch,
			quoteLiteral(state(sh.Primary.String())), quoteLiteral(strings.Join(rstates, "; ")),
			quoteLiteral(strings.Join(fenced, ",")), quoteLiteral(sw))
	}
	b.WriteString(") AS shards(shard, primary_address, replicas, state, map_epoch, primary_state, replica_states, fenced, switch)")
	return b.String()
}

// mergeDetail describes how the shards' results of p are combined.
func mergeDetail(p plan.Plan) string {
	if p.Broadcast {
		return "runs on every shard; row counts summed; each shard commits on its own"
	}
	m := p.Merge
	if m == nil {
		return "results concatenated"
	}
	var parts []string
	aggregated := false
	for _, c := range m.Combine {
		if c != merge.CombineNone {
			aggregated = true
		}
	}
	if aggregated {
		parts = append(parts, "aggregates combined per group")
	}
	if m.Distinct {
		parts = append(parts, "duplicates removed")
	}
	if len(m.OrderBy) > 0 {
		var keys []string
		for _, k := range m.OrderBy {
			s := fmt.Sprintf("column %d", k.Column+1)
			if k.Desc {
				s += " DESC"
			}
			if k.NullsFirst {
				s += " NULLS FIRST"
			} else {
				s += " NULLS LAST"
			}
			keys = append(keys, s)
		}
		parts = append(parts, "merged in order of "+strings.Join(keys, ", "))
	}
	if m.Offset > 0 {
		parts = append(parts, fmt.Sprintf("offset %d", m.Offset))
	}
	if m.Limit >= 0 {
		parts = append(parts, fmt.Sprintf("limit %d", m.Limit))
	}
	if len(parts) == 0 {
		return "results concatenated"
	}
	return strings.Join(parts, "; ")
}

// explainedText returns the statement after "EXPLAIN (...)".
func explainedText(sql string) string {
	depth := 0
	for i := 0; i < len(sql); i++ {
		switch sql[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return strings.TrimSpace(sql[i+1:])
			}
		}
	}
	return sql
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
