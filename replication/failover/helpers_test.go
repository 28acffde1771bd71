package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/shardmap"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testLogger logs to the test's output (shown with -v or on failure), at
// the level of $FAILOVER_TEST_LOG (debug, info, warn; default warn).
func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	switch os.Getenv("FAILOVER_TEST_LOG") {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

// ep is the endpoint host:5432.
func ep(host string) shardmap.Endpoint { return shardmap.Endpoint{Host: host, Port: 5432} }

// addr is the address of ep(host).
func addr(host string) string { return ep(host).String() }

// testMap has shard s1 (primary p1, replicas r1 and r2) and shard s2
// (primary p2, replica q1), at epoch 1.
func testMap(t *testing.T) *shardmap.Map {
	t.Helper()
	m := &shardmap.Map{
		Epoch: 1,
		Shards: []shardmap.Shard{
			{Name: "s1", Primary: ep("p1"), Replicas: []shardmap.Endpoint{ep("r1"), ep("r2")}, State: shardmap.StateActive},
			{Name: "s2", Primary: ep("p2"), Replicas: []shardmap.Endpoint{ep("q1")}, State: shardmap.StateActive},
		},
		Distributions: []shardmap.Distribution{{
			Name: "d", KeyType: shardmap.KeyBigint, Strategy: shardmap.Hash,
			Intervals: shardmap.EvenHashIntervals([]string{"s1", "s2"}),
		}},
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("test map: %v", err)
	}
	return m
}

// fakeStore is an in-memory meta cluster: a map changed by
// compare-and-set, a leader flag, proxies that apply epochs at once or
// when told, and health reports.
type fakeStore struct {
	mu      sync.Mutex
	m       *shardmap.Map
	leader  bool
	block   bool   // WaitApplied waits until applied reaches the epoch
	applied uint64 // the epoch every proxy applied, when block
	changed chan struct{}
	reports map[string][2]int // addr -> unreachable, reporting
	// beforeApply, if set, runs before the n-th call of ApplyMap (from 1),
	// outside the lock: it may change the map, to make a conflict.
	beforeApply func(n int)
	applies     int
	comments    []string // of the committed maps
	waits       []uint64 // epochs WaitApplied was asked for
}

func newFakeStore(m *shardmap.Map) *fakeStore {
	return &fakeStore{m: m, leader: true, changed: make(chan struct{}), reports: map[string][2]int{}}
}

func (s *fakeStore) Map() *shardmap.Map {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m
}

func (s *fakeStore) IsLeader() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leader
}

func (s *fakeStore) setLeader(l bool) {
	s.mu.Lock()
	s.leader = l
	s.mu.Unlock()
}

var errStale = errors.New("fake store: stale epoch")

func (s *fakeStore) ApplyMap(ctx context.Context, m *shardmap.Map, expect uint64, comment string) (uint64, error) {
	s.mu.Lock()
	s.applies++
	n, hook := s.applies, s.beforeApply
	s.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !s.leader:
		return 0, errors.New("fake store: not the leader")
	case s.m.Epoch != expect:
		return 0, fmt.Errorf("%w: at %d, not %d", errStale, s.m.Epoch, expect)
	case m.Epoch != expect+1:
		return 0, fmt.Errorf("fake store: map epoch %d, want %d", m.Epoch, expect+1)
	}
	if err := m.Validate(); err != nil {
		return 0, err
	}
	s.m = m.Clone()
	s.comments = append(s.comments, comment)
	s.signal()
	return m.Epoch, nil
}

// change commits an unrelated change of the map, made by edit.
func (s *fakeStore) change(edit func(*shardmap.Map)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.m.Clone()
	edit(next)
	next.Epoch++
	s.m = next
	s.comments = append(s.comments, "test change")
	s.signal()
}

func (s *fakeStore) signal() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *fakeStore) WaitApplied(ctx context.Context, epoch uint64) error {
	s.mu.Lock()
	s.waits = append(s.waits, epoch)
	s.mu.Unlock()
	for {
		s.mu.Lock()
		done, changed := !s.block || s.applied >= epoch, s.changed
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fake store: proxies lag behind epoch %d: %w", epoch, ctx.Err())
		case <-changed:
		}
	}
}

