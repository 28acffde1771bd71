package plan

import (
	"slices"
	"sort"
	"strings"
	"time"

	pg "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgshard/pgshard/router/sqllex"
)

// insertStmt plans an INSERT.
func (b *builder) insertStmt(ins *pg.InsertStmt) *template {
	a := &analysis{b: b}
	sc := &scope{}
	a.with(ins.WithClause, sc)
	target := a.addRef(ins.Relation, sc, true)
	if !target.sharded() {
		// Into an unsharded or unknown table: wherever the SELECT part
		// goes, which must be the table's shard.
		if ins.SelectStmt != nil {
			a.selectStmt(ins.SelectStmt.GetSelectStmt(), sc, true)
		}
		return b.writeRoute(a, StmtInsert)
	}
	key := target.ti.t.KeyColumn
	if ins.OnConflictClause != nil {
		for _, n := range ins.OnConflictClause.TargetList {
			if rt := n.GetResTarget(); rt != nil && strings.ToLower(rt.Name) == key {
				return refusedTemplate(StmtInsert, "INSERT ... ON CONFLICT DO UPDATE of "+target.name+" changes its sharding key "+key, "do not update the key column")
			}
		}
	}
	if len(a.refs) > 1 {
		return refusedTemplate(StmtInsert, "INSERT into sharded table "+target.name+" with a WITH clause that reads tables is not supported", "run the queries separately")
	}
	k := -1
	if len(ins.Cols) == 0 {
		if ins.SelectStmt == nil {
			return refusedTemplate(StmtInsert, "INSERT into sharded table "+target.name+" must give its sharding key column "+key,
				"name the columns: INSERT INTO "+target.name+" ("+key+", ...) VALUES (...)")
		}
		// The key's position among the table's columns, when the catalog
		// told (Planner.SetKeyPosition).
		var until time.Time
		if k, until = b.st.keyPosition(target.name); k < 0 {
			t := refusedTemplate(StmtInsert, "INSERT into sharded table "+target.name+" needs a column list (pgshard does not know the table's column order, so it cannot find the sharding key "+key+")",
				"name the columns: INSERT INTO "+target.name+" ("+key+", ...) VALUES (...)")
			t.base.NeedKeyPosition, t.base.NeedKeyColumn = target.name, key
			t.base.Shards = b.st.shardList(b.st.distShards[target.ti.dist][0])
			return t
		}
		b.expires = until
	}
	for i, c := range ins.Cols {
		if strings.ToLower(c.GetResTarget().GetName()) == key {
			k = i
		}
	}
	if k < 0 {
		return refusedTemplate(StmtInsert, "INSERT into sharded table "+target.name+" does not give its sharding key column "+key,
			"add "+key+" to the column list with the row's key value")
	}
	sel := ins.SelectStmt.GetSelectStmt()
	if sel == nil {
		return refusedTemplate(StmtInsert, "INSERT into sharded table "+target.name+" without rows", "")
	}
	dist := target.ti.dist
	t := &template{hintable: true, dist: dist, base: Plan{Kind: Single, Reach: ReachKey, Stmt: StmtInsert, Table: target.name}}
	if len(sel.ValuesLists) == 0 || sel.Op != pg.SetOperation_SETOP_NONE || len(sel.FromClause) > 0 {
		return b.insertSelect(t, a, sc, target, sel, k)
	}
	rows := make([]valueSrc, 0, len(sel.ValuesLists))
	for _, row := range sel.ValuesLists {
		l := row.GetList()
		if l == nil || k >= len(l.Items) {
			return refusedTemplate(StmtInsert, "INSERT row has fewer values than columns", "")
		}
		v, ok := b.value(l.Items[k])
		if !ok {
			return refusedTemplate(StmtInsert, "INSERT into sharded table "+target.name+" must give the sharding key "+key+
				" as a constant or a parameter in every row, not an expression (pgshard routes the row by its value)",
				"compute the key in the application, or use SET pgshard.shard")
		}
		rows = append(rows, v)
		for _, it := range l.Items {
			a.exprs(it, sc)
		}
	}
	if len(a.refs) > 1 {
		return refusedTemplate(StmtInsert, "INSERT into sharded table "+target.name+" with subqueries in VALUES is not supported", "run the subqueries first")
	}
	t.classes = [][]valueSrc{rows}
	if cacheable(target.ti) && ins.OnConflictClause == nil {
		// (ON CONFLICT may update a row with another key.)
		t.rowKey = cacheKeySource(t.classes)
	}
	t.onKeyError = &Plan{Kind: Refused, Stmt: StmtInsert, Table: target.name, Err: refusal("cannot route INSERT into "+target.name+" by its key "+key, "")}
	if len(rows) > 1 {
		spans, ok := valuesRows(b.norm.key, len(rows))
		if !ok {
			t.multi = &Plan{Kind: Refused, Stmt: StmtInsert, Table: target.name, Err: refusal(
				"this multi-row INSERT has rows for several shards and pgshard cannot split it", "insert the rows one shard at a time")}
		} else {
			t.insert = &insertSplit{rows: rows, spans: spans}
		}
	}
	return t
}

