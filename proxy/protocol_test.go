package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/proxy"
)

// TestCopyInOut streams COPY FROM STDIN (pgx CopyFrom, binary) and
// COPY TO STDOUT (text) through the proxy, plus a failing COPY.
func TestCopyInOut(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, baseConfig(t, pg))
	ctx := ctxT(t)
	c := connect(t, p.dsn(""))
	if _, err := c.Exec(ctx, `CREATE TABLE events (id bigint, payload text)`); err != nil {
		t.Fatal(err)
	}
	const n = 20000
	rows := make([][]any, n)
	for i := range rows {
		rows[i] = []any{int64(i), strings.Repeat("p", i%50)}
	}
	copied, err := c.CopyFrom(ctx, pgx.Identifier{"events"}, []string{"id", "payload"}, pgx.CopyFromRows(rows))
	if err != nil || copied != n {
		t.Fatalf("copy from: %d %v", copied, err)
	}
	// Text COPY FROM STDIN via pgconn.
	in := strings.NewReader("100000\thello\n100001\tworld\n")
	tag, err := c.PgConn().CopyFrom(ctx, in, `COPY events FROM STDIN`)
	if err != nil || tag.RowsAffected() != 2 {
		t.Fatalf("text copy from: %v %v", tag, err)
	}
	var buf bytes.Buffer
	tag, err = c.PgConn().CopyTo(ctx, &buf, `COPY (SELECT id, payload FROM events ORDER BY id) TO STDOUT`)
	if err != nil || tag.RowsAffected() != n+2 {
		t.Fatalf("copy to: %v %v", tag, err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != n+2 || lines[0] != "0\t" || lines[n+1] != "100001\tworld" || lines[51] != "51\tp" {
		t.Fatalf("copy to returned %d lines, first %q last %q", len(lines), lines[0], lines[len(lines)-1])
	}
	// Bad data fails the COPY with the server's error; the session goes on.
	_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("not-a-number\tx\n"), `COPY events FROM STDIN`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22P02" {
		t.Fatalf("bad copy: want 22P02, got %v", err)
	}
	var count int64
	if err := c.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&count); err != nil || count != n+2 {
		t.Fatalf("count %d %v", count, err)
	}
}

// TestCancel cancels a running query through the proxy: the client gets
// 57014 and both the session and the backend stay usable.
func TestCancel(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, baseConfig(t, pg))
	ctx := ctxT(t)
	c := connect(t, p.dsn(""))
	other := connect(t, p.dsn(""))
	qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Exec(qctx, `SELECT pg_sleep(20)`)
	if err == nil {
		t.Fatal("expected the query to be cancelled")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	// pgx closes the connection after a context cancel; reconnect and
	// check the server really cancelled (no pg_sleep left running).
	waitFor(t, func() bool { return activeQueries(t, ctx, other, "SELECT pg_sleep(20)") == 0 })
	// Cancel with pgconn keeps the connection: 57014 and it goes on.
	c2 := connect(t, p.dsn(""))
	errc := make(chan error, 1)
	go func() {
		_, err := c2.PgConn().Exec(ctx, `SELECT pg_sleep(20)`).ReadAll()
		errc <- err
	}()
	waitFor(t, func() bool { return activeQueries(t, ctx, other, "SELECT pg_sleep(20)") == 1 })
	if err := c2.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	err = <-errc
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Fatalf("want 57014, got %v", err)
	}
	var v int
	if err := c2.QueryRow(ctx, `SELECT 5`).Scan(&v); err != nil || v != 5 {
		t.Fatalf("after cancel: %v %v", v, err)
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testutil.Until(t, 10*time.Second, "the condition", cond)
}

