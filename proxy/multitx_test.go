package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/replication/twophase"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// txShards starts two shards (kv split at key 100), each with the kv
// table (with a balance column n) and the two-phase decision table, and
// a proxy with transactions.cross_shard: two_phase. It returns the proxy
// and superuser connections to each shard.
func txShards(t testing.TB) (*testProxy, [2]*pgx.Conn, *pgcluster.Cluster) {
	t.Helper()
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := mapConfig(t, c.Shards[0], shardmaptest.KV([]int64{100}, c.Shards[0].Addr(), c.Shards[1].Addr()).YAML(t))
	cfg.Transactions.CrossShard = proxy.CrossShardTwoPhase
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	var direct [2]*pgx.Conn
	for i, srv := range c.Shards {
		direct[i] = connect(t, srv.SuperDSN("postgres"))
		if _, err := direct[i].Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text, n bigint NOT NULL DEFAULT 0)`); err != nil {
			t.Fatal(err)
		}
		if _, err := direct[i].Exec(ctx, twophase.SchemaSQL); err != nil {
			t.Fatal(err)
		}
	}
	return p, direct, c
}

// balance returns n of key k on the shard of direct.
func balance(t *testing.T, ctx context.Context, direct *pgx.Conn, k int64) int64 {
	t.Helper()
	var n int64
	if err := direct.QueryRow(ctx, `SELECT n FROM kv WHERE k = $1`, k).Scan(&n); err != nil {
		t.Fatalf("balance of %d: %v", k, err)
	}
	return n
}

// scalar returns the int64 that query returns on c.
func scalar(t *testing.T, ctx context.Context, c *pgx.Conn, query string) int64 {
	t.Helper()
	var n int64
	if err := c.QueryRow(ctx, query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// noPrepared fails the test when a shard holds a prepared transaction.
func noPrepared(t *testing.T, ctx context.Context, direct [2]*pgx.Conn) {
	t.Helper()
	for i, d := range direct {
		if n := scalar(t, ctx, d, `SELECT count(*) FROM pg_prepared_xacts`); n != 0 {
			t.Fatalf("shard s%d holds %d prepared transactions", i, n)
		}
	}
}

// TestTxOverShardsTransfer moves money between an account on each shard
// inside one transaction, through the simple and the extended protocol:
// the commit is atomic (two-phase: a commit record on the first writer's
// shard, no prepared transaction left), a read over both shards inside
// the transaction sees its own writes, another session sees nothing
// before the commit, and ROLLBACK undoes both shards.
func TestTxOverShardsTransfer(t *testing.T) {
	p, direct, _ := txShards(t)
	ctx := ctxT(t)
	other := connect(t, p.dsn(""))
	defer func() {
		// Three two-phase commits, one per protocol mode.
		if got := grepLines(scrape(t, p), `pgshard_twophase_commits_total{outcome="committed"}`); !t.Failed() && got != `pgshard_twophase_commits_total{outcome="committed"} 3` {
			t.Errorf("metrics: %q, want 3 committed", got)
		}
	}()
	for mi, mode := range []string{"simple_protocol", "cache_statement", "exec"} {
		t.Run(mode, func(t *testing.T) {
			a, b := int64(10+mi), int64(110+mi) // s0, s1
			if _, err := direct[0].Exec(ctx, `INSERT INTO kv (k, v, n) VALUES ($1, 'acct', 100)`, a); err != nil {
				t.Fatal(err)
			}
			if _, err := direct[1].Exec(ctx, `INSERT INTO kv (k, v, n) VALUES ($1, 'acct', 100)`, b); err != nil {
				t.Fatal(err)
			}
			records := scalar(t, ctx, direct[0], `SELECT count(*) FROM pgshard.commit_decisions`)
			conn := connect(t, p.dsn("default_query_exec_mode="+mode))
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `UPDATE kv SET n = n - 30, v = $2 WHERE k = $1`, a, "moved-"+mode); err != nil {
				t.Fatalf("debit on s0: %v", err)
			}
			if _, err := tx.Exec(ctx, `UPDATE kv SET n = n + 30, v = $2 WHERE k = $1`, b, "moved-"+mode); err != nil {
				t.Fatalf("credit on s1: %v", err)
			}
			// A read over both shards inside the transaction sees its writes.
			var moved, sum int64
			if err := tx.QueryRow(ctx, `SELECT count(*), sum(n) FROM kv WHERE v = $1`, "moved-"+mode).Scan(&moved, &sum); err != nil {
				t.Fatalf("read over both shards in the transaction: %v", err)
			}
			if moved != 2 || sum != 200 {
				t.Fatalf("read over both shards in the transaction: %d rows, sum %d; want 2, 200", moved, sum)
			}
			// Back on the first shard: its transaction is still open.
			var n int64
			if err := tx.QueryRow(ctx, `SELECT n FROM kv WHERE k = $1`, a).Scan(&n); err != nil || n != 70 {
				t.Fatalf("read of s0 in the transaction: %d %v, want 70", n, err)
			}
			// Nobody else sees anything yet.
			var seen int64
			if err := other.QueryRow(ctx, `SELECT count(*) FROM kv WHERE v = $1`, "moved-"+mode).Scan(&seen); err != nil || seen != 0 {
				t.Fatalf("another session sees %d moved rows before the commit (%v)", seen, err)
			}
			if mode == "exec" {
				// COMMIT through the extended protocol.
				if _, err := conn.PgConn().ExecParams(ctx, "COMMIT", nil, nil, nil, nil).Close(); err != nil {
					t.Fatalf("commit (extended protocol): %v", err)
				}
			} else if err := tx.Commit(ctx); err != nil {
				t.Fatalf("commit: %v", err)
			}
			if got := conn.PgConn().TxStatus(); got != 'I' {
				t.Fatalf("status after COMMIT %q, want I", got)
			}
			if x, y := balance(t, ctx, direct[0], a), balance(t, ctx, direct[1], b); x != 70 || y != 130 {
				t.Fatalf("after the commit: s0 %d, s1 %d; want 70, 130", x, y)
			}
			if got := scalar(t, ctx, direct[0], `SELECT count(*) FROM pgshard.commit_decisions`); got != records+1 {
				t.Fatalf("commit records on s0: %d, want %d (two-phase commit, decided on the first writer)", got, records+1)
			}
			noPrepared(t, ctx, direct)

			// ROLLBACK undoes both shards.
			tx, err = conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []int64{a, b} {
				if _, err := tx.Exec(ctx, `UPDATE kv SET n = 0 WHERE k = $1`, k); err != nil {
					t.Fatal(err)
				}
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if x, y := balance(t, ctx, direct[0], a), balance(t, ctx, direct[1], b); x != 70 || y != 130 {
				t.Fatalf("after ROLLBACK: s0 %d, s1 %d; want 70, 130", x, y)
			}
			noPrepared(t, ctx, direct)
			// The session goes on outside a transaction.
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM kv WHERE v = $1`, "moved-"+mode).Scan(&moved); err != nil || moved != 2 {
				t.Fatalf("after the transactions: %d %v", moved, err)
			}
		})
	}
}

