package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"time"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/router"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// Read splitting and read-your-writes.
//
// A statement the router marks Replica (a read calling only built-in
// read-only functions) that starts outside a transaction — or the first
// statement of a READ ONLY transaction — goes to a replica of its shard
// that the health monitor saw up, in recovery and within the user's lag
// bounds; among those, the one with the fewest connections in use by this
// proxy for the user and database (least outstanding), ties taken in turn.
// Everything else goes to the primary.
//
// Read-your-writes: when a session's write transaction ends, the proxy
// appends "SELECT pg_current_wal_insert_lsn()" to the client's own sync
// point (same round trip; the answer is hidden from the client) and keeps
// the LSN per shard. With consistency "session" the session's later reads
// of that shard go only to replicas whose replayed LSN, at their latest
// probe, is at or beyond it — else to the primary.

// replicaViewTTL is how long the replicas' health view is reused before it
// is rebuilt from the monitor (which probes every health_interval).
const replicaViewTTL = 50 * time.Millisecond

// lsnQuery asks the primary for its WAL insert position after a commit:
// at or beyond the end of the commit record, so a replica that replayed
// it sees the commit.
const lsnQuery = "SELECT pg_current_wal_insert_lsn()"

// replicaView is the health of every replica that could serve reads,
// by shard.
type replicaView struct {
	at      time.Time
	byShard map[string][]health.Status
}

// readReplicas returns the replicas of shard the monitor saw up and in
// recovery with a known lag (shared: do not modify).
func (s *Server) readReplicas(shard string) []health.Status {
	v := s.replicas.Load()
	if v == nil || time.Since(v.at) > replicaViewTTL {
		v = &replicaView{at: time.Now(), byShard: map[string][]health.Status{}}
		for _, st := range s.Health() {
			if st.Role == health.RoleReplica && st.Up && st.InRecovery && st.LagKnown {
				v.byShard[st.Shard] = append(v.byShard[st.Shard], st)
			}
		}
		s.replicas.Store(v)
	}
	return v.byShard[shard]
}

// pickReplica returns the address of the replica of shard that should
// serve a read of user u in database db whose session needs the WAL up
// to minLSN (0: no need), or "" for the primary.
func (s *Server) pickReplica(shard string, u *userState, db string, minLSN health.LSN) string {
	rc := u.reads
	maxBytes := uint64(math.MaxUint64)
	if rc.MaxLagBytes >= 0 {
		maxBytes = uint64(rc.MaxLagBytes)
	}
	maxSeconds := math.Inf(1)
	if rc.MaxLag >= 0 {
		maxSeconds = rc.MaxLag.D().Seconds()
	}
	cands := s.readReplicas(shard)
	if len(cands) == 0 {
		return ""
	}
	start := int(s.readTurn.Add(1))
	best, bestLoad := "", math.MaxInt
	for i := range cands {
		st := &cands[(start+i)%len(cands)]
		if st.LagBytes > maxBytes || st.LagSeconds > maxSeconds || st.LSN < minLSN {
			continue
		}
		if load := s.inUse(shard, st.Addr, u.beUser, db); load < bestLoad {
			best, bestLoad = st.Addr, load
		}
	}
	return best
}

// inUse returns how many connections of the pool for (shard, addr, user,
// db) are lent out (0 when there is no such pool yet).
func (s *Server) inUse(shard, addr, user, db string) int {
	s.mu.Lock()
	p := s.pools[poolKey{shard: shard, addr: addr, user: user, db: db}]
	s.mu.Unlock()
	if p == nil {
		return 0
	}
	st := p.Stats()
	return st.Open - st.Idle
}

// hasReplicas reports whether shard has replicas in the shard map.
func (s *Server) hasReplicas(shard string) bool {
	m := s.runtime().cfg.shardMap
	if m == nil {
		return false
	}
	sh := m.Shard(shard)
	return sh != nil && len(sh.Replicas) > 0
}

// readTarget decides where the statement plan, about to be attached to a
// new backend, runs: the address of a replica of plan.Shard, or "" for
// the primary.
func (s *session) readTarget(plan rplan.Plan) string {
	if s.cache.next != nil {
		return "" // a cache miss fills from the primary
	}
	if !plan.ReplicaSafe || plan.Kind != rplan.Single || !s.readsReplicas() || !s.srv.hasReplicas(plan.Shard) {
		return ""
	}
	s.mu.Lock()
	begin := s.st.deferredBegin
	s.mu.Unlock()
	if begin != "" && !readOnlyBegin(begin) {
		return ""
	}
	return s.pickReplica(plan.Shard)
}

// readsReplicas reports whether the session's reads may go to replicas
// (its user's settings, transaction pooling).
func (s *session) readsReplicas() bool {
	rc := s.user.reads
	return rc.ReadFrom == ReadFromReplicas && rc.Consistency != ConsistencyPrimary && !s.sessionPool
}

// tracksWrites reports whether the session must learn the WAL position
// of its writes: its reads go to replicas that must have replayed them.
func (s *session) tracksWrites() bool {
	rc := s.user.reads
	return (rc.ReadFrom == ReadFromReplicas && rc.Consistency == ConsistencySession || s.srv.cacheOn.Load()) && !s.sessionPool
}

// pickReplica chooses the replica of shard for the session's read, with
// the session's read-your-writes position as the minimum, or "".
func (s *session) pickReplica(shard string) string {
	minLSN := health.LSN(0)
	if s.tracksWrites() {
		s.mu.Lock()
		minLSN = s.lsns[shard]
		s.mu.Unlock()
	}
	return s.srv.pickReplica(shard, s.user, s.db, minLSN)
}

