package plan

import (
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// A UNION ALL whose parts each read rows of one shard (key conditions)
// runs on those shards: each shard gets the whole statement with the
// parts of other shards limited to no rows (LIMIT 0), so that every shard
// resolves the column names and types as PostgreSQL does for the whole
// statement, and the results are concatenated.

// unionSplit is the template of such a UNION ALL.
type unionSplit struct {
	classPart []int     // by key class: the part it is in
	parts     int       // number of parts
	segs      []segment // the statement with a LIMIT gate in every part
}

// unionAllParts returns the parts of sel when it is a chain of UNION ALL
// of plain SELECTs without ORDER BY, LIMIT, locking or WITH (at the top
// or in a part), else nil.
func unionAllParts(sel *pg.SelectStmt) []*pg.SelectStmt {
	var parts []*pg.SelectStmt
	ok := true
	var visit func(s *pg.SelectStmt, top bool)
	visit = func(s *pg.SelectStmt, top bool) {
		if s == nil || len(s.SortClause) > 0 || s.LimitCount != nil || s.LimitOffset != nil || len(s.LockingClause) > 0 ||
			s.WithClause != nil || s.IntoClause != nil {
			ok = false
			return
		}
		switch s.Op {
		case pg.SetOperation_SETOP_UNION:
			if !s.All {
				ok = false
				return
			}
			visit(s.Larg, false)
			visit(s.Rarg, false)
		case pg.SetOperation_SETOP_NONE:
			if top || len(s.ValuesLists) > 0 {
				ok = false
				return
			}
			parts = append(parts, s)
		default:
			ok = false
		}
	}
	visit(sel, true)
	if !ok || len(parts) < 2 {
		return nil
	}
	return parts
}

// unionTemplate builds the unionSplit of sel for the key classes of rt,
// or nil when sel is not such a UNION ALL or a part reads no sharded
// table.
func (b *builder) unionTemplate(sel *pg.SelectStmt, rt *route) *unionSplit {
	parts := unionAllParts(sel)
	if parts == nil || rt.needShard != "" || len(rt.roots) != len(rt.classes) {
		return nil
	}
	partOf := make(map[*pg.RangeVar]int)
	for i, p := range parts {
		walk(p.ProtoReflect(), func(m protoreflect.Message) bool {
			if rv, ok := m.Interface().(*pg.RangeVar); ok {
				partOf[rv] = i
			}
			return true
		})
	}
	u := &unionSplit{parts: len(parts), classPart: make([]int, len(rt.roots))}
	covered := make([]bool, len(parts))
	for c, r := range rt.roots {
		i, ok := partOf[r.rv]
		if !ok {
			return nil
		}
		u.classPart[c] = i
		covered[i] = true
	}
	if slices.Contains(covered, false) {
		return nil // a part without a sharded table would run on every shard
	}
	out := proto.Clone(sel).(*pg.SelectStmt)
	gated := unionAllParts(out)
	for i, p := range gated {
		p.LimitCount = &pg.Node{Node: &pg.Node_ParamRef{ParamRef: &pg.ParamRef{Number: int32(gateBase + i)}}}
		p.LimitOption = pg.LimitOption_LIMIT_OPTION_COUNT
	}
	segs, err := b.deparseMarked(out)
	if err != nil {
		return nil
	}
	u.segs = segs
	return u
}

// unionPlan routes one execution of a UNION ALL template: ok is false when
// the ordinary path decides (every part on one and the same shard, or a
// key that cannot be read).
func (st *state) unionPlan(t *template, in *execInput) (Plan, bool) {
	u := t.union
	partShard := make([]string, u.parts)
	for c, srcs := range t.classes {
		var shards []string
		for _, src := range srcs {
			if err := st.resolve(t.dist, src, in, func(s string) {
				if !slices.Contains(shards, s) {
					shards = append(shards, s)
				}
			}); err != nil {
				return Plan{}, false
			}
		}
		p := u.classPart[c]
		switch {
		case len(shards) == 0:
			// An empty IN list: no row; the part can run anywhere.
		case len(shards) > 1 || partShard[p] != "" && partShard[p] != shards[0]:
			return Plan{Kind: Refused, Stmt: StmtSelect, Err: refusal(
				"a UNION ALL part reads rows of several shards",
				"give each part of the UNION ALL a key condition that selects one shard, or run the parts separately")}, true
		default:
			partShard[p] = shards[0]
		}
	}
	var set []string
	for i, s := range partShard {
		if s == "" {
			s = st.distShards[t.dist][0]
			partShard[i] = s
		}
		if !slices.Contains(set, s) {
			set = append(set, s)
		}
	}
	if len(set) == 1 {
		return Plan{}, false
	}
	slices.Sort(set)
	p := *t.multi
	p.Kind, p.Reach, p.Shards, p.Merge, p.ShardSQL, p.Calls, p.Err = Scatter, ReachKey, set, nil, "", nil, nil
	p.PerShardSQL = make(map[string]string, len(set))
	open := make([]bool, u.parts)
	for _, s := range set {
		for i := range open {
			open[i] = partShard[i] == s
		}
		p.PerShardSQL[s] = renderGated(u.segs, in, open)
	}
	p.Table = strings.Clone(t.base.Table)
	return p, true
}

// dropUnion makes t plan its SELECT alone when another statement wraps it
// (EXPLAIN, COPY (query) TO): the per-shard statements of a UNION ALL
// would lose the wrapper. Its plan over several shards is then the
// refusal it had without unionSplit.
func (t *template) dropUnion() {
	if t.union != nil {
		t.union = nil
		t.multi = t.onKeyError
	}
	t.keyList = nil // so are the statements pruned to each shard's keys
}
