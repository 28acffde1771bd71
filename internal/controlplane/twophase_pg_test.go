package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	itestutil "github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/replication/twophase"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// abandoned is a decision store of a proxy killed after PREPARE, before
// the decision.
// (It writes no let-go record: a killed proxy does not.)
type abandoned struct{}

func (abandoned) RecordSQL(gid twophase.GID) string { return twophase.RecordStore{}.RecordSQL(gid) }

func (abandoned) Decide(context.Context, twophase.GID, twophase.Participant) (bool, error) {
	return false, fmt.Errorf("proxy killed: %w", twophase.ErrUncertain)
}

// TestTwoPhaseRecoveryOnLeader: the member's leader-side recovery leaves
// a live proxy's prepared transactions alone, rolls them back once its
// lease has run out (nothing was decided), and commits those whose
// decision was made; ListTransactions and the metrics report it, and no
// prepared transaction is left on any server.
func TestTwoPhaseRecoveryOnLeader(t *testing.T) {
	integration.SkipIfNoPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	pg := integration.NewCluster(t, integration.Shards(3))
	var yaml strings.Builder
	yaml.WriteString("epoch: 1\nshards:\n")
	for i, s := range pg.Shards {
		fmt.Fprintf(&yaml, "  - {name: s%d, primary: %q}\n", i, s.Addr())
		if err := s.Exec(ctx, fmt.Sprintf("CREATE TABLE acct (id int PRIMARY KEY, balance int); INSERT INTO acct VALUES (%d, 100)", i)); err != nil {
			t.Fatal(err)
		}
	}
	yaml.WriteString("distributions:\n  - {name: d, key_type: bigint, strategy: hash, shards_even: [s0, s1, s2]}\ntables:\n  - {name: public.acct, distribution: d, key: id}\n")
	seed, err := shardmap.ParseYAML([]byte(yaml.String()))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(ctx, Config{
		Node: meta.Config{ID: "m1", RaftAddr: "127.0.0.1:0", DataDir: t.TempDir(), Bootstrap: true,
			ProxyLease: 2 * time.Second},
		API:        lis,
		Server:     metarpc.ServerOptions{Token: "tok"},
		WaitLeader: 20 * time.Second,
		Seed:       seed,
		PG:         &PGLogin{User: pgcluster.SuperuserName, Password: pgcluster.SuperuserPassword, SSLMode: "disable"},
		TwoPhase:   TwoPhaseConfig{Interval: 100 * time.Millisecond, MaxAge: time.Hour},
		Metrics:    &MetricsConfig{Listener: mlis},
		LeaderPoll: 5 * time.Millisecond,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c, err := metarpc.NewClient([]string{m.Addr()}, metarpc.ClientOptions{Token: "tok", Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// The first rounds create the decision table on every primary.
	itestutil.WaitFor(t, 30*time.Second, "the decision table on every primary", func() (bool, string) {
		for _, s := range pg.Shards {
			if v, err := s.QueryValue(ctx, "SELECT to_regclass('pgshard.commit_decisions') IS NOT NULL"); err != nil || v != "t" {
				return false, fmt.Sprintf("%s: %s %v", s.Name, v, err)
			}
		}
		return true, ""
	})
	if err := m.Node().Heartbeat(ctx, "proxy-a", "127.0.0.1:6432", 1, nil); err != nil {
		t.Fatal(err)
	}

	prepared := func() int {
		n := 0
		for _, s := range pg.Shards {
			v, err := s.QueryValue(ctx, "SELECT count(*) FROM pg_prepared_xacts")
			if err != nil {
				t.Fatal(err)
			}
			k, _ := strconv.Atoi(v)
			n += k
		}
		return n
	}
	begin := func(deltas ...int) []twophase.Participant {
		var out []twophase.Participant
		for i, s := range pg.Shards {
			conn, err := pgconn.Connect(ctx, s.SuperDSN("postgres"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close(context.Background()) })
			if _, err := conn.Exec(ctx, fmt.Sprintf("BEGIN; UPDATE acct SET balance = balance + %d WHERE id = %d", deltas[i], i)).ReadAll(); err != nil {
				t.Fatal(err)
			}
			out = append(out, &twophase.Conn{ShardName: "s" + strconv.Itoa(i), PG: conn, Wrote: true})
		}
		return out
	}
	balances := func() string {
		var out []string
		for i, s := range pg.Shards {
			v, err := s.QueryValue(ctx, fmt.Sprintf("SELECT balance FROM acct WHERE id = %d", i))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
		return strings.Join(out, " ")
	}

	// Killed after PREPARE: in doubt while the proxy lives.
	_, err = twophase.New("proxy-a", abandoned{}, twophase.Options{}, nil).Commit(ctx, begin(-30, 10, 20))
	var de *twophase.InDoubtError
	if !errors.As(err, &de) {
		t.Fatalf("commit: %v", err)
	}
	itestutil.WaitFor(t, 30*time.Second, "ListTransactions to show the transaction in progress", func() (bool, string) {
		rep, err := c.ListTransactions(ctx)
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, d := range rep.InDoubt {
			if d.GID == string(de.GID) && d.State == "in progress" && d.ProxyAlive && d.Proxy == "proxy-a" {
				n++
			}
		}
		return n == 3, fmt.Sprintf("%+v", rep.InDoubt)
	})
	if n := prepared(); n != 3 {
		t.Fatalf("%d prepared while the proxy's lease runs, want 3", n)
	}
	// The lease runs out (no more heartbeats): rolled back everywhere.
	start := time.Now()
	itestutil.WaitFor(t, 30*time.Second, "recovery to roll back after the lease", func() (bool, string) {
		n := prepared()
		return n == 0, fmt.Sprint(n, " prepared")
	})
	t.Logf("rolled back %v after the abandon (lease 2s)", time.Since(start))
	if got := balances(); got != "100 100 100" {
		t.Fatalf("balances %s, want 100 100 100", got)
	}

	// Killed after the decision: the decision shard committed; the
	// others are committed by recovery (the proxy is dead by now).
	ps := begin(-30, 10, 20)
	gid, err := twophase.NewGID("proxy-a", "s0")
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range ps {
		sql := "PREPARE TRANSACTION '" + string(gid) + "'"
		if i == 0 {
			sql = twophase.RecordStore{}.RecordSQL(gid) + "; " + sql
		}
		if _, err := p.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ps[0].Exec(ctx, "COMMIT PREPARED '"+string(gid)+"'"); err != nil {
		t.Fatal(err)
	}
	itestutil.WaitFor(t, 30*time.Second, "recovery to commit the decided transaction", func() (bool, string) {
		n := prepared()
		return n == 0, fmt.Sprint(n, " prepared")
	})
	if got := balances(); got != "70 110 120" {
		t.Fatalf("balances %s, want 70 110 120", got)
	}
	// The report is the last round's: the round that committed the
	// others publishes it after it has read the decisions, which may be
	// just after the prepared transactions are gone.
	itestutil.WaitFor(t, 10*time.Second, "the decision in the transactions report", func() (bool, string) {
		rep, err := c.ListTransactions(ctx)
		if err != nil {
			return false, err.Error()
		}
		found := false
		for _, d := range rep.Decisions {
			found = found || (d.GID == string(gid) && d.Committed && d.Shard == "s0" && d.Database == "postgres")
		}
		return found && len(rep.Problems) == 0, fmt.Sprintf("decisions %+v problems %+v: want the commit of %s on s0, no problem", rep.Decisions, rep.Problems, gid)
	})
	g := m.Gatherer()
	if n, err := testutil.GatherAndCount(g, "pgshard_twophase_recovery_actions_total"); err != nil || n != 2 {
		t.Fatalf("recovery action series: %d %v", n, err)
	}
	if v := testutil.ToFloat64(m.metrics.twoPhaseActions.WithLabelValues("rollback", "ok")); v != 3 {
		t.Errorf("rollback actions %v, want 3", v)
	}
	if v := testutil.ToFloat64(m.metrics.twoPhaseActions.WithLabelValues("commit", "ok")); v != 2 {
		t.Errorf("commit actions %v, want 2", v)
	}

	// A proxy restarted under the same ID before its lease ran out: the
	// lease names its new incarnation, so its predecessor's undecided
	// transaction is rolled back at once while the proxy lives (MaxAge is
	// an hour here).
	const before, after = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
	if err := m.Node().HeartbeatIncarnation(ctx, "proxy-b", before, "127.0.0.1:6433", 1, nil); err != nil {
		t.Fatal(err)
	}
	_, err = twophase.New("proxy-b", abandoned{}, twophase.Options{Incarnation: before}, nil).Commit(ctx, begin(-5, 2, 3))
	if !errors.As(err, &de) {
		t.Fatalf("commit: %v", err)
	}
	restarted := make(chan struct{})
	beatCtx, stopBeats := context.WithCancel(ctx)
	beats := make(chan error, 1)
	go func() { // the proxy heartbeats as proxies do: the first incarnation until the restart, then the new one
		var err error
		defer func() { beats <- err }()
		for beatCtx.Err() == nil {
			inc := before
			select {
			case <-restarted:
				inc = after
			default:
			}
			if err = m.Node().HeartbeatIncarnation(beatCtx, "proxy-b", inc, "127.0.0.1:6433", 1, nil); err != nil && beatCtx.Err() == nil {
				return
			}
			err = nil
			select {
			case <-beatCtx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	itestutil.WaitFor(t, 30*time.Second, "the predecessor's transaction in progress first", func() (bool, string) {
		rep, err := c.ListTransactions(ctx)
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, d := range rep.InDoubt {
			if d.GID == string(de.GID) && d.State == "in progress" && d.ProxyAlive {
				n++
			}
		}
		return n == 3, fmt.Sprintf("%+v", rep.InDoubt)
	})
	close(restarted)
	start = time.Now()
	itestutil.WaitFor(t, 30*time.Second, "recovery to roll back the predecessor's transaction", func() (bool, string) {
		n := prepared()
		return n == 0, fmt.Sprint(n, " prepared")
	})
	took := time.Since(start)
	stopBeats()
	if err := <-beats; err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	alive := false
	for _, p := range m.Node().Proxies() {
		alive = alive || p.ID == "proxy-b" && p.Alive && p.Incarnation == after
	}
	if !alive {
		t.Fatalf("proxy-b not alive in its new incarnation: %+v", m.Node().Proxies())
	}
	t.Logf("the restarted proxy's predecessor's transaction rolled back %v after the restart", took)
	if took >= 2*time.Second {
		t.Errorf("rolled back %v after the restart, want within the lease (2s): the restart must count, not the lease", took)
	}
	if got := balances(); got != "70 110 120" {
		t.Fatalf("balances %s, want 70 110 120", got)
	}
}
