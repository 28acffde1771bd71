package failover

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/shardmap"
)

func TestFailoverToMostAdvancedReplica(t *testing.T) {
	clock := newFakeClock()
	store := newFakeStore(testMap(t))
	store.setReports(addr("p1"), 1, 2)
	r := newRig(t, store, newFakeAdmin(), fakeTime(clock))
	r.clock = clock

	r.admin.set("p1", func(s *fakeServer) { s.down = true })
	r.tick()
	clock.advance(time.Second)
	r.tick()
	if c := store.commits(); len(c) != 0 {
		t.Fatalf("failover before FailAfter: commits %q", c)
	}
	clock.advance(time.Second)
	r.tick()
	testutil.Until(t, waitTimeout, "the failover", r.noSwitchAfterCommits)

	m := store.Map()
	checkShard(t, m, "r2", []string{"r1"}, []string{"p1"})
	if m.Epoch != 4 {
		t.Errorf("final epoch %d; want 4 (fence, promote, final)", m.Epoch)
	}
	calls := r.admin.log()
	want := []string{"fence p1:5432", "promote r2:5432", "repoint r1:5432 r2:5432"}
	if !slices.Equal(calls, want) {
		t.Errorf("admin calls %q; want %q", calls, want)
	}
	if up := r.admin.get("r1").upstream; up != addr("r2") {
		t.Errorf("r1 streams from %s; want r2", up)
	}
	wantSteps := []string{EventDetect, StepFence, EventApplied, EventFenceOld + "!", EventChoose, StepPromote, EventPromoted, EventRepoint, EventDone}
	if got := r.events.steps(); !slices.Equal(got, wantSteps) {
		t.Errorf("events %q; want %q", got, wantSteps)
	}
	ev := r.events.list()
	detect, done := ev[0], ev[len(ev)-1]
	if detect.At.IsZero() || done.At.Before(detect.At) || done.Epoch != 4 || done.To != addr("r2") || done.From != addr("p1") {
		t.Errorf("detect %+v, done %+v", detect, done)
	}
	if last, ok := r.c.LastEvent("s1"); !ok || last.Step != EventDone {
		t.Errorf("LastEvent = %+v, %v; want the done event", last, ok)
	}
	if got := store.waited(); len(got) == 0 || got[0] != 2 {
		t.Errorf("WaitApplied epochs %v; want 2 (the fence commit) first", got)
	}
}

func TestFailoverPromotesOnlyAfterProxiesApplied(t *testing.T) {
	clock := newFakeClock()
	store := newFakeStore(testMap(t))
	store.block = true
	r := newRig(t, store, newFakeAdmin(), fakeTime(clock))
	r.clock = clock
	failChecks(r)

	testutil.Until(t, waitTimeout, "the wait for the proxies", func() bool { return len(store.waited()) > 0 })
	if calls := r.admin.log(); len(calls) != 0 {
		t.Fatalf("admin calls %q before the proxies applied the fence", calls)
	}
	if sw := store.Map().Shard("s1").Switch; sw == nil || sw.Step != StepFence {
		t.Fatalf("switch %+v; want step fence", sw)
	}
	store.apply(2)
	testutil.Until(t, waitTimeout, "the failover", r.noSwitch)
	checkShard(t, store.Map(), "r2", []string{"r1"}, []string{"p1"})
}

func TestFailoverWaitsForAReachableReplica(t *testing.T) {
	clock := newFakeClock()
	store := newFakeStore(testMap(t))
	admin := newFakeAdmin()
	admin.set("r1", func(s *fakeServer) { s.down = true })
	admin.set("r2", func(s *fakeServer) { s.down = true })
	r := newRig(t, store, admin, fakeTime(clock))
	r.clock = clock
	failChecks(r)

	testutil.Until(t, waitTimeout, "three failed choices", func() bool { return r.events.count(EventChoose, true) >= 3 })
	sw := store.Map().Shard("s1").Switch
	if sw == nil || sw.Step != StepFence || sw.To != (shardmap.Endpoint{}) {
		t.Fatalf("switch %+v; want step fence without To", sw)
	}
	if n := r.events.count(EventFenceOld, true); n != 1 {
		t.Errorf("old primary fenced %d times; want once per drive", n)
	}
	if i := index(admin.log(), "promote"); i >= 0 {
		t.Fatalf("promoted with no replica reachable: %q", admin.log())
	}

	// r1 comes back; r2 stays down: it cannot be repointed, which must
	// not hold the final commit.
	admin.set("r1", func(s *fakeServer) { s.down = false })
	testutil.Until(t, waitTimeout, "the failover", r.noSwitch)
	checkShard(t, store.Map(), "r1", []string{"r2"}, []string{"p1"})
	if n := r.events.count(EventRepoint, true); n != 1 {
		t.Errorf("%d failed repoints; want 1 (r2): %q", n, r.events.steps())
	}
}