// TestErrorsMidTransactionAndPipeline checks error recovery: an error in a
// transaction aborts it until ROLLBACK; an error in a pipeline skips to
// Sync; a batch of many statements works.
func TestErrorsMidTransactionAndPipeline(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, baseConfig(t, pg))
	ctx := ctxT(t)
	c := connect(t, p.dsn(""))
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1/0`); err == nil {
		t.Fatal("want division by zero")
	}
	_, err = tx.Exec(ctx, `SELECT 1`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "25P02" {
		t.Fatalf("want 25P02 in aborted transaction, got %v", err)
	}
	_ = tx.Rollback(ctx)
	// A batch (pipelined extended protocol) with an error in the middle.
	b := &pgx.Batch{}
	b.Queue(`SELECT 1`)
	b.Queue(`SELECT 1/0`)
	b.Queue(`SELECT 3`)
	err = c.SendBatch(ctx, b).Close()
	if !errors.As(err, &pgErr) || pgErr.Code != "22012" {
		t.Fatalf("batch: want 22012, got %v", err)
	}
	// A large pipelined batch.
	b = &pgx.Batch{}
	for i := 0; i < 2000; i++ {
		b.Queue(`SELECT $1::int, repeat('x', 200)`, i)
	}
	br := c.SendBatch(ctx, b)
	for i := 0; i < 2000; i++ {
		var v int
		var s string
		if err := br.QueryRow().Scan(&v, &s); err != nil || v != i {
			t.Fatalf("batch row %d: %v %v", i, v, err)
		}
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	// Notices and multi-statement simple queries.
	var notices []string
	cfg, _ := pgx.ParseConfig(p.dsn(""))
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	nc, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close(ctx)
	res, err := nc.PgConn().Exec(ctx, `DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$; SELECT 1; SELECT 2`).ReadAll()
	if err != nil || len(res) != 3 || string(res[2].Rows[0][0]) != "2" {
		t.Fatalf("multi-statement: %v %v", res, err)
	}
	if fmt.Sprint(notices) != "[hello 42]" {
		t.Fatalf("notices %v", notices)
	}
}

// TestExtendedCopyWithEarlySync: COPY FROM STDIN through the extended
// protocol with the Sync sent right after Execute, before the data (what
// libpq's PQexecParams does). PostgreSQL ignores that Sync; the proxy must
// not wait for its answer: the server connection goes back to the pool
// (pool size 1: another client gets it) and the session keeps working.
func TestExtendedCopyWithEarlySync(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Users = append(cfg.Users, proxy.UserConfig{Name: "tr", Auth: "trust"})
	cfg.Pool.Size = 1
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	if err := pg.Exec(ctx, `CREATE TABLE events (id bigint, payload text)`); err != nil {
		t.Fatal(err)
	}
	c, fe := trustedSession(t, p.addr)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	expect := func(want ...pgproto3.BackendMessage) {
		t.Helper()
		for _, w := range want {
			m, err := fe.Receive()
			if err != nil {
				t.Fatalf("waiting for %T: %v", w, err)
			}
			if fmt.Sprintf("%T", m) != fmt.Sprintf("%T", w) {
				t.Fatalf("got %T %+v, want %T", m, m, w)
			}
		}
	}
	for round := range 2 {
		fe.Send(&pgproto3.Parse{Query: "COPY events FROM STDIN"})
		fe.Send(&pgproto3.Bind{})
		fe.Send(&pgproto3.Execute{})
		fe.Send(&pgproto3.Sync{})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		expect(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.CopyInResponse{})
		fe.Send(&pgproto3.CopyData{Data: fmt.Appendf(nil, "%d\tearly sync\n", round)})
		fe.Send(&pgproto3.CopyDone{})
		fe.Send(&pgproto3.Sync{})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		expect(&pgproto3.CommandComplete{}, &pgproto3.ReadyForQuery{})
		// The only server connection is free again for someone else.
		other := connect(t, p.dsn(""))
		var n int
		if err := other.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil || n != round+1 {
			t.Fatalf("round %d: another client: %d rows, %v", round, n, err)
		}
		_ = other.Close(ctx)
	}
	fe.Send(&pgproto3.Query{String: "SELECT 1"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	expect(&pgproto3.RowDescription{}, &pgproto3.DataRow{}, &pgproto3.CommandComplete{}, &pgproto3.ReadyForQuery{})
}
