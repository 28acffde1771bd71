package plan

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
)

// Options configure a Planner.
type Options struct {
	// DefaultShard receives statements that touch no table of the map
	// (SELECT 1, catalog queries, SET, BEGIN, ...). "" means the default
	// shard of the map's first distribution that has one, else the map's
	// first shard.
	DefaultShard string
	// CacheSize bounds the number of distinct normalized statements
	// cached; when it is reached the cache is emptied and refilled. 0
	// means 10000; negative disables the cache (every Route parses).
	CacheSize int
	// DefaultSchema qualifies unqualified table names; "" means "public".
	// (The planner does not follow the session's search_path.)
	DefaultSchema string
	// ReplicaSafeFuncs names functions, besides PostgreSQL's own read-only
	// ones, that never write (lower case; "name" or "schema.name"): reads
	// calling them may go to a replica (Plan.ReplicaSafe).
	ReplicaSafeFuncs []string
}

// Planner turns statements into Plans. It is safe for concurrent use.
// It parses a statement only when its normalized text is not in the plan
// cache; a cached plan is a template that one Route call completes with
// the statement's literals or parameters.
type Planner struct {
	opts    Options
	st      atomic.Pointer[state]
	scratch sync.Pool // *normalized
}

// New returns a Planner for map m (which must be valid and is not
// modified).
func New(m *shardmap.Map, opts Options) *Planner {
	if opts.CacheSize == 0 {
		opts.CacheSize = 10000
	}
	if opts.DefaultSchema == "" {
		opts.DefaultSchema = "public"
	}
	p := &Planner{opts: opts}
	p.scratch.New = func() any { return new(normalized) }
	p.SetMap(m)
	return p
}

// SetMap makes m the map used by later Route calls and drops every cached
// plan: plans built for the old map are never used with the new one.
func (p *Planner) SetMap(m *shardmap.Map) {
	p.st.Store(newState(m, p.opts))
}

// KeyPositionTTL is how long a key column position given to
// SetKeyPosition is used: a table changed by DDL that did not go through
// the planner's user (ForgetKeyPositions) is noticed at the latest after
// this.
const KeyPositionTTL = 30 * time.Second

// SetKeyPosition records that the sharding key column of table
// ("schema.table") is its pos-th column (0-based, dropped columns not
// counted), as the catalog says: an INSERT without a column list is then
// routed by the value at that position for KeyPositionTTL. Plans built
// before are dropped.
func (p *Planner) SetKeyPosition(table string, pos int) {
	st := p.st.Load()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.keyPos == nil {
		st.keyPos = make(map[string]keyPosition)
	}
	st.keyPos[strings.ToLower(table)] = keyPosition{pos: pos, until: time.Now().Add(KeyPositionTTL)}
	clear(st.cache)
}

// ForgetKeyPositions drops every key position SetKeyPosition gave (after
// DDL that may change a table's columns) and the plans built from them.
func (p *Planner) ForgetKeyPositions() {
	st := p.st.Load()
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.keyPos) > 0 {
		clear(st.keyPos)
		clear(st.cache)
	}
}

type keyPosition struct {
	pos   int
	until time.Time
}

// keyPosition returns the known key position of table, or -1.
func (st *state) keyPosition(table string) (int, time.Time) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	if k, ok := st.keyPos[table]; ok && time.Now().Before(k.until) {
		return k.pos, k.until
	}
	return -1, time.Time{}
}

// Epoch returns the epoch of the map in use.
func (p *Planner) Epoch() uint64 { return p.st.Load().m.Epoch }

// Map returns the map in use (shared: do not modify it).
func (p *Planner) Map() *shardmap.Map { return p.st.Load().m }

// CacheLen returns the number of normalized statements cached.
func (p *Planner) CacheLen() int {
	st := p.st.Load()
	st.mu.RLock()
	defer st.mu.RUnlock()
	return len(st.cache)
}

// Route returns the plan for one execution of sql with no session hint.
// See RouteHint.
func (p *Planner) Route(sql string, params [][]byte, paramFormats []int16, paramOIDs []uint32) (Plan, error) {
	return p.RouteHint(sql, Hint{}, params, paramFormats, paramOIDs)
}

