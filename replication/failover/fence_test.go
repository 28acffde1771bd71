package failover

import (
	"slices"
	"testing"
	"time"

	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/shardmap"
)

// fencingDone reports whether no fence check runs.
func (c *Controller) fencingDone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.fencing
}

// withFenced returns testMap with f1 fenced in shard s1.
func withFenced(t *testing.T) *shardmap.Map {
	m := testMap(t)
	m.Shard("s1").Fenced = []shardmap.Endpoint{ep("f1")}
	if err := m.Validate(); err != nil {
		t.Fatalf("test map: %v", err)
	}
	return m
}

// fenceCalls lists the admin's calls of Fence.
func fenceCalls(a *fakeAdmin) []string {
	var out []string
	for _, c := range a.log() {
		if len(c) > 6 && c[:6] == "fence " {
			out = append(out, c)
		}
	}
	return out
}

// TestFencedServerIsFencedAgain: a server the map fences that is found up
// and writable (a former primary that was down when it was fenced, and
// came back) is fenced again, with a refence event; once read-only it
// costs a probe and nothing more. One that is down or in recovery is left
// alone. The map does not change.
func TestFencedServerIsFencedAgain(t *testing.T) {
	clock := newFakeClock()
	store := newFakeStore(withFenced(t))
	admin := newFakeAdmin()
	admin.servers[addr("f1")] = &fakeServer{down: true, lsn: 700}
	r := newRig(t, store, admin, fakeTime(clock), func(c *Config) { c.FenceCheckInterval = time.Second })
	check := func() {
		t.Helper()
		clock.advance(time.Second)
		r.tick()
		testutil.Until(t, waitTimeout, "the fence check", r.c.fencingDone)
	}

	r.tick() // f1 is down
	testutil.Until(t, waitTimeout, "the fence check", r.c.fencingDone)
	if calls := fenceCalls(admin); len(calls) != 0 {
		t.Fatalf("fence calls %q while f1 is down", calls)
	}

	admin.set("f1", func(s *fakeServer) { s.down = false }) // back, writable
	check()
	if calls := fenceCalls(admin); !slices.Equal(calls, []string{"fence f1:5432"}) {
		t.Fatalf("fence calls %q; want f1 fenced once", calls)
	}
	if !admin.get("f1").fenced {
		t.Fatal("f1 is not fenced")
	}
	evs := r.events.list()
	if i := slices.IndexFunc(evs, func(e Event) bool { return e.Step == EventRefence }); i < 0 ||
		evs[i].Addr != addr("f1") || evs[i].Shard != "s1" || evs[i].Err != nil {
		t.Fatalf("events %+v; want a refence of f1 in s1", evs)
	}

	// Already read-only: probed, not fenced again.
	for range 3 {
		check()
	}
	if calls := fenceCalls(admin); len(calls) != 1 {
		t.Fatalf("fence calls %q; want no more once f1 is read-only", calls)
	}
	// It lost its fence (a DBA reset it): fenced again.
	admin.set("f1", func(s *fakeServer) { s.fenced = false })
	check()
	if calls := fenceCalls(admin); len(calls) != 2 {
		t.Fatalf("fence calls %q; want f1 fenced again", calls)
	}
	// In recovery (being rebuilt by a rejoin): left alone.
	admin.set("f1", func(s *fakeServer) { s.fenced, s.inRecovery = false, true })
	check()
	if calls := fenceCalls(admin); len(calls) != 2 {
		t.Fatalf("fence calls %q; a replica was fenced", calls)
	}
	if n := r.events.count(EventRefence, false); n != 2 {
		t.Errorf("%d refence events, want 2", n)
	}
	if len(store.commits()) != 0 {
		t.Errorf("fence supervision changed the map: %q", store.commits())
	}
}

// TestFenceCheckInterval: the fenced servers are not checked more often
// than FenceCheckInterval, and not at all off the leader or when it is
// negative.
func TestFenceCheckInterval(t *testing.T) {
	clock := newFakeClock()
	store := newFakeStore(withFenced(t))
	admin := newFakeAdmin()
	admin.servers[addr("f1")] = &fakeServer{lsn: 700}
	r := newRig(t, store, admin, fakeTime(clock), func(c *Config) { c.FenceCheckInterval = time.Second })
	r.tick()
	testutil.Until(t, waitTimeout, "the fence of f1", func() bool { return admin.get("f1").fenced })
	testutil.Until(t, waitTimeout, "the fence check", r.c.fencingDone)
	admin.set("f1", func(s *fakeServer) { s.fenced = false })
	r.tick()
	testutil.Until(t, waitTimeout, "the fence check", r.c.fencingDone)
	if admin.get("f1").fenced {
		t.Fatal("f1 checked again within FenceCheckInterval")
	}
	store.setLeader(false)
	clock.advance(time.Second)
	r.tick()
	testutil.Until(t, waitTimeout, "the fence check", r.c.fencingDone)
	if admin.get("f1").fenced {
		t.Fatal("a follower fenced f1")
	}

	never := newRig(t, newFakeStore(withFenced(t)), admin, fakeTime(clock), func(c *Config) { c.FenceCheckInterval = -1 })
	never.tick()
	testutil.Until(t, waitTimeout, "the fence check", never.c.fencingDone)
	if admin.get("f1").fenced {
		t.Fatal("FenceCheckInterval < 0 fenced f1")
	}
}

// TestFailoverOldPrimaryIsFencedAgain: the old primary of a failover that
// got past its fence step (it was down then) is among the servers fenced
// again as soon as they answer, before the failover commits it to Fenced
// — unless the workflow gave up on the switch.
func TestFailoverOldPrimaryIsFencedAgain(t *testing.T) {
	sw := shardmap.Switch{Kind: shardmap.Failover, From: ep("p1"), To: ep("r2"), Step: StepPromote}
	never := func(string) bool { return false }
	if got := fencedServers(withSwitch(t, sw), never); !slices.Equal(got, []fencedTarget{{"s1", addr("p1")}}) {
		t.Errorf("fenced servers of a failover at promote: %v", got)
	}
	if got := fencedServers(withSwitch(t, sw), func(string) bool { return true }); len(got) != 0 {
		t.Errorf("fenced servers of a failover the workflow gave up on: %v (left to a DBA)", got)
	}
	sw.Step = StepFence
	if got := fencedServers(withSwitch(t, sw), never); len(got) != 0 {
		t.Errorf("fenced servers of a failover at its fence step: %v (the workflow fences it)", got)
	}
	sw.Kind, sw.Step = shardmap.Switchover, StepPromote
	if got := fencedServers(withSwitch(t, sw), never); len(got) != 0 {
		t.Errorf("fenced servers of a switchover: %v (its old primary is quiesced)", got)
	}
}
