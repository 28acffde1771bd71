package metacluster

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// StartFollowingProxy starts an in-process proxy with cfg (its
// map_state_file in a temporary directory) that follows the meta cluster
// at addrs (FollowMeta, with the ID id and a heartbeat every heartbeat,
// stopped before the proxy shuts down), and returns once it accepts
// writes: it has the meta cluster's map and the leader has answered its
// heartbeat (before that it refuses writes).
func StartFollowingProxy(t *testing.T, cfg *proxy.Config, addrs []string, opts metarpc.ClientOptions, id string, heartbeat time.Duration) *testproxy.Proxy {
	t.Helper()
	cfg.MapStateFile = filepath.Join(t.TempDir(), "map-state.yaml")
	cfg.FollowsMeta = true
	p := testproxy.Start(t, cfg)
	client, err := metarpc.NewClient(addrs, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Server.FollowMeta(ctx, client, id, heartbeat)
	}()
	// Registered after testproxy.Start's cleanup, so it runs before it.
	t.Cleanup(func() {
		cancel()
		<-done
		_ = client.Close()
	})
	testutil.WaitFor(t, 10*time.Second, "proxy "+id+" to allow writes", func() (bool, string) {
		r := p.Server.WriteRefusal()
		return r == "", "it refuses writes: " + r
	})
	return p
}
