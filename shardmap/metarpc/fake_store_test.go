package metarpc

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/shardmap"
)

// The errors a real Store returns are its own types; these stand for
// them, implementing the small interfaces of errors.go without using the
// error types of this package.

type fakeNotLeader struct{ leader string }

func (e fakeNotLeader) Error() string         { return "node is not the leader" }
func (e fakeNotLeader) LeaderAddress() string { return e.leader }

type fakeStale struct{ cur, exp uint64 }

func (e fakeStale) Error() string                          { return "epoch moved" }
func (e fakeStale) StaleEpoch() (current, expected uint64) { return e.cur, e.exp }

type fakeInvalid struct{ msg string }

func (e fakeInvalid) Error() string         { return e.msg }
func (e fakeInvalid) InvalidArgument() bool { return true }

// fakeStore is an in-memory Store. With leader set it is a follower that
// redirects what only the leader does to that address.
type fakeStore struct {
	mu      sync.Mutex
	id      string
	leader  string // "" on the leader
	cur     MapVersion
	history []MapVersion // oldest first
	changed chan struct{}
	proxies map[string]ProxyStatus
	reports map[string][]string // the unreachable endpoints each proxy reported
	pchange chan struct{}       // closed when a heartbeat arrives
	members []Member
	applies int // successful ApplyMap calls
	waiters int // WaitApplied calls waiting now

	stopped     chan struct{} // closed by stop: watches end
	loseReplies int           // ApplyMap applies and then fails this many times as if the reply were lost
	panicIn     string        // method that panics
}

func newFakeStore(id string) *fakeStore {
	return &fakeStore{
		id:      id,
		changed: make(chan struct{}),
		pchange: make(chan struct{}),
		stopped: make(chan struct{}),
		proxies: make(map[string]ProxyStatus),
		reports: make(map[string][]string),
		members: []Member{{ID: id, RaftAddress: "127.0.0.1:7001", APIAddress: "127.0.0.1:7000", Suffrage: "voter", Leader: true}},
	}
}

// fake returns f (and the fake a wrapper embeds).
func (f *fakeStore) fake() *fakeStore { return f }

func (f *fakeStore) follow(leader string) *fakeStore {
	f.leader = leader
	return f
}

func (f *fakeStore) maybePanic(method string) {
	f.mu.Lock()
	p := f.panicIn == method
	f.mu.Unlock()
	if p {
		panic("fake store: " + method)
	}
}

func (f *fakeStore) notLeader() error {
	if f.leader != "" {
		return fmt.Errorf("fake store %s: %w", f.id, fakeNotLeader{f.leader})
	}
	return nil
}

func (f *fakeStore) Map() MapVersion {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur
}

// Watch coalesces like meta.Node.Watch: an unbuffered channel offered the
// newest version until it is taken.
func (f *fakeStore) Watch(ctx context.Context, after uint64) (<-chan MapVersion, error) {
	out := make(chan MapVersion)
	go func() {
		defer close(out)
		for {
			f.mu.Lock()
			cur, changed := f.cur, f.changed
			f.mu.Unlock()
			var send chan<- MapVersion
			if cur.Epoch > after {
				send = out
			}
			select {
			case send <- cur:
				after = cur.Epoch
			case <-changed:
			case <-ctx.Done():
				return
			case <-f.stopped:
				return
			}
		}
	}()
	return out, nil
}

// stop ends the watches, as a member that stops does.
func (f *fakeStore) stop() { close(f.stopped) }

// set applies a version directly (what replication does on a follower).
func (f *fakeStore) set(m *shardmap.Map, comment string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setLocked(m, comment)
}

