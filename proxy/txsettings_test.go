package proxy_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// settingOn returns current_setting(name, true) (NULL as "") as a
// statement on the shard of key k sees it.
func settingOn(t *testing.T, ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, name string, k int64) string {
	t.Helper()
	var v string
	if err := q.QueryRow(ctx, `SELECT coalesce(current_setting($2, true), '') FROM kv WHERE k = $1`, k, name).Scan(&v); err != nil {
		t.Fatalf("%s on the shard of %d: %v", name, k, err)
	}
	return v
}

// settingsOver reads settings a and b over both shards (keys 10 and
// 110) in one statement: "10:a,b 110:a,b".
func settingsOver(t *testing.T, ctx context.Context, tx pgx.Tx, a, b string) string {
	t.Helper()
	rows, err := tx.Query(ctx, `SELECT k::text || ':' || setting($1) || ',' || setting($2) FROM kv WHERE k IN (10, 110) ORDER BY k`, a, b)
	if err != nil {
		t.Fatalf("read over both shards: %v", err)
	}
	vals, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("read over both shards: %v", err)
	}
	return strings.Join(vals, " ")
}

// dtxTagged counts the backends of a shard tagged by the deadlock
// detector (application_name 'pgshard dtx ...').
func dtxTagged(t *testing.T, ctx context.Context, direct *pgx.Conn) int64 {
	t.Helper()
	return scalar(t, ctx, direct, `SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgshard dtx %'`)
}

// TestTxOverShardsSettings: a SET, SET LOCAL or set_config inside a
// transaction over several shards counts on every shard, as on one
// server: on a shard the transaction reaches later (switch, and a
// statement over several shards), and on a shard it reached before
// (replayed when it comes back). SET LOCAL and set_config(..., true)
// revert at the end on every shard; SET stays after COMMIT and reverts
// after ROLLBACK. A client's SET application_name does not leave a
// participant without the deadlock detector's tag.
func TestTxOverShardsSettings(t *testing.T) {
	p, direct, _ := txShards(t)
	ctx := ctxT(t)
	for i, keys := range []string{"(10, 1), (11, 1)", "(110, 1), (111, 1)"} {
		if _, err := direct[i].Exec(ctx, `INSERT INTO kv (k, n) VALUES `+keys); err != nil {
			t.Fatal(err)
		}
		// What a statement over several shards reads of a setting (the
		// proxy refuses current_setting() itself there).
		if _, err := direct[i].Exec(ctx, `CREATE FUNCTION setting(name text) RETURNS text STABLE LANGUAGE sql AS $$ SELECT coalesce(current_setting(name, true), '') $$`); err != nil {
			t.Fatal(err)
		}
	}
	for _, mode := range []string{"simple_protocol", "cache_statement"} {
		t.Run(mode, func(t *testing.T) {
			conn := connect(t, p.dsn("default_query_exec_mode="+mode))
			exec := func(q pgx.Tx, sql string) {
				t.Helper()
				if _, err := q.Exec(ctx, sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			exec(tx, `UPDATE kv SET n = n + 1 WHERE k = 10`) // on s0
			exec(tx, `SET app.sess = 'S'`)
			exec(tx, `SET LOCAL app.loc = 'L'`)
			exec(tx, `SET application_name = 'client-app'`)
			// s1 joins the transaction after the changes.
			if got := settingOn(t, ctx, tx, "app.sess", 110); got != "S" {
				t.Fatalf("SET on s0, read on s1 in the transaction: %q, want S", got)
			}
			if got := settingOn(t, ctx, tx, "app.loc", 110); got != "L" {
				t.Fatalf("SET LOCAL on s0, read on s1 in the transaction: %q, want L", got)
			}
			// A change on s1 reaches s0, which the transaction left.
			exec(tx, `SELECT set_config('app.cfg', 'C', true)`)
			exec(tx, `SET application_name = 'client-app2'`)
			if got := settingOn(t, ctx, tx, "app.cfg", 10); got != "C" {
				t.Fatalf("set_config on s1, read on s0 in the transaction: %q, want C", got)
			}
			// Both participants carry the detector's tag, the client's
			// application_name changes notwithstanding.
			for i := range direct {
				if n := dtxTagged(t, ctx, direct[i]); n != 1 {
					t.Fatalf("shard s%d: %d backends tagged for the deadlock detector, want 1", i, n)
				}
			}
			// A statement over both shards sees the changes everywhere.
			if got := settingsOver(t, ctx, tx, "app.cfg", "app.loc"); got != "10:C,L 110:C,L" {
				t.Fatalf("read over both shards: %q, want 10:C,L 110:C,L", got)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatalf("commit: %v", err)
			}
			for _, k := range []int64{10, 110} {
				for name, want := range map[string]string{"app.sess": "S", "app.loc": "", "app.cfg": "", "application_name": "client-app2"} {
					if got := settingOn(t, ctx, conn, name, k); got != want {
						t.Fatalf("after COMMIT, %s on the shard of %d: %q, want %q", name, k, got, want)
					}
				}
			}

			// ROLLBACK undoes a SET on every shard; a statement over
			// several shards that opens the transaction on s1 gets the
			// changes made on s0 before it.
			tx, err = conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			exec(tx, `UPDATE kv SET n = n + 1 WHERE k = 11`) // on s0
			exec(tx, `SET app.sess = 'R'`)
			if got := settingsOver(t, ctx, tx, "app.sess", "app.loc"); got != "10:R, 110:R," {
				t.Fatalf("read over both shards opening s1: %q, want 10:R, 110:R,", got)
			}
			if got := settingOn(t, ctx, tx, "app.sess", 111); got != "R" {
				t.Fatalf("SET on s0, read on s1: %q, want R", got)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			for _, k := range []int64{10, 110} {
				if got := settingOn(t, ctx, conn, "app.sess", k); got != "S" {
					t.Fatalf("after ROLLBACK, app.sess on the shard of %d: %q, want S", k, got)
				}
			}
			noPrepared(t, ctx, direct)
		})
	}
}