// apply makes every proxy apply epoch.
func (s *fakeStore) apply(epoch uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied = epoch
	s.signal()
}

func (s *fakeStore) Reports(addr string) (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.reports[addr]
	return r[0], r[1]
}

func (s *fakeStore) setReports(addr string, unreachable, reporting int) {
	s.mu.Lock()
	s.reports[addr] = [2]int{unreachable, reporting}
	s.mu.Unlock()
}

// waited returns the epochs WaitApplied was asked for.
func (s *fakeStore) waited() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.waits)
}

func (s *fakeStore) commits() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.comments)
}

// fakeServer is a PostgreSQL server as the fake admin sees it.
type fakeServer struct {
	down       bool
	inRecovery bool
	lsn        health.LSN
	upstream   string
	fenced     bool
	quiesced   bool
	fail       map[string]error // method -> error it returns
}

// fakeAdmin acts on fake servers and logs every call but State.
type fakeAdmin struct {
	mu      sync.Mutex
	servers map[string]*fakeServer
	calls   []string
	states  int // calls of State
}

// newFakeAdmin has the servers of testMap: p1 at 1000, r1 replayed 900,
// r2 950; p2 and q1.
func newFakeAdmin() *fakeAdmin {
	return &fakeAdmin{servers: map[string]*fakeServer{
		addr("p1"): {lsn: 1000},
		addr("r1"): {inRecovery: true, lsn: 900, upstream: addr("p1")},
		addr("r2"): {inRecovery: true, lsn: 950, upstream: addr("p1")},
		addr("p2"): {lsn: 5000},
		addr("q1"): {inRecovery: true, lsn: 5000, upstream: addr("p2")},
	}}
}

// set changes the server at host under the lock.
func (a *fakeAdmin) set(host string, f func(*fakeServer)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a.servers[addr(host)])
}

// get returns a copy of the server at host.
func (a *fakeAdmin) get(host string) fakeServer {
	a.mu.Lock()
	defer a.mu.Unlock()
	return *a.servers[addr(host)]
}

func (a *fakeAdmin) log() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// server logs the call and returns the server at addr, or the error the
// call gets.
func (a *fakeAdmin) server(method, addr string, args ...any) (*fakeServer, error) {
	if method != "state" {
		call := method + " " + addr
		for _, x := range args {
			call += fmt.Sprint(" ", x)
		}
		a.calls = append(a.calls, call)
	} else {
		a.states++
	}
	s := a.servers[addr]
	switch {
	case s == nil:
		return nil, fmt.Errorf("fake admin: no server %s", addr)
	case s.down:
		return nil, fmt.Errorf("fake admin: %s: connection refused", addr)
	case s.fail[method] != nil:
		return nil, s.fail[method]
	}
	return s, nil
}

func (a *fakeAdmin) State(ctx context.Context, addr string) (ServerState, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.server("state", addr)
	if err != nil {
		return ServerState{}, err
	}
	if s.inRecovery {
		return ServerState{InRecovery: true, ReplayLSN: s.lsn, Upstream: s.upstream}, nil
	}
	return ServerState{CurrentLSN: s.lsn, ReadOnly: s.fenced || s.quiesced}, nil
}

func (a *fakeAdmin) Promote(ctx context.Context, addr string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.server("promote", addr)
	if err == nil {
		s.inRecovery, s.upstream = false, ""
	}
	return err
}

func (a *fakeAdmin) Repoint(ctx context.Context, addr, primary string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.server("repoint", addr, primary)
	if err == nil {
		s.upstream = primary
	}
	return err
}

func (a *fakeAdmin) WaitReplayed(ctx context.Context, addr string, lsn health.LSN) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.server("wait-replayed", addr, uint64(lsn))
	if err == nil && s.lsn < lsn {
		s.lsn = lsn // it catches up at once
	}
	return err
}

func (a *fakeAdmin) Quiesce(ctx context.Context, addr string, grace time.Duration) (health.LSN, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.server("quiesce", addr)
	if err != nil {
		return 0, err
	}
	s.quiesced = true
	return s.lsn, nil
}

