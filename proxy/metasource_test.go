package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
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
	return shardmaptest.KV(nil, primary).Epoch(epoch).Map(t)
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
	createKV(t, ctx, c.Shards)
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

// behindMeta is a MetaSource whose leader holds cur while its first
// watch is served by a member behind it, which sends old (once a
// heartbeat has been answered); later watches send cur once release is
// closed.
type behindMeta struct {
	old, cur *shardmap.Map
	watches  atomic.Int32
	answered chan struct{} // closed at the first heartbeat
	once     sync.Once
	release  chan struct{}
}

func (f *behindMeta) WatchMap(ctx context.Context, after uint64, fn func(metarpc.MapVersion) error) error {
	m := f.old
	wait := f.answered
	if f.watches.Add(1) > 1 {
		m, wait = f.cur, f.release
	}
	select {
	case <-wait:
	case <-ctx.Done():
		return ctx.Err()
	}
	if m.Epoch > after {
		if err := fn(metarpc.MapVersion{Epoch: m.Epoch, Map: m}); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

func (f *behindMeta) ProxyHeartbeat(ctx context.Context, id, addr string, applied uint64, unreachable []string) (uint64, error) {
	f.once.Do(func() { close(f.answered) })
	return f.cur.Epoch, nil
}

// TestFirstMapBehindTheLeader: a proxy whose first map comes from a meta
// member behind the leader routes reads by it but refuses writes until it
// has the leader's epoch; then writes go to that map's primary.
func TestFirstMapBehindTheLeader(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	ctx := ctxT(t)
	old, cur := c.Shards[0], c.Shards[1]
	createKV(t, ctx, c.Shards)
	cfg := baseConfig(t, old)
	cfg.FollowsMeta = true
	p := startProxy(t, cfg)
	meta := &behindMeta{old: oneShardMap(t, old.Addr(), 1), cur: oneShardMap(t, cur.Addr(), 2),
		answered: make(chan struct{}), release: make(chan struct{})}
	follow(t, p, meta)
	// The stale map is in use and the watch reconnected to find the
	// leader's (which it does not get yet).
	waitFor(t, func() bool { return p.srv.MapEpoch() == 1 && meta.watches.Load() >= 2 })
	conn := connect(t, p.dsn(""))
	if _, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (1, 'x')`); pgCode(err) != "25006" {
		t.Fatalf("write with a map older than the leader's: %v, want 25006", err)
	}
	close(meta.release)
	waitFor(t, func() bool { return p.srv.WriteRefusal() == "" })
	if got := p.srv.MapEpoch(); got != 2 {
		t.Fatalf("writes allowed at epoch %d, the leader has 2", got)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (1, 'x')`); err != nil {
		t.Fatal(err)
	}
	if got := kvRows(t, ctx, cur, 1); got != "1" {
		t.Errorf("the write is not on the leader's primary %s (%s rows)", cur.Addr(), got)
	}
	if got := kvRows(t, ctx, old, 1); got != "0" {
		t.Errorf("the write went to %s, the primary of the stale map (%s rows)", old.Addr(), got)
	}
}

// logCapture collects the default logger's output until the test ends.
type logCapture struct{ testutil.Buffer }

// lines returns the captured lines containing every one of subs.
func (l *logCapture) lines(subs ...string) []string {
	var out []string
next:
	for _, line := range strings.Split(l.String(), "\n") {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

func captureLogs(t *testing.T) *logCapture {
	l := &logCapture{}
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo})))
	t.Cleanup(func() { slog.SetDefault(prev) })
	return l
}

