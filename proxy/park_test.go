package proxy_test

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/testutil"
)

var parkedMetric = regexp.MustCompile(`(?m)^pgshard_clients_parked (\d+)$`)

// parkedClients reads pgshard_clients_parked.
func parkedClients(t *testing.T, p *testProxy) int {
	t.Helper()
	m := parkedMetric.FindStringSubmatch(scrape(t, p))
	if m == nil {
		t.Fatal("no pgshard_clients_parked in /metrics")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestParkIdleClients: with limits.park_idle_clients an idle client is
// parked (no goroutine), answers its next statement like any other, a
// client inside a transaction is not parked, and Shutdown says goodbye to
// a parked client.
func TestParkIdleClients(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	on := true
	cfg.Limits.ParkIdleClients = &on
	p := startProxy(t, cfg)
	ctx := ctxT(t)

	idle := connect(t, p.dsn(""))
	inTx := connect(t, p.dsn(""))
	var v int
	if err := idle.QueryRow(ctx, `SELECT 41 + 1`).Scan(&v); err != nil || v != 42 {
		t.Fatalf("first query: %d %v", v, err)
	}
	tx, err := inTx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	testutil.Until(t, 15*time.Second, "the idle client parked", func() bool { return parkedClients(t, p) == 1 })

	// Parked, the client is served as before, several times over.
	for i := range 3 {
		if err := idle.QueryRow(ctx, `SELECT $1::int * 2`, i).Scan(&v); err != nil || v != 2*i {
			t.Fatalf("query %d after parking: %d %v", i, v, err)
		}
		testutil.Until(t, 15*time.Second, "the idle client parked again", func() bool { return parkedClients(t, p) == 1 })
	}
	// The transaction's client was never parked: its session holds a
	// server connection.
	if _, err := tx.Exec(ctx, `SELECT 2`); err != nil {
		t.Fatalf("statement in the open transaction: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.Until(t, 15*time.Second, "both clients parked", func() bool { return parkedClients(t, p) == 2 })

	// Shutdown ends parked clients with 57P01.
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	_, err = idle.Exec(ctx, `SELECT 1`)
	if code := pgCode(err); code != "57P01" && !idle.PgConn().IsClosed() {
		t.Fatalf("parked client after shutdown: %v, want 57P01 or a closed connection", err)
	}
}
