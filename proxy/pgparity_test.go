package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/proxy"
)

// bothModes runs f once per pool mode.
func bothModes(t *testing.T, f func(t *testing.T, mode proxy.PoolMode)) {
	for _, mode := range []proxy.PoolMode{proxy.PoolTransaction, proxy.PoolSession} {
		t.Run(string(mode), func(t *testing.T) { f(t, mode) })
	}
}

// runningLike counts the other sessions of c's server running a query
// whose text contains pattern.
func runningLike(t *testing.T, ctx context.Context, c *pgx.Conn, pattern string) int {
	t.Helper()
	var n int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE state = 'active' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0`, pattern).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCancelReachesEveryShard: a CancelRequest for a session running a
// statement over both shards (simple and, in transaction pooling,
// extended protocol) reaches both:
// the statement ends with 57014 long before it would have finished, no
// shard still runs it, and the session goes on.
func TestCancelReachesEveryShard(t *testing.T) {
	bothModes(t, func(t *testing.T, mode proxy.PoolMode) {
		p, direct, _ := kvShardsTr(t, func(cfg *proxy.Config) { cfg.PoolMode = mode })
		ctx := ctxT(t)
		// 1000 rows per shard at 4 ms each: about 4 s per shard.
		if _, err := direct[0].Exec(ctx, `INSERT INTO kv SELECT g, 'x' FROM generate_series(-999, 0) g`); err != nil {
			t.Fatal(err)
		}
		if _, err := direct[1].Exec(ctx, `INSERT INTO kv SELECT g, 'x' FROM generate_series(100, 1099) g`); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, sql string
			args      []any
		}{
			{"simple", `SELECT count(*) FROM kv WHERE pg_sleep(0.004) IS NOT NULL`, nil},
			{"extended", `SELECT count(*) FROM kv WHERE pg_sleep($1) IS NOT NULL`, []any{0.004}},
		} {
			if mode == proxy.PoolSession && tc.args != nil {
				// Describing the statement pins a session-pooled client to
				// the default shard (see README, Compatibility).
				continue
			}
			t.Run(tc.name, func(t *testing.T) {
				sess := connect(t, p.dsn(""))
				start := time.Now()
				res := runAsync(t, sess, tc.sql, tc.args...)
				pollFor(t, 10*time.Second, "the statement runs on both shards", func() bool {
					return runningLike(t, ctx, direct[0], "pg_sleep(") == 1 && runningLike(t, ctx, direct[1], "pg_sleep(") == 1
				})
				if err := sess.PgConn().CancelRequest(ctx); err != nil {
					t.Fatal(err)
				}
				r := await(t, res, 10*time.Second, "the cancelled statement")
				var pe *pgconn.PgError
				if !errors.As(r.err, &pe) || pe.Code != "57014" {
					t.Fatalf("cancelled statement: %v, want 57014", r.err)
				}
				took := time.Since(start)
				t.Logf("cancelled after %s", took.Round(time.Millisecond))
				if took > 3*time.Second {
					t.Fatalf("the statement ended after %s: the cancel did not stop it", took)
				}
				pollFor(t, 2*time.Second, "no shard runs the statement", func() bool {
					return runningLike(t, ctx, direct[0], "pg_sleep(") == 0 && runningLike(t, ctx, direct[1], "pg_sleep(") == 0
				})
				var n int
				if err := sess.QueryRow(ctx, `SELECT count(*) FROM kv`, pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 2000 {
					t.Fatalf("next statement: %d %v", n, err)
				}
			})
		}
	})
}

// TestMultiStatementOnOneShard: a query string of several statements
// (psycopg2's execute_batch) runs on the one shard all of them are for,
// with the statements that name no table; statements for two shards are
// refused before any runs.
func TestMultiStatementOnOneShard(t *testing.T) {
	bothModes(t, func(t *testing.T, mode proxy.PoolMode) {
		p, direct, _ := kvShardsTr(t, func(cfg *proxy.Config) { cfg.PoolMode = mode })
		ctx := ctxT(t)
		c := connect(t, p.dsn(""))
		res, err := c.PgConn().Exec(ctx, `INSERT INTO kv (k, v) VALUES (150, 'a');SELECT 1;INSERT INTO kv (k, v) VALUES (151, 'b');UPDATE kv SET v = 'c' WHERE k = 150`).ReadAll()
		if err != nil || len(res) != 4 || res[3].CommandTag.String() != "UPDATE 1" {
			t.Fatalf("one-shard batch: %v %v", res, err)
		}
		if !rowOn(t, direct[1], 150) || !rowOn(t, direct[1], 151) || rowOn(t, direct[0], 150) {
			t.Fatal("the batch's rows are not on shard s1 only")
		}
		c2 := connect(t, p.dsn(""))
		_, err = c2.PgConn().Exec(ctx, `INSERT INTO kv (k, v) VALUES (5, 'a');INSERT INTO kv (k, v) VALUES (152, 'b')`).ReadAll()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "0A000" {
			t.Fatalf("batch over two shards: %v, want 0A000", err)
		}
		if rowOn(t, direct[0], 5) || rowOn(t, direct[1], 152) {
			t.Fatal("a statement of the refused batch ran")
		}
	})
}

// TestBadStartupOptions: a startup parameter the server refuses (given
// directly or with -c in options) refuses the connection with the
// server's own FATAL error, as PostgreSQL does; good ones connect and
// apply.
func TestBadStartupOptions(t *testing.T) {
	bothModes(t, func(t *testing.T, mode proxy.PoolMode) {
		p, _, _ := kvShardsTr(t, func(cfg *proxy.Config) { cfg.PoolMode = mode })
		ctx := ctxT(t)
		for _, tc := range []struct{ extra, code string }{
			{"options=-c%20no_such_setting%3D1", "42704"},
			{"options=-c%20work_mem%3Dnotanumber", "22023"},
			{"work_mem=notanumber", "22023"},
		} {
			for round := 0; round < 2; round++ { // also once the good sets are remembered
				c, err := pgconn.Connect(ctx, p.dsn(tc.extra))
				if err == nil {
					_ = c.Close(ctx)
					t.Fatalf("%s: connected, want FATAL %s", tc.extra, tc.code)
				}
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || pe.Code != tc.code || pe.Severity != "FATAL" {
					t.Fatalf("%s: %v, want FATAL %s", tc.extra, err, tc.code)
				}
			}
		}
		for round := 0; round < 2; round++ {
			c := connect(t, p.dsn("options=-c%20work_mem%3D3MB"))
			var v string
			if err := c.QueryRow(ctx, `SHOW work_mem`).Scan(&v); err != nil || v != "3MB" {
				t.Fatalf("work_mem %q %v", v, err)
			}
		}
	})
}

// TestDeferredSavepoints: SAVEPOINT, RELEASE, ROLLBACK TO and SET LOCAL
// before a transaction's first statement that picks a shard (pgjdbc's
// autosave=always) are answered as PostgreSQL answers them, errors
// included, and follow the BEGIN to the shard of that statement, through
// the simple and the extended protocol: the transcripts through the
// proxy are those of a direct connection to the shard. (Transaction
// pooling: in session pooling a session stays on one shard.)
func TestDeferredSavepoints(t *testing.T) {
	p, direct, _ := kvShardsTr(t)
	ctx := ctxT(t)
	ins := func(k int) string { return fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, 'sp')", k) }
	sel := func(k int) string { return fmt.Sprintf("SELECT v FROM kv WHERE k = %d", k) }
	wm := func(k int) string {
		return fmt.Sprintf("SELECT v, current_setting('work_mem'), current_setting('statement_timeout') FROM kv WHERE k = %d", k)
	}
	type step struct {
		n    int
		msgs []pgproto3.FrontendMessage
	}
	simple := func(sqls ...string) []step {
		var out []step
		for _, s := range sqls {
			out = append(out, step{1, msgs(q(s))})
		}
		return out
	}
	cases := []struct {
		name  string
		steps func(k int) []step
	}{
		{"released and missing", func(k int) []step {
			return simple("BEGIN", "SAVEPOINT a", "SAVEPOINT B", "savepoint b", "RELEASE a", "ROLLBACK TO b", "SELECT 1", "SAVEPOINT c", "RELEASE SAVEPOINT a", "ROLLBACK TO a", "ROLLBACK")
		}},
		{"failed then rolled back to", func(k int) []step {
			return simple("BEGIN", "SAVEPOINT a", "RELEASE nosuch", "SAVEPOINT c", "ROLLBACK TO SAVEPOINT a", ins(k), "ROLLBACK TO a", ins(k+1), sel(k), sel(k+1), "COMMIT")
		}},
		{"nested, then another shard than the default", func(k int) []step {
			return simple("BEGIN", "SAVEPOINT a", "SAVEPOINT b", "ROLLBACK TO a", ins(k+2), "RELEASE b", "ROLLBACK TO a", "RELEASE a", sel(k+2), "COMMIT")
		}},
		{"extended, one Sync", func(k int) []step {
			return []step{
				{1, msgs(ext("BEGIN"), ext("SAVEPOINT pgjdbc_autosave"), ext(ins(k+3)), ext("RELEASE SAVEPOINT pgjdbc_autosave"), ext("SAVEPOINT pgjdbc_autosave"), ext(sel(k+3)), &pgproto3.Sync{})},
				{1, msgs(ext("ROLLBACK TO SAVEPOINT pgjdbc_autosave"), ext("COMMIT"), &pgproto3.Sync{})},
			}
		}},
		{"SET LOCAL, rolled back to a savepoint and released", func(k int) []step {
			return simple("BEGIN", "SET LOCAL work_mem = '3MB'", "SAVEPOINT a", "SET LOCAL work_mem = '5MB'", "ROLLBACK TO a",
				"SAVEPOINT b", "SET LOCAL statement_timeout = '7s'", "RELEASE b", ins(k), wm(k), "COMMIT", wm(k))
		}},
		{"SET LOCAL errors", func(k int) []step {
			return simple("BEGIN", "SET LOCAL work_mem = 'notanumber'", wm(k), "ROLLBACK",
				"BEGIN", "SAVEPOINT a", "SET LOCAL no_such_setting = 1", "SET LOCAL work_mem = '3MB'", "ROLLBACK TO a", "SET LOCAL work_mem = '2MB'", ins(k+1), wm(k+1), "ROLLBACK")
		}},
		{"extended, SET LOCAL", func(k int) []step {
			return []step{
				{1, msgs(ext("BEGIN"), ext("SET LOCAL work_mem = '6MB'"), ext("SAVEPOINT x"), ext(ins(k+2)), ext(wm(k+2)), &pgproto3.Sync{})},
				{1, msgs(ext("COMMIT"), &pgproto3.Sync{})},
			}
		}},
		{"extended, errors", func(k int) []step {
			return []step{
				{1, msgs(ext("BEGIN"), ext("SAVEPOINT s1"), ext("ROLLBACK TO nosuch"), ext(sel(k)), &pgproto3.Sync{})},
				{1, msgs(ext("ROLLBACK TO s1"), ext(sel(k+4)), &pgproto3.Sync{})},
				{1, msgs(ext("ROLLBACK"), &pgproto3.Sync{})},
			}
		}},
	}
	run := func(w *wireSession, steps []step) []string {
		var out []string
		for _, st := range steps {
			out = append(out, w.send(st.n, st.msgs...)...)
		}
		return out
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Keys on shard s1 (k >= 100): the direct session's and the
			// proxy's rows do not collide.
			kd, kp := 1000+10*i, 2000+10*i
			want := run(openWire(t, ctx, direct[1].Config().ConnString()), tc.steps(kd))
			got := run(openWire(t, ctx, p.dsn("")), tc.steps(kp))
			if !slices.Equal(got, want) {
				t.Fatalf("through the proxy:\n got  %q\n want %q (PostgreSQL)", got, want)
			}
			for j := 0; j < 5; j++ {
				if rowOn(t, direct[0], kp+j) || rowOn(t, direct[1], kp+j) != rowOn(t, direct[1], kd+j) {
					t.Fatalf("row %d: where it landed differs from PostgreSQL's", kp+j)
				}
			}
		})
	}
}
