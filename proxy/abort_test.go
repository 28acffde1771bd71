package proxy_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/netfault"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// oneShardMapConfig is a proxy configuration routing by a map of one
// shard, s0, whose primary is pg; public.kv is distributed on k.
func oneShardMapConfig(t *testing.T, pg *pgcluster.Server) *proxy.Config {
	t.Helper()
	return mapConfig(t, pg, shardmaptest.KV(nil, pg.Addr()).YAML(t))
}

// otherBackends counts pg's client sessions other than those of the
// given direct connections and of the proxy's health probes.
func otherBackends(t *testing.T, ctx context.Context, obs *pgx.Conn, mine ...*pgx.Conn) int {
	t.Helper()
	pids := []uint32{}
	for _, c := range mine {
		pids = append(pids, c.PgConn().PID())
	}
	var n int
	if err := obs.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name <> 'pgshard-health' AND pid <> ALL($1::int[])`, pids).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// pollFor polls cond until it holds, failing the test after d, and
// returns how long it took.
func pollFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	testutil.Until(t, d, what, cond)
	return time.Since(start)
}

// result is the outcome of a statement run in the background.
type result struct {
	err  error
	took time.Duration
}

// runAsync runs sql on c in the background. The statement is canceled
// (and waited for) when the test ends, before c is closed.
func runAsync(t *testing.T, c *pgx.Conn, sql string, args ...any) <-chan result {
	ch := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		_, err := c.Exec(ctx, sql, args...)
		ch <- result{err, time.Since(start)}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return ch
}

func await(t *testing.T, ch <-chan result, d time.Duration, what string) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(d):
		t.Fatalf("%s: no answer within %s", what, d)
		return result{}
	}
}

// TestApplyMapAbortsReplacedPrimary: a map that makes another server the
// shard's primary (the old one fenced) resets every proxy connection to
// the old primary before ApplyMap returns. The session whose INSERT waits
// there (for a lock a direct connection holds) gets 08006 at once, the
// INSERT never commits on the old server (not even when the lock goes),
// no proxy connection to the old server is left, and the next statement
// runs on the new primary.
func TestApplyMapAbortsReplacedPrimary(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	oldPrimary, newPrimary := c.Shards[0], c.Shards[1]
	ctx := ctxT(t)
	createKV(t, ctx, c.Shards)
	cfg := oneShardMapConfig(t, oldPrimary)
	p := startProxy(t, cfg)
	obs := connect(t, oldPrimary.SuperDSN("postgres"))
	locker := connect(t, oldPrimary.SuperDSN("postgres"))

	// Two pooled connections to the old primary (the INSERT below takes
	// one of them).
	warm1, warm2 := connect(t, p.dsn("")), connect(t, p.dsn(""))
	tx, err := warm1.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT count(*) FROM kv WHERE k = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := warm2.Exec(ctx, `SELECT count(*) FROM kv WHERE k = 2`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	if _, err := locker.Exec(ctx, `BEGIN; LOCK TABLE kv IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	sess := connect(t, p.dsn(""))
	insert := runAsync(t, sess, `INSERT INTO kv (k, v) VALUES (42, 'on the old primary')`)
	pollFor(t, 10*time.Second, "the INSERT waits for the lock", func() bool {
		var n int
		if err := obs.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO kv%' AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	if n := otherBackends(t, ctx, obs, obs, locker); n != 2 {
		t.Fatalf("proxy connections on the old primary before the change: %d, want 2 (one idle, one waiting)", n)
	}

	m2 := readMap(t, cfg.ShardMapFile)
	m2.Epoch = 2
	m2.Shards[0].Primary = shardmap.Endpoint{Host: newPrimary.Host, Port: newPrimary.Port}
	m2.Shards[0].Fenced = []shardmap.Endpoint{{Host: oldPrimary.Host, Port: oldPrimary.Port}}
	start := time.Now()
	if ok, err := p.srv.ApplyMap(m2); !ok || err != nil {
		t.Fatalf("apply epoch 2: %v %v", ok, err)
	}
	applied := time.Since(start)
	r := await(t, insert, 3*time.Second, "the INSERT on the replaced primary")
	if code := pgCode(r.err); code != "08006" {
		t.Fatalf("the INSERT on the replaced primary: %v, want 08006", r.err)
	}
	toErr := time.Since(start)
	gone := pollFor(t, time.Second, "proxy connections on the old primary end", func() bool {
		return otherBackends(t, ctx, obs, obs, locker) == 0
	})
	t.Logf("ApplyMap took %s; the client had 08006 %s after it began; the old primary had no proxy connection %s after ApplyMap returned",
		applied.Round(time.Millisecond), toErr.Round(time.Millisecond), gone.Round(time.Millisecond))
	if applied > 2*time.Second || toErr > 2*time.Second {
		t.Fatalf("too slow: ApplyMap %s, 08006 after %s", applied, toErr)
	}

	if _, err := locker.Exec(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	for name, srv := range map[string]*pgcluster.Server{"old": oldPrimary, "new": newPrimary} {
		if v, err := srv.QueryValue(ctx, `SELECT count(*) FROM kv WHERE k = 42`); err != nil || v != "0" {
			t.Fatalf("the aborted INSERT on the %s primary: count %q %v, want 0", name, v, err)
		}
	}

	// The next statement runs on the new primary.
	next := connect(t, p.dsn(""))
	if _, err := next.Exec(ctx, `INSERT INTO kv (k, v) VALUES (43, 'on the new primary')`); err != nil {
		t.Fatal(err)
	}
	if v, err := newPrimary.QueryValue(ctx, `SELECT count(*) FROM kv WHERE k = 43`); err != nil || v != "1" {
		t.Fatalf("the next INSERT on the new primary: %q %v", v, err)
	}
	if v, err := oldPrimary.QueryValue(ctx, `SELECT count(*) FROM kv`); err != nil || v != "0" {
		t.Fatalf("rows on the old primary: %q %v, want 0", v, err)
	}
}

// TestFenceStepAbortsDrainStepDoesNot: a failover at its "fence" step
// resets the connections to the primary it replaces (a statement in
// flight gets 08006 at once, and does not go on running there); a
// switchover's "drain" step lets the statement in flight finish.
func TestFenceStepAbortsDrainStepDoesNot(t *testing.T) {
	pg := integration.StartPostgres(t)
	ctx := ctxT(t)
	obs := connect(t, pg.SuperDSN("postgres"))
	from := shardmap.Endpoint{Host: pg.Host, Port: pg.Port}

	t.Run("drain", func(t *testing.T) {
		cfg := oneShardMapConfig(t, pg)
		p := startProxy(t, cfg)
		sess := connect(t, p.dsn(""))
		sleep := runAsync(t, sess, `SELECT pg_sleep(1.5)`)
		pollFor(t, 10*time.Second, "pg_sleep runs", func() bool { return activeQueries(t, ctx, obs, `SELECT pg_sleep(1.5)`) == 1 })
		m := readMap(t, cfg.ShardMapFile)
		m.Epoch = 2
		m.Shards[0].Switch = &shardmap.Switch{Kind: shardmap.Switchover, From: from, Step: "drain"}
		if ok, err := p.srv.ApplyMap(m); !ok || err != nil {
			t.Fatalf("apply the drain map: %v %v", ok, err)
		}
		if r := await(t, sleep, 10*time.Second, "pg_sleep during the drain"); r.err != nil {
			t.Fatalf("a statement in flight during a switchover's drain failed: %v", r.err)
		}
	})

	t.Run("fence", func(t *testing.T) {
		cfg := oneShardMapConfig(t, pg)
		p := startProxy(t, cfg)
		sess := connect(t, p.dsn(""))
		sleep := runAsync(t, sess, `SELECT pg_sleep(20)`)
		pollFor(t, 10*time.Second, "pg_sleep runs", func() bool { return activeQueries(t, ctx, obs, `SELECT pg_sleep(20)`) == 1 })
		m := readMap(t, cfg.ShardMapFile)
		m.Epoch = 2
		m.Shards[0].Switch = &shardmap.Switch{Kind: shardmap.Failover, From: from, Step: "fence"}
		start := time.Now()
		if ok, err := p.srv.ApplyMap(m); !ok || err != nil {
			t.Fatalf("apply the fence map: %v %v", ok, err)
		}
		r := await(t, sleep, 3*time.Second, "pg_sleep on the fenced primary")
		if code := pgCode(r.err); code != "08006" {
			t.Fatalf("pg_sleep on the fenced primary: %v, want 08006", r.err)
		}
		took := time.Since(start)
		ended := pollFor(t, 5*time.Second, "pg_sleep ends on the fenced server", func() bool {
			return activeQueries(t, ctx, obs, `SELECT pg_sleep(20)`) == 0
		})
		t.Logf("08006 %s after ApplyMap began; the statement ended on the server %s later", took.Round(time.Millisecond), ended.Round(time.Millisecond))
		if took > 2*time.Second {
			t.Fatalf("08006 after %s", took)
		}
	})
}

// iptablesDrop inserts rules until the test ends; it skips the test
// without root or iptables.
func iptablesDrop(t *testing.T, rules ...[]string) {
	t.Helper()
	ipt, err := exec.LookPath("iptables")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs iptables and root")
	}
	if out, err := exec.Command(ipt, "-w", "-L", "INPUT", "-n").CombinedOutput(); err != nil {
		t.Skipf("iptables does not work here: %v %s", err, out)
	}
	for _, r := range rules {
		if out, err := exec.Command(ipt, append([]string{"-w", "-I"}, r...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables -I %v: %v %s", r, err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command(ipt, append([]string{"-w", "-D"}, r...)...).CombinedOutput(); err != nil {
				t.Errorf("iptables -D %v: %v %s", r, err, out)
			}
		})
	}
}

