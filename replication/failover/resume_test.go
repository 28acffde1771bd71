package failover

import (
	"slices"
	"testing"

	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/shardmap"
)

// TestResumeFromEachStep gives a fresh controller (a new meta leader) a
// map with a switch left at each step, and checks that it finishes the
// switch from there: the steps already committed are not done again, and
// a committed choice of the new primary is kept.
func TestResumeFromEachStep(t *testing.T) {
	cases := []struct {
		name     string
		sw       shardmap.Switch
		p1Down   bool
		primary  string
		replicas []string
		calls    []string
		commits  []string
	}{
		{
			name:    "failover at fence",
			sw:      shardmap.Switch{Kind: shardmap.Failover, From: ep("p1"), Step: StepFence},
			p1Down:  true,
			primary: "r2", replicas: []string{"r1"},
			calls:   []string{"fence p1:5432", "promote r2:5432", "repoint r1:5432 r2:5432"},
			commits: []string{"failover: promote r2:5432", "failover: r2:5432 is the primary"},
		},
		{
			name:    "failover at promote",
			sw:      shardmap.Switch{Kind: shardmap.Failover, From: ep("p1"), To: ep("r1"), Step: StepPromote},
			p1Down:  true,
			primary: "r1", replicas: []string{"r2"},
			calls:   []string{"promote r1:5432", "repoint r2:5432 r1:5432"},
			commits: []string{"failover: r1:5432 is the primary"},
		},
		{
			name:    "switchover at drain",
			sw:      shardmap.Switch{Kind: shardmap.Switchover, From: ep("p1"), To: ep("r1"), Step: StepDrain},
			primary: "r1", replicas: []string{"r2"},
			calls:   []string{"quiesce p1:5432", "wait-replayed r1:5432 1000", "promote r1:5432", "repoint r2:5432 r1:5432"},
			commits: []string{"switchover: promote r1:5432", "switchover: r1:5432 is the primary"},
		},
		{
			name:    "switchover at drain without To",
			sw:      shardmap.Switch{Kind: shardmap.Switchover, From: ep("p1"), Step: StepDrain},
			primary: "r2", replicas: []string{"r1"},
			calls:   []string{"quiesce p1:5432", "wait-replayed r2:5432 1000", "promote r2:5432", "repoint r1:5432 r2:5432"},
			commits: []string{"switchover: drain to r2:5432", "switchover: promote r2:5432", "switchover: r2:5432 is the primary"},
		},
		{
			name:    "switchover at promote",
			sw:      shardmap.Switch{Kind: shardmap.Switchover, From: ep("p1"), To: ep("r1"), Step: StepPromote},
			primary: "r1", replicas: []string{"r2"},
			calls:   []string{"promote r1:5432", "repoint r2:5432 r1:5432"},
			commits: []string{"switchover: r1:5432 is the primary"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store := newFakeStore(withSwitch(t, tc.sw))
			admin := newFakeAdmin()
			admin.set("p1", func(s *fakeServer) { s.down = tc.p1Down })
			r := newRig(t, store, admin)
			r.run()
			testutil.Until(t, waitTimeout, "the switch to end", r.noSwitch)
			checkShard(t, store.Map(), tc.primary, tc.replicas, []string{"p1"})
			if got := admin.log(); !slices.Equal(got, tc.calls) {
				t.Errorf("admin calls %q; want %q", got, tc.calls)
			}
			if got := store.commits(); !slices.Equal(got, tc.commits) {
				t.Errorf("commits %q; want %q", got, tc.commits)
			}
		})
	}
}

// TestResumeAfterLeaderChange stops a leader in the middle of a failover
// (waiting for a proxy) and lets another controller, leader next, finish
// it.
func TestResumeAfterLeaderChange(t *testing.T) {
	store := newFakeStore(withSwitch(t, shardmap.Switch{Kind: shardmap.Failover, From: ep("p1"), Step: StepFence}))
	store.block = true
	admin := newFakeAdmin()
	admin.set("p1", func(s *fakeServer) { s.down = true })

	first := newRig(t, store, admin)
	stopFirst := first.run()
	testutil.Until(t, waitTimeout, "the first leader to wait for the proxies", func() bool { return first.c.isBusy("s1") && len(store.waited()) > 0 })
	store.setLeader(false)
	testutil.Until(t, waitTimeout, "the first leader to stop", func() bool { return !first.c.isBusy("s1") })
	stopFirst()
	if calls := admin.log(); len(calls) != 0 {
		t.Fatalf("the first leader acted: %q", calls)
	}

	store.setLeader(true)
	store.apply(1)
	second := newRig(t, store, admin)
	second.run()
	testutil.Until(t, waitTimeout, "the second leader to finish", second.noSwitch)
	checkShard(t, store.Map(), "r2", []string{"r1"}, []string{"p1"})
	want := []string{"fence p1:5432", "promote r2:5432", "repoint r1:5432 r2:5432"}
	if got := admin.log(); !slices.Equal(got, want) {
		t.Errorf("admin calls %q; want %q", got, want)
	}
}

// TestResumeRefusesWhatItCannotDo gives the controller maps it must not
// act on: a step it does not know, and (in a map that bypassed
// validation) a new primary that is not a replica. It must leave them to
// a DBA without touching a server, and not retry every tick.
func TestResumeRefusesWhatItCannotDo(t *testing.T) {
	cases := map[string]shardmap.Switch{
		"unknown step":       {Kind: shardmap.Failover, From: ep("p1"), Step: "rewind"},
		"to is not replica":  {Kind: shardmap.Failover, From: ep("p1"), To: ep("q1"), Step: StepPromote},
		"kind without steps": {Kind: "rollback", From: ep("p1"), Step: StepFence},
	}
	for name, sw := range cases {
		t.Run(name, func(t *testing.T) {
			m := testMap(t)
			m.Shard("s1").Switch = &sw
			store := newFakeStore(m)
			r := newRig(t, store, newFakeAdmin())
			r.tick()
			testutil.Until(t, waitTimeout, "the workflow to give up", func() bool {
				r.c.mu.Lock()
				defer r.c.mu.Unlock()
				_, stuck := r.c.stuck["s1"]
				return stuck && r.c.busy["s1"] == 0
			})
			r.tick()
			if r.c.isBusy("s1") {
				t.Error("the workflow was started again on an unchanged map")
			}
			if calls := r.admin.log(); len(calls) != 0 {
				t.Errorf("admin calls %q; want none", calls)
			}
			if c := store.commits(); len(c) != 0 {
				t.Errorf("commits %q; want none", c)
			}
		})
	}
}
