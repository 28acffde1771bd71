package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// Query strings of several statements over several shards
// (multistmt.go), with transactions.cross_shard: two_phase. kv is split
// at key 100: 42 and 43 are on s0, 142 and 143 on s1.

// msLog runs query strings through the simple protocol and records what
// the client gets: columns, rows, command tags, errors and notices (code
// and message), in order, and the transaction status at the end.
type msLog struct {
	conn *pgconn.PgConn
	mu   sync.Mutex
	got  []string
}

func connectLog(t *testing.T, dsn string) *msLog {
	t.Helper()
	l := &msLog{}
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		l.mu.Lock()
		l.got = append(l.got, fmt.Sprintf("notice %s %s %s", n.Severity, n.Code, n.Message))
		l.mu.Unlock()
	}
	c, err := pgconn.ConnectConfig(ctxT(t), cfg)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	l.conn = c
	return l
}

func (l *msLog) add(s string) {
	l.mu.Lock()
	l.got = append(l.got, s)
	l.mu.Unlock()
}

// run sends sql as one Query and returns what came back.
func (l *msLog) run(ctx context.Context, sql string) []string {
	l.mu.Lock()
	l.got = nil
	l.mu.Unlock()
	mrr := l.conn.Exec(ctx, sql)
	for mrr.NextResult() {
		rr := mrr.ResultReader()
		var cols []string
		for _, fd := range rr.FieldDescriptions() {
			cols = append(cols, fd.Name)
		}
		if cols != nil {
			l.add("cols " + strings.Join(cols, ","))
		}
		for rr.NextRow() {
			var vals []string
			for _, v := range rr.Values() {
				if v == nil {
					vals = append(vals, "NULL")
				} else {
					vals = append(vals, string(v))
				}
			}
			l.add("row " + strings.Join(vals, "|"))
		}
		if tag, err := rr.Close(); err == nil {
			l.add("tag " + tag.String())
		}
	}
	if err := mrr.Close(); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			l.add("error " + pe.Code + " " + pe.Message)
		} else {
			l.add("failure " + err.Error())
		}
	}
	l.add(fmt.Sprintf("status %c", l.conn.TxStatus()))
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

// msShards is txShards with accounts 42, 43 (s0) and 142, 143 (s1) at
// 100 each.
func msShards(t *testing.T) (*testProxy, [2]*pgx.Conn) {
	t.Helper()
	p, direct, _ := txShards(t)
	ctx := ctxT(t)
	for i, keys := range []string{"(42, 100), (43, 100)", "(142, 100), (143, 100)"} {
		if _, err := direct[i].Exec(ctx, `INSERT INTO kv (k, n) VALUES `+keys); err != nil {
			t.Fatal(err)
		}
	}
	return p, direct
}

// balances returns n of 42, 43 (on s0) and 142, 143 (on s1), read on the
// shards.
func balances(t *testing.T, ctx context.Context, direct [2]*pgx.Conn) [4]int64 {
	t.Helper()
	return [4]int64{balance(t, ctx, direct[0], 42), balance(t, ctx, direct[0], 43), balance(t, ctx, direct[1], 142), balance(t, ctx, direct[1], 143)}
}

// commitRecords counts the two-phase commit records on both shards.
func commitRecords(t *testing.T, ctx context.Context, direct [2]*pgx.Conn) int64 {
	t.Helper()
	return scalar(t, ctx, direct[0], `SELECT count(*) FROM pgshard.commit_decisions`) +
		scalar(t, ctx, direct[1], `SELECT count(*) FROM pgshard.commit_decisions`)
}

func wantLog(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got  %q\n want %q", what, got, want)
	}
}