func TestFailoverFencesAReplicaThatDiesWhilePromoted(t *testing.T) {
	store := newFakeStore(withSwitch(t, shardmap.Switch{Kind: shardmap.Failover, From: ep("p1"), Step: StepFence}))
	admin := newFakeAdmin()
	admin.set("p1", func(s *fakeServer) { s.down = true })
	// r2 (the most advanced) goes down when it was chosen (the first
	// commit is step promote).
	store.beforeApply = func(n int) {
		if n == 1 {
			admin.set("r2", func(s *fakeServer) { s.down = true })
		}
	}
	r := newRig(t, store, admin, func(c *Config) { c.FailAfter = 20 * time.Millisecond })
	r.run()
	testutil.Until(t, waitTimeout, "the failover", r.noSwitchAfterCommits)
	checkShard(t, store.Map(), "r1", nil, []string{"r2", "p1"})
	want := []string{"failover: promote r2:5432", "failover: fence r2:5432, back to fence", "failover: promote r1:5432", "failover: r1:5432 is the primary"}
	if got := store.commits(); !slices.Equal(got, want) {
		t.Errorf("commits %q; want %q", got, want)
	}
}

func TestFailoverRetriesOnCASConflict(t *testing.T) {
	store := newFakeStore(withSwitch(t, shardmap.Switch{Kind: shardmap.Failover, From: ep("p1"), Step: StepFence}))
	admin := newFakeAdmin()
	admin.set("p1", func(s *fakeServer) { s.down = true })
	// Unrelated changes win the race for the promote commit (1st call)
	// and for the final one (3rd call, after the promote's retry).
	store.beforeApply = func(n int) {
		switch n {
		case 1:
			store.change(func(m *shardmap.Map) { m.Shard("s2").State = shardmap.StateReadOnly })
		case 3:
			store.change(func(m *shardmap.Map) { m.Shard("s2").Replicas = nil })
		}
	}
	r := newRig(t, store, admin)
	r.run()
	testutil.Until(t, waitTimeout, "the failover", r.noSwitchAfterCommits)
	m := store.Map()
	checkShard(t, m, "r2", []string{"r1"}, []string{"p1"})
	if s2 := m.Shard("s2"); s2.State != shardmap.StateReadOnly || len(s2.Replicas) != 0 {
		t.Errorf("the unrelated changes were lost: s2 %+v", s2)
	}
	want := []string{"test change", "failover: promote r2:5432", "test change", "failover: r2:5432 is the primary"}
	if got := store.commits(); !slices.Equal(got, want) {
		t.Errorf("commits %q; want %q", got, want)
	}
	if n := len(slices.DeleteFunc(admin.log(), func(c string) bool { return c != "promote r2:5432" })); n != 1 {
		t.Errorf("r2 promoted %d times; want 1", n)
	}
}

func TestFailoverResumesTheSwitchCommittedMeanwhile(t *testing.T) {
	clock := newFakeClock()
	store := newFakeStore(testMap(t))
	// Just before the leader commits its fence, a switch of s1 is
	// committed (by an earlier leader, say), to r1: it must be resumed,
	// not replaced by a new failover.
	store.beforeApply = func(n int) {
		if n == 1 {
			store.change(func(m *shardmap.Map) {
				m.Shard("s1").Switch = &shardmap.Switch{Kind: shardmap.Failover, From: ep("p1"), To: ep("r1"), Step: StepPromote}
			})
		}
	}
	r := newRig(t, store, newFakeAdmin(), fakeTime(clock))
	r.clock = clock
	failChecks(r)
	testutil.Until(t, waitTimeout, "the failover", r.noSwitchAfterCommits)
	checkShard(t, store.Map(), "r1", []string{"r2"}, []string{"p1"})
	want := []string{"test change", "failover: r1:5432 is the primary"}
	if got := store.commits(); !slices.Equal(got, want) {
		t.Errorf("commits %q; want %q", got, want)
	}
}

