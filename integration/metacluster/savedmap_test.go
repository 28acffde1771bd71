package metacluster_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"gopkg.in/yaml.v3"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
)

// proxyProcess is a `pgshard proxy` process and where it serves.
type proxyProcess struct {
	*metacluster.Process
	listen, admin string
}

// TestProxyStartsFromSavedMapWhileMetaIsDown runs `pgshard proxy --meta`
// as a process: started while meta is up it routes by meta's map and
// saves it (map_state_file); stopped, and started again while meta is
// down, it must start from the saved map and route reads by it — and
// refuse writes (25006) until it reaches meta.
func TestProxyStartsFromSavedMapWhileMetaIsDown(t *testing.T) {
	pg := integration.NewCluster(t, integration.Shards(2))
	setupShards(t, pg)
	meta := metacluster.StartLocal(t)
	client := meta.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	epoch, err := client.ApplyMap(ctx, kvMap(t, pg, 1000), 0, "initial")
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	stateFile := filepath.Join(dir, "state", "map.yaml")
	if err := os.Mkdir(filepath.Dir(stateFile), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := proxyConfig(t, pg)
	cfg.MapStateFile = stateFile
	cfg.ShutdownTimeout = proxy.Duration(2 * time.Second)
	if cfg.Listen, err = metacluster.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	if cfg.AdminListen, err = metacluster.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "pgshard.yaml")
	writeYAML(t, cfgFile, cfg)
	args := []string{"proxy", "--config", cfgFile, "--meta", meta.Addr, "--meta-token", meta.Token, "--proxy-id", "proxy-proc"}

	// Meta is up: the proxy starts from meta's map and saves it.
	p := startProxyProcess(t, ctx, filepath.Join(dir, "proxy-1.log"), cfg, args)
	ok, why := waitFor(5*time.Second, func() (bool, string) {
		list, err := client.ListProxies(ctx)
		if err != nil {
			return false, err.Error()
		}
		return hasProxy(list, "proxy-proc", epoch), fmt.Sprintf("ListProxies: %+v", list)
	})
	if !ok {
		t.Fatalf("the proxy process does not report epoch %d to meta: %s", epoch, why)
	}
	if got := p.mapEpoch(t); got != epoch {
		t.Errorf("the proxy process routes with epoch %d, want %d", got, epoch)
	}
	saved := epoch
	ok, why = waitFor(2*time.Second, func() (bool, string) {
		got := savedEpoch(stateFile)
		return got == epoch, fmt.Sprintf("it holds epoch %d (0: no map)", got)
	})
	if !ok {
		t.Fatalf("a proxy that started from meta's map (epoch %d) did not save it to map_state_file %s (%s)", epoch, stateFile, why)
	}
	dsn := "postgres://" + testproxy.User + ":" + testproxy.Password + "@" + p.listen + "/postgres?sslmode=disable"
	conn := connect(t, dsn)
	insert(t, conn, 10)
	insert(t, conn, 5000)
	assertPlaced(t, pg, 10, 0)
	assertPlaced(t, pg, 5000, 1)
	if err := p.Stop(10 * time.Second); err != nil {
		t.Errorf("stop the proxy: %v", err)
	}
	// Stopped cleanly, it deregistered: meta does not wait for its lease.
	list, err := client.ListProxies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range list {
		if pr.ID == "proxy-proc" {
			t.Errorf("the stopped proxy is still registered: %+v", pr)
		}
	}

	// Meta is down: the proxy starts from the saved map.
	if err := meta.Stop(); err != nil {
		t.Fatal(err)
	}
	p = startProxyProcess(t, ctx, filepath.Join(dir, "proxy-2.log"), cfg, args)
	if got := p.mapEpoch(t); got != saved {
		t.Errorf("restarted while meta is down, the proxy routes with epoch %d, want the saved %d", got, saved)
	}
	// It routes reads by the saved map, and refuses writes: without meta
	// it cannot know whether a failover fenced a primary meanwhile.
	conn = connect(t, dsn)
	for _, id := range []int64{10, 5000} {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM kv WHERE id = $1", id).Scan(&n); err != nil || n != 1 {
			t.Errorf("read id=%d through the proxy started from its saved map: %d rows, %v", id, n, err)
		}
	}
	_, err = conn.Exec(ctx, "INSERT INTO kv (id, v) VALUES (11, 'x')")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "25006" {
		t.Errorf("write through a proxy that never reached meta: %v, want 25006", err)
	}
	if err := conn.Close(ctx); err != nil {
		t.Error(err)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Errorf("stop the proxy: %v", err)
	}
}

// startProxyProcess starts `pgshard args...` and waits until it listens
// on cfg's addresses; the test's end stops it.
func startProxyProcess(t *testing.T, ctx context.Context, logPath string, cfg *proxy.Config, args []string) *proxyProcess {
	t.Helper()
	proc, err := metacluster.StartProcess("pgshard proxy", logPath, pgshardBin, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = proc.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("--- last lines of the proxy process (%s) ---\n%s", logPath, metacluster.LogTail(logPath, 40))
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
	return &proxyProcess{Process: proc, listen: cfg.Listen, admin: cfg.AdminListen}
}

// mapEpoch reads pgshard_map_epoch from the proxy's /metrics.
func (p *proxyProcess) mapEpoch(t *testing.T) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s: %s", resp.Status, b)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "pgshard_map_epoch "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("pgshard_map_epoch %q: %v", v, err)
			}
			return uint64(f)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatal("no pgshard_map_epoch in /metrics")
	return 0
}

// savedEpoch returns the epoch of the map in the file at path, 0 if there
// is none (yet).
func savedEpoch(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	m, err := shardmap.ParseYAML(b)
	if err != nil {
		return 0
	}
	return m.Epoch
}

// writeYAML writes cfg as the proxy's YAML configuration: the same users
// (SCRAM verifier), backend credentials and pool as the in-process proxies.
func writeYAML(t *testing.T, path string, cfg *proxy.Config) {
	t.Helper()
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proxy.ParseConfig(b); err != nil {
		t.Fatalf("the proxy does not read its own configuration back: %v\n%s", err, b)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