func (a *fakeAdmin) Fence(ctx context.Context, addr string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.server("fence", addr)
	if err == nil {
		s.fenced = true
	}
	return err
}

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// events records the events of a controller.
type events struct {
	mu  sync.Mutex
	all []Event
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) list() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.all)
}

// steps lists the steps of the events, with "!" after a failed one.
func (e *events) steps() []string {
	var out []string
	for _, ev := range e.list() {
		s := ev.Step
		if ev.Err != nil {
			s += "!"
		}
		out = append(out, s)
	}
	return out
}

// count counts the events at step, failed ones when failed.
func (e *events) count(step string, failed bool) int {
	n := 0
	for _, ev := range e.list() {
		if ev.Step == step && (ev.Err != nil) == failed {
			n++
		}
	}
	return n
}

// rig is a controller with its fakes.
type rig struct {
	t      *testing.T
	store  *fakeStore
	admin  *fakeAdmin
	clock  *fakeClock // nil with the real clock
	events *events
	c      *Controller

	cleanup sync.Once // registers the cleanup of tick
}

// options for newRig.
type rigOption func(*Config)

func fakeTime(clock *fakeClock) rigOption { return func(c *Config) { c.Now = clock.Now } }

func newRig(t *testing.T, store *fakeStore, admin *fakeAdmin, opts ...rigOption) *rig {
	t.Helper()
	r := &rig{t: t, store: store, admin: admin, events: &events{}}
	cfg := Config{
		Store:         store,
		Admin:         admin,
		CheckInterval: 2 * time.Millisecond,
		FailAfter:     2 * time.Second,
		DrainGrace:    time.Millisecond,
		ActionTimeout: time.Second,
		Logger:        testLogger(t),
		OnEvent:       r.events.add,
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r.c = c
	return r
}

// tick runs one round of checks as Run does, with the test's context;
// the workers it starts are stopped and waited for when the test ends.
func (r *rig) tick() {
	r.t.Helper()
	r.cleanup.Do(func() {
		r.t.Cleanup(func() {
			r.c.stopTerm()
			r.c.workers.Wait()
		})
	})
	r.c.tick(r.t.Context())
}

// run starts Run and returns the function that stops it (also called when
// the test ends).
func (r *rig) run() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				r.t.Errorf("Run: %v", err)
			}
		})
	}
	r.t.Cleanup(stop)
	return stop
}

// noSwitch reports whether shard s1 has no switch in the store's map.
func (r *rig) noSwitch() bool { return r.store.Map().Shard("s1").Switch == nil }

// checkShard fails the test unless the final map is valid and shard s1
// has primary, replicas and fenced, and no switch.
func checkShard(t *testing.T, m *shardmap.Map, primary string, replicas, fenced []string) {
	t.Helper()
	if err := m.Validate(); err != nil {
		t.Errorf("final map does not validate: %v", err)
	}
	sh := m.Shard("s1")
	var gotR, gotF []string
	for _, e := range sh.Replicas {
		gotR = append(gotR, e.Host)
	}
	for _, e := range sh.Fenced {
		gotF = append(gotF, e.Host)
	}
	if sh.Primary.Host != primary || !slices.Equal(gotR, replicas) || !slices.Equal(gotF, fenced) || sh.Switch != nil {
		t.Errorf("shard s1: primary %s, replicas %v, fenced %v, switch %+v; want primary %s, replicas %v, fenced %v, no switch",
			sh.Primary.Host, gotR, gotF, sh.Switch, primary, replicas, fenced)
	}
	if s2 := m.Shard("s2"); s2.Primary.Host != "p2" || s2.Switch != nil {
		t.Errorf("shard s2 changed: %+v", s2)
	}
}

// withSwitch returns testMap with shard s1 switching.
func withSwitch(t *testing.T, sw shardmap.Switch) *shardmap.Map {
	m := testMap(t)
	m.Shard("s1").Switch = &sw
	if err := m.Validate(); err != nil {
		t.Fatalf("test map: %v", err)
	}
	return m
}

// index returns the position of the first call that starts with prefix,
// or -1.
func index(calls []string, prefix string) int {
	return slices.IndexFunc(calls, func(c string) bool { return strings.HasPrefix(c, prefix) })
}

// waitTimeout bounds every wait for a condition in these tests.
const waitTimeout = 10 * time.Second
