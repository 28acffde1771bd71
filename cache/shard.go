package cache

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// shardState is what the cache knows of one shard's invalidation stream.
type shardState struct {
	name    string
	up      atomic.Bool
	stamp   atomic.Uint64 // seq of the last shard-wide invalidation (stream down/up)
	applied atomic.Uint64 // LSN up to which the stream applied every commit
	// beat is when the stream last confirmed its position (unix nanos);
	// the shard is behind when it is older than the bound.
	beat atomic.Int64
	// delayed is set while the last transaction the stream applied was
	// committed longer than the bound before it was applied; a keepalive
	// clears it only when no commit arrived since the previous one (a
	// stream working through a backlog keeps delivering commits).
	delayed     atomic.Bool
	commitsSeen atomic.Bool
	tables      atomic.Pointer[map[string]struct{}] // tables the stream covers
	// The oldest server WAL position reported by ServerPosition that the
	// stream has not applied yet, and when it was observed (unix nanos).
	probeMu  sync.Mutex
	probeLSN atomic.Uint64
	probeAt  atomic.Int64
}

// covers reports whether the shard's stream sees changes of table.
func (sh *shardState) covers(table string) bool {
	t := sh.tables.Load()
	if t == nil {
		return false
	}
	_, ok := (*t)[table]
	return ok
}

// shard returns name's state, or nil when no stream ever reported on it.
func (c *Cache) shard(name string) *shardState { return (*c.shards.Load())[name] }

// shardStatus answers Miss when sh's entries may be served and filled.
func (c *Cache) shardStatus(sh *shardState) Status {
	if sh == nil || !sh.up.Load() {
		return BypassStreamDown
	}
	now := c.now().UnixNano()
	if sh.delayed.Load() || now-sh.beat.Load() > int64(c.maxLag) {
		return BypassStreamBehind
	}
	if p := sh.probeLSN.Load(); p != 0 && sh.applied.Load() < p && now-sh.probeAt.Load() > int64(c.maxLag) {
		return BypassStreamBehind
	}
	return Miss
}

// ShardStream is the handle through which one shard's invalidation stream
// reader reports to the cache. Its methods are safe for concurrent use,
// but one reader per shard is expected.
type ShardStream struct {
	c  *Cache
	sh *shardState
}

