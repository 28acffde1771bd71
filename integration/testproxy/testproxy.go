package testproxy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/wire/auth"
)

// Client credentials of the user Config configures.
const (
	User     = "app"
	Password = "app-secret"
)

// Proxy is a pgshard proxy running inside the test process.
type Proxy struct {
	Server *proxy.Server
	Addr   string
	Config *proxy.Config
}

// Config returns a proxy config for one shard on pg: client user
// User (SCRAM), the harness superuser towards the server, no TLS,
// listening on a free port. Tests adjust it before Start.
func Config(t testing.TB, pg *pgcluster.Server) *proxy.Config {
	t.Helper()
	v, err := auth.NewSCRAMVerifier(Password, nil, auth.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	return &proxy.Config{
		Listen: "127.0.0.1:0",
		Users:  []proxy.UserConfig{{Name: User, Password: v.String()}},
		Shards: []proxy.ShardConfig{{Name: "s0", Host: pg.Host, Port: pg.Port}},
		Backend: proxy.BackendConfig{
			User: pgcluster.SuperuserName, Password: pgcluster.SuperuserPassword, SSLMode: "disable",
			// Never pick up a password from the environment of the test run.
			PasswordEnv: "PGSHARD_TEST_UNSET_ENV",
		},
		Pool: proxy.PoolConfig{Size: 10, WaitTimeout: proxy.Duration(2 * time.Second)},
	}
}

// Start completes cfg, starts a proxy in-process and shuts it down
// (gracefully, 5 s) when the test ends.
func Start(t testing.TB, cfg *proxy.Config) *Proxy {
	t.Helper()
	if err := cfg.Complete(); err != nil {
		t.Fatalf("proxy config: %v", err)
	}
	srv, err := proxy.NewServer(cfg)
	if err != nil {
		t.Fatalf("new proxy: %v", err)
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
			t.Errorf("proxy serve: %v", err)
		}
	})
	return &Proxy{Server: srv, Addr: srv.Addr().String(), Config: cfg}
}

// DSN returns a URL for connecting to the proxy as User; extra is
// appended as query parameters ("a=b&c=d").
func (p *Proxy) DSN(extra string) string {
	u := fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", User, Password, p.Addr)
	if extra != "" {
		u += "&" + extra
	}
	return u
}
