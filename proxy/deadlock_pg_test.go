package proxy_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/replication/twophase"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
	"github.com/pgshard/pgshard/wire"
)

// deadlockBound is how soon a deadlock across shards is broken with the
// default transactions.deadlock_timeout (1 s), as README says: within
// 2 s, and some slack for a busy test machine.
const deadlockBound = 3 * time.Second

// dlShards starts two shards (kv split at key 100, rows 1, 2 on s0 and
// 101, 102 on s1, n = 0) and n proxies with transactions.cross_shard:
// two_phase and the default deadlock timeout; it returns the proxies and
// superuser connections to each shard.
func dlShards(t *testing.T, n int) ([]*testProxy, [2]*pgx.Conn) {
	t.Helper()
	c := integration.NewCluster(t, integration.Shards(2))
	var ps []*testProxy
	for range n {
		cfg := mapConfig(t, c.Shards[0], shardmaptest.KV([]int64{100}, c.Shards[0].Addr(), c.Shards[1].Addr()).YAML(t))
		cfg.Transactions.CrossShard = proxy.CrossShardTwoPhase
		ps = append(ps, startProxy(t, cfg))
	}
	ctx := ctxT(t)
	var direct [2]*pgx.Conn
	for i, srv := range c.Shards {
		direct[i] = connect(t, srv.SuperDSN("postgres"))
		keys := []string{"(1), (2)", "(101), (102)"}[i]
		for _, sql := range []string{`CREATE TABLE kv (k bigint PRIMARY KEY, v text, n bigint NOT NULL DEFAULT 0)`,
			`INSERT INTO kv (k) VALUES ` + keys, twophase.SchemaSQL} {
			if _, err := direct[i].Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
		}
	}
	return ps, direct
}

// metricValue returns the value of the metric line that starts with name
// (0 when absent).
func metricValue(t *testing.T, p *testProxy, name string) int {
	t.Helper()
	for _, l := range strings.Split(scrape(t, p), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return int(f)
		}
	}
	return 0
}

