package failover

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/shardmap"
)

func TestSwitchover(t *testing.T) {
	store := newFakeStore(testMap(t))
	store.block = true // the proxies apply the drain only when told
	admin := newFakeAdmin()
	r := newRig(t, store, admin)

	type result struct {
		epoch   uint64
		primary string
		err     error
	}
	done := make(chan result, 1)
	go func() {
		e, p, err := r.c.Switchover(t.Context(), "s1", "r1:5432") // r1 is behind r2
		done <- result{e, p, err}
	}()
	testutil.Until(t, waitTimeout, "the wait for the proxies", func() bool { return len(store.waited()) > 0 })
	if calls := admin.log(); len(calls) != 0 {
		t.Fatalf("admin calls %q before the proxies applied the drain", calls)
	}
	if sw := store.Map().Shard("s1").Switch; sw == nil || sw.Kind != shardmap.Switchover || sw.Step != StepDrain || sw.To != ep("r1") {
		t.Fatalf("switch %+v; want a switchover to r1 at drain", sw)
	}
	store.apply(2)
	res := <-done
	if res.err != nil {
		t.Fatalf("Switchover: %v", res.err)
	}
	m := store.Map()
	if res.epoch != m.Epoch || res.primary != addr("r1") {
		t.Errorf("Switchover = %d, %s; want %d, r1:5432", res.epoch, res.primary, m.Epoch)
	}
	checkShard(t, m, "r1", []string{"r2"}, []string{"p1"})
	want := []string{"quiesce p1:5432", "wait-replayed r1:5432 1000", "promote r1:5432", "repoint r2:5432 r1:5432"}
	if got := admin.log(); !slices.Equal(got, want) {
		t.Errorf("admin calls %q; want %q (in this order)", got, want)
	}
	if !admin.get("p1").quiesced || admin.get("r1").lsn != 1000 {
		t.Errorf("p1 %+v, r1 %+v; want p1 quiesced and r1 at 1000", admin.get("p1"), admin.get("r1"))
	}
	wantSteps := []string{StepDrain, EventApplied, EventQuiesce, EventReplayed, StepPromote, EventPromoted, EventRepoint, EventDone}
	if got := r.events.steps(); !slices.Equal(got, wantSteps) {
		t.Errorf("events %q; want %q", got, wantSteps)
	}
}

func TestSwitchoverToMostAdvanced(t *testing.T) {
	store := newFakeStore(testMap(t))
	r := newRig(t, store, newFakeAdmin())
	epoch, primary, err := r.c.Switchover(t.Context(), "s1", "")
	if err != nil || epoch != 4 || primary != addr("r2") {
		t.Fatalf("Switchover = %d, %s, %v; want 4, r2:5432, nil", epoch, primary, err)
	}
	checkShard(t, store.Map(), "r2", []string{"r1"}, []string{"p1"})
}

// TestSwitchoverWaitsForAReplicaCheck: a switchover requested while the
// controller checks the shard's replicas (superviseReplicas holds the
// shard for a few probes) waits for the check instead of being refused
// as if a failover were running, and gives up only with its context.
func TestSwitchoverWaitsForAReplicaCheck(t *testing.T) {
	store := newFakeStore(testMap(t))
	admin := newFakeAdmin()
	r := newRig(t, store, admin)
	if !r.c.claimAs("s1", claimSupervise) {
		t.Fatal("claim for the replica check")
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := r.c.Switchover(t.Context(), "s1", "r1:5432")
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Switchover returned while the replica check held the shard: %v", err)
	default:
	}
	if calls := admin.log(); len(calls) != 0 {
		t.Fatalf("admin calls %q during the replica check", calls)
	}
	r.c.release("s1")
	if err := <-done; err != nil {
		t.Fatalf("Switchover after the replica check: %v", err)
	}
	checkShard(t, store.Map(), "r1", []string{"r2"}, []string{"p1"})

	// Held by a check that does not end: the caller's context decides.
	if !r.c.claimAs("s2", claimSupervise) {
		t.Fatal("claim s2 for the replica check")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, err := r.c.Switchover(ctx, "s2", "")
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrSwitching) {
		t.Fatalf("Switchover with its context ended during a replica check: %v; want context.Canceled", err)
	}
	r.c.release("s2")
}

