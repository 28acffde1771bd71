// Package cachebench measures the hot-row cache (make bench-cache): a
// Zipfian point-read workload through pgshard with the cache on, with it
// off, and straight to PostgreSQL, in one run; then a 90/10 read/write
// mix with the writes straight on the shard, for the measured staleness.
// It runs only when PGSHARD_CACHEBENCH is set, and prints the Markdown
// section of docs/benchmarks.md.
//
// Settings (environment): PGSHARD_CACHEBENCH_USERS (rows, default
// 1000000), PGSHARD_CACHEBENCH_DURATION (per run, default 10s),
// PGSHARD_CACHEBENCH_CLIENTS (default 16). The proxy runs in the test
// process, with the load generator: both share the machine, as the
// server does.
package cachebench_test

import (
	"context"
	"fmt"
	"math"
	"math/rand"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// result is one run's measurements.
type result struct {
	name              string
	reads, writes     int64
	seconds           float64
	p50, p99          time.Duration
	hits, lookups     float64
	heapMiB           float64
	stale50, stale99  float64 // seconds, from pgshard_cache_staleness_seconds
	staleMax          float64 // upper bound of the highest bucket observed
	staleObservations uint64
}

func TestCacheBench(t *testing.T) {
	if os.Getenv("PGSHARD_CACHEBENCH") == "" {
		t.Skip("set PGSHARD_CACHEBENCH=1 (make bench-cache)")
	}
	users := envInt("PGSHARD_CACHEBENCH_USERS", 1_000_000)
	clients := envInt("PGSHARD_CACHEBENCH_CLIENTS", 16)
	duration, err := time.ParseDuration(os.Getenv("PGSHARD_CACHEBENCH_DURATION"))
	if err != nil || duration <= 0 {
		duration = 10 * time.Second
	}
	pg := integration.StartPostgres(t, integration.Settings(map[string]string{"synchronous_commit": "on", "max_connections": "200"}))
	ctx := context.Background()
	direct, err := pgx.Connect(ctx, pg.SuperDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	for _, sql := range []string{
		"CREATE TABLE users (id bigint PRIMARY KEY, name text, email text)",
		fmt.Sprintf("INSERT INTO users SELECT g, 'user' || g, 'user' || g || '@example.com' FROM generate_series(1, %d) g", users),
		"VACUUM ANALYZE users",
	} {
		if _, err := direct.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	m := shardmaptest.New().Shard("s0", pg.Addr()).Range("users").Table("public.users", "id").Map(t)
	m.Tables[0].Cache.Enabled = true
	mapFile := t.TempDir() + "/map.yaml"
	if err := os.WriteFile(mapFile, []byte(shardmaptest.YAML(t, m)), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(cacheOn bool) *testproxy.Proxy {
		cfg := testproxy.Config(t, pg)
		cfg.Shards, cfg.ShardMapFile = nil, mapFile
		cfg.Pool.Size = clients
		cfg.Reads.ReadFrom = proxy.ReadFromPrimary
		cfg.Cache = proxy.CacheConfig{Enabled: cacheOn, MaxBytes: 256 << 20}
		return testproxy.Start(t, cfg)
	}
	on, off := start(true), start(false)
	waitUp(t, on)

	var results []result
	run := func(name, dsn string, p *testproxy.Proxy, writeShare float64) {
		var h0, l0 float64
		if p != nil {
			h0, l0, _ = cacheCounters(t, p)
		}
		r := load(t, dsn, direct, users, clients, duration, writeShare)
		r.name = name
		if p != nil {
			h, l, st := cacheCounters(t, p)
			r.hits, r.lookups = h-h0, l-l0
			if st != nil {
				r.stale50, r.stale99, r.staleMax, r.staleObservations = quantile(st, 0.5), quantile(st, 0.99), quantile(st, 1), st.GetSampleCount()
			}
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		r.heapMiB = float64(ms.HeapInuse) / (1 << 20)
		results = append(results, r)
		t.Logf("%s: %.0f reads/s, p50 %v, p99 %v, hits %.0f of %.0f lookups", name,
			float64(r.reads)/r.seconds, r.p50, r.p99, r.hits, r.lookups)
	}
	run("straight to PostgreSQL", pg.SuperDSN("postgres"), nil, 0)
	run("pgshard, cache off", off.DSN(""), off, 0)
	run("pgshard, cache on", on.DSN(""), on, 0)
	run("pgshard, cache on, 90/10 (writes on the shard)", on.DSN(""), on, 0.1)
	fmt.Print(report(results, users, clients, duration))
}

// waitUp waits until p's cache serves s0.
func waitUp(t *testing.T, p *testproxy.Proxy) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if v := gauge(t, p, "pgshard_cache_stream_up"); v == 1 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the cache's stream did not come up")
}

func families(t *testing.T, p *testproxy.Proxy) map[string]*dto.MetricFamily {
	rec := httptest.NewRecorder()
	p.Server.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func gauge(t *testing.T, p *testproxy.Proxy, name string) float64 {
	f := families(t, p)[name]
	if f == nil || len(f.Metric) == 0 {
		return 0
	}
	return f.Metric[0].GetGauge().GetValue()
}

// cacheCounters returns hits, all lookups and the staleness histogram.
func cacheCounters(t *testing.T, p *testproxy.Proxy) (hits, lookups float64, stale *dto.Histogram) {
	fams := families(t, p)
	if f := fams["pgshard_cache_lookups_total"]; f != nil {
		for _, m := range f.Metric {
			v := m.GetCounter().GetValue()
			lookups += v
			for _, l := range m.Label {
				if l.GetName() == "result" && l.GetValue() == "hit" {
					hits += v
				}
			}
		}
	}
	if f := fams["pgshard_cache_staleness_seconds"]; f != nil && len(f.Metric) > 0 {
		stale = f.Metric[0].GetHistogram()
	}
	return hits, lookups, stale
}

// quantile is the upper bound of the bucket holding quantile q.
func quantile(h *dto.Histogram, q float64) float64 {
	n := h.GetSampleCount()
	if n == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(n)))
	for _, b := range h.Bucket {
		if b.GetCumulativeCount() >= want {
			return b.GetUpperBound()
		}
	}
	return math.Inf(1)
}

// load runs clients sessions of Zipfian (s = 1.1) point reads of users
// through dsn for d; a share of the operations are writes of the same
// keys straight on the shard (through direct's server).
func load(t *testing.T, dsn string, direct *pgx.Conn, users, clients int, d time.Duration, writeShare float64) result {
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	var reads, writes atomic.Int64
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	var failed atomic.Value
	stop := time.Now().Add(d)
	writeDSN := direct.Config().ConnString()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				failed.Store(err)
				return
			}
			defer c.Close(context.Background())
			var w *pgx.Conn
			if writeShare > 0 {
				if w, err = pgx.Connect(ctx, writeDSN); err != nil {
					failed.Store(err)
					return
				}
				defer w.Close(context.Background())
			}
			r := rand.New(rand.NewSource(int64(i) + 1))
			z := rand.NewZipf(r, 1.1, 1, uint64(users-1))
			for time.Now().Before(stop) {
				id := int64(z.Uint64()) + 1
				if writeShare > 0 && r.Float64() < writeShare {
					if _, err := w.Exec(ctx, "UPDATE users SET name = $2 WHERE id = $1", id, "w"+strconv.Itoa(r.Int())); err != nil {
						failed.Store(err)
						return
					}
					writes.Add(1)
					continue
				}
				var name, email string
				t0 := time.Now()
				if err := c.QueryRow(ctx, "SELECT name, email FROM users WHERE id = $1", id).Scan(&name, &email); err != nil {
					failed.Store(err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
				reads.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(q float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(q*float64(len(all))))]
	}
	return result{reads: reads.Load(), writes: writes.Load(), seconds: d.Seconds(), p50: pct(0.5), p99: pct(0.99)}
}

func report(rs []result, users, clients int, d time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Hot-row cache (make bench-cache, %s)\n\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "Zipfian (s = 1.1) point reads `SELECT name, email FROM users WHERE id = $1` of %d users, %d clients (pgx, extended protocol), %v per run, one PostgreSQL 15 server, proxy in the load generator's process; %d cores, shared.\n\n", users, clients, d, runtime.NumCPU())
	b.WriteString("| run | reads/s | p50 | p99 | answered from cache | reads reaching PostgreSQL | Go heap in use |\n|---|---|---|---|---|---|---|\n")
	base := float64(rs[0].reads) / rs[0].seconds
	for _, r := range rs {
		share := "—"
		if r.lookups > 0 || r.name != rs[0].name {
			share = fmt.Sprintf("%.1f%%", 100*r.hits/math.Max(float64(r.reads), 1))
		}
		reached := float64(r.reads) - r.hits
		fmt.Fprintf(&b, "| %s | %.0f (%.2f×) | %v | %v | %s | %.0f/s (%.0f%% of reads) | %.0f MiB |\n", r.name,
			float64(r.reads)/r.seconds, float64(r.reads)/r.seconds/base, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond),
			share, reached/r.seconds, 100*reached/math.Max(float64(r.reads), 1), r.heapMiB)
	}
	last := rs[len(rs)-1]
	b.WriteString("\nReads reaching PostgreSQL are the reads the cache did not answer (pgshard_cache_lookups_total); the Go heap is the test process's (proxies and load generator).\n")
	fmt.Fprintf(&b, "\n90/10 mix: %d writes straight on the shard; staleness (commit to invalidation, pgshard_cache_staleness_seconds, bucket upper bounds) p50 ≤ %gs, p99 ≤ %gs, max ≤ %gs over %d invalidations.\n",
		last.writes, last.stale50, last.stale99, last.staleMax, last.staleObservations)
	return b.String()
}
