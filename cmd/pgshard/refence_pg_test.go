package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/controlplane"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/replication/failover"
	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// TestFencedServerComesBackFenced: with real PostgreSQL servers and a real
// meta member (Raft node, failover controller, health monitor, API, as
// internal/controlplane assembles it), a
// server that the map fences and that was down — so never fenced on the
// server side, as after a failover of a dead primary — starts again as a
// writable primary. The meta leader fences it by itself: a direct INSERT
// on it fails with 25006 (read_only_sql_transaction), the refence step is
// counted, and pgshard shards list shows it fenced and up, not "unknown".
func TestFencedServerComesBackFenced(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	primary := integration.StartPostgres(t, integration.Name("s1-primary"))
	old := integration.StartPostgres(t, integration.Name("s1-old"))
	if err := old.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	if err := old.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	m := shardmaptest.New().Shard("s1", primary.Addr()).Fenced(old.Addr()).
		Hash("d").Default("").Table("public.t", "id").Map(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	member, err := controlplane.New(ctx, controlplane.Config{
		Node:        meta.Config{ID: "m1", RaftAddr: "127.0.0.1:0", DataDir: t.TempDir(), Bootstrap: true},
		API:         lis,
		Server:      metarpc.ServerOptions{AllowUnauthenticated: true},
		WaitLeader:  time.Minute,
		Seed:        m,
		SeedComment: "s1 failed over; its old primary is fenced",
		Failover: &controlplane.FailoverConfig{
			PGUser: pgcluster.SuperuserName, PGPassword: pgcluster.SuperuserPassword, PGSSLMode: "disable",
			CheckInterval: 200 * time.Millisecond, FailAfter: 10 * time.Second, Observers: -1, DrainGrace: time.Second,
		},
		Metrics: &controlplane.MetricsConfig{Listener: mln},
	}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()

	// Down: shards list says so.
	shardsList := func() string {
		r := runCtl(t, nil, "shards", "list", "--meta", member.Addr(), "--timeout", "5s")
		if r.code != exitOK {
			t.Fatalf("shards list: exit %d\n%s", r.code, r.stderr)
		}
		return r.stdout
	}
	fencedLine := func(out string) string {
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 2 && f[1] == old.Addr() && f[2] == "fenced" {
				return strings.Join(f, " ")
			}
		}
		return ""
	}
	waitUntil(t, ctx, "shards list to show the fenced server down", func() (bool, string) {
		l := fencedLine(shardsList())
		return strings.HasPrefix(l, "s1 "+old.Addr()+" fenced down"), l
	})

	// It comes back, writable: the leader fences it again.
	if err := old.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var insertErr error
	waitUntil(t, ctx, "a direct INSERT on the fenced server to fail with 25006", func() (bool, string) {
		insertErr = old.Exec(ctx, "INSERT INTO t VALUES (1)")
		var pe *pgconn.PgError
		return errors.As(insertErr, &pe) && pe.Code == "25006", fmt.Sprint(insertErr)
	})
	t.Logf("fenced again %v after it came back", time.Since(start).Round(100*time.Millisecond))
	// The setting applies before Fence has terminated the sessions and
	// returned: the step is counted a moment later.
	waitUntil(t, ctx, "the refence step in the metrics", func() (bool, string) {
		n := gatheredValue(t, member.Gatherer(), "pgshard_failover_steps_total", map[string]string{"kind": "", "step": failover.EventRefence, "result": "ok"})
		return n >= 1, fmt.Sprintf("pgshard_failover_steps_total{step=refence,result=ok} = %v", n)
	})
	// The fence is the server's own setting: it survives a restart.
	if err := old.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	err = old.Exec(ctx, "INSERT INTO t VALUES (2)")
	if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || pe.Code != "25006" {
		t.Errorf("INSERT after a restart: %v, want 25006", err)
	}
	waitUntil(t, ctx, "shards list to show the fenced server up", func() (bool, string) {
		l := fencedLine(shardsList())
		return strings.HasPrefix(l, "s1 "+old.Addr()+" fenced up (not in recovery)"), l
	})
	if v, err := primary.QueryValue(ctx, "SELECT current_setting('default_transaction_read_only')"); err != nil || v != "off" {
		t.Errorf("the primary's default_transaction_read_only = %q, %v; want off", v, err)
	}
}

// gatheredValue returns the value of the counter or gauge name with
// exactly the given labels (a label absent counts as ""), 0 when there is
// none.
func gatheredValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			got := make(map[string]string)
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// waitUntil polls cond every 100 ms until it holds, failing the test with
// its last description when ctx ends.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() (bool, string)) {
	t.Helper()
	for {
		ok, desc := cond()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s; last: %s", what, desc)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