// TestPartitionedServerFails08006: with the server's packets dropped, a
// statement in flight and one sent into the partition fail with 08006
// within the backend's ack timeout and keepalive settings, not after
// TCP's retries (minutes); a cancel request that cannot reach the server
// does not delay that.
func TestPartitionedServerFails08006(t *testing.T) {
	pg := integration.StartPostgres(t)
	ctx := ctxT(t)
	cfg := baseConfig(t, pg)
	cfg.Backend.AckTimeout = proxy.Duration(2 * time.Second)
	cfg.Backend.KeepAliveIdle = proxy.Duration(time.Second)
	cfg.Backend.KeepAliveInterval = proxy.Duration(500 * time.Millisecond)
	cfg.Backend.KeepAliveCount = 2
	p := startProxy(t, cfg)
	obs := connect(t, pg.SuperDSN("postgres"))

	inFlight := connect(t, p.dsn(""))
	sentLater := connect(t, p.dsn(""))
	// Two pooled connections, so that both statements below find one (no
	// new one can be opened in the partition).
	tx, err := inFlight.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := sentLater.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	sleep := runAsync(t, inFlight, `SELECT pg_sleep(20)`)
	pollFor(t, 10*time.Second, "pg_sleep runs", func() bool { return activeQueries(t, ctx, obs, `SELECT pg_sleep(20)`) == 1 })
	_ = obs.Close(ctx) // its port is about to be cut off

	netfault.Blackhole(t, pg.Port)
	start := time.Now()
	later := runAsync(t, sentLater, `SELECT 2`)
	// The client gives up on its statement: the proxy's cancel towards
	// the unreachable server must not hold the session meanwhile.
	cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
	canceled := make(chan error, 1)
	go func() { canceled <- inFlight.PgConn().CancelRequest(cctx) }()
	t.Cleanup(func() {
		ccancel()
		<-canceled
	})
	bound := cfg.Backend.AckTimeout.D() + cfg.Backend.KeepAliveIdle.D() + time.Second
	for name, ch := range map[string]<-chan result{"statement in flight": sleep, "statement sent into the partition": later} {
		r := await(t, ch, 20*time.Second, name)
		took := time.Since(start)
		if code := pgCode(r.err); code != "08006" || !strings.Contains(r.err.Error(), "stopped answering") {
			t.Errorf("%s: %v, want 08006 (the server stopped answering)", name, r.err)
		}
		t.Logf("%s: 08006 %s after the partition began", name, took.Round(time.Millisecond))
		if took > bound {
			t.Errorf("%s: failed after %s, want within %s", name, took, bound)
		}
	}
	// At least the statement sent into the partition is the watchdog's
	// (keepalives do not run while data is unacknowledged); the one in
	// flight may be the keepalives'.
	if v := poolMetric(t, p, "pgshard_server_stalls_total", pg.Addr()); v != "1" && v != "2" {
		t.Errorf("pgshard_server_stalls_total = %q, want 1 or 2", v)
	}
}

