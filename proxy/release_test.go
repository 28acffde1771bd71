package proxy_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/proxy"
)

// serverConnects sums pgshard_server_connects_total over the pools.
func serverConnects(t *testing.T, p *testProxy) int {
	t.Helper()
	n := 0
	for _, l := range strings.Split(scrape(t, p), "\n") {
		if !strings.HasPrefix(l, "pgshard_server_connects_total{") {
			continue
		}
		f, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		n += int(f)
	}
	return n
}

// TestNextRequestReusesReleasedConnection: a client whose every query is
// two requests (Parse, Describe, Sync, then Bind, Execute, Sync, as pgx's
// describe-exec mode sends them) sends the second as soon as the first's
// ReadyForQuery arrives. One client in transaction pooling must never
// make the pool open a second server connection: the second request has
// to find the first one's connection back in the pool (serve waits for
// the relay's bookkeeping of a ReadyForQuery it has written: settle).
func TestNextRequestReusesReleasedConnection(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.PoolMode = proxy.PoolTransaction
	cfg.Pool.Size = 4
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	c := connect(t, p.dsn(""))
	var v int
	if err := c.QueryRow(ctx, "SELECT $1::int", pgx.QueryExecModeDescribeExec, 0).Scan(&v); err != nil {
		t.Fatal(err)
	}
	before := serverConnects(t, p)
	const n = 3000
	for i := 1; i <= n; i++ {
		if err := c.QueryRow(ctx, "SELECT $1::int", pgx.QueryExecModeDescribeExec, i).Scan(&v); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		if v != i {
			t.Fatalf("query %d answered %d", i, v)
		}
	}
	if opened := serverConnects(t, p) - before; opened != 0 {
		t.Fatalf("%d queries of one client (two requests each) made the pool open %d more server connections, want 0", n, opened)
	}
}
