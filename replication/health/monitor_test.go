package health

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/shardmap"
)

var errRefused = errors.New("connection refused (test dialer)")

// refusingDial fails every connection attempt.
func refusingDial(context.Context, string) (*pgconn.PgConn, error) { return nil, errRefused }

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without Targets: no error")
	}
	if _, err := New(Config{Targets: StaticTargets(), Interval: -time.Second}); err == nil {
		t.Error("New with a negative interval: no error")
	}
}

func TestTargetsFromMap(t *testing.T) {
	m := &shardmap.Map{Shards: []shardmap.Shard{
		{Name: "s0", Primary: shardmap.Endpoint{Host: "10.0.0.1", Port: 5432},
			Replicas: []shardmap.Endpoint{{Host: "10.0.0.2", Port: 5432}, {Host: "::1", Port: 5433}}},
		{Name: "s1", Primary: shardmap.Endpoint{Host: "10.0.1.1", Port: 5432}},
	}}
	got := fmt.Sprint(TargetsFromMap(m))
	want := "[{s0 10.0.0.1:5432 primary} {s0 10.0.0.2:5432 replica} {s0 [::1]:5433 replica} {s1 10.0.1.1:5432 primary}]"
	if got != want {
		t.Errorf("TargetsFromMap = %s, want %s", got, want)
	}
	// The proxies' monitor does not probe fenced servers; the meta
	// members' does (TargetsWithFenced), after the others.
	m.Shards[1].Fenced = []shardmap.Endpoint{{Host: "10.0.1.9", Port: 5432}}
	if got := fmt.Sprint(TargetsFromMap(m)); got != want {
		t.Errorf("TargetsFromMap with a fenced server = %s, want %s", got, want)
	}
	got = fmt.Sprint(TargetsWithFenced(m))
	want = want[:len(want)-1] + " {s1 10.0.1.9:5432 fenced}]"
	if got != want {
		t.Errorf("TargetsWithFenced = %s, want %s", got, want)
	}
}

// TestUnreachableTargetsFollowTheMap checks failure counting, following a
// changing target list, the metrics, and that Run stops its probers.
func TestUnreachableTargetsFollowTheMap(t *testing.T) {
	a := Target{Shard: "s0", Addr: "a:1", Role: RolePrimary}
	b := Target{Shard: "s0", Addr: "b:1", Role: RoleReplica}
	c := Target{Shard: "s1", Addr: "c:1", Role: RolePrimary}
	var targets atomic.Pointer[[]Target]
	targets.Store(&[]Target{a, b})
	m, err := New(Config{
		Targets:  func() []Target { return *targets.Load() },
		Dial:     refusingDial,
		Interval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := startMonitor(t, m)

	testutil.WaitFor(t, 5*time.Second, "3 failures of each target", func() (bool, string) {
		snap := m.Snapshot()
		ok := len(snap) == 2
		for _, s := range snap {
			ok = ok && s.ConsecutiveFailures >= 3
		}
		return ok, fmt.Sprintf("%+v", snap)
	})
	for _, s := range m.Snapshot() {
		if s.Up || !errors.Is(s.LastError, errRefused) || s.Observed || s.LagKnown || s.ProbeFailures < 3 {
			t.Errorf("status of unreachable %s: %+v", s.Addr, s)
		}
		if !strings.Contains(s.LastError.Error(), s.Addr) {
			t.Errorf("error %q does not name %s", s.LastError, s.Addr)
		}
	}
	if m.ReplayedAtLeast(b.Addr, 0) {
		t.Error("ReplayedAtLeast true for a target that is down")
	}
	if got := m.HealthyReplicas("s0", 1<<30, 3600); len(got) != 0 {
		t.Errorf("HealthyReplicas = %+v, want none", got)
	}

	series := gather(t, NewCollector(m))
	if got, want := fmt.Sprint(series), "map[pgshard_endpoint_probe_failures_total:2 pgshard_endpoint_up:2]"; got != want {
		t.Errorf("metric series = %s, want %s (no lag while unknown)", got, want)
	}

	// The map changes: b leaves, c arrives, a's role changes.
	a.Role = RoleReplica
	targets.Store(&[]Target{a, c})
	testutil.WaitFor(t, 5*time.Second, "the new targets", func() (bool, string) {
		snap := m.Snapshot()
		return len(snap) == 2 && snap[0].Target == a && snap[1].Target == c && snap[1].ProbeFailures > 0,
			fmt.Sprintf("%+v", snap)
	})

	stop()
	before := m.Snapshot()
	time.Sleep(50 * time.Millisecond) // five intervals: nothing may probe any more
	if after := m.Snapshot(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("statuses changed after Run returned:\n%+v\n%+v", before, after)
	}
}

// gather registers c with a pedantic registry (which checks the metrics
// against Describe) and counts the series of each metric family.
func gather(t *testing.T, c prometheus.Collector) map[string]int {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatalf("register collector: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	series := make(map[string]int)
	for _, mf := range mfs {
		series[mf.GetName()] = len(mf.GetMetric())
	}
	return series
}
