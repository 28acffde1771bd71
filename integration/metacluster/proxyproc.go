package metacluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/proxy"
)

// ProxyProcess is a `pgshard proxy` process and where it serves.
type ProxyProcess struct {
	*Process
	Listen, Admin string
}

// StartProxyProcess starts `bin args...` (a `pgshard proxy` command line)
// and waits until it listens on cfg's client and admin addresses; the
// test's end stops it and, when the test failed, logs the end of its log.
func StartProxyProcess(t testing.TB, ctx context.Context, bin, logPath string, cfg *proxy.Config, args []string) *ProxyProcess {
	t.Helper()
	proc, err := StartProcess("pgshard proxy", logPath, bin, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = proc.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("--- last lines of the proxy process (%s) ---\n%s", logPath, LogTail(logPath, 40))
		}
	})
	// Without meta the proxy first tries it for 3 s.
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, addr := range []string{cfg.Listen, cfg.AdminListen} {
		if err := proc.WaitListening(wctx, addr); err != nil {
			t.Fatal(err)
		}
	}
	return &ProxyProcess{Process: proc, Listen: cfg.Listen, Admin: cfg.AdminListen}
}

// DSN is a connection string for the test user (testproxy.User) to
// database db ("" means postgres) through the proxy.
func (p *ProxyProcess) DSN(db string) string {
	if db == "" {
		db = "postgres"
	}
	return "postgres://" + testproxy.User + ":" + testproxy.Password + "@" + p.Listen + "/" + db + "?sslmode=disable"
}

// Metric reads one unlabelled metric from the proxy's /metrics.
func (p *ProxyProcess) Metric(ctx context.Context, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("GET /metrics: %s: %s", resp.Status, b)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("%s %q: %w", name, v, err)
			}
			return f, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s in /metrics", name)
}

// MapEpoch reads pgshard_map_epoch from the proxy's /metrics.
func (p *ProxyProcess) MapEpoch(t testing.TB) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	v, err := p.Metric(ctx, "pgshard_map_epoch")
	if err != nil {
		t.Fatal(err)
	}
	return uint64(v)
}

// WriteProxyConfig writes cfg as a proxy's YAML configuration file (the
// in-process proxies' users, backend credentials and pool), checking that
// the proxy reads it back (as a proxy following meta when cfg.FollowsMeta).
func WriteProxyConfig(t testing.TB, path string, cfg *proxy.Config) {
	t.Helper()
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	load := proxy.LoadConfig
	if cfg.FollowsMeta {
		load = proxy.LoadConfigFollowingMeta
	}
	if _, err := load(path); err != nil {
		t.Fatalf("the proxy does not read its own configuration back: %v\n%s", err, b)
	}
}
