package proxy

import (
	"encoding/binary"
	"slices"
	"strconv"
	"sync/atomic"
	"unsafe"

	"github.com/pgshard/pgshard/cache"
	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/router"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// The session's side of the hot-row cache.
//
// What is served from the cache: a statement the planner proves to be a
// point read (Plan.PointRead: a plain SELECT of one cacheable table by one
// key value, without functions or locking) that starts outside any
// transaction with no server connection attached, in transaction pooling,
// in the cache's database, without routing hints. A hit is answered by
// the proxy alone: the encoded RowDescription, DataRows and
// CommandComplete the server sent for the same key, then ReadyForQuery
// (simple protocol), or, in the extended protocol, ParseComplete for the
// held-back Parse messages, BindComplete and a portal the proxy holds
// (Describe answers its RowDescription, Execute its rows, with
// PortalSuspended for a row limit). The key holds the map epoch, the
// statement text, parameters, result formats, the server role the
// session runs as and the session's parameters (search path, time zone,
// date style and the rest change results), not the shard, table and row
// key (cache.Cache.Lookup): they follow from the rest under one map
// epoch, so a hit is found without planning; the planner runs when nothing is served, and its shard,
// table and row key go with the fill (cache.Cache.BeginFillRow). READ
// ONLY transactions: cache_tx.go.
//
// A miss takes its fill token (cache.BeginFillRow) before the statement is
// sent to the primary, and the relay copies the result while passing it
// on, up to the table's entry limit, storing it at its CommandComplete.
// In the extended protocol the proxy adds a Describe of the portal after
// the client's Bind, and hides its RowDescription, so that every entry
// can answer a Describe.
//
// Writes: every statement attached to a primary that may write a
// cacheable table records what it invalidates (the key the planner
// found, else the table; statements whose tables are unknown — DO, CALL,
// SELECT of a function that may write, DDL naming no table — every
// cacheable table), and the relay applies those invalidations at each
// CommandComplete and ReadyForQuery until the transaction has ended,
// before passing them on: no later than the commit is acknowledged.
// Writes over several shards are applied before serve answers. The
// session's commit LSN (the read-your-writes machinery of reads.go, on
// for every write while tables are cacheable) is passed to every lookup,
// so changes the proxy cannot attribute (triggers, functions) are never
// read stale by the session that made them.

// sessionCache is a session's cache state.
type sessionCache struct {
	kb *cache.KeyBuilder // serve's; allocated at the first key built
	// portal is the storage of the portals the cache answers (serve's),
	// allocated at the session's first hit.
	portal *scatterPortal
	// tx is cacheReadOnlyTx's memo (under s.mu), allocated at its first
	// use.
	tx *txMemo
	// gen is the map generation of the last key built (serve's).
	gen uint64
	// next is the fill of a miss about to be sent (serve's; reset for
	// every Query and Bind).
	next *cacheFill
	// fill is the result being captured: set by serve before the
	// statement is sent, cleared by the relay.
	fill atomic.Pointer[cacheFill]
	// inv are the invalidations of the session's writes waiting for their
	// commit, and all says every cacheable table is invalidated (under
	// s.mu); pending says there are some (read by the relay without the
	// lock); serveInv that serve applies them before its next answer
	// (writes over several shards).
	inv      []cacheInval
	pending  atomic.Bool
	all      bool
	serveInv bool
}

// cacheInval is one invalidation: a key of a table, or the table ("").
type cacheInval struct {
	shard, table, key string
}

// cacheFill is a result being captured for the cache.
type cacheFill struct {
	be    *pool.Conn // the server connection it is read from
	tok   cache.FillToken
	shard string
	limit int // the table's max entry size
	// ownDescribe: the proxy added a Describe of the portal (extended
	// protocol) whose RowDescription is captured and hidden.
	ownDescribe bool
	described   bool // the RowDescription was captured
	buf         []byte
}

// cacheUsable reports whether the session's next statement may be
// answered from the cache (usable) and fill it (fill): outside a
// transaction; inside a READ ONLY one that has not reached a server it is
// answered but not filled (cache_tx.go).
func (s *session) cacheUsable() (usable, fill bool) {
	if s.sessionPool || s.hints != nil || s.portal != nil || s.db != s.srv.cache.cfg.Database {
		return false, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.conn() != nil || !s.queue.empty() {
		return false, false
	}
	if !s.st.inTx() {
		return true, true
	}
	return s.cacheReadOnlyTx(), false
}

// cacheKey builds, in the session's key builder, q's key without its row
// (cache.KeyBuilder.BeginLookup): the map epoch, the statement text, the
// Bind's parameters and result formats, the role the server runs it as
// and the session's parameters. Under one epoch these decide the rows
// the statement reads, so a hit needs no planning (cache.Cache.Lookup);
// the planner runs only when the cache has nothing to serve.
func (s *session) cacheKey(q router.Query, bind *wire.Bind) (cache.Key, router.PlanRouter, bool) {
	gen := s.srv.cache.gen.Load() // before the router: see cachePlan
	pr, ok := s.routerFor().(router.PlanRouter)
	if !ok {
		return cache.Key{}, pr, false
	}
	b := s.cache.kb
	if b == nil {
		b = new(cache.KeyBuilder)
		s.cache.kb = b
	}
	b.BeginLookup(pr.Planner.Epoch())
	b.Generation(gen)
	s.cache.gen = gen
	b.Statement(q.SQL)
	if bind != nil {
		v := bind.ParamSection()[4+2*bind.NumParamFormats():]
		for i := range bind.NumParams() {
			n := int32(binary.BigEndian.Uint32(v))
			v = v[4:]
			if n < 0 {
				b.Param(bind.ParamFormat(i), nil)
				continue
			}
			b.Param(bind.ParamFormat(i), v[:n])
			v = v[n:]
		}
	}
	// The role the server runs the statement as, and the session's
	// parameters (they change the result's text: DateStyle, TimeZone,
	// search_path, a SET ROLE).
	b.Role(s.user.beUser, cache.Primary)
	b.Role(s.sets.key, cache.Primary)
	var fa [8]int16
	var formats []int16
	if bind != nil {
		formats = bind.AppendResultFormats(fa[:0])
	}
	b.Formats(formats)
	return b.Key(), pr, true
}

// cachePlan plans q after a lookup found nothing to serve: the plan
// when it is a point read the cache may hold, planned under k's epoch
// and map (no map applied since the key was built: gen).
func (s *session) cachePlan(pr router.PlanRouter, k cache.Key, q router.Query) (rplan.Plan, bool) {
	plan, err := pr.Route(q)
	if err != nil || plan.Kind != rplan.Single || !plan.PointRead || !plan.ReadOnly || !plan.ReplicaSafe ||
		plan.Hinted || plan.SQL != "" || pr.Planner.Epoch() != k.Epoch || s.srv.cache.gen.Load() != s.cache.gen {
		return plan, false
	}
	return plan, true
}

// cacheLSN returns the session's last commit LSN on shard (0: none known).
func (s *session) cacheLSN(shard string) cache.LSN {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cache.LSN(s.lsns[shard])
}

// cacheQuery answers a simple query from the cache when it can (true),
// or prepares the fill of a miss.
func (s *session) cacheQuery(sql string) bool {
	s.cache.next = nil
	if len(s.pending) > 0 {
		return false
	}
	usable, fill := s.cacheUsable()
	if !usable {
		return false
	}
	q := router.Query{SQL: sql}
	k, pr, ok := s.cacheKey(q, nil)
	if !ok {
		return false
	}
	v, hit := s.cacheLookup(k, pr, q, false, fill)
	if hit {
		s.out = append(s.out, v...)
		s.out = wire.AppendReadyForQuery(s.out, s.idleStatus())
	}
	return hit
}

// cacheLookup looks k up: on a hit it returns the encoded result; else,
// when q is a point read the cache may hold, it counts the miss (or the
// bypass) and, with fill, prepares the fill.
func (s *session) cacheLookup(k cache.Key, pr router.PlanRouter, q router.Query, ext, fill bool) ([]byte, bool) {
	c := s.srv.cache.c
	if v, hit := c.Lookup(k, s.cacheLSN); hit {
		return v, true
	}
	plan, ok := s.cachePlan(pr, k, q)
	if !ok {
		return nil, false
	}
	rowKey := unsafe.Slice(unsafe.StringData(plan.RowKey), len(plan.RowKey))
	tok, st := c.BeginFillRow(k, plan.Shard, plan.Table, rowKey, s.cacheLSN(plan.Shard), 0)
	if st == cache.Miss && fill {
		limit := cache.DefaultMaxEntryBytes
		if m := s.srv.runtime().cfg.shardMap; m != nil {
			if t := m.Table(plan.Table); t != nil && t.Cache.MaxEntryBytes > 0 {
				limit = t.Cache.MaxEntryBytes
			}
		}
		s.cache.next = &cacheFill{tok: tok, shard: plan.Shard, limit: limit, ownDescribe: ext}
	}
	return nil, false
}

// cacheBind answers a Bind (and the Parse messages held back before it)
// from the cache when it can, creating a portal the proxy holds; it
// reports whether it did.
func (s *session) cacheBind(frame []byte) bool {
	s.cache.next = nil
	body := frame[wire.HeaderLen:]
	bind, err := wire.DecodeBind(body)
	if err != nil {
		return false
	}
	usable, fill := s.cacheUsable()
	if !usable {
		return false
	}
	// A view of the name: nothing below keeps it.
	name := unsafe.String(unsafe.SliceData(bind.Statement), len(bind.Statement))
	var parse []byte
	for _, f := range s.pending {
		if f[0] != 'P' {
			return false // a Describe of a statement: its answer is not cached
		}
		p, err := wire.DecodeParse(f[wire.HeaderLen:])
		if err != nil || router.Classify(string(p.Query)).Class != 0 {
			return false // answered locally, it would lose its session effect
		}
		if string(p.Name) == name {
			parse = f[wire.HeaderLen:]
		}
	}
	q := router.Query{SQL: s.stmtSQL(name)}
	if len(s.pending) > 0 {
		q.SQL = pendingSQL(s.pending, name, q.SQL)
	}
	if q.SQL == "" {
		return false
	}
	k, pr, ok := s.cacheKey(q, &bind)
	if !ok {
		return false
	}
	if parse == nil {
		parse = s.stmtParse(name)
	}
	q.Parse, q.Bind = parse, body
	v, hit := s.cacheLookup(k, pr, q, true, fill)
	if !hit {
		return false
	}
	for _, f := range s.pending {
		s.parseLocal(f)
	}
	s.pending = nil
	if len(bind.Portal) == 0 {
		s.stmts.bound = nil
	}
	s.out = append(s.out, '2', 0, 0, 0, 4) // BindComplete
	// The session's own portal storage: a hit after the first allocates
	// nothing.
	p := s.cache.portal
	if p == nil {
		p = new(scatterPortal)
		s.cache.portal = p
	}
	*p = scatterPortal{cached: v}
	if len(bind.Portal) > 0 {
		p.name = string(bind.Portal)
	}
	s.portal = p
	return true
}

// cacheStartFill starts capturing the result of the miss prepared for
// plan, now attached, when it runs on the shard's primary as the first
// request of its server connection.
func (s *session) cacheStartFill(plan rplan.Plan) bool {
	f := s.cache.next
	s.cache.next = nil
	if f == nil || plan.Kind != rplan.Single || !plan.PointRead || plan.Shard != f.shard {
		return false
	}
	s.mu.Lock()
	a := s.st.cur()
	ok := a != nil && !a.replica && a.shard == f.shard && s.queue.syncs == 0
	if ok {
		f.be = a.conn
	}
	s.mu.Unlock()
	if ok {
		s.cache.fill.Store(f)
	}
	return ok
}

// cacheBindMiss sends the Bind of a miss (cacheBind prepared it) with a
// Describe of its portal, and starts the capture.
func (s *session) cacheBindMiss(plan rplan.Plan, frame []byte, name string, off int) error {
	global := s.ensurePrepared(s.attached(), name)
	if global == name {
		s.bout = append(s.bout, frame...)
	} else {
		s.bout = appendRenamed(s.bout, frame, off, global)
	}
	if s.cacheStartFill(plan) {
		portal := frame[wire.HeaderLen : wire.HeaderLen+off-1]
		start := len(s.bout)
		s.bout = append(s.bout, 'D', 0, 0, 0, 0, 'P')
		s.bout = append(s.bout, portal...)
		s.bout = append(s.bout, 0)
		binary.BigEndian.PutUint32(s.bout[start+1:], uint32(len(s.bout)-start-1))
	}
	return s.maybeFlush()
}

// cacheCapture copies a frame of the result being captured (relay). It
// reports whether the frame must not reach the client: the answer to
// the proxy's own Describe.
func (s *session) cacheCapture(f *cacheFill, typ byte, frame []byte) bool {
	switch typ {
	case 'T', 'D':
		if typ == 'T' && f.described {
			return false // the client's own Describe, after the proxy's
		}
		if len(f.buf)+len(frame) > f.limit {
			s.cache.fill.Store(nil) // too large: relayed, not cached
			return typ == 'T' && f.ownDescribe
		}
		f.buf = append(f.buf, frame...)
		f.described = f.described || typ == 'T'
		if typ == 'T' && f.ownDescribe {
			f.ownDescribe = false
			return true
		}
	case 'C':
		f.buf = append(f.buf, frame...)
		s.cache.fill.Store(nil)
		s.srv.cache.c.Fill(f.tok, f.buf)
	case 'n': // NoData: not a read of rows
		s.cache.fill.Store(nil)
		return f.ownDescribe
	case 'E', 'I', 's', 'Z', 'G', 'H', 'W':
		// An error, an empty query, a suspended portal, a COPY: nothing
		// to cache.
		s.cache.fill.Store(nil)
	}
	return false
}

// cachedDescribe answers Describe of a portal the cache answers.
func (s *session) cachedDescribe(p *scatterPortal) {
	if v := p.cached; len(v) > wire.HeaderLen && v[0] == 'T' {
		s.out = append(s.out, v[:1+binary.BigEndian.Uint32(v[1:])]...)
		return
	}
	s.out = append(s.out, 'n', 0, 0, 0, 4) // NoData
}

// cachedExecute answers Execute of a portal the cache answers: its rows
// (at most maxRows, then PortalSuspended, when maxRows > 0) and
// CommandComplete.
func (s *session) cachedExecute(p *scatterPortal, maxRows int) {
	v := p.cached[p.cacheOff:]
	if p.cacheOff == 0 && len(v) > wire.HeaderLen && v[0] == 'T' {
		v = v[1+binary.BigEndian.Uint32(v[1:]):]
		p.cacheOff = len(p.cached) - len(v)
	}
	if p.done {
		s.out = wire.AppendString(s.out, 'C', "SELECT 0")
		return
	}
	rows, n := 0, 0
	for n+wire.HeaderLen <= len(v) && v[n] == 'D' {
		n += 1 + int(binary.BigEndian.Uint32(v[n+1:]))
		rows++
		if maxRows > 0 && rows == maxRows {
			// As PostgreSQL: the portal is suspended once the limit is
			// reached, even when no row is left.
			s.out = append(s.out, v[:n]...)
			s.out = append(s.out, 's', 0, 0, 0, 4) // PortalSuspended
			p.cacheOff += n
			p.suspended = true
			return
		}
	}
	p.done = true
	if !p.suspended {
		s.out = append(s.out, v...)
		return
	}
	// The rest of a suspended portal: its tag counts this Execute's rows.
	s.out = append(s.out, v[:n]...)
	s.out = wire.AppendString(s.out, 'C', "SELECT "+strconv.Itoa(rows))
}

// cacheNoteWrite records the invalidations a statement attached to a
// primary may need (see the top of the file). Callers hold s.mu.
func (s *session) cacheNoteWrite(plan rplan.Plan) {
	if plan.Kind == rplan.Any || plan.Kind == rplan.Refused || plan.ReadOnly ||
		plan.Stmt == rplan.StmtTx || plan.Stmt == rplan.StmtSet || plan.Stmt == rplan.StmtShow {
		return
	}
	if plan.Stmt == rplan.StmtSelect && plan.Anywhere {
		return // no table of the map, no function of the user's: writes no table
	}
	_, cacheable := s.srv.cache.cacheTables()[plan.Table]
	var inv cacheInval
	switch {
	case cacheable && plan.RowKey != "" && plan.Kind == rplan.Single:
		inv = cacheInval{shard: plan.Shard, table: plan.Table, key: plan.RowKey}
	case cacheable:
		inv = cacheInval{table: plan.Table}
	case plan.Table != "" && plan.Stmt != rplan.StmtSelect && plan.Stmt != rplan.StmtProc:
		return // a write of a table that is not cached (its triggers: the stream)
	default:
		// Tables unknown (DO, CALL, a function that may write, DDL
		// naming no table of the map): every cacheable table.
		s.cache.all = true
		s.cache.pending.Store(true)
		return
	}
	if n := len(s.cache.inv); n == 0 || s.cache.inv[n-1] != inv {
		if n >= maxKeyInvalidations {
			s.cache.inv = collapseInvalidations(s.cache.inv)
		}
		s.cache.inv = append(s.cache.inv, inv)
	}
	s.cache.pending.Store(true)
}

// maxKeyInvalidations bounds the invalidations a transaction keeps (they
// are applied at each of its CommandCompletes): beyond it, its keys give
// way to their tables.
const maxKeyInvalidations = 64

// collapseInvalidations replaces keys by their tables, once each.
func collapseInvalidations(inv []cacheInval) []cacheInval {
	out := inv[:0]
	for _, x := range inv {
		t := cacheInval{table: x.table}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// cacheNoteSeveral records the invalidations of a write over several
// shards, which serve applies before it answers.
func (s *session) cacheNoteSeveral(plan rplan.Plan) {
	if plan.ReadOnly {
		return
	}
	s.mu.Lock()
	p := plan
	p.Kind, p.RowKey = rplan.Single, ""
	s.cacheNoteWrite(p)
	s.mu.Unlock()
	s.cache.serveInv = s.cache.pending.Load()
}

// cacheApply applies the recorded invalidations; when the transaction
// has ended (done) they are forgotten. Callers hold s.mu.
func (s *session) cacheApply(done bool) {
	c := s.srv.cache.c
	if s.cache.all {
		for t := range s.srv.cache.cacheTables() {
			c.InvalidateTable(t, 0)
		}
	}
	for _, inv := range s.cache.inv {
		if inv.key == "" {
			c.InvalidateTable(inv.table, 0)
		} else {
			c.Invalidate(inv.shard, inv.table, unsafe.Slice(unsafe.StringData(inv.key), len(inv.key)), 0)
		}
	}
	if done {
		s.cache.inv = s.cache.inv[:0]
		s.cache.all = false
		s.cache.pending.Store(false)
	}
}

// cacheRelayInvalidate applies the recorded invalidations at a
// CommandComplete or ReadyForQuery from the server, before the client
// sees it; at a ReadyForQuery outside a transaction with nothing else in
// flight they are done.
func (s *session) cacheRelayInvalidate(typ byte, frame []byte) {
	s.mu.Lock()
	done := typ == 'Z' && len(frame) > wire.HeaderLen && frame[wire.HeaderLen] == 'I' && s.queue.syncs <= 1 && !s.unsynced
	s.cacheApply(done)
	s.mu.Unlock()
}

// cacheServeInvalidate applies, before serve answers the client, the
// invalidations of a write over several shards it ran.
func (s *session) cacheServeInvalidate() {
	s.cache.serveInv = false
	s.mu.Lock()
	s.cacheApply(s.st.conn() == nil && !s.st.inTx())
	s.mu.Unlock()
}