func TestRunTwice(t *testing.T) {
	r := newRig(t, newFakeStore(testMap(t)), newFakeAdmin())
	r.run()
	testutil.Until(t, waitTimeout, "Run to start", func() bool {
		r.c.mu.Lock()
		defer r.c.mu.Unlock()
		return r.c.runs
	})
	if err := r.c.Run(t.Context()); err == nil {
		t.Error("a second Run did not fail")
	}
}

// TestReplicaSupervision: the leader repoints a replica that streams from
// another server than its shard's primary (one that was down during a
// failover and came back following the old primary), leaves alone the
// ones that follow the primary or are not streaming, and checks no more
// often than ReplicaCheckInterval.
func TestReplicaSupervision(t *testing.T) {
	clock := newFakeClock()
	store := newFakeStore(testMap(t))
	admin := newFakeAdmin()
	admin.set("r1", func(s *fakeServer) { s.upstream = addr("old") })
	admin.set("q1", func(s *fakeServer) { s.upstream = "" }) // not streaming
	r := newRig(t, store, admin, fakeTime(clock), func(c *Config) { c.ReplicaCheckInterval = time.Second })
	start := clock.Now()
	r.tick()
	testutil.Until(t, waitTimeout, "the repoint of r1", func() bool { return admin.get("r1").upstream == addr("p1") })
	testutil.Until(t, waitTimeout, "the supervision to end", func() bool { return !r.c.isBusy("s1") && !r.c.isBusy("s2") })
	if calls := admin.log(); !slices.Equal(calls, []string{"repoint r1:5432 p1:5432"}) {
		t.Errorf("admin calls %q; want only the repoint of r1", calls)
	}
	if len(store.commits()) != 0 {
		t.Errorf("supervision changed the map: %q", store.commits())
	}
	// Within the interval nothing is checked again.
	admin.set("r2", func(s *fakeServer) { s.upstream = addr("old") })
	r.tick()
	testutil.Until(t, waitTimeout, "the tick's workers", func() bool { return !r.c.isBusy("s1") })
	if up := admin.get("r2").upstream; up != addr("old") {
		t.Errorf("r2 repointed before ReplicaCheckInterval passed")
	}
	clock.advance(time.Second)
	r.tick()
	testutil.Until(t, waitTimeout, "the repoint of r2", func() bool { return admin.get("r2").upstream == addr("p1") })

	// A replica that does not stream at all (q1, first seen at start) is
	// repointed only five intervals later.
	for clock.Now().Sub(start) < 5*time.Second {
		testutil.Until(t, waitTimeout, "the tick's workers", func() bool { return !r.c.isBusy("s2") })
		if up := admin.get("q1").upstream; up != "" {
			t.Fatalf("q1 repointed %s after it was first seen not streaming", clock.Now().Sub(start))
		}
		clock.advance(time.Second)
		r.tick()
	}
	testutil.Until(t, waitTimeout, "the repoint of q1", func() bool { return admin.get("q1").upstream == addr("p2") })
}

// TestReplicaThatCannotFollowIsFenced: a replica whose repoints keep
// failing (it replayed past the new primary's fork point) is moved to
// Fenced after maxRepointFails rounds, so no proxy reads from it.
func TestReplicaThatCannotFollowIsFenced(t *testing.T) {
	clock := newFakeClock()
	store := newFakeStore(testMap(t))
	admin := newFakeAdmin()
	admin.set("r1", func(s *fakeServer) {
		s.upstream = addr("old")
		s.fail = map[string]error{"repoint": errors.New("requested timeline 2 is not a child of this server's history")}
	})
	r := newRig(t, store, admin, fakeTime(clock), func(c *Config) { c.ReplicaCheckInterval = time.Second })
	for i := range maxRepointFails {
		if i > 0 {
			testutil.Until(t, waitTimeout, "the supervision round", func() bool { return !r.c.isBusy("s1") })
			if sh := store.Map().Shard("s1"); slices.Contains(sh.Fenced, ep("r1")) {
				t.Fatalf("r1 fenced after %d failed repoints", i)
			}
			clock.advance(time.Second)
		}
		r.tick()
	}
	testutil.Until(t, waitTimeout, "r1 fenced", func() bool { return slices.Contains(store.Map().Shard("s1").Fenced, ep("r1")) })
	sh := store.Map().Shard("s1")
	if slices.Contains(sh.Replicas, ep("r1")) || !slices.Contains(sh.Replicas, ep("r2")) || sh.Primary != ep("p1") {
		t.Errorf("after fencing r1: %+v", sh)
	}
	if got := r.events.steps(); !slices.Contains(got, EventFenceReplica) {
		t.Errorf("events %q lack %s", got, EventFenceReplica)
	}
}