// TestMultiStatementTransfer: a transfer between a user on each shard in
// one query string commits on both shards atomically (two-phase commit:
// one commit record, no prepared transaction left), with BEGIN … COMMIT
// in the string and as an implicit transaction without them; the client
// gets every statement's answer and one ReadyForQuery.
func TestMultiStatementTransfer(t *testing.T) {
	p, direct := msShards(t)
	ctx := ctxT(t)
	c := connectLog(t, p.dsn(""))
	records := commitRecords(t, ctx, direct)

	got := c.run(ctx, "BEGIN; UPDATE kv SET n = n - 10 WHERE k = 42; UPDATE kv SET n = n + 10 WHERE k = 142; COMMIT;")
	wantLog(t, "explicit transfer", got, "tag BEGIN", "tag UPDATE 1", "tag UPDATE 1", "tag COMMIT", "status I")
	if b := balances(t, ctx, direct); b != [4]int64{90, 100, 110, 100} {
		t.Fatalf("after the explicit transfer: %v", b)
	}
	if n := commitRecords(t, ctx, direct); n != records+1 {
		t.Fatalf("commit records: %d, want %d (two-phase commit)", n, records+1)
	}
	noPrepared(t, ctx, direct)

	got = c.run(ctx, "UPDATE kv SET n = n - 5 WHERE k = 43 RETURNING n; UPDATE kv SET n = n + 5 WHERE k = 143 RETURNING k, n")
	wantLog(t, "implicit transfer", got, "cols n", "row 95", "tag UPDATE 1", "cols k,n", "row 143|105", "tag UPDATE 1", "status I")
	if b := balances(t, ctx, direct); b != [4]int64{90, 95, 110, 105} {
		t.Fatalf("after the implicit transfer: %v", b)
	}
	if n := commitRecords(t, ctx, direct); n != records+2 {
		t.Fatalf("commit records: %d, want %d (the implicit transaction committed with two-phase commit)", n, records+2)
	}
	noPrepared(t, ctx, direct)

	// Reads in the string arrive in order, each with its own rows.
	got = c.run(ctx, "SELECT n FROM kv WHERE k = 142; SELECT k, n FROM kv WHERE k = 42; SELECT count(*) AS c, sum(n) AS s FROM kv; SELECT k FROM kv WHERE k IN (43, 143) ORDER BY k DESC")
	wantLog(t, "reads", got, "cols n", "row 110", "tag SELECT 1", "cols k,n", "row 42|90", "tag SELECT 1",
		"cols c,s", "row 4|400", "tag SELECT 1", "cols k", "row 143", "row 43", "tag SELECT 2", "status I")
}

// TestMultiStatementImplicitFailure: in an implicit transaction over
// both shards, an error in the second statement rolls back what the
// first did on the other shard and skips the rest; the client gets the
// error and ReadyForQuery 'I', and the session goes on.
func TestMultiStatementImplicitFailure(t *testing.T) {
	p, direct := msShards(t)
	ctx := ctxT(t)
	c := connectLog(t, p.dsn(""))
	got := c.run(ctx, "UPDATE kv SET n = n - 10 WHERE k = 42; UPDATE kv SET n = NULL WHERE k = 142; UPDATE kv SET n = 0 WHERE k = 43")
	if len(got) != 3 || got[0] != "tag UPDATE 1" || !strings.HasPrefix(got[1], "error 23502 ") || got[2] != "status I" {
		t.Fatalf("failed implicit transaction: %q", got)
	}
	if b := balances(t, ctx, direct); b != [4]int64{100, 100, 100, 100} {
		t.Fatalf("after the failed implicit transaction: %v, want nothing applied", b)
	}
	noPrepared(t, ctx, direct)
	// A refusal PostgreSQL makes in a query string: the same.
	got = c.run(ctx, "UPDATE kv SET n = 1 WHERE k = 142; VACUUM kv; UPDATE kv SET n = 1 WHERE k = 42")
	wantLog(t, "VACUUM in a string", got, "tag UPDATE 1", "error 25001 VACUUM cannot run inside a transaction block", "status I")
	if b := balances(t, ctx, direct); b != [4]int64{100, 100, 100, 100} {
		t.Fatalf("after the refused VACUUM: %v, want nothing applied", b)
	}
	// A BEGIN with options after statements: refused, all rolled back.
	got = c.run(ctx, "UPDATE kv SET n = 1 WHERE k = 42; BEGIN READ ONLY; UPDATE kv SET n = 1 WHERE k = 142")
	if len(got) != 3 || got[0] != "tag UPDATE 1" || !strings.HasPrefix(got[1], "error 0A000 BEGIN with options after other statements") || got[2] != "status I" {
		t.Fatalf("BEGIN READ ONLY after a statement: %q", got)
	}
	if b := balances(t, ctx, direct); b != [4]int64{100, 100, 100, 100} {
		t.Fatalf("after the refused BEGIN: %v, want nothing applied", b)
	}
	got = c.run(ctx, "SELECT n FROM kv WHERE k = 42; SELECT n FROM kv WHERE k = 142")
	wantLog(t, "afterwards", got, "cols n", "row 100", "tag SELECT 1", "cols n", "row 100", "tag SELECT 1", "status I")
}

