package proxy_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
