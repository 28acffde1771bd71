package metacluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
)

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
	metacluster.WriteProxyConfig(t, cfgFile, cfg)
	args := []string{"proxy", "--config", cfgFile, "--meta", meta.Addr, "--meta-token", meta.Token, "--proxy-id", "proxy-proc"}

	// Meta is up: the proxy starts from meta's map and saves it.
	p := metacluster.StartProxyProcess(t, ctx, pgshardBin, filepath.Join(dir, "proxy-1.log"), cfg, args)
	ok, why := testutil.Poll(5*time.Second, func() (bool, string) {
		list, err := client.ListProxies(ctx)
		if err != nil {
			return false, err.Error()
		}
		return hasProxy(list, "proxy-proc", epoch), fmt.Sprintf("ListProxies: %+v", list)
	})
	if !ok {
		t.Fatalf("the proxy process does not report epoch %d to meta: %s", epoch, why)
	}
	if got := p.MapEpoch(t); got != epoch {
		t.Errorf("the proxy process routes with epoch %d, want %d", got, epoch)
	}
	saved := epoch
	ok, why = testutil.Poll(2*time.Second, func() (bool, string) {
		got := savedEpoch(stateFile)
		return got == epoch, fmt.Sprintf("it holds epoch %d (0: no map)", got)
	})
	if !ok {
		t.Fatalf("a proxy that started from meta's map (epoch %d) did not save it to map_state_file %s (%s)", epoch, stateFile, why)
	}
	dsn := p.DSN("")
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
	p = metacluster.StartProxyProcess(t, ctx, pgshardBin, filepath.Join(dir, "proxy-2.log"), cfg, args)
	if got := p.MapEpoch(t); got != saved {
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