// TestMultiStatementOpenBlock: a string with BEGIN and no COMMIT leaves
// the session in the transaction ('T') over both shards; nobody else
// sees its writes; a later string (in the transaction) and a COMMIT
// commit it on both.
func TestMultiStatementOpenBlock(t *testing.T) {
	p, direct := msShards(t)
	ctx := ctxT(t)
	c := connectLog(t, p.dsn(""))
	got := c.run(ctx, "BEGIN; UPDATE kv SET n = n - 20 WHERE k = 42; UPDATE kv SET n = n + 20 WHERE k = 142")
	wantLog(t, "open block", got, "tag BEGIN", "tag UPDATE 1", "tag UPDATE 1", "status T")
	if b := balances(t, ctx, direct); b != [4]int64{100, 100, 100, 100} {
		t.Fatalf("visible before COMMIT: %v", b)
	}
	got = c.run(ctx, "SELECT n FROM kv WHERE k = 142; SELECT n FROM kv WHERE k = 42")
	wantLog(t, "reads in the block", got, "cols n", "row 120", "tag SELECT 1", "cols n", "row 80", "tag SELECT 1", "status T")
	got = c.run(ctx, "COMMIT")
	wantLog(t, "COMMIT", got, "tag COMMIT", "status I")
	if b := balances(t, ctx, direct); b != [4]int64{80, 100, 120, 100} {
		t.Fatalf("after COMMIT: %v", b)
	}
	noPrepared(t, ctx, direct)

	// A failed block stays failed ('E') until ROLLBACK.
	got = c.run(ctx, "BEGIN; UPDATE kv SET n = 0 WHERE k = 43; UPDATE kv SET n = 0 WHERE k = 143; SELECT 1/0; UPDATE kv SET n = 0 WHERE k = 42")
	if len(got) != 5 || got[3] != "error 22012 division by zero" || got[4] != "status E" {
		t.Fatalf("failed block: %q", got)
	}
	wantLog(t, "ROLLBACK", c.run(ctx, "ROLLBACK"), "tag ROLLBACK", "status I")
	if b := balances(t, ctx, direct); b != [4]int64{80, 100, 120, 100} {
		t.Fatalf("after ROLLBACK: %v", b)
	}
	noPrepared(t, ctx, direct)

	// pgshard's own refusal in the block (a savepoint once it spans
	// shards) fails it the same way.
	got = c.run(ctx, "BEGIN; UPDATE kv SET n = 0 WHERE k = 42; UPDATE kv SET n = 0 WHERE k = 142; SAVEPOINT s; SELECT 1")
	if len(got) != 5 || !strings.HasPrefix(got[3], "error 0A000 savepoints are not supported") || got[4] != "status E" {
		t.Fatalf("savepoint in a block over both shards: %q", got)
	}
	wantLog(t, "25P02", c.run(ctx, "SELECT n FROM kv WHERE k = 42; SELECT n FROM kv WHERE k = 142"),
		"error 25P02 current transaction is aborted, commands ignored until end of transaction block", "status E")
	wantLog(t, "COMMIT of a failed block", c.run(ctx, "COMMIT"), "tag ROLLBACK", "status I")
	if b := balances(t, ctx, direct); b != [4]int64{80, 100, 120, 100} {
		t.Fatalf("after the failed block: %v", b)
	}
	noPrepared(t, ctx, direct)
}

