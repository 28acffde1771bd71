package proxy_test

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// TestBufferDuringSwitch: while the map says shard s0 switches its
// primary, a write for s0 waits and runs on the primary of the next map;
// s1 keeps serving; a statement that waits longer than buffer.window gets
// 08006 and did not run.
func TestBufferDuringSwitch(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.Buffer.Window = proxy.Duration(5 * time.Second)
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	createKV(t, ctx, c.Shards)
	m1 := readMap(t, cfg.ShardMapFile)
	switching := m1.Clone()
	switching.Epoch = 2
	switching.Shards[0].Switch = &shardmap.Switch{Kind: shardmap.Switchover, From: switching.Shards[0].Primary, Step: "drain"}
	if ok, err := p.srv.ApplyMap(switching); !ok || err != nil {
		t.Fatalf("apply the switching map: %v %v", ok, err)
	}

	conn := connect(t, p.dsn(""))
	other := connect(t, p.dsn(""))
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := conn.Exec(context.Background(), `INSERT INTO kv (k, v) VALUES (1, 'held')`)
		done <- err
	}()
	// The other shard is not held.
	if _, err := other.Exec(ctx, `INSERT INTO kv (k, v) VALUES (150, 'not held')`); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("the write to the switching shard ran at once (%v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	after := m1.Clone()
	after.Epoch = 3
	if ok, err := p.srv.ApplyMap(after); !ok || err != nil {
		t.Fatalf("apply the map after the switch: %v %v", ok, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("held write failed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held write still waits after the switch ended")
	}
	t.Logf("write held for %s", time.Since(start).Round(time.Millisecond))
	if v, err := c.Shards[0].QueryValue(ctx, `SELECT v FROM kv WHERE k = 1`); err != nil || v != "held" {
		t.Fatalf("held write on s0: %q %v", v, err)
	}

	// A window that ends: 08006, and nothing ran.
	short := kvMapConfig(t, c)
	short.Buffer.Window = proxy.Duration(200 * time.Millisecond)
	p2 := startProxy(t, short)
	sw := switching.Clone()
	if ok, err := p2.srv.ApplyMap(sw); !ok || err != nil {
		t.Fatal(ok, err)
	}
	c2 := connect(t, p2.dsn(""))
	_, err := c2.Exec(ctx, `INSERT INTO kv (k, v) VALUES (2, 'never')`)
	if code := pgCode(err); code != "08006" {
		t.Fatalf("write after the buffer window: got %v, want 08006", err)
	}
	if v, err := c.Shards[0].QueryValue(ctx, `SELECT count(*) FROM kv WHERE k = 2`); err != nil || v != "0" {
		t.Fatalf("the refused write ran: %q %v", v, err)
	}
}

// flakyMeta is a MetaSource whose heartbeats succeed while up is set; its
// watch sends m (when newer than after), then waits.
type flakyMeta struct {
	m         *shardmap.Map
	up        atomic.Bool
	reports   atomic.Value // []string: the last unreachable list sent
	heartbeat atomic.Int64
}

func (f *flakyMeta) WatchMap(ctx context.Context, after uint64, fn func(metarpc.MapVersion) error) error {
	if f.m != nil && f.m.Epoch > after {
		if err := fn(metarpc.MapVersion{Epoch: f.m.Epoch, Map: f.m}); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

func (f *flakyMeta) ProxyHeartbeat(ctx context.Context, id, addr string, applied uint64, unreachable []string) (uint64, error) {
	f.heartbeat.Add(1)
	if !f.up.Load() {
		return 0, errors.New("meta unreachable")
	}
	f.reports.Store(unreachable)
	return applied, nil
}

// TestFailClosed: a proxy that has not reached the meta cluster yet, or
// not for longer than meta_lease, refuses writes (25006) and keeps
// serving reads; when it reaches meta again, writes work again. Its heartbeats report the
// endpoints it cannot reach.
func TestFailClosed(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.MetaLease = proxy.Duration(300 * time.Millisecond)
	cfg.HealthInterval = proxy.Duration(20 * time.Millisecond)
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	createKV(t, ctx, c.Shards)
	meta := &flakyMeta{m: readMap(t, cfg.ShardMapFile)} // down: the proxy has never reached it
	follow(t, p, meta)

	conn := connect(t, p.dsn(""))
	if _, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (1, 'a')`); pgCode(err) != "25006" {
		t.Fatalf("write before the proxy ever reached meta: %v, want 25006", err)
	}
	meta.up.Store(true)
	waitFor(t, func() bool { return !p.srv.MetaContact().IsZero() })
	if _, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (1, 'a')`); err != nil {
		t.Fatal(err)
	}
	meta.up.Store(false)
	waitFor(t, func() bool {
		_, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (2, 'b') ON CONFLICT (k) DO NOTHING`)
		if err != nil && pgCode(err) != "25006" {
			t.Fatalf("write while meta is lost: %v, want 25006", err)
		}
		return err != nil
	})
	var v string
	if err := conn.QueryRow(ctx, `SELECT v FROM kv WHERE k = 1`).Scan(&v); err != nil || v != "a" {
		t.Fatalf("read while meta is lost: %q %v", v, err)
	}
	if _, err := conn.Exec(ctx, `UPDATE kv SET v = 'x' WHERE k = 150`, pgx.QueryExecModeSimpleProtocol); pgCode(err) != "25006" {
		t.Fatalf("simple-protocol write while meta is lost: %v, want 25006", err)
	}
	meta.up.Store(true)
	waitFor(t, func() bool {
		_, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (3, 'c')`)
		return err == nil
	})

	// A primary that goes down is reported to meta.
	if err := c.Shards[1].Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		r, _ := meta.reports.Load().([]string)
		return len(r) == 1 && r[0] == c.Shards[1].Addr()
	})
}

