package proxy_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/pgcluster"
	"github.com/pgshard/pgshard/proxy"
)

const (
	appUser     = integration.ProxyUser
	appPassword = integration.ProxyPassword
)

// TestMain checks that no PostgreSQL server and no goroutine outlives the
// tests.
func TestMain(m *testing.M) {
	code := integration.VerifyNoLeaks(m)
	if code == 0 {
		if err := goleak.Find(integration.GoleakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testProxy is a proxy running in the test process.
type testProxy struct {
	srv  *proxy.Server
	addr string
	cfg  *proxy.Config
}

func baseConfig(t testing.TB, pg *pgcluster.Server) *proxy.Config {
	return integration.ProxyConfig(t, pg)
}

func startProxy(t testing.TB, cfg *proxy.Config) *testProxy {
	p := integration.StartProxy(t, cfg)
	return &testProxy{srv: p.Server, addr: p.Addr, cfg: p.Config}
}

// dsn returns a URL for connecting to the proxy as app.
func (p *testProxy) dsn(extra string) string {
	return (&integration.Proxy{Addr: p.addr}).DSN(extra)
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