// RouteHint returns the plan for one execution of sql. For the simple
// protocol params is nil; for the extended protocol params,
// paramFormats (as in Bind: none means all text, one applies to all)
// and paramOIDs (from Parse, may be nil) are the execution's. hint is the
// session's routing hint; a leading /* pgshard: ... */ comment in sql
// overrides it.
//
// The error is non-nil only when sql cannot be parsed (a *RefusalError
// with SQLSTATE 42601, which the session may also simply forward to a
// shard to get PostgreSQL's own message); every parsed statement gets a
// Plan, possibly Refused. sql may alias a network buffer: the Plan does
// not keep it.
func (p *Planner) RouteHint(sql string, hint Hint, params [][]byte, paramFormats []int16, paramOIDs []uint32) (Plan, error) {
	if strings.IndexByte(sql, 0) >= 0 {
		// Impossible on the wire (query strings are NUL-terminated), and
		// NUL is the normalizer's placeholder.
		return Plan{}, errNUL
	}
	st := p.st.Load()
	n := p.scratch.Get().(*normalized)
	defer p.scratch.Put(n)
	normalize(sql, n)
	in := execInput{sql: sql, norm: n, params: params, formats: paramFormats}

	t := st.lookup(n, sql)
	if t == nil {
		t = buildTemplate(st, sql, n)
		st.store(n, t, p.opts.CacheSize)
	}
	if t.parseErr != nil {
		return Plan{}, t.parseErr
	}
	plan := st.execute(t, &in, hint)
	if t.dist != nil && len(t.dist.Moving) > 0 {
		h := hint
		if n.hint != "" {
			h = parseHintComment(n.hint)
		}
		st.markMoving(&plan, t, &in, h)
	}
	if st.stale != nil {
		st.excludeStale(&plan, sql)
	}
	plan.Explain = t.explain
	if t.creates != nil {
		plan = t.creates.check(plan)
	}
	return plan, nil
}

// DescribeShards returns the shards any of which can parse and describe
// sql (answer Parse and Describe of the statement, not run it): every
// shard has the same schema, so a statement on sharded tables can be
// described by any shard of their distribution, one that names no table
// of the map by any shard of the map; one on unsharded tables only by
// their shard. The first shard returned is the one the statement would
// go to without a key (the default shard, where it is one of them).
// The slice is shared: callers must not modify it.
func (p *Planner) DescribeShards(sql string) []string {
	st := p.st.Load()
	if strings.IndexByte(sql, 0) >= 0 {
		return st.shardList(st.defaultShard)
	}
	n := p.scratch.Get().(*normalized)
	defer p.scratch.Put(n)
	normalize(sql, n)
	t := st.lookup(n, sql)
	if t == nil {
		t = buildTemplate(st, sql, n)
		st.store(n, t, p.opts.CacheSize)
	}
	switch {
	case t.parseErr != nil:
	case t.dist != nil && t.needShard != "":
		return st.shardList(t.needShard)
	case t.dist != nil:
		return st.describeShards[t.dist]
	case t.base.Reach == ReachDefault && (t.base.Anywhere || t.describeAnywhere):
		return st.allShards
	case t.base.Reach == ReachDefault && len(t.base.Shards) == 1:
		return t.base.Shards
	}
	return st.shardList(st.defaultShard)
}

// defaultFirst returns shards with the default shard moved to the front
// when it is one of them (a new slice then).
func (st *state) defaultFirst(shards []string) []string {
	i := slices.Index(shards, st.defaultShard)
	if i <= 0 {
		return shards
	}
	return append(append([]string{st.defaultShard}, shards[:i]...), shards[i+1:]...)
}

var errNUL = &RefusalError{Code: wire.SQLStateSyntaxError, Message: "the query text contains a NUL byte"}

// state is everything derived from one map: indexes and the plan cache.
type state struct {
	m          *shardmap.Map
	opts       Options
	tables     map[string]*tableInfo
	one        map[string][]string // shard → []string{shard}, shared
	distShards map[*shardmap.Distribution][]string
	// describeShards are distShards with the default shard first, and
	// allShards every shard of the map so (DescribeShards).
	describeShards map[*shardmap.Distribution][]string
	allShards      []string
	defaultShard   string
	safeFuncs      map[string]bool // Options.ReplicaSafeFuncs
	// stale are the stale-rows markers of the map by shard (stale.go);
	// nil when it has none. staleCache holds the statements rewritten
	// for them.
	stale      map[string][]staleOn
	staleMu    sync.Mutex
	staleCache map[string]staleRewrite

	mu     sync.RWMutex
	cache  map[string][]*template
	keyPos map[string]keyPosition // SetKeyPosition
}

type tableInfo struct {
	t    *shardmap.Table
	dist *shardmap.Distribution
}

func (ti *tableInfo) sharded() bool { return ti != nil && ti.t.Kind == shardmap.Sharded }