// insertSelect plans INSERT ... SELECT into a sharded table: allowed when
// the SELECT runs on one shard and gives the key column from a key
// constrained to that shard.
func (b *builder) insertSelect(t *template, a *analysis, sc *scope, target *tableRef, sel *pg.SelectStmt, k int) *template {
	before := len(a.refs)
	a.selectStmt(sel, sc, true)
	refuse := func() *template {
		return refusedTemplate(StmtInsert, "INSERT ... SELECT into sharded table "+target.name+" can only run when the SELECT reads one shard, constrained on the key that becomes "+target.ti.t.KeyColumn,
			"add a condition on the key of the SELECT's sharded table, or copy the rows through the application")
	}
	if len(sel.TargetList) <= k || len(a.refs) == before {
		return refuse()
	}
	// Route the SELECT part alone.
	a.refs = a.refs[before:]
	rt := a.decide()
	if rt.refusal != nil || rt.classes == nil || len(rt.classes) != 1 || rt.dist.dist != target.ti.dist || rt.needShard != "" {
		return refuse()
	}
	r := a.keyRef(sel.TargetList[k].GetResTarget().GetVal(), sc.childOf(a.refs))
	if r == nil {
		return refuse()
	}
	t.classes = rt.classes
	t.multi = &Plan{Kind: Refused, Stmt: StmtInsert, Table: target.name, Err: refuse().base.Err}
	t.onKeyError = t.multi
	return t
}

// childOf returns a scope holding refs, below s.
func (s *scope) childOf(refs []*tableRef) *scope {
	var top []*tableRef
	for _, r := range refs {
		if r.top {
			top = append(top, r)
		}
	}
	return &scope{parent: s, refs: top}
}

// writeRoute routes a write to an unsharded or unknown table.
func (b *builder) writeRoute(a *analysis, kind Stmt) *template {
	rt := a.decide()
	if rt.refusal != nil {
		return refusedTemplate(kind, rt.refusal.Message, rt.refusal.Hint)
	}
	if rt.dist == nil {
		return &template{hintable: true, base: Plan{Kind: Single, Reach: ReachDefault, Stmt: kind, Shards: b.st.shardList(rt.defaultShard)}}
	}
	if rt.classes == nil || len(rt.classes) != 1 {
		return refusedTemplate(kind, "the statement writes an unsharded table from sharded table "+rt.table+" on several shards",
			"add a condition on the sharding key so that the rows come from one shard")
	}
	t := &template{hintable: true, dist: rt.dist.dist, needShard: rt.needShard, classes: rt.classes,
		base: Plan{Kind: Single, Reach: ReachKey, Stmt: kind, Table: rt.table}}
	t.multi = &Plan{Kind: Refused, Stmt: kind, Err: refusal("the statement reads rows of "+rt.table+" from several shards", "")}
	t.onKeyError = t.multi
	return t
}

// insertSplit splits a multi-row INSERT into one INSERT per shard.
type insertSplit struct {
	rows  []valueSrc
	spans [][2]int32 // each row's (...) in the normalized text
}