// lockWaiters counts the sessions of direct's server waiting for a lock.
func lockWaiters(t *testing.T, ctx context.Context, direct *pgx.Conn) int {
	t.Helper()
	return int(scalar(t, ctx, direct, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'`))
}

// tagged counts the server sessions whose application_name is a
// distributed transaction's tag.
func tagged(t *testing.T, ctx context.Context, direct *pgx.Conn) int {
	t.Helper()
	return int(scalar(t, ctx, direct, `SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgshard dtx %'`))
}

type stmtResult struct {
	err error
	at  time.Time
}

// execAsync runs sql in tx and reports its end.
func execAsync(ctx context.Context, tx pgx.Tx, sql string, args ...any) <-chan stmtResult {
	ch := make(chan stmtResult, 1)
	go func() {
		_, err := tx.Exec(ctx, sql, args...)
		ch <- stmtResult{err: err, at: time.Now()}
	}()
	return ch
}

// TestDeadlockAcrossShards: T1 updates row 1 on s0, T2 row 101 on s1;
// T1 then waits for row 101, T2 for row 1 — a cycle no PostgreSQL sees.
// Through one proxy (T2 on the extended protocol), and with each
// transaction on its own proxy (T2 on the simple protocol), exactly T2
// (the younger) gets 40P01 "deadlock detected across shards" within
// the documented time, and must roll back; T1's statement then completes
// and T1 commits with both its writes. Only the victim's proxy counts the
// deadlock. Afterwards no server connection keeps a transaction's tag in
// application_name, and the client's application_name is its own.
func TestDeadlockAcrossShards(t *testing.T) {
	for _, nproxies := range []int{1, 2} {
		t.Run(strconv.Itoa(nproxies)+"proxies", func(t *testing.T) {
			ps, direct := dlShards(t, nproxies)
			ctx := ctxT(t)
			p1, p2 := ps[0], ps[len(ps)-1]
			c1 := connect(t, p1.dsn("application_name=t1&default_query_exec_mode=simple_protocol"))
			mode := []string{"cache_statement", "simple_protocol"}[nproxies-1] // the victim's protocol
			c2 := connect(t, p2.dsn("application_name=t2&default_query_exec_mode="+mode))
			tx1, err := c1.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			tx2, err := c2.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx1.Exec(ctx, `UPDATE kv SET n = n + 1, v = 't1' WHERE k = 1`); err != nil {
				t.Fatal(err)
			}
			if _, err := tx2.Exec(ctx, `UPDATE kv SET n = n + 10, v = 't2' WHERE k = 101`); err != nil {
				t.Fatal(err)
			}
			r1 := execAsync(ctx, tx1, `UPDATE kv SET n = n + 1, v = 't1' WHERE k = 101`)
			testutil.Until(t, 10*time.Second, "T1 to wait on s1", func() bool { return lockWaiters(t, ctx, direct[1]) == 1 })
			start := time.Now()
			r2 := execAsync(ctx, tx2, `UPDATE kv SET n = n + 10, v = 't2' WHERE k = $1`, int64(1))
			var res stmtResult
			select {
			case res = <-r2:
			case res = <-r1:
				t.Fatalf("T1's statement ended first (%v): T2, the younger, is the victim", res.err)
			case <-time.After(10 * time.Second):
				t.Fatal("deadlock not broken in 10 s")
			}
			took := res.at.Sub(start)
			var pe *pgconn.PgError
			if !errors.As(res.err, &pe) || pe.Code != wire.SQLStateDeadlockDetected {
				t.Fatalf("T2: %v, want 40P01", res.err)
			}
			if pe.Message != "deadlock detected across shards" || !strings.Contains(pe.Detail, "s0, s1") {
				t.Fatalf("T2's error: %q, detail %q", pe.Message, pe.Detail)
			}
			if took > deadlockBound {
				t.Errorf("deadlock broken after %v, want within %v", took, deadlockBound)
			}
			t.Logf("deadlock broken %v after it formed", took)
			// T2's transaction has failed, as on PostgreSQL.
			if _, err := tx2.Exec(ctx, `SELECT 1`); !errors.As(err, &pe) || pe.Code != wire.SQLStateInFailedTransaction {
				t.Fatalf("statement after the deadlock: %v, want 25P02", err)
			}
			if err := tx2.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if res := <-r1; res.err != nil {
				t.Fatalf("T1's statement: %v", res.err)
			}
			if err := tx1.Commit(ctx); err != nil {
				t.Fatalf("T1's commit: %v", err)
			}
			if a, b := balance(t, ctx, direct[0], 1), balance(t, ctx, direct[1], 101); a != 1 || b != 1 {
				t.Fatalf("after T1's commit: row 1 n=%d, row 101 n=%d; want 1, 1 (T1's writes only)", a, b)
			}
			noPrepared(t, ctx, direct)
			// Only the victim's proxy acted.
			if got := metricValue(t, p2, "pgshard_deadlocks_detected_total"); got != 1 {
				t.Errorf("victim's proxy counted %d deadlocks, want 1", got)
			}
			if nproxies == 2 {
				if got := metricValue(t, p1, "pgshard_deadlocks_detected_total"); got != 0 {
					t.Errorf("the other proxy counted %d deadlocks, want 0", got)
				}
			}
			// The tags reverted with the transactions: the pooled
			// connections (still open) and the clients are unchanged.
			for i := range direct {
				if n := tagged(t, ctx, direct[i]); n != 0 {
					t.Errorf("s%d: %d server connections keep a distributed transaction's tag", i, n)
				}
			}
			for name, c := range map[string]*pgx.Conn{"t1": c1, "t2": c2} {
				var app string
				if err := c.QueryRow(ctx, `SHOW application_name`).Scan(&app); err != nil || app != name {
					t.Errorf("application_name after the transaction: %q %v, want %q", app, err, name)
				}
				if got := c.PgConn().ParameterStatus("application_name"); got != name {
					t.Errorf("client's ParameterStatus application_name: %q, want %q", got, name)
				}
			}
		})
	}
}

// TestDeadlockAcrossShardsTagged: while a transaction spans two shards,
// both of its server connections carry its tag (the same ID); on one
// shard it has none; after COMMIT and after ROLLBACK none remains, and
// the same server connections (pooled, still open) have the session's
// application_name again.
func TestDeadlockAcrossShardsTagged(t *testing.T) {
	ps, direct := dlShards(t, 1)
	ctx := ctxT(t)
	c := connect(t, ps[0].dsn("application_name=tagtest"))
	pidsOf := func(i int) []int32 {
		rows, err := direct[i].Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'pgshard dtx %'`)
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	apps := func(i int) []string {
		rows, err := direct[i].Query(ctx, `SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'pgshard dtx %'`)
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, end := range []string{"COMMIT", "ROLLBACK"} {
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `UPDATE kv SET n = n + 1 WHERE k = 2`); err != nil {
			t.Fatal(err)
		}
		if a := apps(0); len(a) != 0 {
			t.Fatalf("%s: a transaction on one shard is tagged: %v", end, a)
		}
		if _, err := tx.Exec(ctx, `UPDATE kv SET n = n + 1 WHERE k = 102`); err != nil {
			t.Fatal(err)
		}
		a0, a1 := apps(0), apps(1)
		if len(a0) != 1 || len(a1) != 1 || a0[0] != a1[0] {
			t.Fatalf("%s: tags on s0 %v, s1 %v; want the same one on each", end, a0, a1)
		}
		// A read over both shards in the transaction.
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM kv`).Scan(&n); err != nil || n != 4 {
			t.Fatalf("%s: read over both shards: %d %v", end, n, err)
		}
		pids := [2][]int32{pidsOf(0), pidsOf(1)}
		if _, err := tx.Exec(ctx, end); err != nil {
			t.Fatalf("%s: %v", end, err)
		}
		if a0, a1 := apps(0), apps(1); len(a0)+len(a1) != 0 {
			t.Fatalf("after %s: tags remain: s0 %v, s1 %v", end, a0, a1)
		}
		// The server connections, back in the pool, have the session's
		// application_name again.
		for i := range direct {
			for _, pid := range pids[i] {
				var app string
				if err := direct[i].QueryRow(ctx, `SELECT application_name FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&app); err != nil || app != "tagtest" {
					t.Fatalf("after %s: s%d's server connection %d has application_name %q (%v), want tagtest", end, i, pid, app, err)
				}
			}
		}
	}
	// A statement over several shards as the first of the transaction.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM kv`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("read over both shards: %d %v", n, err)
	}
	if a0, a1 := apps(0), apps(1); len(a0) != 1 || len(a1) != 1 || a0[0] != a1[0] {
		t.Fatalf("after a read over both shards: tags on s0 %v, s1 %v", a0, a1)
	}
	if _, err := tx.Exec(ctx, `UPDATE kv SET n = n + 1 WHERE k = 101`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if a0, a1 := apps(0), apps(1); len(a0)+len(a1) != 0 {
		t.Fatalf("after COMMIT: tags remain: s0 %v, s1 %v", a0, a1)
	}
}

// TestDeadlockAcrossShardsNoFalsePositive: a transaction over two shards
// that waits longer than the deadlock timeout for another one (no cycle)
// is left alone while the proxy checks (twice at least); it goes on when
// the other commits, and both commit.
func TestDeadlockAcrossShardsNoFalsePositive(t *testing.T) {
	ps, direct := dlShards(t, 1)
	p := ps[0]
	ctx := ctxT(t)
	c1, c2 := connect(t, p.dsn("")), connect(t, p.dsn(""))
	tx1, err := c1.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []int64{1, 101} {
		if _, err := tx1.Exec(ctx, `UPDATE kv SET n = n + 1 WHERE k = $1`, k); err != nil {
			t.Fatal(err)
		}
	}
	tx2, err := c2.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx2.Exec(ctx, `UPDATE kv SET n = n + 10 WHERE k = 102`); err != nil {
		t.Fatal(err)
	}
	checks := metricValue(t, p, "pgshard_deadlock_checks_total")
	r2 := execAsync(ctx, tx2, `UPDATE kv SET n = n + 10 WHERE k = 1`)
	testutil.Until(t, 10*time.Second, "two deadlock checks", func() bool {
		select {
		case res := <-r2:
			t.Fatalf("the waiting statement ended: %v", res.err)
		default:
		}
		return metricValue(t, p, "pgshard_deadlock_checks_total") >= checks+2
	})
	if err := tx1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if res := <-r2; res.err != nil {
		t.Fatalf("T2 after T1's commit: %v", res.err)
	}
	if err := tx2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if a, b := balance(t, ctx, direct[0], 1), balance(t, ctx, direct[1], 102); a != 11 || b != 10 {
		t.Fatalf("row 1 n=%d, row 102 n=%d; want 11, 10", a, b)
	}
	if got := metricValue(t, p, "pgshard_deadlocks_detected_total"); got != 0 {
		t.Fatalf("deadlocks detected: %d, want 0", got)
	}
}

// TestDeadlockOnOneShard: two transactions over both shards whose cycle
// of waits is on s0 alone get PostgreSQL's own 40P01 (its detector sees
// the cycle); the proxy leaves it to the server.
func TestDeadlockOnOneShard(t *testing.T) {
	ps, direct := dlShards(t, 1)
	p := ps[0]
	ctx := ctxT(t)
	c1, c2 := connect(t, p.dsn("")), connect(t, p.dsn(""))
	tx1, err := c1.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx2, err := c2.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		tx pgx.Tx
		k  int64
	}{{tx1, 101}, {tx2, 102}, {tx1, 1}, {tx2, 2}} {
		if _, err := step.tx.Exec(ctx, `UPDATE kv SET n = n + 1 WHERE k = $1`, step.k); err != nil {
			t.Fatal(err)
		}
	}
	r1 := execAsync(ctx, tx1, `UPDATE kv SET n = n + 1 WHERE k = 2`)
	testutil.Until(t, 10*time.Second, "T1 to wait on s0", func() bool { return lockWaiters(t, ctx, direct[0]) == 1 })
	r2 := execAsync(ctx, tx2, `UPDATE kv SET n = n + 1 WHERE k = 1`)
	txs := []pgx.Tx{tx1, tx2}
	var victim int
	var res stmtResult
	select {
	case res = <-r1:
	case res = <-r2:
		victim = 1
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock on one shard not broken in 10 s")
	}
	if res.err == nil {
		// The victim's abort let the other finish at once: both answers
		// were ready and the other one was taken first.
		other := []<-chan stmtResult{r2, r1}[victim]
		select {
		case res = <-other:
			victim = 1 - victim
		case <-time.After(10 * time.Second):
			t.Fatal("the deadlock's victim got no answer in 10 s")
		}
		// The first answer (the survivor's) was consumed: hand it back
		// for the check below.
		done := make(chan stmtResult, 1)
		done <- stmtResult{}
		if victim == 0 {
			r2 = done
		} else {
			r1 = done
		}
	}
	var pe *pgconn.PgError
	if !errors.As(res.err, &pe) || pe.Code != wire.SQLStateDeadlockDetected || pe.Message != "deadlock detected" || !strings.Contains(pe.Detail, "Process") {
		t.Fatalf("T%d: %v, want PostgreSQL's own 40P01", victim+1, res.err)
	}
	if err := txs[victim].Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if res := <-[]<-chan stmtResult{r2, r1}[victim]; res.err != nil {
		t.Fatalf("the other statement: %v", res.err)
	}
	if err := txs[1-victim].Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(t, p, "pgshard_deadlocks_detected_total"); got != 0 {
		t.Fatalf("the proxy broke %d deadlocks, want 0 (PostgreSQL's)", got)
	}
}

// TestDeadlockAcrossShardsScatter: the victim's waiting statement is a
// read over both shards in its transaction (waiting on s0 for the other
// transaction's table lock): the cancel of its part on s0 reaches the
// client as 40P01 too, and the other transaction commits.
func TestDeadlockAcrossShardsScatter(t *testing.T) {
	ps, direct := dlShards(t, 1)
	ctx := ctxT(t)
	c1, c2 := connect(t, ps[0].dsn("")), connect(t, ps[0].dsn(""))
	tx1, err := c1.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx2, err := c2.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx1.Exec(ctx, `/* pgshard: shard=s0 */ LOCK TABLE kv IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx2.Exec(ctx, `UPDATE kv SET n = n + 10 WHERE k = 101`); err != nil {
		t.Fatal(err)
	}
	r1 := execAsync(ctx, tx1, `UPDATE kv SET n = n + 1 WHERE k = 101`)
	testutil.Until(t, 10*time.Second, "T1 to wait on s1", func() bool { return lockWaiters(t, ctx, direct[1]) == 1 })
	start := time.Now()
	r2 := execAsync(ctx, tx2, `SELECT count(*) FROM kv`)
	var res stmtResult
	select {
	case res = <-r2:
	case res = <-r1:
		t.Fatalf("T1's statement ended first (%v)", res.err)
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock not broken in 10 s")
	}
	var pe *pgconn.PgError
	if !errors.As(res.err, &pe) || pe.Code != wire.SQLStateDeadlockDetected || pe.Message != "deadlock detected across shards" {
		t.Fatalf("T2: %v, want 40P01 deadlock detected across shards", res.err)
	}
	if took := res.at.Sub(start); took > deadlockBound {
		t.Errorf("deadlock broken after %v, want within %v", took, deadlockBound)
	}
	if err := tx2.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if res := <-r1; res.err != nil {
		t.Fatalf("T1's statement: %v", res.err)
	}
	if err := tx1.Commit(ctx); err != nil {
		t.Fatalf("T1's commit: %v", err)
	}
	if a, b := balance(t, ctx, direct[0], 1), balance(t, ctx, direct[1], 101); a != 0 || b != 1 {
		t.Fatalf("after T1's commit: row 1 n=%d, row 101 n=%d; want 0, 1", a, b)
	}
	noPrepared(t, ctx, direct)
}

// TestDeadlockWatchEndsWithSession: a client that disconnects in the
// middle of a transaction over two shards leaves nothing in the deadlock
// detector's watch, also with transactions.deadlock_timeout negative
// (the detector never looks, so it never sweeps closed sessions itself).
func TestDeadlockWatchEndsWithSession(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := mapConfig(t, c.Shards[0], shardmaptest.KV([]int64{100}, c.Shards[0].Addr(), c.Shards[1].Addr()).YAML(t))
	cfg.Transactions.CrossShard = proxy.CrossShardTwoPhase
	cfg.Transactions.DeadlockTimeout = proxy.Duration(-time.Second)
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	createKV(t, ctx, c.Shards)
	conn := connect(t, p.dsn(""))
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []int{1, 101} {
		if _, err := tx.Exec(ctx, `INSERT INTO kv (k) VALUES ($1)`, k); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.srv.WatchedTransactions(); n != 1 {
		t.Fatalf("watched transactions in a transaction over two shards: %d, want 1", n)
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.srv.WatchedTransactions() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the closed session's transaction is still watched 10 s after it disconnected")
		}
		time.Sleep(20 * time.Millisecond) // polling the session's end
	}
}

// TestDeadlockAcrossShardsCopy: T1 updates row 1 on s0 (its transaction
// on one shard so far), T2 inserts row 103 on s1 and then waits for row 1
// on s0; T1's COPY FROM, with rows for both shards, waits on s1 for T2's
// row 103: a cycle through a COPY over several shards in a transaction.
// T1 (the younger: it spanned shards last) gets 40P01 from its COPY; T2
// then commits.
func TestDeadlockAcrossShardsCopy(t *testing.T) {
	ps, direct := dlShards(t, 1)
	ctx := ctxT(t)
	c1, c2 := connect(t, ps[0].dsn("")), connect(t, ps[0].dsn(""))
	tx1, err := c1.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx2, err := c2.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx1.Exec(ctx, `UPDATE kv SET n = n + 1 WHERE k = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx2.Exec(ctx, `INSERT INTO kv (k) VALUES (103)`); err != nil {
		t.Fatal(err)
	}
	// The statements' own context: a failure stops them before the
	// connections close.
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	r2 := execAsync(sctx, tx2, `UPDATE kv SET n = n + 10 WHERE k = 1`)
	testutil.Until(t, 10*time.Second, "T2 to wait on s0", func() bool { return lockWaiters(t, ctx, direct[0]) == 1 })
	r1 := make(chan stmtResult, 1)
	go func() {
		_, err := tx1.Conn().PgConn().CopyFrom(sctx, strings.NewReader("3\n103\n"), `COPY kv (k) FROM STDIN`)
		r1 <- stmtResult{err: err, at: time.Now()}
	}()
	var res stmtResult
	select {
	case res = <-r1:
	case res = <-r2:
		stop()
		<-r1
		t.Fatalf("T2's statement ended first (%v)", res.err)
	case <-time.After(10 * time.Second):
		stop()
		<-r1
		<-r2
		t.Fatal("deadlock not broken in 10 s")
	}
	var pe *pgconn.PgError
	if !errors.As(res.err, &pe) || pe.Code != wire.SQLStateDeadlockDetected {
		t.Fatalf("T1's COPY: %v, want 40P01 deadlock detected across shards", res.err)
	}
	if err := tx1.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if res := <-r2; res.err != nil {
		t.Fatalf("T2's statement: %v", res.err)
	}
	if err := tx2.Commit(ctx); err != nil {
		t.Fatalf("T2's commit: %v", err)
	}
	if a := balance(t, ctx, direct[0], 1); a != 10 {
		t.Fatalf("after T2's commit: row 1 n=%d, want 10", a)
	}
	noPrepared(t, ctx, direct)
}