// Stream returns the handle for shard's stream, creating the shard's state
// (down) on first use.
func (c *Cache) Stream(shard string) *ShardStream {
	if sh := c.shard(shard); sh != nil {
		return &ShardStream{c: c, sh: sh}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.shards.Load()
	if sh := old[shard]; sh != nil {
		return &ShardStream{c: c, sh: sh}
	}
	next := make(map[string]*shardState, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	sh := &shardState{name: shard}
	next[shard] = sh
	c.shards.Store(&next)
	c.m.streamUp.WithLabelValues(shard).Set(0)
	return &ShardStream{c: c, sh: sh}
}

// Shard returns the shard's name.
func (s *ShardStream) Shard() string { return s.sh.name }

// Up reports that the stream runs and will deliver every commit after
// start (the slot's consistent point) of the tables listed (those in its
// publication; other tables of the shard are bypassed, BypassNotStreamed).
// Everything cached for the shard before is dropped, since commits between
// the last stream and this one were not seen, and fills begun before fail.
func (s *ShardStream) Up(start LSN, tables []string) {
	covered := make(map[string]struct{}, len(tables))
	for _, t := range tables {
		covered[t] = struct{}{}
	}
	s.sh.tables.Store(&covered)
	storeMax(&s.sh.stamp, s.c.seq.Add(1))
	s.sh.applied.Store(uint64(start))
	s.sh.delayed.Store(false)
	s.sh.probeLSN.Store(0)
	s.sh.beat.Store(s.c.now().UnixNano())
	s.sh.up.Store(true)
	s.c.m.streamUp.WithLabelValues(s.sh.name).Set(1)
	s.c.m.invalidations[srcStream][scopeShard].Inc()
}

// Down reports that the stream stopped: the shard is bypassed until Up,
// and fills in flight fail.
func (s *ShardStream) Down() {
	s.sh.up.Store(false)
	storeMax(&s.sh.stamp, s.c.seq.Add(1))
	s.c.m.streamUp.WithLabelValues(s.sh.name).Set(0)
}

// Invalidate applies a change of the rows with key rowKey of table,
// committed at commitLSN and commitTime on the shard.
func (s *ShardStream) Invalidate(table string, rowKey []byte, commitLSN LSN, commitTime time.Time) {
	s.c.invalidateKey(s.sh.name, table, rowKey, commitLSN)
	s.c.m.invalidations[srcStream][scopeKey].Inc()
	s.c.m.staleness.Observe(s.c.now().Sub(commitTime).Seconds())
}

// InvalidateTable applies a change to table whose keys are unknown
// (TRUNCATE, a delete without the key in the replica identity).
func (s *ShardStream) InvalidateTable(table string, commitLSN LSN, commitTime time.Time) {
	s.c.invalidateTable(table, commitLSN)
	s.c.m.invalidations[srcStream][scopeTable].Inc()
	s.c.m.staleness.Observe(s.c.now().Sub(commitTime).Seconds())
}

// Committed reports that every change of the transaction that ended at end
// (committed at commitTime) was applied. A session whose commit is at or
// before end may read the shard from the cache.
func (s *ShardStream) Committed(end LSN, commitTime time.Time) {
	storeMax(&s.sh.applied, uint64(end))
	delay := s.c.now().Sub(commitTime)
	s.sh.delayed.Store(delay > s.c.maxLag)
	s.sh.commitsSeen.Store(true)
	s.c.m.streamDelay.WithLabelValues(s.sh.name).Set(delay.Seconds())
	s.c.m.streamApplied.WithLabelValues(s.sh.name).Set(float64(end))
}

// Progress reports that the stream has applied everything the server sent
// up to pos (a keepalive answered after the preceding changes): the stream
// is alive. A delay seen in the last commit is forgiven only when no commit
// came since the previous Progress (the sender is idle, not working
// through a backlog).
func (s *ShardStream) Progress(pos LSN) {
	storeMax(&s.sh.applied, uint64(pos))
	if !s.sh.commitsSeen.Swap(false) {
		s.sh.delayed.Store(false)
		s.c.m.streamDelay.WithLabelValues(s.sh.name).Set(0)
	}
	s.sh.beat.Store(s.c.now().UnixNano())
	s.c.m.streamApplied.WithLabelValues(s.sh.name).Set(float64(s.sh.applied.Load()))
}

// ServerPosition reports that the shard primary's WAL was at lsn at time
// at (pg_current_wal_lsn(), e.g. from the proxy's health probes). While
// the stream has not applied a position observed longer than the bound
// ago, the shard is behind: this catches a stream that is alive (its
// keepalives arrive) but late decoding, before its late commits arrive.
// One position is tracked at a time, the oldest not yet applied.
func (s *ShardStream) ServerPosition(lsn LSN, at time.Time) {
	sh := s.sh
	sh.probeMu.Lock()
	defer sh.probeMu.Unlock()
	if p := sh.probeLSN.Load(); p != 0 && sh.applied.Load() < p {
		return // the older position is still pending
	}
	if uint64(lsn) <= sh.applied.Load() {
		sh.probeLSN.Store(0)
		return
	}
	sh.probeAt.Store(at.UnixNano())
	sh.probeLSN.Store(uint64(lsn))
}

// Applied returns the LSN up to which the stream applied every commit.
func (s *ShardStream) Applied() LSN { return LSN(s.sh.applied.Load()) }

// ShardInfo describes one shard's stream for SHOW CACHE.
type ShardInfo struct {
	Shard   string
	Up      bool
	Tables  []string // the tables its stream covers
	Status  Status   // Miss when served, else the bypass reason
	Applied LSN
	// SinceBeat is how long ago the stream last confirmed its position.
	SinceBeat time.Duration
}

// Shards returns the state of every shard a stream reported on.
func (c *Cache) Shards() []ShardInfo {
	var out []ShardInfo
	now := c.now().UnixNano()
	for name, sh := range *c.shards.Load() {
		var tables []string
		if t := sh.tables.Load(); t != nil {
			for tn := range *t {
				tables = append(tables, tn)
			}
			sort.Strings(tables)
		}
		out = append(out, ShardInfo{
			Shard: name, Up: sh.up.Load(), Status: c.shardStatus(sh), Tables: tables,
			Applied: LSN(sh.applied.Load()), SinceBeat: time.Duration(now - sh.beat.Load()),
		})
	}
	return out
}