// TestTxOverShardsBeginOptions: the transaction's BEGIN options reach
// every shard it touches (REPEATABLE READ on the second shard too), and a
// read over several shards may be its first statement.
func TestTxOverShardsBeginOptions(t *testing.T) {
	p, direct, _ := txShards(t)
	ctx := ctxT(t)
	for i, keys := range []string{"(1, 1), (2, 1)", "(101, 1), (102, 1)"} {
		if _, err := direct[i].Exec(ctx, `INSERT INTO kv (k, n) VALUES `+keys); err != nil {
			t.Fatal(err)
		}
	}
	for _, mode := range []string{"simple_protocol", "cache_statement"} {
		conn := connect(t, p.dsn("default_query_exec_mode="+mode))
		tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM kv`).Scan(&n); err != nil || n != 4 {
			t.Fatalf("%s: first statement over both shards: %d %v", mode, n, err)
		}
		// Another session's commit on s1 is not seen: s1's snapshot was
		// taken by the read above.
		if _, err := direct[1].Exec(ctx, `UPDATE kv SET n = 5 WHERE k = 101`); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `UPDATE kv SET n = n + 10 WHERE k = $1`, int64(1)); err != nil {
			t.Fatalf("%s: update on s0: %v", mode, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE kv SET n = n + 10 WHERE k = $1`, int64(101)); pgCode(err) != "40001" {
			t.Fatalf("%s: update of a row changed since the snapshot of s1: %v, want 40001 (REPEATABLE READ there)", mode, err)
		}
		if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
			t.Fatalf("%s: commit after a serialization failure: %v, want ROLLBACK", mode, err)
		}
		if got := balance(t, ctx, direct[0], 1); got != 1 {
			t.Fatalf("%s: s0 balance %d, want 1 (rolled back)", mode, got)
		}
		if _, err := direct[1].Exec(ctx, `UPDATE kv SET n = 1 WHERE k = 101`); err != nil {
			t.Fatal(err)
		}
		noPrepared(t, ctx, direct)

		// Opened on s0 by its first statement, then on s1 by a switch.
		tx, err = conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []int64{1, 101} {
			var iso, ro string
			if err := tx.QueryRow(ctx, `SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only') FROM kv WHERE k = $1`, k).Scan(&iso, &ro); err != nil || iso != "repeatable read" || ro != "on" {
				t.Fatalf("%s: transaction on the shard of %d: %q read only %q, %v; want repeatable read, on", mode, k, iso, ro, err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatalf("%s: commit of a read-only transaction over two shards: %v", mode, err)
		}
	}
}