// TestCancelDoesNotHoldSession: a CancelRequest the proxy cannot deliver
// (the server takes no new connection: its SYNs are dropped) does not
// hold the session: the statement it was meant for is answered, and the
// session's next statement runs at once, while the proxy still tries to
// reach the server.
func TestCancelDoesNotHoldSession(t *testing.T) {
	pg := integration.StartPostgres(t)
	ctx := ctxT(t)
	p := startProxy(t, baseConfig(t, pg))
	obs := connect(t, pg.SuperDSN("postgres"))
	sess, other := connect(t, p.dsn("")), connect(t, p.dsn(""))
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	sleep := runAsync(t, sess, `SELECT pg_sleep(1)`)
	pollFor(t, 10*time.Second, "pg_sleep runs", func() bool { return activeQueries(t, ctx, obs, `SELECT pg_sleep(1)`) == 1 })
	// The connection of the canceled statement stays aside until the
	// cancel is done: leave another one idle for the next statement (no
	// new one can be opened).
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The client has the COMMIT's ReadyForQuery a moment before the
	// connection is back in the pool.
	pollFor(t, 10*time.Second, "an idle server connection", func() bool {
		return poolMetric(t, p, "pgshard_server_connections", pg.Addr(), `state="idle"`) == "1"
	})
	iptablesDrop(t, []string{"INPUT", "-i", "lo", "-p", "tcp", "--dport", strconv.Itoa(pg.Port), "--syn", "-j", "DROP"})
	cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
	canceled := make(chan error, 1)
	go func() { canceled <- sess.PgConn().CancelRequest(cctx) }()
	t.Cleanup(func() {
		ccancel()
		<-canceled
	})
	if r := await(t, sleep, 10*time.Second, "pg_sleep(1)"); r.err != nil {
		t.Fatalf("pg_sleep(1) whose cancel could not be delivered: %v", r.err)
	}
	start := time.Now()
	var v int
	// One Query message: with the extended protocol's two requests
	// (describe, then execute) the second can reach the pool before the
	// relay has put back the connection the first used, and would have to
	// open a new one, which the dropped SYNs forbid (a race of its own,
	// not this test's subject).
	if err := sess.QueryRow(ctx, `SELECT 7`, pgx.QueryExecModeSimpleProtocol).Scan(&v); err != nil || v != 7 {
		_, metrics := get(p, "/metrics")
		var pool []string
		for line := range strings.SplitSeq(metrics, "\n") {
			if strings.HasPrefix(line, "pgshard_server_") || strings.HasPrefix(line, "pgshard_pool_") {
				pool = append(pool, line)
			}
		}
		t.Fatalf("the next statement: %d %v\npool metrics:\n%s", v, err, strings.Join(pool, "\n"))
	}
	took := time.Since(start)
	t.Logf("the next statement took %s while the cancel was undeliverable", took.Round(time.Millisecond))
	if took > time.Second {
		t.Fatalf("the next statement took %s: the undeliverable cancel held the session", took)
	}
}

