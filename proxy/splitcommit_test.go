package proxy_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/replication/twophase"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// splitShards starts two shards (kv split at key 100) with the kv table
// and the two-phase decision table; on s1 only, kv.v is UNIQUE
// DEFERRABLE INITIALLY DEFERRED and holds 'taken': a write of v 'taken'
// there fails at COMMIT (or PREPARE), not at the statement. It returns a
// function starting a proxy over them (with broadcast_writes: allow and
// a second user, solo, with cross_shard_writes: refuse) and superuser
// connections to each shard.
func splitShards(t *testing.T) (func(crossShard string) *testProxy, [2]*pgx.Conn) {
	t.Helper()
	c := integration.NewCluster(t, integration.Shards(2))
	ctx := ctxT(t)
	var direct [2]*pgx.Conn
	for i, srv := range c.Shards {
		direct[i] = connect(t, srv.SuperDSN("postgres"))
		for _, q := range []string{`CREATE TABLE kv (k bigint PRIMARY KEY, v text, n bigint NOT NULL DEFAULT 0)`, twophase.SchemaSQL} {
			if _, err := direct[i].Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, q := range []string{`ALTER TABLE kv ADD CONSTRAINT kv_v_deferred UNIQUE (v) DEFERRABLE INITIALLY DEFERRED`,
		`INSERT INTO kv (k, v) VALUES (199, 'taken')`} {
		if _, err := direct[1].Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	mapYAML := shardmaptest.KV([]int64{100}, c.Shards[0].Addr(), c.Shards[1].Addr()).YAML(t)
	start := func(crossShard string) *testProxy {
		cfg := mapConfig(t, c.Shards[0], mapYAML)
		cfg.Transactions.CrossShard = crossShard
		cfg.BroadcastWrites = "allow"
		cfg.Users = append(cfg.Users, proxy.UserConfig{Name: "solo", Password: cfg.Users[0].Password, CrossShardWrites: proxy.CrossShardWritesRefuse})
		return startProxy(t, cfg)
	}
	return start, direct
}

// keysOn returns the number of rows of kv with a key in keys on the
// shard of direct.
func keysOn(t *testing.T, ctx context.Context, direct *pgx.Conn, keys ...int64) int64 {
	t.Helper()
	var n int64
	if err := direct.QueryRow(ctx, `SELECT count(*) FROM kv WHERE k = ANY($1)`, keys).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// hasColumn reports whether kv has column col on the shard of direct.
func hasColumn(t *testing.T, ctx context.Context, direct *pgx.Conn, col string) bool {
	t.Helper()
	var n int64
	if err := direct.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'kv' AND column_name = $1`, col).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// TestSplitWritesTwoPhase: with transactions.cross_shard: two_phase, an
// autocommit statement that writes on both shards — a split multi-row
// INSERT (simple and extended protocol), UPDATE without a key, COPY FROM,
// DDL — commits through the two-phase coordinator: a failure on s1 at
// commit time (a deferred constraint, checked at PREPARE) leaves nothing
// on s0, and the success paths commit on both shards with one commit
// record. With refuse, the same statements commit shard by shard: s0
// keeps its part (the documented "committed on some shards").
func TestSplitWritesTwoPhase(t *testing.T) {
	start, direct := splitShards(t)
	ctx := ctxT(t)
	tp := start(proxy.CrossShardTwoPhase)
	records := func() int64 {
		return scalar(t, ctx, direct[0], `SELECT count(*) FROM pgshard.commit_decisions`) +
			scalar(t, ctx, direct[1], `SELECT count(*) FROM pgshard.commit_decisions`)
	}
	reset := func(t *testing.T) {
		t.Helper()
		for _, d := range direct {
			if _, err := d.Exec(ctx, `DELETE FROM kv WHERE k <> 199`); err != nil {
				t.Fatal(err)
			}
		}
	}

	for _, mode := range []string{"simple_protocol", "cache_statement"} {
		t.Run("insert/"+mode, func(t *testing.T) {
			reset(t)
			conn := connect(t, tp.dsn("default_query_exec_mode="+mode))
			_, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (1, 'a'), (2, 'b'), (101, 'taken')`)
			if code := sqlState(err); code != "23505" {
				t.Fatalf("split INSERT violating a deferred constraint on s1: %v (SQLSTATE %q), want 23505", err, code)
			}
			if n := keysOn(t, ctx, direct[0], 1, 2); n != 0 {
				t.Fatalf("s0 kept %d rows of the failed split INSERT, want 0", n)
			}
			noPrepared(t, ctx, direct)
			before := records()
			if tag, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (1, 'a'), (2, 'b'), (101, 'c')`); err != nil || tag.String() != "INSERT 0 3" {
				t.Fatalf("split INSERT: %q %v", tag, err)
			}
			if a, b := keysOn(t, ctx, direct[0], 1, 2), keysOn(t, ctx, direct[1], 101); a != 2 || b != 1 {
				t.Fatalf("after the split INSERT: s0 %d rows, s1 %d; want 2, 1", a, b)
			}
			if got := records(); got != before+1 {
				t.Fatalf("commit records: %d, want %d (two-phase commit)", got, before+1)
			}
			noPrepared(t, ctx, direct)
		})
	}

	t.Run("update without key", func(t *testing.T) {
		reset(t)
		conn := connect(t, tp.dsn(""))
		if _, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (3, 'x'), (103, 'y')`); err != nil {
			t.Fatal(err)
		}
		// Every row of s1 gets v 'dup': the deferred unique fails there.
		_, err := conn.Exec(ctx, `UPDATE kv SET v = 'dup', n = 7`)
		if code := sqlState(err); code != "23505" {
			t.Fatalf("UPDATE without a key failing on s1: %v, want 23505", err)
		}
		if n := scalar(t, ctx, direct[0], `SELECT count(*) FROM kv WHERE n = 7`); n != 0 {
			t.Fatalf("s0 kept the failed UPDATE on %d rows", n)
		}
		noPrepared(t, ctx, direct)
		if tag, err := conn.Exec(ctx, `UPDATE kv SET n = 7`); err != nil || tag.String() != "UPDATE 3" {
			t.Fatalf("UPDATE without a key: %q %v", tag, err)
		}
		if a, b := scalar(t, ctx, direct[0], `SELECT count(*) FROM kv WHERE n = 7`), scalar(t, ctx, direct[1], `SELECT count(*) FROM kv WHERE n = 7`); a != 1 || b != 2 {
			t.Fatalf("after the UPDATE: s0 %d, s1 %d rows; want 1, 2", a, b)
		}
	})

	t.Run("copy", func(t *testing.T) {
		reset(t)
		conn := connect(t, tp.dsn(""))
		_, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("4\ta\n5\tb\n104\ttaken\n"), `COPY kv (k, v) FROM STDIN`)
		if code := sqlState(err); code != "23505" {
			t.Fatalf("COPY violating a deferred constraint on s1: %v, want 23505", err)
		}
		if n := keysOn(t, ctx, direct[0], 4, 5); n != 0 {
			t.Fatalf("s0 kept %d rows of the failed COPY, want 0", n)
		}
		noPrepared(t, ctx, direct)
		before := records()
		tag, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("4\ta\n5\tb\n104\tc\n"), `COPY kv (k, v) FROM STDIN`)
		if err != nil || tag.RowsAffected() != 3 {
			t.Fatalf("COPY: %q %v", tag, err)
		}
		if a, b := keysOn(t, ctx, direct[0], 4, 5), keysOn(t, ctx, direct[1], 104); a != 2 || b != 1 {
			t.Fatalf("after the COPY: s0 %d rows, s1 %d; want 2, 1", a, b)
		}
		if got := records(); got != before+1 {
			t.Fatalf("commit records: %d, want %d (two-phase commit)", got, before+1)
		}
		// Rows for s0 only: s1 commits in one phase, no commit record.
		if _, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("6\ta2\n"), `COPY kv (k, v) FROM STDIN`); err != nil {
			t.Fatalf("COPY into one shard: %v", err)
		}
		if got := records(); got != before+1 {
			t.Fatalf("commit records after a COPY into one shard: %d, want %d", got, before+1)
		}
		noPrepared(t, ctx, direct)
	})

	t.Run("ddl", func(t *testing.T) {
		conn := connect(t, tp.dsn(""))
		// A column s1 has already.
		if _, err := direct[1].Exec(ctx, `ALTER TABLE kv ADD COLUMN extra int`); err != nil {
			t.Fatal(err)
		}
		_, err := conn.Exec(ctx, `ALTER TABLE kv ADD COLUMN extra int`)
		if code := sqlState(err); code != "42701" {
			t.Fatalf("ADD COLUMN that exists on s1: %v, want 42701", err)
		}
		if hasColumn(t, ctx, direct[0], "extra") {
			t.Fatal("s0 kept the column of the failed ALTER TABLE")
		}
		// A DDL that fails on s1 at commit: an event trigger there
		// writes a row its deferred constraint refuses.
		for _, q := range []string{
			`CREATE TABLE ddl_guard (x int UNIQUE DEFERRABLE INITIALLY DEFERRED)`,
			`INSERT INTO ddl_guard VALUES (1)`,
			`CREATE FUNCTION ddl_guard() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO ddl_guard VALUES (1); END $$`,
			`CREATE EVENT TRIGGER ddl_guard ON ddl_command_end EXECUTE FUNCTION ddl_guard()`,
		} {
			if _, err := direct[1].Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		_, err = conn.Exec(ctx, `ALTER TABLE kv ADD COLUMN other int`)
		if code := sqlState(err); code != "23505" {
			t.Fatalf("ALTER TABLE failing on s1 at commit: %v, want 23505", err)
		}
		if hasColumn(t, ctx, direct[0], "other") || hasColumn(t, ctx, direct[1], "other") {
			t.Fatal("a shard kept the column of the ALTER TABLE that failed at commit")
		}
		noPrepared(t, ctx, direct)
		if _, err := direct[1].Exec(ctx, `DROP EVENT TRIGGER ddl_guard`); err != nil {
			t.Fatal(err)
		}
		before := records()
		if _, err := conn.Exec(ctx, `ALTER TABLE kv ADD COLUMN other int`); err != nil {
			t.Fatalf("ALTER TABLE: %v", err)
		}
		if !hasColumn(t, ctx, direct[0], "other") || !hasColumn(t, ctx, direct[1], "other") {
			t.Fatal("ALTER TABLE did not add the column on both shards")
		}
		if got := records(); got != before+1 {
			t.Fatalf("commit records: %d, want %d (two-phase commit)", got, before+1)
		}
		// Not allowed in a transaction block: shard by shard, as before.
		if _, err := conn.Exec(ctx, `CREATE INDEX CONCURRENTLY kv_n ON kv (n)`); err != nil {
			t.Fatalf("CREATE INDEX CONCURRENTLY: %v", err)
		}
		for i, d := range direct {
			if n := scalar(t, ctx, d, `SELECT count(*) FROM pg_indexes WHERE indexname = 'kv_n'`); n != 1 {
				t.Fatalf("s%d: index kv_n missing", i)
			}
		}
		noPrepared(t, ctx, direct)
	})

	// With refuse: each shard commits on its own; s0 commits first.
	t.Run("refuse commits shard by shard", func(t *testing.T) {
		reset(t)
		rp := start(proxy.CrossShardRefuse)
		conn := connect(t, rp.dsn(""))
		_, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (7, 'a'), (107, 'taken')`)
		if err == nil || !strings.Contains(err.Error(), "commit failed after 1 of 2 shards committed") {
			t.Fatalf("split INSERT failing at commit on s1 with refuse: %v, want commit failed after 1 of 2", err)
		}
		if n := keysOn(t, ctx, direct[0], 7); n != 1 {
			t.Fatalf("s0 has %d rows of the split INSERT, want 1 (committed on its own)", n)
		}
		noPrepared(t, ctx, direct)
	})
}

// TestSplitWriteWaitsForDecisionTable: where the decision table does not
// exist yet on the decision shard (a database the meta leader's recovery
// has not reached), a statement writing on both shards waits for it under
// a savepoint instead of failing, and commits once it appears.
func TestSplitWriteWaitsForDecisionTable(t *testing.T) {
	start, direct := splitShards(t)
	ctx := ctxT(t)
	tp := start(proxy.CrossShardTwoPhase)
	conn := connect(t, tp.dsn(""))
	if _, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (3, 'x'), (103, 'y')`); err != nil {
		t.Fatal(err)
	}
	for _, d := range direct {
		if _, err := d.Exec(ctx, `DROP TABLE pgshard.commit_decisions`); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, `UPDATE kv SET n = n + 1`)
		done <- err
	}()
	// The coordinator rolled its commit record back to the savepoint and
	// waits, the transaction still open on both shards.
	waiting := false
	for deadline := time.Now().Add(10 * time.Second); !waiting && time.Now().Before(deadline); {
		for _, d := range direct {
			if scalar(t, ctx, d, `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'ROLLBACK TO SAVEPOINT pgshard_record%' AND state = 'idle in transaction'`) > 0 {
				waiting = true
			}
		}
		select {
		case err := <-done:
			t.Fatalf("the UPDATE ended without waiting for the decision table: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !waiting {
		t.Fatal("no server connection waits for the decision table")
	}
	for _, d := range direct {
		if _, err := d.Exec(ctx, twophase.SchemaSQL); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("UPDATE once the decision table appeared: %v", err)
	}
	if a, b := scalar(t, ctx, direct[0], `SELECT n FROM kv WHERE k = 3`), scalar(t, ctx, direct[1], `SELECT n FROM kv WHERE k = 103`); a != 1 || b != 1 {
		t.Fatalf("after the UPDATE: n = %d on s0, %d on s1; want 1, 1", a, b)
	}
	if n := scalar(t, ctx, direct[0], `SELECT count(*) FROM pgshard.commit_decisions`) + scalar(t, ctx, direct[1], `SELECT count(*) FROM pgshard.commit_decisions`); n != 1 {
		t.Fatalf("%d commit records, want 1", n)
	}
	noPrepared(t, ctx, direct)
}

// TestCrossShardWritesRefusedForUser: a user with cross_shard_writes:
// refuse gets 0A000 for any statement or transaction that would write on
// both shards (split INSERT, COPY, DDL, a second shard's write in a
// transaction), and nothing is written; writes on one shard, and reads
// of the other shard in its transaction, go through in one phase.
func TestCrossShardWritesRefusedForUser(t *testing.T) {
	start, direct := splitShards(t)
	ctx := ctxT(t)
	p := start(proxy.CrossShardTwoPhase)
	dsn := strings.Replace(p.dsn(""), "://app:", "://solo:", 1)
	conn := connect(t, dsn)
	records := scalar(t, ctx, direct[0], `SELECT count(*) FROM pgshard.commit_decisions`) +
		scalar(t, ctx, direct[1], `SELECT count(*) FROM pgshard.commit_decisions`)
	refused := func(what string, err error) {
		t.Helper()
		if code := sqlState(err); code != "0A000" || !strings.Contains(err.Error(), `user "solo" is not allowed cross-shard writes`) {
			t.Fatalf("%s: %v, want 0A000 saying the user is not allowed cross-shard writes", what, err)
		}
	}
	_, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (10, 'a'), (110, 'b')`)
	refused("split INSERT", err)
	_, err = conn.PgConn().CopyFrom(ctx, strings.NewReader("11\ta\n111\tb\n"), `COPY kv (k, v) FROM STDIN`)
	refused("COPY into both shards", err)
	_, err = conn.Exec(ctx, `ALTER TABLE kv ADD COLUMN solo int`)
	refused("DDL", err)
	if a, b := keysOn(t, ctx, direct[0], 10, 11), keysOn(t, ctx, direct[1], 110, 111); a != 0 || b != 0 {
		t.Fatalf("refused writes left rows: s0 %d, s1 %d", a, b)
	}
	if hasColumn(t, ctx, direct[0], "solo") || hasColumn(t, ctx, direct[1], "solo") {
		t.Fatal("refused DDL added a column")
	}

	// In a transaction: a write on s0, a read of s1, then a write on s1.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES (12, 'a')`); err != nil {
		t.Fatalf("write on s0: %v", err)
	}
	var n int64
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM kv WHERE k = 199`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("read of s1 in the transaction: %d %v", n, err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES (112, 'b')`)
	refused("write on s1 in a transaction that wrote on s0", err)
	_ = tx.Rollback(ctx)
	if a, b := keysOn(t, ctx, direct[0], 12), keysOn(t, ctx, direct[1], 112); a != 0 || b != 0 {
		t.Fatalf("the refused transaction left rows: s0 %d, s1 %d", a, b)
	}

	// Writes on one shard go through; a transaction that wrote on s0
	// and read s1 commits in one phase.
	if _, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("13\ta\n14\tb\n"), `COPY kv (k, v) FROM STDIN`); err != nil {
		t.Fatalf("COPY into one shard: %v", err)
	}
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE kv SET n = 1 WHERE k = 13`); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM kv WHERE k = 199`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("read of s1: %d %v", n, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit of a transaction that wrote on one shard: %v", err)
	}
	if got := scalar(t, ctx, direct[0], `SELECT count(*) FROM kv WHERE k = 13 AND n = 1`); got != 1 {
		t.Fatal("the transaction's write on s0 is missing")
	}
	if got := scalar(t, ctx, direct[0], `SELECT count(*) FROM pgshard.commit_decisions`) +
		scalar(t, ctx, direct[1], `SELECT count(*) FROM pgshard.commit_decisions`); got != records {
		t.Fatalf("commit records %d, want %d: no two-phase commit for this user", got, records)
	}
	noPrepared(t, ctx, direct)

	// The other user writes over both shards.
	if _, err := connect(t, p.dsn("")).Exec(ctx, `INSERT INTO kv (k, v) VALUES (15, 'a'), (115, 'b')`); err != nil {
		t.Fatalf("split INSERT of a user allowed cross-shard writes: %v", err)
	}
}