func (is *insertSplit) split(st *state, t *template, in *execInput, shards []string) Plan {
	byShard := make(map[string][]int, len(shards))
	for i, src := range is.rows {
		var s string
		if err := st.resolve(t.dist, src, in, func(x string) { s = x }); err != nil {
			return *t.onKeyError
		}
		byShard[s] = append(byShard[s], i)
	}
	key := in.norm.key
	prefix := [2]int32{0, is.spans[0][0]}
	suffix := [2]int32{is.spans[len(is.spans)-1][1], int32(len(key))}
	per := make(map[string]string, len(byShard))
	for s, rows := range byShard {
		var sb strings.Builder
		renderNorm(&sb, in, prefix)
		for j, r := range rows {
			if j > 0 {
				sb.WriteString(", ")
			}
			renderNorm(&sb, in, is.spans[r])
		}
		renderNorm(&sb, in, suffix)
		per[s] = sb.String()
	}
	p := t.base
	p.Kind, p.Reach = Scatter, ReachKey
	p.Shards = shards
	p.PerShardSQL = per
	p.PerShardRows = byShard
	return p
}

// renderNorm writes the normalized text in span sp with this execution's
// literals in place of the placeholders.
func renderNorm(sb *strings.Builder, in *execInput, sp [2]int32) {
	key := in.norm.key
	lit := sort.Search(len(in.norm.litNorm), func(i int) bool { return in.norm.litNorm[i] >= sp[0] })
	last := sp[0]
	for lit < len(in.norm.litNorm) && in.norm.litNorm[lit] < sp[1] {
		p := in.norm.litNorm[lit]
		sb.Write(key[last:p])
		sb.WriteString(in.norm.text(in.sql, lit))
		last = p + 2
		lit++
	}
	sb.Write(key[last:sp[1]])
}

// valuesRows finds the n rows "( ... )" after the top-level VALUES keyword
// of a normalized INSERT.
func valuesRows(key []byte, n int) ([][2]int32, bool) {
	s := string(key)
	depth := 0
	i := 0
	start := -1
	for i < len(s) && start < 0 {
		c := s[i]
		switch {
		case c == '"':
			i = sqllex.Skip(s, i)
			continue
		case c == '$' && (i == 0 || !sqllex.IsIdentByte(s[i-1])):
			if j, ok := sqllex.DollarQuoteEnd(s, i); ok {
				i = j
				continue
			}
		case c == '(':
			depth++
		case c == ')':
			depth--
		case depth == 0 && (c|0x20 == 'v') && (i == 0 || !sqllex.IsIdentByte(s[i-1])) && len(s) >= i+6 &&
			strings.EqualFold(s[i:i+6], "values") && (i+6 == len(s) || !sqllex.IsIdentByte(s[i+6])):
			start = i + 6
		}
		i++
	}
	if start < 0 {
		return nil, false
	}
	var rows [][2]int32
	i = start
	for {
		for i < len(s) && s[i] == ' ' {
			i++
		}
		if i >= len(s) || s[i] != '(' {
			break
		}
		begin := i
		d := 0
		for i < len(s) {
			c := s[i]
			if c == '"' {
				i = sqllex.Skip(s, i)
				continue
			}
			if c == '$' && (i == 0 || !sqllex.IsIdentByte(s[i-1])) {
				if j, ok := sqllex.DollarQuoteEnd(s, i); ok {
					i = j
					continue
				}
			}
			if c == '(' {
				d++
			} else if c == ')' {
				d--
				if d == 0 {
					i++
					break
				}
			}
			i++
		}
		rows = append(rows, [2]int32{int32(begin), int32(i)})
		for i < len(s) && s[i] == ' ' {
			i++
		}
		if i < len(s) && s[i] == ',' {
			i++
			continue
		}
		break
	}
	return rows, len(rows) == n
}

