package metacluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// propagationBound is how soon after a change is committed every proxy
// that follows meta must route with it (the acceptance criterion).
const propagationBound = time.Second

// TestMapChangeReachesProxies moves the key range [500, 1000) of kv from
// s0 to s1 with `pgshard map apply`, and checks that both proxies
// following the meta member route with the new epoch within
// propagationBound, that rows of the moved range inserted through either
// proxy land on s1, and that the leader has both proxies' acknowledgement
// (ListProxies, WaitApplied).
func TestMapChangeReachesProxies(t *testing.T) {
	pg := integration.NewCluster(t, integration.Shards(2))
	setupShards(t, pg)
	meta := metacluster.StartLocal(t)
	client := meta.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	before, err := client.ApplyMap(ctx, kvMap(t, pg, 1000), 0, "initial")
	if err != nil {
		t.Fatal(err)
	}
	proxies := map[string]*testproxy.Proxy{
		"proxy-a": startFollowingProxy(t, pg, []string{meta.Addr}, meta.ClientOptions(), "proxy-a"),
		"proxy-b": startFollowingProxy(t, pg, []string{meta.Addr}, meta.ClientOptions(), "proxy-b"),
	}
	conns := map[string]*pgx.Conn{}
	for id, p := range proxies {
		waitProxyEpoch(t, p, before, 5*time.Second)
		conns[id] = connect(t, p.DSN(""))
	}
	// Under the first map, 600 is on s0.
	insert(t, conns["proxy-a"], 600)
	assertPlaced(t, pg, 600, 0)

	// Move [500, 1000) to s1.
	file := filepath.Join(t.TempDir(), "map.yaml")
	y, err := kvMap(t, pg, 500).YAML()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, y, 0o600); err != nil {
		t.Fatal(err)
	}
	out := runCLI(t, ctx, "map", "apply", "-f", file, "--meta", meta.Addr, "--token", meta.Token,
		"--comment", "move [500, 1000) to s1", "-o", "json")
	applied := time.Now()
	var res struct {
		PreviousEpoch uint64 `json:"previous_epoch"`
		Epoch         uint64 `json:"epoch"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("pgshard map apply -o json printed %q: %v", out, err)
	}
	if res.PreviousEpoch != before || res.Epoch != before+1 {
		t.Fatalf("pgshard map apply: epoch %d → %d; want %d → %d", res.PreviousEpoch, res.Epoch, before, before+1)
	}
	epoch := res.Epoch

	ok, why := testutil.Poll(propagationBound, func() (bool, string) {
		for id, p := range proxies {
			if got := p.Server.MapEpoch(); got < epoch {
				return false, fmt.Sprintf("%s routes with epoch %d", id, got)
			}
		}
		return true, ""
	})
	if !ok {
		t.Fatalf("the proxies did not apply epoch %d within %s of its commit: %s", epoch, propagationBound, why)
	}
	t.Logf("both proxies route with epoch %d %s after pgshard map apply returned", epoch, time.Since(applied).Round(time.Millisecond))

	// Keys of the moved range now go to s1, through either proxy.
	insert(t, conns["proxy-a"], 700)
	insert(t, conns["proxy-b"], 701)
	assertPlaced(t, pg, 700, 1)
	assertPlaced(t, pg, 701, 1)

	// The leader knows both proxies apply the new epoch.
	var list []metarpc.ProxyStatus
	ok, why = testutil.Poll(2*time.Second, func() (bool, string) {
		if list, err = client.ListProxies(ctx); err != nil {
			return false, err.Error()
		}
		for id := range proxies {
			if !hasProxy(list, id, epoch) {
				return false, fmt.Sprintf("ListProxies: %+v", list)
			}
		}
		return true, ""
	})
	if !ok {
		t.Errorf("the leader does not list both proxies live at epoch %d: %s", epoch, why)
	}
	if err := client.WaitApplied(ctx, epoch, 5*time.Second); err != nil {
		t.Errorf("WaitApplied(%d): %v", epoch, err)
	}
}

// hasProxy reports whether list has the proxy id, live at epoch.
func hasProxy(list []metarpc.ProxyStatus, id string, epoch uint64) bool {
	for _, p := range list {
		if p.ID == id && p.Live && p.AppliedEpoch == epoch {
			return true
		}
	}
	return false
}

// connect connects to dsn, closing the connection when the test ends.
func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// insert inserts the kv row id through c.
func insert(t *testing.T, c *pgx.Conn, id int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := c.Exec(ctx, "INSERT INTO kv (id, v) VALUES ($1, $2)", id, fmt.Sprint("row ", id)); err != nil {
		t.Fatalf("insert id=%d: %v", id, err)
	}
}

// runCLI runs the pgshard binary with args and returns its stdout; it
// fails the test if the command fails.
func runCLI(t *testing.T, ctx context.Context, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx, pgshardBin, args...)
	cmd.Env = metacluster.Env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pgshard %q: %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}
