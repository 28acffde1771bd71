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
	"github.com/pgshard/pgshard/wire/auth"
)

const (
	appUser     = "app"
	appPassword = "app-secret"
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

// baseConfig returns a config for one shard on pg with user app (SCRAM).
func baseConfig(t testing.TB, pg *pgcluster.Server) *proxy.Config {
	t.Helper()
	v, err := auth.NewSCRAMVerifier(appPassword, nil, 4096)
	if err != nil {
		t.Fatal(err)
	}
	return &proxy.Config{
		Listen: "127.0.0.1:0",
		Users:  []proxy.UserConfig{{Name: appUser, Password: v.String()}},
		Shards: []proxy.ShardConfig{{Name: "s0", Host: pg.Host, Port: pg.Port}},
		Backend: proxy.BackendConfig{
			User: pgcluster.SuperuserName, Password: pgcluster.SuperuserPassword, SSLMode: "disable",
			PasswordEnv: "PGSHARD_TEST_UNSET_ENV",
		},
		Pool: proxy.PoolConfig{Size: 10, WaitTimeout: proxy.Duration(2 * time.Second)},
	}
}

// startProxy completes cfg, starts a proxy and stops it at cleanup.
func startProxy(t testing.TB, cfg *proxy.Config) *testProxy {
	t.Helper()
	if err := cfg.Complete(); err != nil {
		t.Fatalf("config: %v", err)
	}
	srv, err := proxy.NewServer(cfg)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &testProxy{srv: srv, addr: srv.Addr().String(), cfg: cfg}
}

// dsn returns a URL for connecting to the proxy as app.
func (p *testProxy) dsn(extra string) string {
	u := fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", appUser, appPassword, p.addr)
	if extra != "" {
		u += "&" + extra
	}
	return u
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
