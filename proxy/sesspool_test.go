package proxy_test

import (
	"context"
	"errors"
	"slices"
	"testing"

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
