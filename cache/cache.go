package cache

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// LSN is a PostgreSQL WAL position (pg_lsn as a number).
type LSN uint64

// String formats l as PostgreSQL does ("16/B374D848").
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint32(l)) }

// TableSettings are one table's cache settings (from the shard map).
type TableSettings struct {
	// Enabled marks the table cacheable. A table without settings, or
	// with Enabled false, is never cached.
	Enabled bool
	// TTL bounds an entry's life as a backstop (0: DefaultTTL). Coherence
	// does not depend on it.
	TTL time.Duration
	// MaxEntryBytes refuses larger results (0: DefaultMaxEntryBytes).
	MaxEntryBytes int
}

// Defaults of Config and TableSettings.
const (
	DefaultTTL               = 5 * time.Minute
	DefaultMaxEntryBytes     = 64 << 10
	DefaultMaxStreamLag      = 2 * time.Second
	DefaultInvalidationSlots = 1 << 16
)

// Config configures a Cache.
type Config struct {
	// MaxBytes is the memory budget: the sum of the entries' costs (key,
	// encoded result and a fixed overhead per entry). Required.
	MaxBytes int64
	// MaxStreamLag is the staleness bound: a shard whose invalidation
	// stream has not confirmed its position for longer than this, or whose
	// last applied transaction was committed longer than this before it was
	// applied, is bypassed until the stream catches up. 0: DefaultMaxStreamLag.
	MaxStreamLag time.Duration
	// InvalidationSlots is the number of per-key invalidation versions
	// kept (a power of two; 0: DefaultInvalidationSlots). Keys sharing a
	// slot invalidate each other's fills: more slots, fewer needless misses.
	InvalidationSlots int
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Status is the outcome of a [Cache.Get].
type Status uint8

// Get outcomes. Every status but Hit and Miss is a bypass: the statement
// goes to a server and its result must not be filled.
const (
	Hit Status = iota
	Miss
	BypassTable          // table not cacheable (no settings or disabled)
	BypassEpoch          // key planned under another map epoch
	BypassStreamDown     // the shard's invalidation stream is down
	BypassStreamBehind   // the shard's stream is behind the staleness bound
	BypassReadYourWrites // the stream has not applied the session's last commit
	BypassClosed         // the cache is closed
	BypassNotStreamed    // the shard's stream does not cover the table (not in its publication)
	numStatus
)

var statusNames = [numStatus]string{"hit", "miss", "table_off", "epoch", "stream_down", "stream_behind", "read_your_writes", "closed", "not_streamed"}

func (s Status) String() string {
	if s < numStatus {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Bypassed reports whether s is a bypass (neither a hit nor a miss).
func (s Status) Bypassed() bool { return s > Miss }

// entry is one cached result, stored in ristretto under its key's hash.
type entry struct {
	key     Key // owns its bytes
	value   []byte
	fillSeq uint64 // the version the read started at (FillToken.start)
	rowHash uint64 // the invalidation slot of the rows it was read from
	table   *tableState
	shard   *shardState
}

type tableState struct {
	name     string
	stamp    atomic.Uint64 // seq of the last table-wide invalidation
	lsn      atomic.Uint64 // highest commit LSN of a table-wide invalidation
	settings atomic.Pointer[TableSettings]
}

// Cache is the proxy's result cache: ristretto under a byte budget, with
// versioned invalidation so that it never serves what an invalidation
// removed (see the package documentation). It is safe for concurrent use.
type Cache struct {
	rc     *ristretto.Cache[uint64, *entry]
	maxLag time.Duration
	now    func() time.Time
	m      *metrics

	// seq orders fills and invalidations: an invalidation takes the next
	// value and raises a stamp to it; a fill remembers the value when its
	// read started and is valid only while every stamp covering its key is
	// at most that value.
	seq       atomic.Uint64
	allStamp  atomic.Uint64   // flush of everything, epoch changes
	slots     []atomic.Uint64 // per (shard, table, row key) hash: last invalidation seq
	slotLSN   []atomic.Uint64 // per slot: highest invalidated commit LSN
	slotMask  uint64
	epoch     atomic.Uint64
	closed    atomic.Bool
	tables    atomic.Pointer[map[string]*tableState]
	shards    atomic.Pointer[map[string]*shardState]
	mu        sync.Mutex // serializes copy-on-write of tables and shards
	clearMu   sync.Mutex // serializes ristretto's Clear and Close
	closeOnce sync.Once
}

// New returns a Cache. Every shard starts bypassed (BypassStreamDown) until
// its invalidation stream reports Up, and every table uncached until
// SetTables names it.
func New(cfg Config) (*Cache, error) {
	if cfg.MaxBytes <= 0 {
		return nil, errors.New("cache: MaxBytes must be positive")
	}
	if cfg.MaxStreamLag <= 0 {
		cfg.MaxStreamLag = DefaultMaxStreamLag
	}
	n := cfg.InvalidationSlots
	if n <= 0 {
		n = DefaultInvalidationSlots
	}
	if n&(n-1) != 0 {
		return nil, fmt.Errorf("cache: InvalidationSlots %d is not a power of two", n)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Cache{
		maxLag:   cfg.MaxStreamLag,
		now:      cfg.Now,
		m:        newMetrics(),
		slots:    make([]atomic.Uint64, n),
		slotLSN:  make([]atomic.Uint64, n),
		slotMask: uint64(n - 1),
	}
	// About ten counters per entry the budget holds, for entries of ~1 KiB.
	counters := max(cfg.MaxBytes/1024*10, 1000)
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
		NumCounters: counters,
		MaxCost:     cfg.MaxBytes,
		BufferItems: 64,
		KeyToHash:   func(h uint64) (uint64, uint64) { return h, 0 },
		OnEvict:     func(*ristretto.Item[*entry]) { c.m.evictions.Inc() },
	})
	if err != nil {
		return nil, fmt.Errorf("cache: ristretto: %w", err)
	}
	c.rc = rc
	c.m.bytesFunc = func() float64 { return float64(rc.MaxCost() - rc.RemainingCost()) }
	emptyT := map[string]*tableState{}
	c.tables.Store(&emptyT)
	emptyS := map[string]*shardState{}
	c.shards.Store(&emptyS)
	return c, nil
}

// Close stops the cache's background work and drops every entry. Get
// answers BypassClosed afterwards.
func (c *Cache) Close() {
	c.closeOnce.Do(func() {
		c.clearMu.Lock()
		defer c.clearMu.Unlock()
		c.closed.Store(true)
		c.rc.Close()
	})
}

// SetTables replaces the per-table settings (live: the map's cacheable
// tables). A table left out or disabled is flushed.
func (c *Cache) SetTables(settings map[string]TableSettings) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.tables.Load()
	next := make(map[string]*tableState, len(settings))
	for name, s := range settings {
		ts := old[name]
		if ts == nil {
			ts = &tableState{name: name}
			// Nothing of the table can be cached yet; the stamp makes
			// sure of it for fills begun under an older setting.
			storeMax(&ts.stamp, c.seq.Add(1))
		}
		if s.TTL <= 0 {
			s.TTL = DefaultTTL
		}
		if s.MaxEntryBytes <= 0 {
			s.MaxEntryBytes = DefaultMaxEntryBytes
		}
		prev := ts.settings.Swap(&s)
		if !s.Enabled && prev != nil && prev.Enabled {
			storeMax(&ts.stamp, c.seq.Add(1))
		}
		next[name] = ts
	}
	for name, ts := range old {
		if _, ok := next[name]; !ok {
			storeMax(&ts.stamp, c.seq.Add(1))
		}
	}
	c.tables.Store(&next)
}

// Tables returns the current per-table settings.
func (c *Cache) Tables() map[string]TableSettings {
	out := map[string]TableSettings{}
	for name, ts := range *c.tables.Load() {
		if s := ts.settings.Load(); s != nil {
			out[name] = *s
		}
	}
	return out
}

func (c *Cache) table(name string) *tableState { return (*c.tables.Load())[name] }

// SetEpoch records the shard map epoch the proxy applies. Entries are keyed
// by epoch, so a new epoch drops every older entry (moved intervals
// included) and keys planned under another epoch bypass the cache. An
// older epoch is ignored.
func (c *Cache) SetEpoch(epoch uint64) {
	for {
		cur := c.epoch.Load()
		if epoch <= cur {
			return
		}
		if c.epoch.CompareAndSwap(cur, epoch) {
			break
		}
	}
	storeMax(&c.allStamp, c.seq.Add(1))
	c.clear()
	c.m.invalidations[srcEpoch][scopeAll].Inc()
}

// Epoch returns the epoch set by SetEpoch.
func (c *Cache) Epoch() uint64 { return c.epoch.Load() }

// Get looks k up for a session whose last commit on k's shard was at
// sessionLSN (0: none known). On Hit it returns the encoded result messages
// to replay; the slice is shared and must not be modified. On Miss the
// caller may fill (BeginFill before sending the read); on any bypass it
// must not.
func (c *Cache) Get(k Key, sessionLSN LSN) ([]byte, Status) {
	st, ts, sh := c.admit(k, sessionLSN)
	if st != Miss {
		c.m.count(st)
		return nil, st
	}
	e, ok := c.rc.Get(k.hash)
	if !ok || !bytes.Equal(e.key.full, k.full) || !c.fresh(e.rowHash, ts, sh, e.fillSeq) {
		c.m.count(Miss)
		return nil, Miss
	}
	c.m.count(Hit)
	return e.value, Hit
}

// admit checks everything but the entry itself; it answers Miss when the
// key may be served or filled.
func (c *Cache) admit(k Key, sessionLSN LSN) (Status, *tableState, *shardState) {
	return c.admitRow(k.Epoch, k.Shard, k.Table, sessionLSN)
}

// admitRow is admit for a read of table's rows on shard planned under
// epoch.
func (c *Cache) admitRow(epoch uint64, shard, table string, sessionLSN LSN) (Status, *tableState, *shardState) {
	if c.closed.Load() {
		return BypassClosed, nil, nil
	}
	if epoch != c.epoch.Load() {
		return BypassEpoch, nil, nil
	}
	ts := c.table(table)
	if ts == nil {
		return BypassTable, nil, nil
	}
	if s := ts.settings.Load(); s == nil || !s.Enabled {
		return BypassTable, nil, nil
	}
	sh := c.shard(shard)
	if st := c.shardStatus(sh); st != Miss {
		return st, nil, nil
	}
	if !sh.covers(table) {
		return BypassNotStreamed, nil, nil
	}
	if sessionLSN > LSN(sh.applied.Load()) {
		return BypassReadYourWrites, nil, nil
	}
	return Miss, ts, sh
}

// fresh reports whether a value whose read started at version seq is still
// valid: no invalidation of its key's slot, its table, its shard or
// everything has happened since.
func (c *Cache) fresh(rowHash uint64, ts *tableState, sh *shardState, seq uint64) bool {
	return seq >= c.slots[rowHash&c.slotMask].Load() &&
		seq >= ts.stamp.Load() &&
		seq >= sh.stamp.Load() &&
		seq >= c.allStamp.Load()
}

// FillToken is what BeginFill hands the reader: Fill stores the result only
// if nothing invalidated the key since. The zero FillToken fills nothing.
type FillToken struct {
	key     Key
	rowHash uint64 // the invalidation slot of the rows read
	table   *tableState
	shard   *shardState
	start   uint64
	readLSN LSN
}

// Valid reports whether Fill may store something under t.
func (t FillToken) Valid() bool { return t.table != nil }

// BeginFill starts a fill of k. Call it after a Miss and BEFORE sending the
// read to the server: any invalidation of k's key, table or shard that
// happens after BeginFill makes Fill drop the result, so a read that raced a
// write never re-inserts the old row. readLSN is the WAL position the server
// is known to have applied when the read is sent: 0 for the primary (which
// has every commit the stream can report), the replica's replay LSN for a
// replica; a result from a replica that has not replayed an invalidated
// commit of the key is never stored. It copies k; the token is invalid when
// k may not be filled now.
func (c *Cache) BeginFill(k Key, readLSN LSN) FillToken {
	st, ts, sh := c.admit(k, 0)
	if st != Miss {
		return FillToken{}
	}
	return FillToken{key: k.clone(), rowHash: k.rowHash, table: ts, shard: sh, start: c.seq.Load(), readLSN: readLSN}
}

// Lookup answers a read from the cache by a key built without its row
// (KeyBuilder.BeginLookup: epoch, statement, parameters, roles, formats),
// so that a hit needs no planning: the entry knows the shard, table and
// row it was read from, and is served only when a lookup by that row
// would be (the table cacheable, the shard's stream serving, the
// session's commit on the shard, sessionLSN(shard), applied, nothing
// invalidated since the fill). Only hits are counted: on false the
// caller plans the statement and, for a point read, calls BeginFillRow,
// which counts the miss or the bypass. The value is shared and must not
// be modified.
func (c *Cache) Lookup(k Key, sessionLSN func(shard string) LSN) ([]byte, bool) {
	if c.closed.Load() || k.Epoch != c.epoch.Load() {
		return nil, false
	}
	e, ok := c.rc.Get(k.hash)
	if !ok || !bytes.Equal(e.key.full, k.full) {
		return nil, false
	}
	ts, sh := e.table, e.shard
	if s := ts.settings.Load(); s == nil || !s.Enabled || c.table(ts.name) != ts {
		return nil, false
	}
	if c.shardStatus(sh) != Miss || c.shard(sh.name) != sh || !sh.covers(ts.name) {
		return nil, false
	}
	if !c.fresh(e.rowHash, ts, sh, e.fillSeq) || sessionLSN(sh.name) > LSN(sh.applied.Load()) {
		return nil, false
	}
	c.m.count(Hit)
	return e.value, true
}

// BeginFillRow is BeginFill for a key built by BeginLookup, after
// Lookup found nothing to serve: the statement was planned as a point
// read of the rows with key rowKey of table on shard, for a session whose
// last commit on shard was at sessionLSN. It counts the lookup's outcome
// (a miss, or the bypass that forbids the fill) and returns it with the
// token (valid only on Miss).
func (c *Cache) BeginFillRow(k Key, shard, table string, rowKey []byte, sessionLSN, readLSN LSN) (FillToken, Status) {
	st, ts, sh := c.admitRow(k.Epoch, shard, table, sessionLSN)
	c.m.count(st)
	if st != Miss {
		return FillToken{}, st
	}
	var a [128]byte
	_, h := rowSlotHash(a[:0], shard, table, rowKey)
	return FillToken{key: k.clone(), rowHash: h, table: ts, shard: sh, start: c.seq.Load(), readLSN: readLSN}, Miss
}

// Fill stores value, the encoded result messages of t's read, unless an
// invalidation happened since BeginFill, the shard is bypassed, the table
// is no longer cacheable or value is larger than its table's limit. It
// reports whether the value was offered to the cache (ristretto may still
// decline or evict it). Fill keeps value: the caller must not modify it.
func (c *Cache) Fill(t FillToken, value []byte) bool {
	if !t.Valid() || c.closed.Load() {
		return false
	}
	s := t.table.settings.Load()
	if s == nil || !s.Enabled || c.table(t.table.name) != t.table {
		c.m.fills[fillTableOff].Inc()
		return false
	}
	if len(value) > s.MaxEntryBytes {
		c.m.fills[fillTooLarge].Inc()
		return false
	}
	if c.shardStatus(t.shard) != Miss || c.shard(t.shard.name) != t.shard || !t.shard.covers(t.table.name) {
		c.m.fills[fillBypassed].Inc()
		return false
	}
	if t.key.Epoch != c.epoch.Load() || !c.fresh(t.rowHash, t.table, t.shard, t.start) {
		c.m.fills[fillStale].Inc()
		return false
	}
	if t.readLSN != 0 && (LSN(c.slotLSN[t.rowHash&c.slotMask].Load()) > t.readLSN || LSN(t.table.lsn.Load()) > t.readLSN) {
		c.m.fills[fillStale].Inc()
		return false
	}
	e := &entry{key: t.key, value: value, fillSeq: t.start, rowHash: t.rowHash, table: t.table, shard: t.shard}
	cost := int64(len(value) + len(t.key.full) + entryOverhead)
	if !c.rc.SetWithTTL(t.key.hash, e, cost, s.TTL) {
		c.m.fills[fillDropped].Inc()
		return false
	}
	c.m.fills[fillStored].Inc()
	return true
}

// entryOverhead approximates an entry's memory beyond its key and value
// bytes (the entry struct and ristretto's item, which adds its own).
const entryOverhead = 96

// Bytes returns the bytes the cache holds (the sum of its entries' costs)
// and its budget.
func (c *Cache) Bytes() (used, budget int64) {
	return c.rc.MaxCost() - c.rc.RemainingCost(), c.rc.MaxCost()
}

// Wait blocks until the fills offered so far are visible to Get (tests).
func (c *Cache) Wait() { c.rc.Wait() }

// Invalidate drops every entry of the rows with sharding key rowKey (the
// key column's text output) of table on shard, committed at commitLSN (0
// when unknown), and makes every fill of them begun before it fail. The
// proxy calls it for its own writes before acknowledging their commit.
func (c *Cache) Invalidate(shard, table string, rowKey []byte, commitLSN LSN) {
	c.invalidateKey(shard, table, rowKey, commitLSN)
	c.m.invalidations[srcProxy][scopeKey].Inc()
}

func (c *Cache) invalidateKey(shard, table string, rowKey []byte, commitLSN LSN) {
	var a [128]byte
	_, h := rowSlotHash(a[:0], shard, table, rowKey)
	i := h & c.slotMask
	storeMax(&c.slots[i], c.seq.Add(1))
	storeMax(&c.slotLSN[i], uint64(commitLSN))
}

// InvalidateTable drops every entry of table on every shard (a write whose
// keys are unknown, TRUNCATE, DDL).
func (c *Cache) InvalidateTable(table string, commitLSN LSN) {
	c.invalidateTable(table, commitLSN)
	c.m.invalidations[srcProxy][scopeTable].Inc()
}

func (c *Cache) invalidateTable(table string, commitLSN LSN) {
	ts := c.table(table)
	if ts == nil {
		return // nothing of it is cached, and SetTables stamps it when it comes
	}
	storeMax(&ts.stamp, c.seq.Add(1))
	storeMax(&ts.lsn, uint64(commitLSN))
}

// FlushTable drops every entry of table (console, CLI).
func (c *Cache) FlushTable(table string) {
	c.invalidateTable(table, 0)
	c.m.invalidations[srcFlush][scopeTable].Inc()
}

// Flush drops every entry.
func (c *Cache) Flush() {
	storeMax(&c.allStamp, c.seq.Add(1))
	c.clear()
	c.m.invalidations[srcFlush][scopeAll].Inc()
}

// clear frees the memory of every entry. Correctness does not depend on it
// (the stamp raised before already invalidates them), so it runs after.
func (c *Cache) clear() {
	c.clearMu.Lock()
	defer c.clearMu.Unlock()
	if !c.closed.Load() {
		c.rc.Clear()
	}
}

// storeMax raises a to v if v is larger.
func storeMax(a *atomic.Uint64, v uint64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}
