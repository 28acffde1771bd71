package controlplane

import (
	"context"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgshard/pgshard/integration"
)

func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaksOrGoroutines(m)) }

// probeController counts its runs and says whether one runs now; its
// Run starts a goroutine of its own, as a real controller's workers.
type probeController struct {
	starts, stops atomic.Int32
	running       atomic.Bool
}

func (p *probeController) Run(ctx context.Context) {
	p.starts.Add(1)
	p.running.Store(true)
	worker := make(chan struct{})
	go func() { // a worker that stops with the term
		defer close(worker)
		<-ctx.Done()
	}()
	<-ctx.Done()
	<-worker
	p.running.Store(false)
	p.stops.Add(1)
}

// waitFor polls cond every 5 ms until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLeaderSideControllers: every registered controller starts when the
// member becomes the leader, is stopped (its context cancelled, its
// goroutines ended) when it stops leading, starts again when it leads
// again, and is stopped when the member closes; none runs on a follower.
func TestLeaderSideControllers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var leader atomic.Bool
	var polls atomic.Int32
	a, b := &probeController{}, &probeController{}
	isLeader := func() bool { polls.Add(1); return leader.Load() }
	l := leaderSide{isLeader: isLeader, poll: time.Millisecond, log: slog.New(slog.DiscardHandler)}
	l.register("a", a)
	l.register("b", b)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx)
	}()

	// A follower runs none, however often it checks.
	waitFor(t, "ten leadership checks", func() bool { return polls.Load() >= 10 })
	if n := a.starts.Load() + b.starts.Load(); n != 0 {
		t.Fatalf("%d controllers started on a follower", n)
	}

	leader.Store(true)
	waitFor(t, "both controllers to run on the leader", func() bool { return a.running.Load() && b.running.Load() })

	leader.Store(false)
	waitFor(t, "both controllers to stop after the leadership was lost", func() bool { return a.stops.Load() == 1 && b.stops.Load() == 1 })
	if a.running.Load() || b.running.Load() {
		t.Fatal("a controller runs after the leadership was lost")
	}

	leader.Store(true)
	waitFor(t, "both controllers to run again on the leader", func() bool { return a.starts.Load() == 2 && b.starts.Load() == 2 })
	if a.stops.Load() != 1 || b.stops.Load() != 1 {
		t.Fatalf("stops = %d, %d while leading again; want 1, 1", a.stops.Load(), b.stops.Load())
	}

	// Close (the member's context ends) while leading: run returns only
	// after the controllers have.
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	if a.running.Load() || b.running.Load() || a.stops.Load() != 2 || b.stops.Load() != 2 {
		t.Fatalf("after run returned: running %v %v, stops %d %d; want stopped twice each",
			a.running.Load(), b.running.Load(), a.stops.Load(), b.stops.Load())
	}
}

// TestLeaderSideNothingRegistered: with no controller, run returns at once
// and starts nothing.
func TestLeaderSideNothingRegistered(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := leaderSide{isLeader: func() bool { return true }, poll: time.Millisecond, log: slog.New(slog.DiscardHandler)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(t.Context())
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run with no controller did not return")
	}
}