func newState(m *shardmap.Map, opts Options) *state {
	st := &state{
		m: m, opts: opts,
		tables:     make(map[string]*tableInfo, len(m.Tables)),
		one:        make(map[string][]string, len(m.Shards)),
		distShards: make(map[*shardmap.Distribution][]string),
		cache:      make(map[string][]*template),
		stale:      staleIndex(m),
	}
	for _, s := range m.Shards {
		st.one[s.Name] = []string{s.Name}
	}
	if len(opts.ReplicaSafeFuncs) > 0 {
		st.safeFuncs = make(map[string]bool, len(opts.ReplicaSafeFuncs))
		for _, f := range opts.ReplicaSafeFuncs {
			st.safeFuncs[strings.ToLower(f)] = true
		}
	}
	for i := range m.Distributions {
		d := &m.Distributions[i]
		var names []string
		for _, iv := range d.Intervals {
			if !slices.Contains(names, iv.Shard) {
				names = append(names, iv.Shard)
			}
		}
		slices.Sort(names)
		st.distShards[d] = names
		for _, n := range names {
			if st.one[n] == nil {
				st.one[n] = []string{n}
			}
		}
		if st.defaultShard == "" && d.DefaultShard != "" {
			st.defaultShard = d.DefaultShard
		}
	}
	for i := range m.Tables {
		t := &m.Tables[i]
		st.tables[strings.ToLower(t.Name)] = &tableInfo{t: t, dist: m.Distribution(t.Distribution)}
	}
	if opts.DefaultShard != "" {
		st.defaultShard = opts.DefaultShard
	}
	if st.defaultShard == "" && len(m.Shards) > 0 {
		st.defaultShard = m.Shards[0].Name
	}
	if st.defaultShard != "" && st.one[st.defaultShard] == nil {
		st.one[st.defaultShard] = []string{st.defaultShard}
	}
	st.describeShards = make(map[*shardmap.Distribution][]string, len(st.distShards))
	for d, names := range st.distShards {
		st.describeShards[d] = st.defaultFirst(names)
	}
	for _, s := range m.Shards {
		st.allShards = append(st.allShards, s.Name)
	}
	if st.defaultShard != "" && !slices.Contains(st.allShards, st.defaultShard) {
		st.allShards = append(st.allShards, st.defaultShard)
	}
	st.allShards = st.defaultFirst(st.allShards)
	return st
}

// shardList returns a shared one-element slice for shard s.
func (st *state) shardList(s string) []string {
	if l, ok := st.one[s]; ok {
		return l
	}
	return []string{s}
}

const maxVariants = 8

func (st *state) lookup(n *normalized, sql string) *template {
	st.mu.RLock()
	vs := st.cache[string(n.key)]
	st.mu.RUnlock()
	for _, t := range vs {
		if t.matches(n, sql) {
			if !t.expires.IsZero() && !time.Now().Before(t.expires) {
				return nil // built from a key position that has expired
			}
			return t
		}
	}
	return nil
}

func (st *state) store(n *normalized, t *template, limit int) {
	if limit < 0 {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.cache) >= limit {
		clear(st.cache)
	}
	k := string(n.key)
	vs := st.cache[k]
	if len(vs) >= maxVariants {
		vs = vs[1:]
	}
	st.cache[k] = append(slices.Clip(vs), t)
}

// pin requires literal lit to be exactly text for a template to apply:
// the plan depends on its value (ORDER BY 2, a hint value, ...).
type pin struct {
	lit  int32
	text string
}