func TestSwitchoverRefusals(t *testing.T) {
	cases := []struct {
		name  string
		shard string
		to    string
		setup func(*testing.T, *rig)
		want  error
	}{
		{"not the leader", "s1", "", func(_ *testing.T, r *rig) { r.store.setLeader(false) }, ErrNotLeader},
		{"unknown shard", "s9", "", nil, ErrUnknownShard},
		{"switch in the map", "s1", "", func(t *testing.T, r *rig) {
			r.store.change(func(m *shardmap.Map) {
				m.Shard("s1").Switch = &shardmap.Switch{Kind: shardmap.Failover, From: ep("p1"), Step: StepFence}
			})
		}, ErrSwitching},
		{"switch running here", "s1", "", func(_ *testing.T, r *rig) { r.c.claim("s1") }, ErrSwitching},
		{"no replica", "s1", "", func(_ *testing.T, r *rig) {
			r.store.change(func(m *shardmap.Map) { m.Shard("s1").Replicas = nil })
		}, ErrNoReplica},
		{"to is another shard's replica", "s1", "q1:5432", nil, ErrNotReplica},
		{"to is the primary", "s1", "p1:5432", nil, ErrNotReplica},
		{"to is not an address", "s1", "r1", nil, ErrNotReplica},
		{"to is down", "s1", "r1:5432", func(_ *testing.T, r *rig) {
			r.admin.set("r1", func(s *fakeServer) { s.down = true })
		}, ErrUnreachable},
		{"no replica is healthy", "s1", "", func(_ *testing.T, r *rig) {
			r.admin.set("r1", func(s *fakeServer) { s.down = true })
			r.admin.set("r2", func(s *fakeServer) { s.inRecovery = false })
		}, ErrNoReplica},
		{"the primary is down", "s1", "", func(_ *testing.T, r *rig) {
			r.admin.set("p1", func(s *fakeServer) { s.down = true })
		}, ErrUnreachable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, newFakeStore(testMap(t)), newFakeAdmin())
			if tc.setup != nil {
				tc.setup(t, r)
			}
			before := len(r.store.commits())
			_, _, err := r.c.Switchover(t.Context(), tc.shard, tc.to)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Switchover: %v; want %v", err, tc.want)
			}
			if c := r.store.commits(); len(c) != before {
				t.Errorf("a refused switchover committed %q", c[before:])
			}
			if calls := r.admin.log(); len(calls) != 0 {
				t.Errorf("a refused switchover acted: %q", calls)
			}
		})
	}
}

func TestSwitchoverBecomesFailoverWhenThePrimaryDies(t *testing.T) {
	store := newFakeStore(testMap(t))
	admin := newFakeAdmin()
	// p1 dies right after the drain is committed.
	store.beforeApply = func(n int) {
		if n == 1 {
			admin.set("p1", func(s *fakeServer) { s.down = true })
		}
	}
	r := newRig(t, store, admin, func(c *Config) { c.FailAfter = 20 * time.Millisecond })
	epoch, primary, err := r.c.Switchover(t.Context(), "s1", "r1:5432")
	if !errors.Is(err, ErrBecameFailover) || primary != addr("r2") || epoch != store.Map().Epoch {
		t.Fatalf("Switchover = %d, %s, %v; want the final epoch, r2:5432 (the most advanced), ErrBecameFailover", epoch, primary, err)
	}
	checkShard(t, store.Map(), "r2", []string{"r1"}, []string{"p1"})
	want := []string{"switchover: drain to r1:5432", "switchover: back to fence", "failover: promote r2:5432", "failover: r2:5432 is the primary"}
	if got := store.commits(); !slices.Equal(got, want) {
		t.Errorf("commits %q; want %q", got, want)
	}
}

func TestSwitchoverReplacesAToThatDies(t *testing.T) {
	store := newFakeStore(testMap(t))
	admin := newFakeAdmin()
	// r1 dies right after the drain is committed: r2 takes its place,
	// and still replays everything before it is promoted.
	store.beforeApply = func(n int) {
		if n == 1 {
			admin.set("r1", func(s *fakeServer) { s.down = true })
		}
	}
	r := newRig(t, store, admin, func(c *Config) { c.FailAfter = 20 * time.Millisecond })
	_, primary, err := r.c.Switchover(t.Context(), "s1", "r1:5432")
	if err != nil || primary != addr("r2") {
		t.Fatalf("Switchover = %s, %v; want r2:5432, nil", primary, err)
	}
	checkShard(t, store.Map(), "r2", []string{"r1"}, []string{"p1"})
	calls := admin.log()
	if i, j := index(calls, "wait-replayed r2:5432 1000"), index(calls, "promote r2:5432"); i < 0 || j < i {
		t.Errorf("admin calls %q; want r2 to replay 1000 before it is promoted", calls)
	}
}