// poolMetric reads the pool metric name for the server at addr from the
// proxy's metrics, on the line that also has every one of labels (such as
// state="idle"); "" when there is none.
func poolMetric(t *testing.T, p *testProxy, name, addr string, labels ...string) string {
	t.Helper()
	_, body := get(p, "/metrics")
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, `server="`+addr+`"`) &&
			!slices.ContainsFunc(labels, func(l string) bool { return !strings.Contains(line, l) }) {
			return line[strings.LastIndexByte(line, ' ')+1:]
		}
	}
	return ""
}

// TestWaiterRetriesOnNewPrimary: a statement that waits for a server
// connection of the old primary (its pool is full) when the map replaces
// that primary has sent nothing: it runs on the new primary instead of
// failing. The session holding the pool's only connection, in a
// transaction, gets 08006 at its next statement.
func TestWaiterRetriesOnNewPrimary(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	oldPrimary, newPrimary := c.Shards[0], c.Shards[1]
	ctx := ctxT(t)
	createKV(t, ctx, c.Shards)
	cfg := oneShardMapConfig(t, oldPrimary)
	cfg.Pool.Size = 1
	cfg.Pool.WaitTimeout = proxy.Duration(20 * time.Second)
	p := startProxy(t, cfg)
	holder, waiter := connect(t, p.dsn("")), connect(t, p.dsn(""))
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES (1, 'in the open transaction')`); err != nil {
		t.Fatal(err)
	}
	insert := runAsync(t, waiter, `INSERT INTO kv (k, v) VALUES (2, 'waited')`)
	pollFor(t, 10*time.Second, "the INSERT waits for a connection", func() bool {
		return poolMetric(t, p, "pgshard_pool_waiting_clients", oldPrimary.Addr()) == "1"
	})
	m2 := readMap(t, cfg.ShardMapFile)
	m2.Epoch = 2
	m2.Shards[0].Primary = shardmap.Endpoint{Host: newPrimary.Host, Port: newPrimary.Port}
	m2.Shards[0].Fenced = []shardmap.Endpoint{{Host: oldPrimary.Host, Port: oldPrimary.Port}}
	if ok, err := p.srv.ApplyMap(m2); !ok || err != nil {
		t.Fatalf("apply epoch 2: %v %v", ok, err)
	}
	if r := await(t, insert, 5*time.Second, "the waiting INSERT"); r.err != nil {
		t.Fatalf("the INSERT that waited for the old primary's pool: %v, want it run on the new primary", r.err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES (3, 'after the change')`); pgCode(err) != "08006" {
		t.Fatalf("next statement of the transaction on the old primary: %v, want 08006", err)
	}
	for _, tc := range []struct {
		srv  *pgcluster.Server
		want string
	}{{newPrimary, "2"}, {oldPrimary, ""}} {
		v, err := tc.srv.QueryValue(ctx, `SELECT string_agg(k::text, ',' ORDER BY k) FROM kv`)
		if err != nil || v != tc.want {
			t.Errorf("rows on %s: %q %v, want %q", tc.srv.Addr(), v, err, tc.want)
		}
	}
}