// TestTxOverShardsPrepareFails: a deferred unique constraint that fails
// at PREPARE TRANSACTION on one shard rolls back both shards, and the
// client gets the server's error (23505); an error on one shard fails the
// transaction (25P02 for the next statement on the other shard, COMMIT
// answered ROLLBACK); a writer on one shard that read on the other
// commits in one phase (no commit record).
func TestTxOverShardsPrepareFails(t *testing.T) {
	p, direct, _ := txShards(t)
	ctx := ctxT(t)
	if _, err := direct[1].Exec(ctx, `ALTER TABLE kv ADD CONSTRAINT kv_v_key UNIQUE (v) DEFERRABLE INITIALLY DEFERRED`); err != nil {
		t.Fatal(err)
	}
	if _, err := direct[0].Exec(ctx, `INSERT INTO kv (k, v, n) VALUES (1, 'a', 100)`); err != nil {
		t.Fatal(err)
	}
	if _, err := direct[1].Exec(ctx, `INSERT INTO kv (k, v, n) VALUES (101, 'dup', 100)`); err != nil {
		t.Fatal(err)
	}
	for mi, mode := range []string{"simple_protocol", "cache_statement"} {
		conn := connect(t, p.dsn("default_query_exec_mode="+mode))
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `UPDATE kv SET n = n - 10 WHERE k = $1`, int64(1)); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO kv (k, v, n) VALUES ($1, 'dup', 10)`, int64(102)); err != nil {
			t.Fatalf("%s: insert (deferred check): %v", mode, err)
		}
		err = tx.Commit(ctx)
		if pgCode(err) != "23505" {
			t.Fatalf("%s: commit with a deferred unique violation: %v, want 23505", mode, err)
		}
		if n := balance(t, ctx, direct[0], 1); n != 100 {
			t.Fatalf("%s: s0 balance %d after the failed commit, want 100", mode, n)
		}
		if n := scalar(t, ctx, direct[1], `SELECT count(*) FROM kv WHERE k = 102`); n != 0 {
			t.Fatalf("%s: the insert on s1 is there after the failed commit", mode)
		}
		noPrepared(t, ctx, direct)
		if got := grepLines(scrape(t, p), `pgshard_twophase_commits_total{outcome="aborted"}`); got != fmt.Sprintf(`pgshard_twophase_commits_total{outcome="aborted"} %d`, mi+1) {
			t.Fatalf("%s: metrics %q, want an aborted two-phase commit", mode, got)
		}
		var one int
		if err := conn.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil || conn.PgConn().TxStatus() != 'I' {
			t.Fatalf("%s: session after the failed commit: %v, status %q", mode, err, conn.PgConn().TxStatus())
		}

		// An error on one shard fails the whole transaction.
		tx, err = conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `UPDATE kv SET n = n - 10 WHERE k = $1`, int64(1)); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `UPDATE kv SET n = n / 0 WHERE k = $1`, int64(101)); pgCode(err) != "22012" {
			t.Fatalf("%s: division by zero on s1: %v", mode, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE kv SET n = n - 10 WHERE k = $1`, int64(1)); pgCode(err) != "25P02" {
			t.Fatalf("%s: statement for s0 after an error on s1: %v, want 25P02", mode, err)
		}
		if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
			t.Fatalf("%s: COMMIT of a failed transaction: %v, want ROLLBACK", mode, err)
		}
		if n := balance(t, ctx, direct[0], 1); n != 100 {
			t.Fatalf("%s: s0 balance %d after the failed transaction, want 100", mode, n)
		}
		noPrepared(t, ctx, direct)
	}

	// Written on s0, read on s1: one phase.
	records := scalar(t, ctx, direct[0], `SELECT count(*) FROM pgshard.commit_decisions`) +
		scalar(t, ctx, direct[1], `SELECT count(*) FROM pgshard.commit_decisions`)
	conn := connect(t, p.dsn(""))
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := tx.QueryRow(ctx, `SELECT n FROM kv WHERE k = $1`, int64(101)).Scan(&n); err != nil || n != 100 {
		t.Fatalf("read on s1: %d %v", n, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE kv SET n = n + $2 WHERE k = $1`, int64(1), n); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := balance(t, ctx, direct[0], 1); got != 200 {
		t.Fatalf("s0 balance %d, want 200", got)
	}
	if got := scalar(t, ctx, direct[0], `SELECT count(*) FROM pgshard.commit_decisions`) +
		scalar(t, ctx, direct[1], `SELECT count(*) FROM pgshard.commit_decisions`); got != records {
		t.Fatalf("a transaction that wrote on one shard left a commit record (%d, was %d)", got, records)
	}

	// A failed read over both shards fails the transaction; a split
	// INSERT runs in the transaction (rolled back, then committed).
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO kv (k, n) VALUES (5, 1), (105, 1)`); err != nil {
		t.Fatalf("split INSERT in a transaction: %v", err)
	}
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM kv WHERE 1 / (k - 101) > 0`).Scan(&n); pgCode(err) != "22012" {
		t.Fatalf("failing read over both shards: %v, want 22012", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE kv SET n = 0 WHERE k = $1`, int64(1)); pgCode(err) != "25P02" {
		t.Fatalf("statement after a failed read over both shards: %v, want 25P02", err)
	}
	if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Fatalf("COMMIT after a failed read over both shards: %v, want ROLLBACK", err)
	}
	for i, k := range []int64{5, 105} {
		if got := scalar(t, ctx, direct[i], fmt.Sprintf(`SELECT count(*) FROM kv WHERE k = %d`, k)); got != 0 {
			t.Fatalf("row %d of a rolled-back split INSERT is on s%d", k, i)
		}
	}
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO kv (k, n) VALUES (5, 1), (105, 1)`); err != nil {
		t.Fatalf("split INSERT in a transaction: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit of a split INSERT in a transaction: %v", err)
	}
	for i, k := range []int64{5, 105} {
		if got := scalar(t, ctx, direct[i], fmt.Sprintf(`SELECT count(*) FROM kv WHERE k = %d`, k)); got != 1 {
			t.Fatalf("row %d of a committed split INSERT is not on s%d", k, i)
		}
	}
	noPrepared(t, ctx, direct)

	// Savepoints stay on one shard.
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE kv SET n = n WHERE k = $1`, int64(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE kv SET n = n WHERE k = $1`, int64(101)); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SAVEPOINT sp`); pgCode(err) != "0A000" || !strings.Contains(err.Error(), "savepoint") {
		t.Fatalf("savepoint in a transaction over two shards: %v, want 0A000", err)
	}
	_ = tx.Rollback(ctx)
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE kv SET n = n WHERE k = $1`, int64(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SAVEPOINT sp`); err != nil {
		t.Fatalf("savepoint in a transaction on one shard: %v", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE kv SET n = n WHERE k = $1`, int64(101)); pgCode(err) != "0A000" || !strings.Contains(err.Error(), "savepoint") {
		t.Fatalf("another shard after a savepoint: %v, want 0A000", err)
	}
	_ = tx.Rollback(ctx)
	noPrepared(t, ctx, direct)
}

// TestTxOverShardsOff: with transactions.cross_shard at its default
// (refuse), a statement for another shard in a transaction is refused
// with 0A000, as before.
func TestTxOverShardsOff(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	p := startProxy(t, cfg)
	if cfg.Transactions.CrossShard != proxy.CrossShardRefuse {
		t.Fatalf("default transactions.cross_shard %q, want refuse", cfg.Transactions.CrossShard)
	}
	ctx := ctxT(t)
	for _, srv := range c.Shards {
		if err := srv.Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text)`); err != nil {
			t.Fatal(err)
		}
	}
	for _, mode := range []string{"simple_protocol", "cache_statement"} {
		conn := connect(t, p.dsn("default_query_exec_mode="+mode))
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO kv VALUES ($1, 'x')`, int64(1)); err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO kv VALUES ($1, 'x')`, int64(101))
		if pgCode(err) != "0A000" {
			t.Fatalf("%s: statement for another shard: %v, want 0A000", mode, err)
		}
		var n int64
		err = tx.QueryRow(ctx, `SELECT count(*) FROM kv`).Scan(&n)
		if pgCode(err) != "25P02" && pgCode(err) != "0A000" {
			t.Fatalf("%s: read over both shards after the refusal: %v", mode, err)
		}
		_ = tx.Rollback(ctx)
	}
}

// BenchmarkTxOverShards: a transfer (two UPDATEs and COMMIT) between two
// accounts on one shard, and between accounts on two shards (two-phase
// commit), through the proxy in the same run.
func BenchmarkTxOverShards(b *testing.B) {
	p, direct, _ := txShards(b)
	ctx := context.Background()
	for i, keys := range []string{"(1, 1000000), (2, 1000000)", "(101, 1000000)"} {
		if _, err := direct[i].Exec(ctx, `INSERT INTO kv (k, n) VALUES `+keys); err != nil {
			b.Fatal(err)
		}
	}
	conn := connect(b, p.dsn(""))
	for _, c := range []struct {
		name     string
		from, to int64
	}{{"one_shard", 1, 2}, {"two_shards", 1, 101}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `UPDATE kv SET n = n - 1 WHERE k = $1`, c.from); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, `UPDATE kv SET n = n + 1 WHERE k = $1`, c.to)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
