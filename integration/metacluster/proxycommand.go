package metacluster

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// ProxyCommand is a `pgshard proxy --meta` process of a test, restartable
// with the same configuration file (and so the same proxy ID).
type ProxyCommand struct {
	ID     string
	Config *proxy.Config
	Args   []string
	Log    string
	// Proc is the process Start started last.
	Proc *ProxyProcess
}

// NewProxyCommand writes into dir the configuration file of a proxy
// process with ID id that follows meta: testproxy.Config for any, no
// shards in the file, health checks every 100 ms, a pool of 20 per
// server, a 2 s shutdown, its saved map in dir and free listen
// addresses; tune (nil: none) changes the configuration before it is
// written.
func NewProxyCommand(t testing.TB, meta *Cluster, any *pgcluster.Server, dir, id string, tune func(*proxy.Config)) *ProxyCommand {
	t.Helper()
	cfg := testproxy.Config(t, any)
	cfg.Shards = nil
	cfg.FollowsMeta = true
	cfg.HealthInterval = proxy.Duration(100 * time.Millisecond)
	cfg.Pool.Size = 20
	cfg.ShutdownTimeout = proxy.Duration(2 * time.Second)
	cfg.MapStateFile = filepath.Join(dir, id+"-map.yaml")
	var err error
	if cfg.Listen, err = FreeAddr(); err != nil {
		t.Fatal(err)
	}
	if cfg.AdminListen, err = FreeAddr(); err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(cfg)
	}
	path := filepath.Join(dir, id+".yaml")
	WriteProxyConfig(t, path, cfg)
	return &ProxyCommand{
		ID:     id,
		Config: cfg,
		Log:    filepath.Join(dir, id+".log"),
		Args:   []string{"proxy", "--config", path, "--meta", strings.Join(meta.Addrs(), ","), "--meta-token", meta.Token, "--proxy-id", id},
	}
}

// Start starts the process (the pgshard binary bin) and waits until it
// listens.
func (p *ProxyCommand) Start(t testing.TB, bin string) {
	t.Helper()
	p.Proc = StartProxyProcess(t, t.Context(), bin, p.Log, p.Config, p.Args)
}

// DSN connects as the test user to database db ("": postgres) through the
// proxy process running now.
func (p *ProxyCommand) DSN(db string) string {
	return (&ProxyProcess{Listen: p.Config.Listen}).DSN(db)
}

// CurrentMap reads the meta cluster's map through client.
func CurrentMap(t testing.TB, client *metarpc.Client) *shardmap.Map {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	v, err := client.GetMap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return v.Map
}

// WaitMap polls the meta cluster's map through client until cond holds
// for it, and fails the test (what: the condition) when it does not
// within timeout.
func WaitMap(t testing.TB, client *metarpc.Client, timeout time.Duration, what string, cond func(*shardmap.Map) bool) *shardmap.Map {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := CurrentMap(t, client)
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			y, _ := m.YAML()
			t.Fatalf("%s: not within %s; map:\n%s", what, timeout, y)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