func (f *fakeStore) setLocked(m *shardmap.Map, comment string) {
	f.cur = MapVersion{Epoch: m.Epoch, Map: m, AppliedAt: time.Now().UTC().Truncate(time.Millisecond), Comment: comment}
	f.history = append(f.history, f.cur)
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeStore) ApplyMap(ctx context.Context, m *shardmap.Map, expectEpoch uint64, comment string) (uint64, error) {
	f.maybePanic("ApplyMap")
	if err := f.notLeader(); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur.Epoch != expectEpoch {
		return 0, fmt.Errorf("apply: %w", fakeStale{f.cur.Epoch, expectEpoch})
	}
	if comment == "store says no" {
		return 0, fakeInvalid{"the store refuses this map"}
	}
	if m.Epoch != expectEpoch+1 || m.Validate() != nil {
		panic("fake store: the server passed an unvalidated map")
	}
	f.setLocked(m, comment)
	f.applies++
	if f.loseReplies > 0 {
		f.loseReplies--
		return 0, status.Error(codes.Unavailable, "connection reset (the reply was lost)")
	}
	return m.Epoch, nil
}

func (f *fakeStore) History(limit int) []MapVersion {
	f.maybePanic("History")
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.history)
	slices.Reverse(out)
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

func (f *fakeStore) Status(context.Context) NodeStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := NodeStatus{
		ID: f.id, RaftAddress: "127.0.0.1:7001", APIAddress: "127.0.0.1:7000", State: "leader",
		LeaderID: f.id, LeaderRaftAddress: "127.0.0.1:7001", LeaderAPIAddress: "127.0.0.1:7000",
		Term: 3, LastIndex: 42, CommitIndex: 41, AppliedIndex: 40,
		Members: slices.Clone(f.members),
	}
	if f.leader != "" {
		st.State, st.LeaderID, st.LeaderAPIAddress = "follower", "the-leader", f.leader
		st.LastContact = time.Now().UTC().Truncate(time.Millisecond)
	}
	return st
}

func (f *fakeStore) Join(ctx context.Context, id, raftAddr string) error {
	if err := f.notLeader(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.members {
		if m.ID == id {
			return nil
		}
	}
	f.members = append(f.members, Member{ID: id, RaftAddress: raftAddr, Suffrage: "voter"})
	return nil
}

func (f *fakeStore) Remove(ctx context.Context, id string) error {
	if err := f.notLeader(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members = slices.DeleteFunc(f.members, func(m Member) bool { return m.ID == id })
	return nil
}

func (f *fakeStore) Deregister(ctx context.Context, id string) error {
	if err := f.notLeader(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.proxies, id)
	delete(f.reports, id)
	close(f.pchange)
	f.pchange = make(chan struct{})
	return nil
}

func (f *fakeStore) Heartbeat(ctx context.Context, id, addr string, applied uint64, unreachable []string) error {
	if err := f.notLeader(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.proxies[id] = ProxyStatus{ID: id, Address: addr, AppliedEpoch: applied, LastSeen: time.Now().UTC().Truncate(time.Millisecond), Lease: 10 * time.Second, Live: true}
	f.reports[id] = slices.Clone(unreachable)
	close(f.pchange)
	f.pchange = make(chan struct{})
	return nil
}

// Reports counts the reports of live proxies; a follower has none.
func (f *fakeStore) Reports(addr string) (unreachable, reporting int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.leader != "" {
		return 0, 0
	}
	for id, r := range f.reports {
		if !f.proxies[id].Live {
			continue
		}
		reporting++
		if slices.Contains(r, addr) {
			unreachable++
		}
	}
	return unreachable, reporting
}

func (f *fakeStore) Proxies() []ProxyStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]ProxyStatus, 0, len(f.proxies))
	for _, p := range f.proxies {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b ProxyStatus) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func (f *fakeStore) WaitApplied(ctx context.Context, epoch uint64) error {
	for {
		f.mu.Lock()
		ch := f.pchange
		done := true
		for _, p := range f.proxies {
			if p.Live && p.AppliedEpoch < epoch {
				done = false
			}
		}
		if done {
			f.mu.Unlock()
			return nil
		}
		f.waiters++
		f.mu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = fmt.Errorf("wait for epoch %d: %w", epoch, ctx.Err())
		}
		f.mu.Lock()
		f.waiters--
		f.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// waiting returns how many WaitApplied calls wait now.
func (f *fakeStore) waiting() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiters
}

func (f *fakeStore) appliesCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applies
}