// TestMultiStatementRefuse: with cross_shard: refuse the string is
// refused as before (0A000), nothing runs.
func TestMultiStatementRefuse(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := mapConfig(t, c.Shards[0], shardmaptest.KV([]int64{100}, c.Shards[0].Addr(), c.Shards[1].Addr()).YAML(t))
	cfg.Transactions.CrossShard = proxy.CrossShardRefuse
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	for _, srv := range c.Shards {
		if err := srv.Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text, n bigint NOT NULL DEFAULT 0)`); err != nil {
			t.Fatal(err)
		}
	}
	l := connectLog(t, p.dsn(""))
	got := l.run(ctx, "INSERT INTO kv (k) VALUES (42); INSERT INTO kv (k) VALUES (142)")
	if len(got) != 2 || !strings.HasPrefix(got[0], "error 0A000 a query string with several statements") || got[1] != "status I" {
		t.Fatalf("with cross_shard: refuse: %q", got)
	}
	direct := connect(t, c.Shards[0].SuperDSN("postgres"))
	if n := scalar(t, ctx, direct, `SELECT count(*) FROM kv`); n != 0 {
		t.Fatalf("s0 has %d rows after the refusal", n)
	}
}

// TestMultiStatementDifferential runs query strings through pgshard and
// on a plain PostgreSQL holding the same rows: the client must get the
// same answers (columns, rows, tags, errors and notices, final status)
// and both must hold the same rows afterwards.
func TestMultiStatementDifferential(t *testing.T) {
	p, _ := msShards(t)
	ref := integration.StartPostgres(t)
	ctx := ctxT(t)
	rc := connect(t, ref.SuperDSN("postgres"))
	if _, err := rc.Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text, n bigint NOT NULL DEFAULT 0);
		INSERT INTO kv (k, n) VALUES (42, 100), (43, 100), (142, 100), (143, 100)`); err != nil {
		t.Fatal(err)
	}
	pl, rl := connectLog(t, p.dsn("")), connectLog(t, ref.SuperDSN("postgres"))
	for _, sql := range []string{
		"BEGIN; UPDATE kv SET n = n - 10 WHERE k = 42; UPDATE kv SET n = n + 10 WHERE k = 142; COMMIT;",
		"UPDATE kv SET n = n - 5 WHERE k = 43 RETURNING n; UPDATE kv SET n = n + 5 WHERE k = 143 RETURNING k, n;",
		"UPDATE kv SET n = n - 7 WHERE k = 42; UPDATE kv SET n = NULL WHERE k = 142; UPDATE kv SET n = 0 WHERE k = 43;",
		"SELECT n FROM kv WHERE k = 142; SELECT k, n FROM kv WHERE k = 42; SELECT count(*), sum(n) FROM kv;",
		// COMMIT in an implicit block: a warning; what follows is a new one.
		"UPDATE kv SET n = n + 1 WHERE k = 42; COMMIT; UPDATE kv SET n = n + 1 WHERE k = 142; SELECT 1/0;",
		// A BEGIN takes the statements before it into its block.
		"UPDATE kv SET n = n + 100 WHERE k = 43; BEGIN; UPDATE kv SET n = n + 100 WHERE k = 143; ROLLBACK;",
		"BEGIN; UPDATE kv SET n = n + 3 WHERE k = 42; UPDATE kv SET n = n - 3 WHERE k = 142;",
		"SELECT n FROM kv WHERE k = 142; COMMIT; SELECT n FROM kv WHERE k = 42;",
		"BEGIN; UPDATE kv SET n = 1 WHERE k = 43; SELECT 1/0; UPDATE kv SET n = 2 WHERE k = 143;",
		"VACUUM kv; SELECT n FROM kv WHERE k = 143;",
		"SELECT n FROM kv WHERE k = 143; VACUUM kv;",
		"ROLLBACK; SELECT n FROM kv WHERE k = 43; SELECT n FROM kv WHERE k = 143;",
		// In a transaction over both shards, a string for one shard that
		// ends it.
		"BEGIN; UPDATE kv SET n = n + 4 WHERE k = 43; UPDATE kv SET n = n - 4 WHERE k = 143;",
		"UPDATE kv SET n = n + 1 WHERE k = 43; COMMIT; SELECT n FROM kv WHERE k = 43;",
		"SELECT n FROM kv WHERE k = 42; VACUUM kv;",
		"UPDATE kv SET n = 0 WHERE k = 142; SAVEPOINT a; UPDATE kv SET n = 0 WHERE k = 42;",
		"UPDATE kv SET n = n WHERE k = 42; CREATE INDEX CONCURRENTLY kv_n ON kv (n); UPDATE kv SET n = 0 WHERE k = 142;",
		"UPDATE kv SET n = n + 2 WHERE k = 42; UPDATE kv SET n = n - 2 WHERE k = 142; COMMIT AND CHAIN;",
		"UPDATE kv SET n = n + 2 WHERE k = 42; UPDATE kv SET n = n - 2 WHERE k = 142; ROLLBACK; SELECT n FROM kv WHERE k = 42;",
		"BEGIN; SELECT n FROM kv WHERE k = 42; SAVEPOINT s; UPDATE kv SET n = 5 WHERE k = 42; ROLLBACK TO SAVEPOINT s; COMMIT;",
	} {
		want := rl.run(ctx, sql)
		got := pl.run(ctx, sql)
		if !slices.Equal(got, want) {
			t.Errorf("%s\n pgshard    %q\n PostgreSQL %q", sql, got, want)
		}
		const rows = "SELECT k, n FROM kv ORDER BY k"
		if got, want := pl.run(ctx, rows), rl.run(ctx, rows); !slices.Equal(got, want) {
			t.Fatalf("rows after %s:\n pgshard    %q\n PostgreSQL %q", sql, got, want)
		}
	}
}