// TestServerNotReadingIsNotPartitioned: a COPY whose server stops reading
// for several ack timeouts (its first row waits for a lock; the proxy has
// far more to send than the socket buffers hold) is not mistaken for an
// unreachable server: it completes once the lock goes.
func TestServerNotReadingIsNotPartitioned(t *testing.T) {
	pg := integration.StartPostgres(t)
	ctx := ctxT(t)
	cfg := baseConfig(t, pg)
	cfg.Backend.AckTimeout = proxy.Duration(500 * time.Millisecond)
	p := startProxy(t, cfg)
	direct := connect(t, pg.SuperDSN("postgres"))
	if _, err := direct.Exec(ctx, `CREATE TABLE t (k int PRIMARY KEY, pad text)`); err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Exec(ctx, `BEGIN; INSERT INTO t VALUES (1, 'uncommitted')`); err != nil {
		t.Fatal(err)
	}
	sess := connect(t, p.dsn(""))
	obs := connect(t, pg.SuperDSN("postgres"))
	const rows = 100000
	pr, pw := io.Pipe()
	defer pr.Close()
	go func() {
		pad := strings.Repeat("x", 1000)
		for i := 1; i <= rows; i++ {
			if _, err := fmt.Fprintf(pw, "%d\t%s\n", i, pad); err != nil {
				return
			}
		}
		_ = pw.Close()
	}()
	copied := make(chan error, 1)
	go func() {
		_, err := sess.PgConn().CopyFrom(ctx, pr, "COPY t FROM STDIN")
		copied <- err
	}()
	pollFor(t, 10*time.Second, "the COPY waits for the lock", func() bool {
		var n int
		if err := obs.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY t%' AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	// Hold the lock for 6 ack timeouts, then let the COPY go on.
	held := time.Now()
	pollFor(t, 10*time.Second, "3 s pass while the COPY waits", func() bool {
		select {
		case err := <-copied:
			t.Fatalf("the COPY ended while it waited for the lock: %v", err)
		default:
		}
		return time.Since(held) >= 3*time.Second
	})
	if _, err := direct.Exec(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-copied:
		if err != nil {
			t.Fatalf("COPY: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the COPY did not end")
	}
	if v, err := pg.QueryValue(ctx, `SELECT count(*) FROM t`); err != nil || v != strconv.Itoa(rows) {
		t.Fatalf("rows copied: %q %v", v, err)
	}
}