// scatterReplicas chooses, for a read over several shards, the replica of
// each shard that runs it (shards left out use their primary); nil when
// the statement or the user's settings keep it on the primaries.
func (s *session) scatterReplicas(plan rplan.Plan) map[string]string {
	if !plan.ReplicaSafe || !s.readsReplicas() {
		return nil
	}
	var out map[string]string
	for _, shard := range plan.Shards {
		if !s.srv.hasReplicas(shard) {
			continue
		}
		if addr := s.pickReplica(shard); addr != "" {
			if out == nil {
				out = make(map[string]string, len(plan.Shards))
			}
			out[shard] = addr
		}
	}
	return out
}

// learnLSNs records, after a write over several shards (split INSERT,
// broadcast UPDATE/DELETE, COPY FROM, DDL), each shard's WAL position,
// asked of its primary — one extra round trip, only for sessions that
// read their writes from replicas and only for shards with replicas. A
// shard that cannot answer leaves the session reading that shard from
// replicas that replayed everything it knew of before.
func (s *session) learnLSNs(ctx context.Context, shards []string) {
	if !s.tracksWrites() {
		return
	}
	for _, shard := range shards {
		if !s.srv.hasReplicas(shard) && !s.srv.cacheOn.Load() {
			continue
		}
		be, err := s.srv.lend(ctx, shard, s.user, s.db)
		if err != nil {
			continue
		}
		v, err := be.QueryValue(ctx, lsnQuery)
		be.Pool().Release(be)
		lsn, perr := health.ParseLSN(v)
		if err != nil || perr != nil {
			s.log.Debug("read-your-writes: WAL position unknown", "shard", shard, "err", errors.Join(err, perr))
			continue
		}
		s.mu.Lock()
		if s.lsns == nil {
			s.lsns = make(map[string]health.LSN)
		}
		s.lsns[shard] = max(s.lsns[shard], lsn)
		s.mu.Unlock()
	}
}

// readOnlyBegin reports whether the BEGIN or START TRANSACTION statement
// sql starts a READ ONLY transaction that a replica can run: a
// SERIALIZABLE one cannot (a hot standby refuses "serializable mode"), so
// it stays on the primary.
func readOnlyBegin(sql string) bool {
	words := strings.Fields(strings.ToLower(strings.NewReplacer(",", " ", ";", " ").Replace(sql)))
	ro := false
	for i := 0; i+1 < len(words); i++ {
		switch {
		case words[i] == "read":
			ro = words[i+1] == "only"
		case words[i] == "level" && words[i+1] == "serializable":
			return false
		}
	}
	return ro
}

// noteWrite records, when a statement that may write is attached to the
// primary of shard, that the session's next transaction end must learn
// the primary's WAL position. Callers hold s.mu.
func (s *session) noteWrite(plan rplan.Plan, sql string) {
	a := s.st.cur()
	if s.srv.cacheOn.Load() && a != nil && !a.replica {
		s.cacheNoteWrite(plan)
	}
	if a == nil || a.replica || !s.tracksWrites() || !s.srv.hasReplicas(a.shard) && !s.srv.cacheOn.Load() {
		return // no reads of this shard will go to a replica
	}
	if plan.Kind == rplan.Single && !plan.ReplicaSafe {
		s.wrote = true
	}
	if s.wrote && a.inTx() && sql != "" && router.Classify(sql).Has(router.ClassCommit) {
		s.txEnding = true
	}
}

// captureLSN appends, after the client's sync point just queued for be,
// the query for the primary's WAL position when the session wrote and the
// transaction may end with this sync point. The relay hides its answer
// and keeps the position (lsnFrame).
func (s *session) captureLSN() {
	if !s.tracksWrites() {
		return
	}
	s.mu.Lock()
	a := s.st.cur()
	ok := s.wrote && a != nil && !a.replica && (!a.inTx() && s.st.deferredBegin == "" || s.txEnding) &&
		(s.srv.hasReplicas(a.shard) || s.srv.cacheOn.Load())
	if ok {
		s.txEnding = false
		s.queue.push(entry{kind: entrySync, swallow: true, sync: syncEntry{captureLSN: true}})
	}
	s.mu.Unlock()
	if ok {
		s.bout = wire.AppendString(s.bout, 'Q', lsnQuery)
	}
}

// lsnFrame handles a frame of the hidden WAL position query: errors are
// dropped (the client's statement failed and the transaction is aborted,
// or the server is no longer a primary), and at its ReadyForQuery the
// position counts when the client's transaction had ended.
func (s *session) lsnFrame(be *pool.Conn, typ byte, frame []byte) bool {
	r := &s.relay
	switch typ {
	case 'D':
		// One text column: int16 count, int32 length, the value.
		body := frame[wire.HeaderLen:]
		if len(body) >= 6 && binary.BigEndian.Uint16(body) == 1 {
			if n := int32(binary.BigEndian.Uint32(body[2:])); n > 0 && int(n) <= len(body)-6 {
				if lsn, err := health.ParseLSN(string(body[6 : 6+n])); err == nil {
					r.lsn = lsn
				}
			}
		}
	case 'Z':
		r.swallow--
		r.capture = false
		status := byte('I')
		if len(frame) > wire.HeaderLen {
			status = frame[wire.HeaderLen]
		}
		s.mu.Lock()
		if r.captureEnded && r.lsn != 0 {
			if s.lsns == nil {
				s.lsns = make(map[string]health.LSN)
			}
			if a := s.st.byConn(be); a != nil && r.lsn > s.lsns[a.shard] {
				s.lsns[a.shard] = r.lsn
			}
			s.wrote = false
		}
		failed := s.lastFailed
		s.mu.Unlock()
		r.lsn = 0
		return s.readyForQuery(be, status, failed, "")
	}
	return false
}
