package meta

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/pgshard/pgshard/shardmap"
)

// maxHistory is how many map versions the state keeps, the current one
// included. Changing it changes only how much history replicas keep.
const maxHistory = 50

// MapVersion is one epoch of the shard map as committed.
type MapVersion struct {
	Epoch uint64
	// Map is the parsed map, with Map.Epoch == Epoch. It is shared by
	// every reader and must not be changed: Clone it to edit. Nil (and
	// Epoch 0) before the first map is applied.
	Map *shardmap.Map
	// YAML is the map's YAML form exactly as committed.
	YAML []byte
	// AppliedAt is the leader's clock when the change was proposed.
	AppliedAt time.Time
	// Comment and Author are what the change was submitted with, if any.
	Comment, Author string
}

// ProxyStatus is what the cluster knows about one proxy.
type ProxyStatus struct {
	ID           string
	Addr         string // the address the proxy reported (its client listener)
	AppliedEpoch uint64 // the map epoch it applies, as of its last heartbeat
	// LastSeen is the leader's clock at the proxy's last heartbeat.
	LastSeen time.Time
	// Lease is how long after LastSeen the proxy counts as alive.
	Lease time.Duration
	// Alive reports whether the lease still ran at the replicated clock
	// (the time of the last log entry applied), not at this node's clock:
	// every replica at the same log index says the same.
	Alive bool
	// Incarnation names the run of the proxy process that sent the last
	// heartbeat ("" when it sent none): a proxy restarted under the same
	// ID heartbeats with a new one.
	Incarnation string
}

// proxyRecord is the replicated state of one proxy.
type proxyRecord struct {
	addr     string
	applied  uint64
	lastSeen time.Time
	lease    time.Duration
	// incarnation is the last heartbeat's (ProxyStatus.Incarnation).
	incarnation string
}

func (r proxyRecord) alive(now time.Time) bool { return now.Sub(r.lastSeen) < r.lease }

// state is the replicated state after some log index. A published state
// is never changed: applying a command builds a new state that shares what
// did not change, so readers use a *state without locks.
type state struct {
	// now is the replicated clock: the latest "at" of the entries applied.
	// It never goes back, even if a new leader's clock is behind.
	now time.Time
	// versions are the map's epochs, oldest first; the last is current.
	versions []MapVersion
	proxies  map[string]proxyRecord // by proxy ID
	apiAddrs map[string]string      // raft server ID → client address
	// workflows are the workflow records by ID (workflows.go);
	// workflowSeq is the latest version given to one.
	workflows   map[string]WorkflowRecord
	workflowSeq uint64
}

func newState() *state {
	return &state{proxies: map[string]proxyRecord{}, apiAddrs: map[string]string{}, workflows: map[string]WorkflowRecord{}}
}

// current returns the current map version (zero before the first map).
func (s *state) current() MapVersion {
	if len(s.versions) == 0 {
		return MapVersion{}
	}
	return s.versions[len(s.versions)-1]
}

func (s *state) epoch() uint64 { return s.current().Epoch }

// history returns up to limit versions, newest first; all for limit <= 0.
func (s *state) history(limit int) []MapVersion {
	n := len(s.versions)
	if limit > 0 && limit < n {
		n = limit
	}
	out := make([]MapVersion, 0, n)
	for i := len(s.versions) - 1; i >= 0 && len(out) < n; i-- {
		out = append(out, s.versions[i])
	}
	return out
}

// proxyList returns every proxy, by ID, with liveness at s.now.
func (s *state) proxyList() []ProxyStatus {
	out := make([]ProxyStatus, 0, len(s.proxies))
	for _, id := range slices.Sorted(maps.Keys(s.proxies)) {
		out = append(out, s.proxyStatus(id))
	}
	return out
}

func (s *state) proxyStatus(id string) ProxyStatus {
	r := s.proxies[id]
	return ProxyStatus{ID: id, Addr: r.addr, AppliedEpoch: r.applied, LastSeen: r.lastSeen, Lease: r.lease, Alive: r.alive(s.now), Incarnation: r.incarnation}
}

// lagging returns the live proxies that have not applied epoch, by ID.
func (s *state) lagging(epoch uint64) []ProxyStatus {
	var out []ProxyStatus
	for _, p := range s.proxyList() {
		if p.Alive && p.AppliedEpoch < epoch {
			out = append(out, p)
		}
	}
	return out
}

// applyMapResult is the FSM's response to apply_map.
type applyMapResult struct {
	epoch uint64 // the new epoch, when err is nil
	err   error
}

// apply returns the state after c, and the command's result for the
// proposer (nil, an applyMapResult or a workflowResult). s is not changed. It panics if the
// committed command cannot be applied at all (see fsm.Apply).
func (s *state) apply(c *command) (*state, any) {
	n := *s
	if c.at.After(n.now) {
		n.now = c.at
	}
	switch b := c.body.(type) {
	case *applyMapCmd:
		return n.applyMap(c.at, b)
	case *heartbeatCmd:
		n.proxies = maps.Clone(s.proxies)
		n.proxies[b.ProxyID] = proxyRecord{addr: b.Addr, applied: b.AppliedEpoch, lastSeen: c.at, lease: time.Duration(b.LeaseNanos), incarnation: b.Incarnation}
	case *deregisterCmd:
		if _, ok := s.proxies[b.ProxyID]; ok {
			n.proxies = maps.Clone(s.proxies)
			delete(n.proxies, b.ProxyID)
		}
	case *tickCmd:
		n.proxies = maps.Clone(s.proxies)
		maps.DeleteFunc(n.proxies, func(_ string, r proxyRecord) bool {
			return n.now.Sub(r.lastSeen) >= r.lease+time.Duration(b.ForgetNanos)
		})
	case *workflowPutCmd:
		return n.putWorkflow(c.at, b)
	case *memberCmd:
		n.apiAddrs = maps.Clone(s.apiAddrs)
		if b.APIAddr == "" {
			delete(n.apiAddrs, b.ID)
		} else {
			n.apiAddrs[b.ID] = b.APIAddr
		}
	default:
		panic(fmt.Sprintf("meta: command %s decoded to %T, which has no handler", c.typ, c.body))
	}
	return &n, nil
}

// applyMap is the compare-and-set of the shard map. s is a fresh copy,
// changed in place.
func (s *state) applyMap(at time.Time, c *applyMapCmd) (*state, any) {
	cur := s.epoch()
	if c.ExpectEpoch != cur {
		return s, applyMapResult{err: &StaleEpochError{Current: cur, Expected: c.ExpectEpoch}}
	}
	m, err := shardmap.ParseYAML([]byte(c.MapYAML))
	if err != nil {
		// The leader parsed this very text before proposing it: a map
		// that no longer parses means this binary cannot read a map an
		// older one wrote. Refuse to go on rather than diverge.
		panic(fmt.Sprintf("meta: a committed shard map (epoch %d) cannot be parsed by this pgshard: %v", cur+1, err))
	}
	m.Epoch = cur + 1
	v := MapVersion{Epoch: cur + 1, Map: m, YAML: []byte(c.MapYAML), AppliedAt: at, Comment: c.Comment, Author: c.Author}
	keep := s.versions[max(0, len(s.versions)-(maxHistory-1)):]
	s.versions = append(slices.Clone(keep), v)
	return s, applyMapResult{epoch: v.Epoch}
}