// staleWatchMeta is a MetaSource whose first watch never delivers (a
// member cut off from the leader) while heartbeats, which reach the
// leader, say epoch 2 exists; a second watch delivers it.
type staleWatchMeta struct {
	watches atomic.Int32
	next    *shardmap.Map
}

func (f *staleWatchMeta) WatchMap(ctx context.Context, after uint64, fn func(metarpc.MapVersion) error) error {
	if f.watches.Add(1) > 1 && after < f.next.Epoch {
		if err := fn(metarpc.MapVersion{Epoch: f.next.Epoch, Map: f.next}); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

func (f *staleWatchMeta) ProxyHeartbeat(ctx context.Context, id, addr string, applied uint64, unreachable []string) (uint64, error) {
	return f.next.Epoch, nil
}

// TestStaleWatchReconnects: when heartbeats keep finding the leader at a
// newer epoch than the watch delivered, the proxy reconnects its watch
// and applies the newer map.
func TestStaleWatchReconnects(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	p := startProxy(t, cfg)
	next := readMap(t, cfg.ShardMapFile).Clone()
	next.Epoch = 2
	meta := &staleWatchMeta{next: next}
	follow(t, p, meta)
	waitFor(t, func() bool { return p.srv.MapEpoch() == 2 })
	if n := meta.watches.Load(); n < 2 {
		t.Errorf("the map arrived without a second watch (%d)", n)
	}
}

// readMap reads the shard map file at path.
func readMap(t *testing.T, path string) *shardmap.Map {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := shardmap.ParseYAML(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// follow runs p's FollowMeta on src (heartbeats every 50ms) until the
// test ends.
func follow(t *testing.T, p *testProxy, src proxy.MetaSource) {
	ctx, stop := context.WithCancel(context.Background())
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		p.srv.FollowMeta(ctx, src, "p1", 50*time.Millisecond)
	}()
	t.Cleanup(func() { stop(); <-followed })
}