// template is a cached plan for one normalized statement.
type template struct {
	nlits    int // literals in the normalized text (a raw NUL in the input could fake a placeholder)
	pins     []pin
	parseErr *RefusalError
	base     Plan // the plan when no key decides (static, or fallback)
	hintable bool // session and comment hints override the target
	// keyErrorMulti says onKeyError is the statement over several
	// shards (multi), whose merge needs multiSQL.
	keyErrorMulti bool
	dist          *shardmap.Distribution

	// Keyed plans: each class lists the sources of its key values; every
	// class must land on the same shards. Nil: not keyed.
	classes [][]valueSrc
	// onKeyError is the plan when a key value cannot be read (a NULL or
	// malformed value): a scatter for reads, a refusal for INSERT.
	onKeyError *Plan
	needShard  string       // targets must be exactly this shard (unsharded tables joined)
	multi      *Plan        // template for more than one target (Merge/ShardSQL) or a refusal
	insert     *insertSplit // multi-row INSERT split
	keyList    *keyList     // the multi plan's statement with each shard's keys of its IN list
	union      *unionSplit  // UNION ALL with parts on different shards
	shardSQL   []segment    // rendered into ShardSQL per execution
	limit      *limitSrc    // LIMIT/OFFSET read per execution
	multiSQL   []segment    // ShardSQL for the multi plan
	multiLimit *limitSrc
	// explain marks EXPLAIN (pgshard) of the statement: the plan is the
	// statement's, with Plan.Explain set.
	explain bool
	// expires, when set, is when the key position the template was built
	// from stops being trusted.
	expires time.Time
	// describeAnywhere: the statement names no table of the map, so any
	// shard can describe it (even when it may not run anywhere).
	describeAnywhere bool
	// creates is where the table a CREATE TABLE AS or SELECT INTO makes
	// must be (see createTarget), or nil.
	creates *createTarget
	// multiStmt marks a query string of several statements whose keys
	// must all land on one shard: any other outcome is multi (refused).
	multiStmt bool
	// rowKey, set only for a statement on a cacheable table that names
	// one key value, is where that value comes from (Plan.RowKey), and
	// pointRead says the statement is a cacheable point read.
	rowKey    *valueSrc
	pointRead bool
}

func (t *template) matches(n *normalized, sql string) bool {
	if len(n.lits) != t.nlits {
		return false
	}
	for _, p := range t.pins {
		if int(p.lit) >= len(n.lits) || n.text(sql, int(p.lit)) != p.text {
			return false
		}
	}
	return true
}

// execute completes template t for one execution.
func (st *state) execute(t *template, in *execInput, sessionHint Hint) Plan {
	if t.hintable {
		h := sessionHint
		if in.norm.hint != "" {
			h = parseHintComment(in.norm.hint)
		}
		if h.Shard != "" || h.Key != "" {
			return st.hinted(t, h)
		}
	}
	if t.classes == nil {
		return st.finish(t.base, t.shardSQL, t.limit, in)
	}
	var first string
	var set []string // more than one shard
	add := func(s string) {
		switch {
		case first == "":
			first = s
		case s == first || slices.Contains(set, s):
		default:
			if set == nil {
				set = append(set, first)
			}
			set = append(set, s)
		}
	}
	if t.union != nil {
		if p, ok := st.unionPlan(t, in); ok {
			return p
		}
	}
	for ci, srcs := range t.classes {
		var cfirst string
		var cset []string
		if ci > 0 {
			// Each further class must land on the same shards as the first.
			cfirst, cset, first, set = first, set, "", nil
		}
		for _, src := range srcs {
			if err := st.resolve(t.dist, src, in, add); err != nil {
				if t.onKeyError != nil {
					p := *t.onKeyError
					if p.Kind == Refused && p.Err != nil {
						p.Err = refusal(p.Err.Message+": "+err.Error(), p.Err.Hint)
					}
					if t.onKeyError == t.multi || t.keyErrorMulti {
						// The multi plan's merge needs its own shard SQL.
						return st.finish(p, t.multiSQL, t.multiLimit, in)
					}
					return st.finish(p, t.shardSQL, t.limit, in)
				}
				return Plan{Kind: Refused, Stmt: t.base.Stmt, Err: refusal("cannot route: "+err.Error(), "")}
			}
		}
		if ci > 0 && (first != cfirst || !slices.Equal(set, cset)) {
			slices.Sort(set)
			slices.Sort(cset)
			if first != cfirst || !slices.Equal(set, cset) {
				if t.multiStmt {
					return *t.multi
				}
				return Plan{Kind: Refused, Stmt: t.base.Stmt, Err: refusal(
					"the statement joins rows of "+t.base.Table+" that are on different shards",
					"join the tables on the sharding key, or use SET pgshard.shard")}
			}
		}
	}
	if first == "" {
		// An empty IN list or array: no row can match; any one shard answers.
		first = st.distShards[t.dist][0]
	}
	if t.multiStmt && (set != nil || t.needShard != "" && first != t.needShard) {
		return *t.multi
	}
	if set == nil {
		if t.needShard != "" && first != t.needShard {
			return Plan{Kind: Refused, Stmt: t.base.Stmt, Err: refusal(
				"the statement joins a sharded table whose rows here are on shard "+first+" with an unsharded table on shard "+t.needShard,
				"query the unsharded table separately")}
		}
		p := t.base
		p.Kind, p.Reach = Single, ReachKey
		p.Shards = st.shardList(first)
		p.Merge, p.ShardSQL, p.Broadcast = nil, "", false
		if t.rowKey != nil {
			p.RowKey = rowKeyText(t.dist.KeyType, *t.rowKey, in)
			p.PointRead = t.pointRead && p.RowKey != ""
		}
		return p
	}
	slices.Sort(set)
	if t.needShard != "" {
		return Plan{Kind: Refused, Stmt: t.base.Stmt, Err: refusal(
			"the statement joins rows of a sharded table on shards "+strings.Join(set, ", ")+" with an unsharded table on shard "+t.needShard,
			"query the unsharded table separately")}
	}
	if t.insert != nil {
		return t.insert.split(st, t, in, set)
	}
	p := *t.multi
	if p.Kind == Refused {
		return p
	}
	p.Reach = ReachKey
	p.Shards = set
	p = st.finish(p, t.multiSQL, t.multiLimit, in)
	if t.keyList != nil && p.Kind == Scatter {
		if per, err := t.keyList.render(st, t.dist, in, set); err == nil {
			p.PerShardSQL, p.PerShardKeys = per, true
		}
	}
	return p
}