// TestDDLInTxOverShards: with two_phase, DDL over several shards inside a
// transaction joins the session's transaction (simple and extended
// protocol): its writes and the DDL commit together with two-phase
// commit, ROLLBACK undoes the DDL on every shard, and a DDL failing on s1
// fails the transaction (nothing stays on s0). A statement PostgreSQL
// refuses in a transaction block gets 25001, as there.
func TestDDLInTxOverShards(t *testing.T) {
	start, direct := splitShards(t)
	ctx := ctxT(t)
	p := start(proxy.CrossShardTwoPhase)
	records := func() int64 {
		return scalar(t, ctx, direct[0], `SELECT count(*) FROM pgshard.commit_decisions`) +
			scalar(t, ctx, direct[1], `SELECT count(*) FROM pgshard.commit_decisions`)
	}
	for i, mode := range []string{"simple_protocol", "exec"} {
		t.Run(mode, func(t *testing.T) {
			conn := connect(t, p.dsn("default_query_exec_mode="+mode))
			col := fmt.Sprintf("c%d", i)
			before := records()
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO kv (k, v) VALUES (%d, 'x')`, 20+i)); err != nil {
				t.Fatal(err)
			}
			if tag, err := tx.Exec(ctx, `ALTER TABLE kv ADD COLUMN `+col+` int`); err != nil || tag.String() != "ALTER TABLE" {
				t.Fatalf("ALTER TABLE in the transaction: %q %v", tag, err)
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO kv (k, v, %s) VALUES (%d, 'y%[1]s', 1)`, col, 120+i)); err != nil {
				t.Fatalf("insert into the new column on s1: %v", err)
			}
			if hasColumn(t, ctx, direct[0], col) {
				t.Fatal("another session sees the column before the commit")
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatalf("commit: %v", err)
			}
			if !hasColumn(t, ctx, direct[0], col) || !hasColumn(t, ctx, direct[1], col) {
				t.Fatal("the column is not on both shards after the commit")
			}
			if a, b := keysOn(t, ctx, direct[0], int64(20+i)), keysOn(t, ctx, direct[1], int64(120+i)); a != 1 || b != 1 {
				t.Fatalf("rows after the commit: s0 %d, s1 %d", a, b)
			}
			if got := records(); got != before+1 {
				t.Fatalf("commit records %d, want %d (two-phase commit)", got, before+1)
			}

			// ROLLBACK undoes it on every shard.
			tx, err = conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `ALTER TABLE kv ADD COLUMN gone int`); err != nil {
				t.Fatal(err)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if hasColumn(t, ctx, direct[0], "gone") || hasColumn(t, ctx, direct[1], "gone") {
				t.Fatal("ROLLBACK left the column")
			}

			// A DDL failing on s1 fails the transaction.
			if _, err := direct[1].Exec(ctx, `ALTER TABLE kv ADD COLUMN only_s1_`+col+` int`); err != nil {
				t.Fatal(err)
			}
			tx, err = conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO kv (k, v) VALUES (%d, 'z')`, 30+i)); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `ALTER TABLE kv ADD COLUMN only_s1_`+col+` int`); sqlState(err) != "42701" {
				t.Fatalf("ALTER TABLE failing on s1: %v, want 42701", err)
			}
			if _, err := tx.Exec(ctx, `SELECT 1`); sqlState(err) != "25P02" {
				t.Fatalf("statement after the failure: %v, want 25P02", err)
			}
			_ = tx.Rollback(ctx)
			if hasColumn(t, ctx, direct[0], "only_s1_"+col) || keysOn(t, ctx, direct[0], int64(30+i)) != 0 {
				t.Fatal("the failed transaction left its DDL or row on s0")
			}

			// Not allowed in a transaction block.
			tx, err = conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `CREATE INDEX CONCURRENTLY kv_c_`+col+` ON kv (`+col+`)`); sqlState(err) != "25001" {
				t.Fatalf("CREATE INDEX CONCURRENTLY in a transaction: %v, want 25001", err)
			}
			_ = tx.Rollback(ctx)
			noPrepared(t, ctx, direct)
			if got := conn.PgConn().TxStatus(); got != 'I' {
				t.Fatalf("status at the end %q, want I", got)
			}
		})
	}
}

// TestCopyInTxOverShards: with two_phase, COPY FROM over several shards
// inside a transaction joins the session's transaction: it sees and
// commits with the transaction's other writes (two-phase commit), a row
// failing on s1 fails the transaction (nothing stays on s0 after
// ROLLBACK), and a deferred constraint failing at COMMIT rolls back every
// shard. For a user with cross_shard_writes: refuse, a COPY whose rows
// reach a second shard in a transaction that wrote on another is refused.
func TestCopyInTxOverShards(t *testing.T) {
	start, direct := splitShards(t)
	ctx := ctxT(t)
	p := start(proxy.CrossShardTwoPhase)
	conn := connect(t, p.dsn(""))
	records := func() int64 {
		return scalar(t, ctx, direct[0], `SELECT count(*) FROM pgshard.commit_decisions`) +
			scalar(t, ctx, direct[1], `SELECT count(*) FROM pgshard.commit_decisions`)
	}
	before := records()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES (40, 'first')`); err != nil {
		t.Fatal(err)
	}
	tag, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("41\ta\n141\tb\n"), `COPY kv (k, v) FROM STDIN`)
	if err != nil || tag.RowsAffected() != 2 {
		t.Fatalf("COPY in the transaction: %q %v", tag, err)
	}
	var n int64
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM kv WHERE k IN (40, 41, 141)`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("the transaction sees %d of its rows (%v), want 3", n, err)
	}
	if keysOn(t, ctx, direct[1], 141) != 0 {
		t.Fatal("another session sees the COPY's row before the commit")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if a, b := keysOn(t, ctx, direct[0], 40, 41), keysOn(t, ctx, direct[1], 141); a != 2 || b != 1 {
		t.Fatalf("after the commit: s0 %d rows, s1 %d; want 2, 1", a, b)
	}
	if got := records(); got != before+1 {
		t.Fatalf("commit records %d, want %d", got, before+1)
	}

	// A row refused on s1 fails the transaction.
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES (42, 'x')`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("43\ta\n199\tdup\n"), `COPY kv (k, v) FROM STDIN`); sqlState(err) != "23505" {
		t.Fatalf("COPY with a duplicate key on s1: %v, want 23505", err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1`); sqlState(err) != "25P02" {
		t.Fatalf("after the failed COPY: %v, want 25P02", err)
	}
	_ = tx.Rollback(ctx)
	if keysOn(t, ctx, direct[0], 42, 43) != 0 {
		t.Fatal("the failed transaction left rows on s0")
	}

	// A deferred constraint failing at COMMIT rolls every shard back.
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("44\ta\n144\ttaken\n"), `COPY kv (k, v) FROM STDIN`); err != nil {
		t.Fatalf("COPY: %v", err)
	}
	if err := tx.Commit(ctx); sqlState(err) != "23505" {
		t.Fatalf("commit violating a deferred constraint on s1: %v, want 23505", err)
	}
	if a, b := keysOn(t, ctx, direct[0], 44), keysOn(t, ctx, direct[1], 144); a != 0 || b != 0 {
		t.Fatalf("after the failed commit: s0 %d, s1 %d rows; want none", a, b)
	}
	noPrepared(t, ctx, direct)

	// A user refusing cross-shard writes.
	solo := connect(t, strings.Replace(p.dsn(""), "://app:", "://solo:", 1))
	tx, err = solo.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES (45, 'x')`); err != nil {
		t.Fatal(err)
	}
	if _, err := solo.PgConn().CopyFrom(ctx, strings.NewReader("46\ta\n"), `COPY kv (k, v) FROM STDIN`); err != nil {
		t.Fatalf("COPY into the transaction's shard: %v", err)
	}
	_, err = solo.PgConn().CopyFrom(ctx, strings.NewReader("146\ta\n"), `COPY kv (k, v) FROM STDIN`)
	if sqlState(err) != "0A000" || !strings.Contains(err.Error(), "not allowed cross-shard writes") {
		t.Fatalf("COPY into a second shard: %v, want 0A000", err)
	}
	_ = tx.Rollback(ctx)
	if a, b := keysOn(t, ctx, direct[0], 45, 46), keysOn(t, ctx, direct[1], 146); a != 0 || b != 0 {
		t.Fatalf("the refused transaction left rows: s0 %d, s1 %d", a, b)
	}
	noPrepared(t, ctx, direct)
	if got := conn.PgConn().TxStatus(); got != 'I' {
		t.Fatalf("status %q, want I", got)
	}
}
