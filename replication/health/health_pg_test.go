package health

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/internal/testutil"
)

// waitTimeout bounds each wait for the monitor to see a change; they take
// a few probe intervals.
const waitTimeout = 20 * time.Second

// TestPrimaryAndReplica follows a shard with a primary and a streaming
// replica through catching up, paused replay, resumed replay and a
// stopped replica, as seen by the monitor, which connects as an ordinary
// (non-superuser) role.
func TestPrimaryAndReplica(t *testing.T) {
	user := pgcluster.User{Name: "prober", Password: "prober-secret"}
	p := integration.StartPostgres(t, integration.Replicas(1), integration.Users(user), integration.Name("health"))
	r := p.Replicas[0]
	ctx := t.Context()

	m, err := New(Config{
		Targets: StaticTargets(
			Target{Shard: "s0", Addr: p.Addr(), Role: RolePrimary},
			Target{Shard: "s0", Addr: r.Addr(), Role: RoleReplica},
		),
		User: user.Name, Password: user.Password, Database: "postgres", SSLMode: "disable",
		Interval: 50 * time.Millisecond,
		Timeout:  5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	stopMonitor := startMonitor(t, m)

	// write commits WAL on the primary, flushed so the replica can get it,
	// and returns the primary's WAL position after it.
	write := func(rows int) LSN {
		t.Helper()
		sql := fmt.Sprintf(`SET synchronous_commit = on;
			CREATE TABLE IF NOT EXISTS t (id bigint, pad text);
			INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, %d) g`, rows)
		if err := p.Exec(ctx, sql); err != nil {
			t.Fatalf("write on the primary: %v", err)
		}
		v, err := p.QueryValue(ctx, "SELECT pg_current_wal_lsn()")
		if err != nil {
			t.Fatalf("primary WAL position: %v", err)
		}
		lsn, err := ParseLSN(v)
		if err != nil {
			t.Fatal(err)
		}
		return lsn
	}
	statuses := func() (primary, replica Status, desc string) {
		primary, _ = statusOf(m, p.Addr())
		replica, _ = statusOf(m, r.Addr())
		return primary, replica, fmt.Sprintf("primary %+v, replica %+v", primary, replica)
	}

	// 1. Caught up.
	lsn1 := write(10)
	testutil.WaitFor(t, waitTimeout, "the replica to catch up", func() (bool, string) {
		pr, re, desc := statuses()
		return pr.Up && pr.Observed && !pr.InRecovery && pr.LSN >= lsn1 &&
			re.Up && re.InRecovery && re.LagKnown && re.LagBytes == 0 && re.LagSeconds == 0 &&
			m.ReplayedAtLeast(r.Addr(), lsn1), desc
	})
	if got := m.HealthyReplicas("s0", 0, 0); len(got) != 1 || got[0].Addr != r.Addr() {
		t.Errorf("HealthyReplicas(s0, 0, 0) = %+v, want the replica", got)
	}
	if pr, _, _ := statuses(); pr.LagKnown || pr.ConsecutiveFailures != 0 || pr.LastError != nil {
		t.Errorf("primary status: %+v", pr)
	}

	// 2. Replay paused: the replica falls behind.
	if err := r.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatalf("pause replay: %v", err)
	}
	lsn2 := write(20000)
	testutil.WaitFor(t, waitTimeout, "the monitor to see the primary's new position", func() (bool, string) {
		pr, _, desc := statuses()
		return pr.Up && pr.LSN >= lsn2, desc
	})
	_, re, desc := statuses()
	if !re.Up || !re.LagKnown || re.LagBytes == 0 || re.LagSeconds <= 0 || re.LSN >= lsn2 {
		t.Errorf("paused replica does not lag: %s", desc)
	}
	if m.ReplayedAtLeast(r.Addr(), lsn2) {
		t.Errorf("ReplayedAtLeast(replica, %v) true while replay is paused: %s", lsn2, desc)
	}
	if !m.ReplayedAtLeast(p.Addr(), lsn2) {
		t.Errorf("ReplayedAtLeast(primary, %v) false: %s", lsn2, desc)
	}
	if got := m.HealthyReplicas("s0", 0, 0); len(got) != 0 {
		t.Errorf("HealthyReplicas(s0, 0, 0) = %+v while the replica lags, want none", got)
	}
	if got := m.HealthyReplicas("s0", re.LagBytes, re.LagSeconds); len(got) != 1 {
		t.Errorf("HealthyReplicas within the replica's own lag = %+v, want it", got)
	}
	if got, want := fmt.Sprint(gather(t, NewCollector(m))),
		"map[pgshard_endpoint_in_recovery:2 pgshard_endpoint_probe_failures_total:2 pgshard_endpoint_up:2 pgshard_replica_lag_bytes:1 pgshard_replica_lag_seconds:1]"; got != want {
		t.Errorf("metric series = %s, want %s", got, want)
	}

	// 3. Replay resumed: the replica catches up again.
	if err := r.Exec(ctx, "SELECT pg_wal_replay_resume()"); err != nil {
		t.Fatalf("resume replay: %v", err)
	}
	testutil.WaitFor(t, waitTimeout, "the replica to catch up after resuming", func() (bool, string) {
		_, re, desc := statuses()
		return re.Up && re.LagKnown && re.LagBytes == 0 && re.LagSeconds == 0 &&
			m.ReplayedAtLeast(r.Addr(), lsn2), desc
	})

	// 4. The replica stops: it is down, its failures add up.
	stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := r.Stop(stopCtx); err != nil {
		t.Fatalf("stop the replica: %v", err)
	}
	testutil.WaitFor(t, waitTimeout, "the replica to be down", func() (bool, string) {
		_, re, desc := statuses()
		return !re.Up && re.LastError != nil && re.ConsecutiveFailures >= 3, desc
	})
	pr, re, desc := statuses()
	if !pr.Up || pr.ConsecutiveFailures != 0 {
		t.Errorf("primary affected by the replica stopping: %s", desc)
	}
	if !re.Observed || re.LSN < lsn2 || re.ProbeFailures < uint64(re.ConsecutiveFailures) {
		t.Errorf("stopped replica lost its last observation or failure count: %s", desc)
	}
	if m.ReplayedAtLeast(r.Addr(), 0) {
		t.Errorf("ReplayedAtLeast true for a stopped replica: %s", desc)
	}
	if got := m.HealthyReplicas("s0", 1<<40, 1e9); len(got) != 0 {
		t.Errorf("HealthyReplicas = %+v with the replica down, want none", got)
	}
	t.Logf("stopped replica: %v (%d consecutive failures)", re.LastError, re.ConsecutiveFailures)

	stopMonitor() // TestMain checks that no goroutine or connection is left
}