// finish renders per-execution parts of a plan: ShardSQL and LIMIT.
func (st *state) finish(p Plan, segs []segment, lim *limitSrc, in *execInput) Plan {
	if segs != nil {
		p.ShardSQL = renderSegments(segs, in)
	}
	if lim != nil && p.Merge != nil {
		spec, err := lim.fill(p.Merge, in)
		if err != nil {
			return Plan{Kind: Refused, Stmt: p.Stmt, Err: refusal("cannot read LIMIT/OFFSET of a scatter query: "+err.Error(), "")}
		}
		p.Merge = spec
	}
	return p
}

// resolve calls add with the shard of each key value src gives.
func (st *state) resolve(d *shardmap.Distribution, src valueSrc, in *execInput, add func(string)) error {
	v, bin, err := src.raw(in)
	if err != nil {
		return err
	}
	if !src.array {
		s, err := shardFor(d, v, bin)
		if err != nil {
			return err
		}
		add(s)
		return nil
	}
	each := func(e string) error {
		s, err := shardFor(d, e, bin)
		if err != nil {
			return err
		}
		add(s)
		return nil
	}
	if bin {
		return binaryArrayElems(v, each)
	}
	return arrayElems(v, each)
}

// hinted applies a shard or key hint to t.
func (st *state) hinted(t *template, h Hint) Plan {
	p := t.base
	if p.Kind == Refused && t.classes == nil && p.Stmt == StmtOther {
		return p
	}
	p.Hinted, p.Anywhere = true, false
	p.Merge, p.ShardSQL, p.PerShardSQL, p.Broadcast, p.Err, p.NeedKeyPosition = nil, "", nil, false, nil, ""
	p.InTx = false
	if h.Shard != "" {
		if _, ok := st.one[h.Shard]; !ok || st.m.Shard(h.Shard) == nil {
			return Plan{Kind: Refused, Stmt: p.Stmt, Hinted: true, Err: &RefusalError{Code: wire.SQLStateInvalidParameterValue,
				Message: "pgshard hint names unknown shard " + quoteIdent(h.Shard), Hint: "SHOW pgshard.route lists the shards"}}
		}
		p.Kind, p.Reach = Single, ReachKey
		if p.Stmt == StmtTx || p.Stmt == StmtSet || p.Stmt == StmtShow || t.dist == nil {
			p.Kind, p.Reach = defaultKind(p.Stmt), ReachDefault
		}
		p.Shards = st.shardList(h.Shard)
		return p
	}
	if t.dist == nil {
		if t.base.Kind == Refused {
			return Plan{Kind: Refused, Stmt: p.Stmt, Hinted: true, Err: refusal(
				"a pgshard.key hint needs a statement on a sharded table", "use a pgshard.shard hint")}
		}
		return t.base // no sharded table: the key does not matter
	}
	s, err := shardFor(t.dist, h.Key, false)
	if err != nil {
		return Plan{Kind: Refused, Stmt: p.Stmt, Hinted: true, Err: &RefusalError{Code: wire.SQLStateInvalidParameterValue,
			Message: "pgshard.key hint: " + err.Error()}}
	}
	p.Kind, p.Reach = Single, ReachKey
	p.Shards = st.shardList(s)
	return p
}

// parseHintComment reads "shard=s2" and/or "key=42" from a hint comment.
func parseHintComment(s string) Hint {
	var h Hint
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' }) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `'"`)
		switch strings.ToLower(k) {
		case "shard":
			h.Shard = strings.Clone(v)
		case "key":
			h.Key = v
		}
	}
	return h
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
