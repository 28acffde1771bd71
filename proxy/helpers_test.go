package proxy_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
)

const (
	appUser     = testproxy.User
	appPassword = testproxy.Password
)

// TestMain checks that no PostgreSQL server and no goroutine outlives the
// tests.
func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaksOrGoroutines(m)) }

// testProxy is a proxy running in the test process.
type testProxy struct {
	srv  *proxy.Server
	addr string
	cfg  *proxy.Config
}

func baseConfig(t testing.TB, pg *pgcluster.Server) *proxy.Config {
	return testproxy.Config(t, pg)
}

func startProxy(t testing.TB, cfg *proxy.Config) *testProxy {
	p := testproxy.Start(t, cfg)
	return &testProxy{srv: p.Server, addr: p.Addr, cfg: p.Config}
}

// dsn returns a URL for connecting to the proxy as app.
func (p *testProxy) dsn(extra string) string {
	return (&testproxy.Proxy{Addr: p.addr}).DSN(extra)
}

func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// activeQueries counts server sessions running exactly query, as seen by c.
func activeQueries(t *testing.T, ctx context.Context, c *pgx.Conn, query string) int {
	t.Helper()
	var n int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'`, query).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// clientBackends counts the server's client sessions other than c's own.
func clientBackends(t *testing.T, ctx context.Context, c *pgx.Conn) int {
	t.Helper()
	var n int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// mapConfig is pg's base configuration routing by the shard map whose
// YAML text is mapYAML (written to a file) instead of configured shards.
func mapConfig(t testing.TB, pg *pgcluster.Server, mapYAML string) *proxy.Config {
	t.Helper()
	mapFile := filepath.Join(t.TempDir(), "map.yaml")
	if err := os.WriteFile(mapFile, []byte(mapYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, pg)
	cfg.Shards = nil
	cfg.ShardMapFile = mapFile
	return cfg
}

// createKV creates table kv (k bigint PRIMARY KEY, v text) on each server.
func createKV(t testing.TB, ctx context.Context, servers []*pgcluster.Server) {
	t.Helper()
	for _, srv := range servers {
		if err := srv.Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text)`); err != nil {
			t.Fatal(err)
		}
	}
}
