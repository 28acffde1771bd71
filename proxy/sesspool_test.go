package proxy_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/proxy"
)

// preparedNames lists the statements pg_prepared_statements shows on c's
// server connection (simple protocol: c prepares nothing itself).
func preparedNames(t *testing.T, ctx context.Context, c *pgconn.PgConn) []string {
	t.Helper()
	rs, err := c.Exec(ctx, `SELECT name FROM pg_prepared_statements ORDER BY name`).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, row := range rs[0].Rows {
		names = append(names, string(row[0]))
	}
	return names
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// TestSessionPoolStatementNames: in session pooling a protocol-level
// statement reaches the server under the client's own name, as on
// PostgreSQL: pg_prepared_statements shows it, SQL DEALLOCATE drops it (a
// Bind to it then gets 26000 and the name can be parsed again), and the
// next client of the same server connection sees none of it.
func TestSessionPoolStatementNames(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.PoolMode = proxy.PoolSession
	cfg.Pool.Size = 1
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	a := connect(t, p.dsn(""))
	pc := a.PgConn()
	if _, err := pc.Prepare(ctx, "s1", `SELECT $1::int`, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Prepare(ctx, "S2", `SELECT $1::int + 1`, nil); err != nil {
		t.Fatal(err)
	}
	if got := preparedNames(t, ctx, pc); !slices.Equal(got, []string{"S2", "s1"}) {
		t.Fatalf("pg_prepared_statements: %q, want the client's names [S2 s1]", got)
	}
	if _, err := pc.Exec(ctx, `DEALLOCATE s1`).ReadAll(); err != nil {
		t.Fatalf("DEALLOCATE of a protocol-level statement: %v", err)
	}
	if _, err := pc.Exec(ctx, `DEALLOCATE "S2"`).ReadAll(); err != nil {
		t.Fatalf("DEALLOCATE of a quoted name: %v", err)
	}
	err := pc.ExecPrepared(ctx, "s1", [][]byte{[]byte("1")}, nil, nil).Read().Err
	if sqlState(err) != "26000" {
		t.Fatalf("Bind after DEALLOCATE: %v, want 26000", err)
	}
	if got := preparedNames(t, ctx, pc); len(got) != 0 {
		t.Fatalf("pg_prepared_statements after DEALLOCATE: %q", got)
	}
	// The name is free again, as on PostgreSQL.
	if _, err := pc.Prepare(ctx, "s1", `SELECT $1::int * 10`, nil); err != nil {
		t.Fatalf("Parse s1 again after DEALLOCATE: %v", err)
	}
	r := pc.ExecPrepared(ctx, "s1", [][]byte{[]byte("4")}, nil, nil).Read()
	if r.Err != nil || len(r.Rows) != 1 || string(r.Rows[0][0]) != "40" {
		t.Fatalf("s1 after re-Parse: %q %v", r.Rows, r.Err)
	}
	pid := backendPID(t, ctx, a)
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b := connect(t, p.dsn(""))
	if got := preparedNames(t, ctx, b.PgConn()); len(got) != 0 {
		t.Fatalf("the next client sees the previous client's statements: %q", got)
	}
	if got := backendPID(t, ctx, b); got != pid {
		t.Fatalf("expected the server connection %d to be reused, got %d", pid, got)
	}
	// The next client may use the same name.
	if _, err := b.PgConn().Prepare(ctx, "s1", `SELECT $1::int`, nil); err != nil {
		t.Fatalf("Parse s1 by the next client: %v", err)
	}
}

// TestSessionPoolBackendKey: with one shard a session-pooled client is
// given its server connection's own process id and secret key:
// pg_backend_pid() is the pid the client got, a CancelRequest with that
// key goes through the proxy, and pg_terminate_backend of it from
// another connection ends the client's session.
func TestSessionPoolBackendKey(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.PoolMode = proxy.PoolSession
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	direct := connect(t, pg.SuperDSN("postgres"))
	c := connect(t, p.dsn(""))
	if got, want := backendPID(t, ctx, c), int32(c.PgConn().PID()); got != want {
		t.Fatalf("pg_backend_pid() = %d, the client was given %d", got, want)
	}

	// Cancel through the proxy with the server's key.
	res := runAsync(t, c, `SELECT pg_sleep(20)`)
	pollFor(t, 10*time.Second, "the statement runs", func() bool {
		return activeQueries(t, ctx, direct, `SELECT pg_sleep(20)`) == 1
	})
	if err := c.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	if r := await(t, res, 10*time.Second, "the cancelled statement"); sqlState(r.err) != "57014" {
		t.Fatalf("cancelled statement: %v, want 57014", r.err)
	}

	// pg_cancel_backend from another connection.
	res = runAsync(t, c, `SELECT pg_sleep(20)`)
	pollFor(t, 10*time.Second, "the statement runs", func() bool {
		return activeQueries(t, ctx, direct, `SELECT pg_sleep(20)`) == 1
	})
	var ok bool
	if err := direct.QueryRow(ctx, `SELECT pg_cancel_backend($1)`, int32(c.PgConn().PID())).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_cancel_backend: %v %v", ok, err)
	}
	if r := await(t, res, 10*time.Second, "the cancelled statement"); sqlState(r.err) != "57014" {
		t.Fatalf("statement cancelled by pg_cancel_backend: %v, want 57014", r.err)
	}
	if backendPID(t, ctx, c) != int32(c.PgConn().PID()) {
		t.Fatal("the session moved after a cancel")
	}

	// pg_terminate_backend from another connection ends the session.
	if err := direct.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, int32(c.PgConn().PID())).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend: %v %v", ok, err)
	}
	pollFor(t, 10*time.Second, "the session ends", func() bool {
		_, err := c.Exec(ctx, `SELECT 1`)
		return err != nil && c.IsClosed()
	})
}
