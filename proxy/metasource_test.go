package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// mapMeta is a MetaSource holding one map (set): its watch sends every
// newer map; its heartbeats succeed while up is set and report the map's
// epoch.
type mapMeta struct {
	mu      sync.Mutex
	m       *shardmap.Map
	changed chan struct{}
	up      atomic.Bool
	applied atomic.Uint64 // the epoch the last heartbeat reported
}

func newMapMeta(m *shardmap.Map) *mapMeta {
	f := &mapMeta{m: m, changed: make(chan struct{})}
	f.up.Store(true)
	return f
}

// set makes m the meta cluster's map.
func (f *mapMeta) set(m *shardmap.Map) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m = m
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *mapMeta) current() (*shardmap.Map, chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m, f.changed
}

func (f *mapMeta) WatchMap(ctx context.Context, after uint64, fn func(metarpc.MapVersion) error) error {
	for {
		m, changed := f.current()
		if m != nil && m.Epoch > after {
			if err := fn(metarpc.MapVersion{Epoch: m.Epoch, Map: m}); err != nil {
				return err
			}
			after = m.Epoch
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

func (f *mapMeta) ProxyHeartbeat(ctx context.Context, id, addr string, applied uint64, unreachable []string) (uint64, error) {
	if !f.up.Load() {
		return 0, errors.New("meta unreachable")
	}
	f.applied.Store(applied)
	m, _ := f.current()
	if m == nil {
		return 0, nil
	}
	return m.Epoch, nil
}

// oneShardMap is a map with one shard, s0, served by primary, holding
// table kv (key k) whole.
func oneShardMap(t *testing.T, primary string, epoch uint64) *shardmap.Map {
	t.Helper()
	m, err := shardmap.ParseYAML(fmt.Appendf(nil, `epoch: %d
shards:
  - {name: s0, primary: %q}
distributions:
  - name: kv
    key_type: bigint
    strategy: range
    default_shard: s0
    intervals:
      - {lo: -inf, hi: +inf, shard: s0}
tables:
  - {name: public.kv, distribution: kv, key: k}
`, epoch, primary))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// kvRows counts the rows of kv with key k on srv.
func kvRows(t *testing.T, ctx context.Context, srv *pgcluster.Server, k int) string {
	t.Helper()
	v, err := srv.QueryValue(ctx, fmt.Sprintf(`SELECT count(*) FROM kv WHERE k = %d`, k))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMetaMapIsTheSourceOfTruth: a proxy that follows meta routes by the
// meta cluster's map, never by servers its configuration names: not by
// its shards' hosts, not by a shard_map_file (nor a saved map) at the
// same epoch naming another primary. Until meta's map has arrived it
// refuses writes, even though the leader answers its heartbeats; the map
// it then routes by is saved to map_state_file.
func TestMetaMapIsTheSourceOfTruth(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	ctx := ctxT(t)
	old, cur := c.Shards[0], c.Shards[1] // cur is the primary in meta's map
	for _, srv := range c.Shards {
		if err := srv.Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text)`); err != nil {
			t.Fatal(err)
		}
	}
	metaMap := oneShardMap(t, cur.Addr(), 1)

	t.Run("config shards", func(t *testing.T) {
		// As `pgshard proxy --meta` starts: the configuration names the
		// old server, meta's map the current one.
		cfg := baseConfig(t, old)
		cfg.FollowsMeta = true
		if err := cfg.UseShardMap(metaMap.Clone()); err != nil {
			t.Fatal(err)
		}
		p := startProxy(t, cfg)
		follow(t, p, newMapMeta(metaMap))
		waitFor(t, func() bool { return p.srv.WriteRefusal() == "" })
		conn := connect(t, p.dsn(""))
		if _, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (1, 'x')`); err != nil {
			t.Fatal(err)
		}
		if got := kvRows(t, ctx, cur, 1); got != "1" {
			t.Errorf("the write is not on meta's primary %s (%s rows)", cur.Addr(), got)
		}
		if got := kvRows(t, ctx, old, 1); got != "0" {
			t.Errorf("the write went to %s, the configuration's host (%s rows)", old.Addr(), got)
		}
	})

	t.Run("same epoch map file", func(t *testing.T) {
		stale := oneShardMap(t, old.Addr(), 1) // same epoch, other primary
		b, err := stale.YAML()
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		cfg := baseConfig(t, old)
		cfg.Shards = nil
		cfg.FollowsMeta = true
		cfg.ShardMapFile = filepath.Join(dir, "map.yaml")
		cfg.MapStateFile = filepath.Join(dir, "state.yaml")
		if err := os.WriteFile(cfg.ShardMapFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
		p := startProxy(t, cfg)
		if _, err := os.Stat(cfg.MapStateFile); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("map_state_file written before meta sent a map: %v", err)
		}
		meta := newMapMeta(nil) // answers heartbeats, has not sent its map
		follow(t, p, meta)
		waitFor(t, func() bool { return !p.srv.MetaContact().IsZero() })
		conn := connect(t, p.dsn(""))
		if _, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (2, 'x')`); pgCode(err) != "25006" {
			t.Fatalf("write before meta sent its map: %v, want 25006", err)
		}
		if why := p.srv.WriteRefusal(); !strings.Contains(why, "no shard map from the meta cluster") {
			t.Errorf("WriteRefusal before meta's map: %q", why)
		}
		if got := meta.applied.Load(); got != 0 {
			t.Errorf("the proxy reported epoch %d to meta before it had meta's map", got)
		}
		meta.set(metaMap)
		waitFor(t, func() bool { return p.srv.WriteRefusal() == "" })
		if _, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (2, 'x')`); err != nil {
			t.Fatal(err)
		}
		if got := kvRows(t, ctx, cur, 2); got != "1" {
			t.Errorf("the write is not on meta's primary %s (%s rows)", cur.Addr(), got)
		}
		if got := kvRows(t, ctx, old, 2); got != "0" {
			t.Errorf("the write went to %s, shard_map_file's primary at the same epoch (%s rows)", old.Addr(), got)
		}
		saved := readMap(t, cfg.MapStateFile)
		if saved.Epoch != 1 || saved.Shards[0].Primary.String() != cur.Addr() {
			t.Errorf("map_state_file holds epoch %d with primary %s, want meta's (epoch 1, %s)", saved.Epoch, saved.Shards[0].Primary, cur.Addr())
		}
		waitFor(t, func() bool { return meta.applied.Load() == 1 })
		// Later maps follow the usual rule: only newer epochs apply.
		if ok, err := p.srv.ApplyMap(stale); ok || err != nil {
			t.Errorf("ApplyMap of a map at the same epoch: %v %v, want ignored", ok, err)
		}
	})
}