// copyStmt plans COPY.
func (b *builder) copyStmt(c *pg.CopyStmt) *template {
	opts, refused := copyOptions(c)
	if refused != nil {
		return refused
	}
	if c.Query != nil {
		// COPY (query) TO: where the query goes; results are concatenated.
		t := b.statement(c.Query)
		t.dropUnion()
		for _, p := range []*Plan{&t.base, t.multi} {
			if p != nil && p.Kind != Refused {
				p.Copy = opts
				if p.Merge != nil {
					*p = Plan{Kind: Refused, Stmt: StmtCopy, Err: refusal("COPY (query) TO over several shards cannot merge (ORDER BY, aggregates, DISTINCT, LIMIT)", "COPY from each shard with a pgshard.shard hint, or drop the clause")}
				}
				p.Stmt = StmtCopy
				p.ReadOnly = true
			}
		}
		t.shardSQL, t.multiSQL, t.limit, t.multiLimit = nil, nil, nil, nil
		return t
	}
	a := &analysis{b: b}
	target := a.addRef(c.Relation, &scope{}, true)
	if !target.sharded() {
		shard := b.st.defaultShard
		if target.ti != nil && target.ti.dist != nil {
			shard = target.ti.dist.DefaultShard
		}
		return &template{hintable: true, base: Plan{Kind: Single, Reach: ReachDefault, Stmt: StmtCopy, ReadOnly: !c.IsFrom, Shards: b.st.shardList(shard)}}
	}
	dist := target.ti.dist
	if !c.IsFrom {
		return &template{hintable: true, dist: dist, base: Plan{Kind: CopyOut, Reach: ReachAll, Stmt: StmtCopy, ReadOnly: true, Table: target.name, Shards: b.st.distShards[dist], Copy: opts}}
	}
	if c.Filename != "" || c.IsProgram {
		return refusedTemplate(StmtCopy, "COPY into sharded table "+target.name+" from a server-side file or program", "use COPY ... FROM STDIN")
	}
	key := target.ti.t.KeyColumn
	if len(c.Attlist) == 0 {
		return refusedTemplate(StmtCopy, "COPY into sharded table "+target.name+" needs an explicit column list: pgshard does not know the table's column order, so it cannot find the sharding key "+key+" in the rows",
			"COPY "+target.name+" ("+key+", ...) FROM STDIN")
	}
	spec := opts
	spec.KeyColumn, spec.Columns, spec.dist = -1, len(c.Attlist), target.ti.dist
	for i, n := range c.Attlist {
		name := n.GetString_().GetSval()
		spec.Names = append(spec.Names, name)
		if strings.ToLower(name) == key {
			spec.KeyColumn = i
		}
	}
	if spec.KeyColumn < 0 {
		return refusedTemplate(StmtCopy, "COPY into sharded table "+target.name+" does not include its sharding key column "+key, "add "+key+" to the column list")
	}
	return &template{hintable: true, dist: dist, base: Plan{Kind: CopyIn, Reach: ReachAll, Stmt: StmtCopy, Table: target.name, Shards: b.st.distShards[dist], Copy: spec}}
}

// copyOptions reads the format options of a COPY statement.
func copyOptions(c *pg.CopyStmt) (*CopySpec, *template) {
	spec := &CopySpec{KeyColumn: -1, Format: "text", Delimiter: '\t'}
	delimSet := false
	for _, o := range c.Options {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		val := defString(d.Arg)
		switch strings.ToLower(d.Defname) {
		case "format":
			spec.Format = strings.ToLower(val)
		case "delimiter":
			if len(val) != 1 {
				return nil, refusedTemplate(StmtCopy, "COPY delimiter must be one byte", "")
			}
			spec.Delimiter, delimSet = val[0], true
		case "header":
			spec.Header = d.Arg == nil || slices.Contains([]string{"true", "on", "1", "match"}, strings.ToLower(val))
		case "encoding":
			if c.IsFrom && !slices.Contains([]string{"utf8", "utf-8", "unicode"}, strings.ToLower(val)) {
				return nil, refusedTemplate(StmtCopy, "COPY FROM with ENCODING "+val+" is not supported: pgshard splits the rows as UTF8", "send the data in UTF8")
			}
		case "quote", "escape":
			if c.IsFrom && val != `"` {
				return nil, refusedTemplate(StmtCopy, "COPY FROM with a "+strings.ToLower(d.Defname)+" character other than '\"' is not supported: pgshard could not find the sharding key in the rows", "use the default CSV quoting")
			}
		}
	}
	if spec.Format == "csv" && !delimSet {
		spec.Delimiter = ','
	}
	if spec.Format != "text" && spec.Format != "csv" && spec.Format != "binary" {
		return nil, refusedTemplate(StmtCopy, "unknown COPY format "+spec.Format, "")
	}
	return spec, nil
}

func defString(n *pg.Node) string {
	if n == nil {
		return ""
	}
	if s := n.GetString_(); s != nil {
		return s.Sval
	}
	if c := n.GetAConst(); c != nil {
		if s := c.GetSval(); s != nil {
			return s.Sval
		}
	}
	if i := n.GetInteger(); i != nil {
		if i.Ival != 0 {
			return "1"
		}
		return "0"
	}
	if bv := n.GetBoolean(); bv != nil {
		if bv.Boolval {
			return "true"
		}
		return "false"
	}
	return ""
}
