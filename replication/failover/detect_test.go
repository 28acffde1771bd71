package failover

import (
	"errors"
	"testing"
	"time"

	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/shardmap"
)

// failChecks makes p1 fail checks at 0s, 1s and 2s of the fake clock
// (FailAfter is 2s): the third tick confirms it down, if the observers
// agree.
func failChecks(r *rig) {
	r.admin.set("p1", func(s *fakeServer) { s.down = true })
	for i := range 3 {
		if i > 0 {
			r.clock.advance(time.Second)
		}
		r.tick()
	}
}

func TestOneMissedProbeDoesNotFailOver(t *testing.T) {
	clock := newFakeClock()
	r := newRig(t, newFakeStore(testMap(t)), newFakeAdmin(), fakeTime(clock))
	r.clock = clock

	// One failed check, then the primary answers again: the failures
	// start over, and the next run must last FailAfter of its own.
	r.admin.set("p1", func(s *fakeServer) { s.down = true })
	r.tick()
	clock.advance(5 * time.Second)
	r.admin.set("p1", func(s *fakeServer) { s.down = false })
	r.tick()
	clock.advance(5 * time.Second)
	r.admin.set("p1", func(s *fakeServer) { s.down = true })
	r.tick()
	clock.advance(time.Second)
	r.tick() // two failed checks, but for 1s only

	if c := r.store.commits(); len(c) != 0 {
		t.Errorf("commits %q; want none", c)
	}
	if ev := r.events.list(); len(ev) != 0 {
		t.Errorf("events %v; want none", r.events.steps())
	}
	if calls := r.admin.log(); len(calls) != 0 {
		t.Errorf("admin calls %q; want none", calls)
	}
}

func TestOneFailedCheckIsNeverEnough(t *testing.T) {
	clock := newFakeClock()
	r := newRig(t, newFakeStore(testMap(t)), newFakeAdmin(), fakeTime(clock), func(c *Config) { c.FailAfter = time.Nanosecond })
	r.admin.set("p1", func(s *fakeServer) { s.down = true })
	clock.advance(time.Hour)
	r.tick()
	if c := r.store.commits(); len(c) != 0 {
		t.Fatalf("one failed check started a failover: commits %q", c)
	}
	clock.advance(time.Millisecond)
	r.tick()
	testutil.Until(t, waitTimeout, "the failover after the second failed check", r.noSwitchAfterCommits)
}

// noSwitchAfterCommits reports whether a switch of s1 was committed and
// is over.
func (r *rig) noSwitchAfterCommits() bool { return len(r.store.commits()) > 0 && r.noSwitch() }

func TestObserverRule(t *testing.T) {
	cases := []struct {
		name                   string
		observers              int
		unreachable, reporting int
		failover               bool
	}{
		{"proxies reach the primary", 1, 0, 2, false},
		{"one proxy confirms", 1, 1, 2, true},
		{"no proxy reports: the leader decides", 1, 0, 0, true},
		{"two observers, one confirms", 2, 1, 3, false},
		{"two observers, two confirm", 2, 2, 3, true},
		{"two observers, the only reporting proxy confirms", 2, 1, 1, true},
		{"no observers asked for", -1, 0, 2, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			store := newFakeStore(testMap(t))
			store.setReports(addr("p1"), tc.unreachable, tc.reporting)
			r := newRig(t, store, newFakeAdmin(), fakeTime(clock), func(c *Config) { c.Observers = tc.observers })
			r.clock = clock
			failChecks(r)
			if !tc.failover {
				clock.advance(time.Minute)
				r.tick()
				if c := store.commits(); len(c) != 0 {
					t.Fatalf("commits %q; want no failover", c)
				}
				return
			}
			testutil.Until(t, waitTimeout, "the failover", r.noSwitchAfterCommits)
			checkShard(t, store.Map(), "r2", []string{"r1"}, []string{"p1"})
		})
	}
}

func TestDetectionSkipsOfflineAndMisroledPrimaries(t *testing.T) {
	clock := newFakeClock()
	m := testMap(t)
	m.Shard("s1").State = shardmap.StateOffline
	store := newFakeStore(m)
	r := newRig(t, store, newFakeAdmin(), fakeTime(clock))
	r.clock = clock
	failChecks(r) // p1 is down, but s1 is offline
	// p2 says it is in recovery: the map may be out of date; pgshard
	// does not promote anything then.
	r.admin.set("p2", func(s *fakeServer) { s.inRecovery = true })
	for range 3 {
		clock.advance(time.Second)
		r.tick()
	}
	if c := store.commits(); len(c) != 0 {
		t.Errorf("commits %q; want none", c)
	}
}

func TestNotLeaderDoesNothing(t *testing.T) {
	clock := newFakeClock()
	// s1 has a switch to resume, and s2's primary is down.
	store := newFakeStore(withSwitch(t, shardmap.Switch{Kind: shardmap.Failover, From: ep("p1"), Step: StepFence}))
	store.setLeader(false)
	admin := newFakeAdmin()
	admin.set("p2", func(s *fakeServer) { s.down = true })
	r := newRig(t, store, admin, fakeTime(clock))
	for range 5 {
		r.tick()
		clock.advance(time.Second)
	}
	if c := store.commits(); len(c) != 0 {
		t.Errorf("commits %q; want none", c)
	}
	admin.mu.Lock()
	calls, states := admin.calls, admin.states
	admin.mu.Unlock()
	if len(calls) != 0 || states != 0 {
		t.Errorf("admin calls %q and %d State calls; want none", calls, states)
	}
	if ev := r.events.list(); len(ev) != 0 {
		t.Errorf("events %v; want none", r.events.steps())
	}
	if _, _, err := r.c.Switchover(t.Context(), "s2", ""); !errors.Is(err, ErrNotLeader) {
		t.Errorf("Switchover on a follower: %v; want ErrNotLeader", err)
	}
}