// TestMultiStatementPsql runs psql -c with a transfer over both shards,
// then with one whose second statement fails.
func TestMultiStatementPsql(t *testing.T) {
	p, direct := msShards(t)
	ctx := ctxT(t)
	psql := func(cmd string) (string, error) {
		c := exec.CommandContext(ctx, pgBin(t, "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-c", cmd, p.dsn(""))
		c.Env = append(os.Environ(), "PGSSLMODE=disable")
		out, err := c.CombinedOutput()
		return string(out), err
	}
	out, err := psql("BEGIN; UPDATE kv SET n = n - 10 WHERE k = 42; UPDATE kv SET n = n + 10 WHERE k = 142; COMMIT;")
	if err != nil || out != "BEGIN\nUPDATE 1\nUPDATE 1\nCOMMIT\n" {
		t.Fatalf("psql -c transfer: %v\n%s", err, out)
	}
	if b := balances(t, ctx, direct); b != [4]int64{90, 100, 110, 100} {
		t.Fatalf("after psql's transfer: %v", b)
	}
	out, err = psql("UPDATE kv SET n = n - 10 WHERE k = 43; UPDATE kv SET n = n / 0 WHERE k = 143;")
	if err == nil || !strings.Contains(out, "ERROR:  division by zero") {
		t.Fatalf("psql -c failing transfer: %v\n%s", err, out)
	}
	if b := balances(t, ctx, direct); b != [4]int64{90, 100, 110, 100} {
		t.Fatalf("after psql's failed transfer: %v, want nothing applied", b)
	}
	noPrepared(t, ctx, direct)
}

// TestMultiStatementPipelined: query strings sent without waiting for
// the answers of the ones before (BEGIN, a string over both shards,
// COMMIT): each gets its own answers and ReadyForQuery, in order.
func TestMultiStatementPipelined(t *testing.T) {
	p, direct := msShards(t)
	ctx := ctxT(t)
	c := connectLog(t, p.dsn("")).conn
	for _, q := range []string{"BEGIN", "UPDATE kv SET n = n - 1 WHERE k = 42; UPDATE kv SET n = n + 1 WHERE k = 142", "COMMIT",
		"UPDATE kv SET n = n - 1 WHERE k = 43", "UPDATE kv SET n = n + 1 WHERE k = 143; SELECT n FROM kv WHERE k = 43"} {
		c.Frontend().Send(&pgproto3.Query{String: q})
	}
	if err := c.Frontend().Flush(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for z := 0; z < 5; {
		msg, err := c.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		switch m := msg.(type) {
		case *pgproto3.CommandComplete:
			got = append(got, string(m.CommandTag))
		case *pgproto3.DataRow:
			got = append(got, "row "+string(m.Values[0]))
		case *pgproto3.ErrorResponse:
			got = append(got, "error "+m.Code+" "+m.Message)
		case *pgproto3.ReadyForQuery:
			got = append(got, "Z"+string(m.TxStatus))
			z++
		}
	}
	wantLog(t, "pipelined", got, "BEGIN", "ZT", "UPDATE 1", "UPDATE 1", "ZT", "COMMIT", "ZI", "UPDATE 1", "ZI", "UPDATE 1", "row 99", "SELECT 1", "ZI")
	if b := balances(t, ctx, direct); b != [4]int64{99, 99, 101, 101} {
		t.Fatalf("after the pipeline: %v", b)
	}
	noPrepared(t, ctx, direct)
}