// get answers GET path from p's admin API: status and body.
func get(p *testProxy, path string) (int, string) {
	rec := httptest.NewRecorder()
	p.srv.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// TestFailClosedIsVisible: while a proxy that follows meta refuses
// writes — no contact yet, lease expired — it says so: a warning with
// the reason and the lease when it starts refusing, an info line when it
// stops, /readyz 503 with the reason (/healthz stays 200), and
// pgshard_meta_fail_closed 1.
func TestFailClosedIsVisible(t *testing.T) {
	pg := integration.StartPostgres(t)
	logs := captureLogs(t)
	cfg := baseConfig(t, pg)
	cfg.FollowsMeta = true
	cfg.MetaLease = proxy.Duration(300 * time.Millisecond)
	p := startProxy(t, cfg)
	meta := newMapMeta(oneShardMap(t, pg.Addr(), 1))
	meta.up.Store(false)

	failClosed := func() string {
		for _, l := range strings.Split(scrape(t, p), "\n") {
			if v, ok := strings.CutPrefix(l, "pgshard_meta_fail_closed "); ok {
				return v
			}
		}
		return "(none)"
	}
	// refusing waits until /readyz gives reason, then checks the other
	// signs; the warning names logReason.
	refusing := func(reason, logReason string) {
		t.Helper()
		waitFor(t, func() bool {
			code, body := get(p, "/readyz")
			return code == http.StatusServiceUnavailable && strings.Contains(body, reason)
		})
		if code, _ := get(p, "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz while refusing writes: %d, want 200", code)
		}
		if got := failClosed(); got != "1" {
			t.Errorf("pgshard_meta_fail_closed while refusing writes: %s, want 1", got)
		}
		waitFor(t, func() bool {
			return len(logs.lines("level=WARN", "refusing writes", logReason, "meta_lease=300ms")) > 0
		})
	}
	accepting := func(infos int) {
		t.Helper()
		waitFor(t, func() bool { code, _ := get(p, "/readyz"); return code == http.StatusOK })
		if got := failClosed(); got != "0" {
			t.Errorf("pgshard_meta_fail_closed while accepting writes: %s, want 0", got)
		}
		waitFor(t, func() bool { return len(logs.lines("level=INFO", "writes allowed again")) == infos })
	}

	// Before FollowMeta has heard anything: already refusing.
	if code, body := get(p, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready for writes") {
		t.Errorf("/readyz of a proxy that follows meta but has not heard from it: %d %q", code, body)
	}
	follow(t, p, meta)
	// Meta's map arrives (the watch works), the leader does not answer:
	// waiting for it at the start is said at info, and at warn once it
	// outlasts meta_lease.
	waitFor(t, func() bool {
		return len(logs.lines("level=INFO", "writes wait until the meta cluster confirms", "meta_lease=300ms")) == 1
	})
	refusing("the meta leader has not answered a heartbeat yet", "reason=")
	if n := len(logs.lines("level=WARN", "refusing writes")); n != 1 {
		t.Errorf("%d warnings on entering the refusing state, want 1:\n%s", n, strings.Join(logs.lines("refusing writes"), "\n"))
	}
	meta.up.Store(true)
	accepting(1)

	meta.up.Store(false) // the lease runs out
	refusing("no answer from the meta leader for", "no answer from the meta leader for")
	meta.up.Store(true)
	accepting(2)
	if n := len(logs.lines("level=WARN", "refusing writes")); n != 2 {
		t.Errorf("%d warnings for two times the proxy refused writes, want 2", n)
	}
}

// TestPromptMetaStartLogsNoWarning: a proxy whose meta cluster answers
// at once waits for it only at info level — a normal start is not a
// warning.
func TestPromptMetaStartLogsNoWarning(t *testing.T) {
	pg := integration.StartPostgres(t)
	logs := captureLogs(t)
	cfg := baseConfig(t, pg)
	cfg.FollowsMeta = true
	cfg.MetaLease = proxy.Duration(5 * time.Second)
	p := startProxy(t, cfg)
	follow(t, p, newMapMeta(oneShardMap(t, pg.Addr(), 1)))
	// Writes are allowed; the wait, when the proxy's watcher saw one (it
	// may look only after meta has answered), is closed at info level.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(p, "/readyz")
		waits := len(logs.lines("level=INFO", "writes wait until the meta cluster confirms"))
		if code == http.StatusOK && len(logs.lines("level=INFO", "writes allowed again")) == waits {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes not allowed 10 s after a prompt start (/readyz %d %q); the proxy's log:\n%s", code, body, strings.Join(logs.lines(""), "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if w := logs.lines("level=WARN", "refusing writes"); len(w) > 0 {
		t.Errorf("a prompt start logged a warning:\n%s", strings.Join(w, "\n"))
	}
}
