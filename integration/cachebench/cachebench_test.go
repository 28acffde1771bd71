// Package cachebench measures the hot-row cache (make bench-cache): a
// Zipfian point-read workload straight to PostgreSQL, through pgshard with
// the cache off and through pgshard with the cache on (cold, then warm), in
// one run; then a 90/10 read/write mix with the writes straight on the
// shard, for the measured staleness. It runs only when PGSHARD_CACHEBENCH
// is set, and prints the Markdown section of docs/benchmarks.md.
//
// The proxies are pgshard binaries in their own processes (PGSHARD_CACHEBENCH_BIN,
// `bin/pgshard proxy --config ...`) and the load generator is pgbench, a
// C client that costs little: `\set id random_zipfian(1, :users, 1.1)`
// then `SELECT name, email FROM users WHERE id = :id` in the prepared
// protocol (-M prepared). The reads that reach PostgreSQL are counted by
// the server (pg_stat_statements), the hits by the proxy
// (pgshard_cache_lookups_total); the proxy's CPU time and RSS come from
// /proc of its process, latencies from pgbench's per-transaction log
// (sampled).
//
// Settings (environment): PGSHARD_CACHEBENCH_USERS (rows, default
// 1000000), PGSHARD_CACHEBENCH_DURATION (per run, default 10s),
// PGSHARD_CACHEBENCH_CLIENTS (default 16), PGSHARD_CACHEBENCH_BASELINE
// (another pgshard binary, an older build: its cache-on runs alternate
// with the binary's, for a before/after comparison),
// PGSHARD_CACHEBENCH_ROUNDS (warm cache-on runs of each binary, the median
// is reported; default 1, 3 with a baseline) and PGSHARD_CACHEBENCH_PROFILE
// (a file: a CPU profile of the proxy during its first warm run, for
// `go tool pprof`).
package cachebench_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
	"github.com/pgshard/pgshard/wire/auth"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// The login role pgbench uses through the proxies.
const (
	benchUser     = "app"
	benchPassword = "app-secret"
)

// readScript and writeScript are the pgbench scripts (-D users=N).
const (
	readScript  = "\\set id random_zipfian(1, :users, 1.1)\nSELECT name, email FROM users WHERE id = :id;\n"
	writeScript = "\\set id random_zipfian(1, :users, 1.1)\nUPDATE users SET name = 'w' || :client_id WHERE id = :id;\n"
	// readQuery is the read as pg_stat_statements normalizes it.
	readQuery = "SELECT name, email FROM users WHERE id = $1"
)

// samplingRate is the share of transactions pgbench logs for latencies.
const samplingRate = 0.05

// result is one run's measurements.
type result struct {
	name              string
	reads, writes     int64
	seconds           float64
	p50, p99          time.Duration
	hits              float64 // cache hits (proxy metric)
	serverReads       float64 // reads PostgreSQL executed (pg_stat_statements)
	proxy             bool
	cpuMicros         float64 // proxy CPU µs per read
	rssMiB            float64 // proxy RSS after the run
	stale50, stale99  float64 // seconds, from pgshard_cache_staleness_seconds
	staleMax          float64 // upper bound of the highest bucket observed
	staleObservations uint64
}

func (r result) rate() float64 { return float64(r.reads) / r.seconds }

type bench struct {
	t          *testing.T
	pg         *pgcluster.Server
	direct     *pgx.Conn
	pgbenchBin string
	dir        string
	users      int
	clients    int
	duration   time.Duration
	mapFile    string
}

func TestCacheBench(t *testing.T) {
	if os.Getenv("PGSHARD_CACHEBENCH") == "" {
		t.Skip("set PGSHARD_CACHEBENCH=1 (make bench-cache)")
	}
	bin := os.Getenv("PGSHARD_CACHEBENCH_BIN")
	if bin == "" {
		t.Fatal("PGSHARD_CACHEBENCH_BIN must name the pgshard binary (make bench-cache builds bin/pgshard)")
	}
	baseline := os.Getenv("PGSHARD_CACHEBENCH_BASELINE")
	rounds := envInt("PGSHARD_CACHEBENCH_ROUNDS", 1)
	if baseline != "" && os.Getenv("PGSHARD_CACHEBENCH_ROUNDS") == "" {
		rounds = 3
	}
	b := &bench{
		t:          t,
		users:      envInt("PGSHARD_CACHEBENCH_USERS", 1_000_000),
		clients:    envInt("PGSHARD_CACHEBENCH_CLIENTS", 16),
		dir:        t.TempDir(),
		pgbenchBin: pgbenchPath(t),
	}
	d, err := time.ParseDuration(os.Getenv("PGSHARD_CACHEBENCH_DURATION"))
	if err != nil || d < time.Second {
		d = 10 * time.Second
	}
	b.duration = d.Round(time.Second)
	b.pg = integration.StartPostgres(t, integration.Settings(map[string]string{
		"synchronous_commit": "on", "max_connections": "200", "shared_preload_libraries": "pg_stat_statements",
	}))
	ctx := context.Background()
	b.direct, err = pgx.Connect(ctx, b.pg.SuperDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.direct.Close(ctx)
	for _, sql := range []string{
		"CREATE EXTENSION pg_stat_statements",
		"CREATE TABLE users (id bigint PRIMARY KEY, name text, email text)",
		fmt.Sprintf("INSERT INTO users SELECT g, 'user' || g, 'user' || g || '@example.com' FROM generate_series(1, %d) g", b.users),
		"VACUUM ANALYZE users",
	} {
		if _, err := b.direct.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	m := shardmaptest.New().Shard("s0", b.pg.Addr()).Range("users").Table("public.users", "id").Map(t)
	m.Tables[0].Cache.Enabled = true
	b.mapFile = filepath.Join(b.dir, "map.yaml")
	if err := os.WriteFile(b.mapFile, []byte(shardmaptest.YAML(t, m)), 0o600); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(b.dir, "read.sql"), readScript)
	writeFile(t, filepath.Join(b.dir, "write.sql"), writeScript)

	off := b.startProxy("off", bin, false)
	on := b.startProxy("on", bin, true)
	var base *proxyProc
	if baseline != "" {
		base = b.startProxy("base", baseline, true)
	}
	directEP := endpoint{host: b.pg.Host, port: b.pg.Port, user: pgcluster.SuperuserName, password: pgcluster.SuperuserPassword}

	// Warm PostgreSQL's buffers; not reported.
	b.run("warm-up", directEP, nil, 0, 5*time.Second)
	var results []result
	add := func(r result) {
		results = append(results, r)
		t.Logf("%s: %.0f reads/s, p50 %v, p99 %v, %.1f%% from cache, %.0f reads reached PostgreSQL, %.1f µs CPU/read, RSS %.0f MiB",
			r.name, r.rate(), r.p50, r.p99, 100*r.hits/math.Max(float64(r.reads), 1), r.serverReads, r.cpuMicros, r.rssMiB)
	}
	add(b.run("straight to PostgreSQL", directEP, nil, 0, b.duration))
	add(b.run("pgshard, cache off", off.ep, off, 0, b.duration))
	on.waitStream(t)
	add(b.run("pgshard, cache on, cold (first run)", on.ep, on, 0, b.duration))
	if base != nil {
		base.waitStream(t)
		add(b.run("pgshard baseline, cache on, cold (first run)", base.ep, base, 0, b.duration))
	}
	var warm, warmBase []result
	for i := range rounds {
		if i == 0 {
			if path := os.Getenv("PGSHARD_CACHEBENCH_PROFILE"); path != "" {
				stop := on.profile(t, b.duration, path)
				warm = append(warm, b.run("pgshard, cache on, warm", on.ep, on, 0, b.duration))
				stop()
			} else {
				warm = append(warm, b.run("pgshard, cache on, warm", on.ep, on, 0, b.duration))
			}
		} else {
			warm = append(warm, b.run("pgshard, cache on, warm", on.ep, on, 0, b.duration))
		}
		if base != nil {
			warmBase = append(warmBase, b.run("pgshard baseline, cache on, warm", base.ep, base, 0, b.duration))
		}
	}
	add(median(warm))
	if base != nil {
		add(median(warmBase))
	}
	// 90/10: a write for every nine reads the warm cache-on run did.
	add(b.run("pgshard, cache on, 90/10 (writes on the shard)", on.ep, on, max(int(median(warm).rate()/9), 1), b.duration))
	fmt.Print(report(results, b, rounds, baseline != ""))
}

// median returns the run with the median read rate (the lower of two).
func median(rs []result) result {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int { return int(a.rate() - b.rate()) })
	r := s[(len(s)-1)/2]
	if len(s) > 1 {
		r.name += fmt.Sprintf(" (median of %d)", len(s))
	}
	return r
}

func writeFile(t *testing.T, path, s string) {
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func pgbenchPath(t *testing.T) string {
	for _, p := range []string{"/usr/lib/postgresql/15/bin/pgbench"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("pgbench")
	if err != nil {
		t.Fatal("pgbench (PostgreSQL 15) is needed: ", err)
	}
	return p
}

// endpoint is where pgbench connects.
type endpoint struct {
	host           string
	port           int
	user, password string
}

// proxyProc is a pgshard proxy in its own process.
type proxyProc struct {
	name  string
	cmd   *exec.Cmd
	done  chan struct{}
	ep    endpoint
	admin string // host:port of its admin listener
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startProxy starts bin as a proxy over the map, cache on or off, and
// stops it when the test ends.
func (b *bench) startProxy(name, bin string, cacheOn bool) *proxyProc {
	t := b.t
	v, err := auth.NewSCRAMVerifier(benchPassword, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	port, adminPort := freePort(t), freePort(t)
	cfg := map[string]any{
		"listen":           fmt.Sprintf("127.0.0.1:%d", port),
		"admin_listen":     fmt.Sprintf("127.0.0.1:%d", adminPort),
		"pool_mode":        "transaction",
		"shutdown_timeout": "5s",
		"users":            []map[string]any{{"name": benchUser, "auth": string(auth.SCRAMSHA256), "password": v.String()}},
		"shard_map_file":   b.mapFile,
		"backend":          map[string]any{"user": pgcluster.SuperuserName, "password": pgcluster.SuperuserPassword, "sslmode": "disable"},
		"pool":             map[string]any{"size": b.clients, "wait_timeout": "30s"},
		"reads":            map[string]any{"read_from": "primary"},
		"cache":            map[string]any{"enabled": cacheOn, "max_bytes": 256 << 20},
	}
	y, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(b.dir, "proxy-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "pgshard.yaml"), string(y))
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "pgshard.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(abs, "proxy", "--config", filepath.Join(dir, "pgshard.yaml"), "--log-level", "warn", "--meta-listen", "")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "PGSHARD_BACKEND_PASSWORD="+pgcluster.SuperuserPassword, "PGSHARD_ADMIN_TOKEN=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := pgcluster.StartOnSpawner(cmd); err != nil {
		t.Fatalf("start %s: %v", abs, err)
	}
	p := &proxyProc{name: name, cmd: cmd, done: make(chan struct{}), admin: fmt.Sprintf("127.0.0.1:%d", adminPort),
		ep: endpoint{host: "127.0.0.1", port: port, user: benchUser, password: benchPassword}}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.ep.addr(), time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-p.done:
			t.Fatalf("proxy %s exited; log: %s", name, readTail(filepath.Join(dir, "pgshard.log")))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy %s is not listening: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

func (e endpoint) addr() string { return net.JoinHostPort(e.host, strconv.Itoa(e.port)) }

func readTail(path string) string {
	bs, _ := os.ReadFile(path)
	if len(bs) > 2000 {
		bs = bs[len(bs)-2000:]
	}
	return string(bs)
}

// families scrapes the proxy's metrics.
func (p *proxyProc) families(t *testing.T) map[string]*dto.MetricFamily {
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// waitStream waits until p's cache serves s0.
func (p *proxyProc) waitStream(t *testing.T) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if f := p.families(t)["pgshard_cache_stream_up"]; f != nil && len(f.Metric) > 0 && f.Metric[0].GetGauge().GetValue() == 1 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the invalidation stream of proxy %s did not come up", p.name)
}

// cacheCounters returns the cache hits and the staleness histogram.
func (p *proxyProc) cacheCounters(t *testing.T) (hits float64, stale *dto.Histogram) {
	fams := p.families(t)
	if f := fams["pgshard_cache_lookups_total"]; f != nil {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == "result" && l.GetValue() == "hit" {
					hits += m.GetCounter().GetValue()
				}
			}
		}
	}
	if f := fams["pgshard_cache_staleness_seconds"]; f != nil && len(f.Metric) > 0 {
		stale = f.Metric[0].GetHistogram()
	}
	return hits, stale
}

// profile takes a CPU profile of the proxy for d into path, in the
// background; the returned function waits for it.
func (p *proxyProc) profile(t *testing.T, d time.Duration, path string) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.admin, int(d.Seconds())))
		if err != nil {
			t.Errorf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err != nil {
			t.Errorf("profile: %v", err)
			return
		}
		defer f.Close()
		if _, err := io.Copy(f, resp.Body); err != nil {
			t.Errorf("profile: %v", err)
		}
	}()
	return func() { <-done }
}

// cpuTicks returns utime+stime of pid in clock ticks (/proc/PID/stat).
func cpuTicks(t *testing.T, pid int) int64 {
	bs, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(bs)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	u, _ := strconv.ParseInt(f[14-3], 10, 64)
	st, _ := strconv.ParseInt(f[15-3], 10, 64)
	return u + st
}

// rssMiB returns the resident set size of pid (/proc/PID/status VmRSS).
func rssMiB(pid int) float64 {
	bs, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for line := range strings.SplitSeq(string(bs), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// clockTicks is USER_HZ (100 on every Linux platform Go supports).
const clockTicks = 100

// serverReads returns the executions of the read on the server.
func (b *bench) serverReads() float64 {
	var n float64
	err := b.direct.QueryRow(context.Background(),
		"SELECT coalesce(sum(calls), 0)::float8 FROM pg_stat_statements WHERE query = $1", readQuery).Scan(&n)
	if err != nil {
		b.t.Fatal(err)
	}
	return n
}

var reProcessed = regexp.MustCompile(`number of transactions actually processed: (\d+)`)

// pgbench runs script against ep for d and returns the transactions done.
func (b *bench) pgbench(ctx context.Context, ep endpoint, script string, clients, jobs int, d time.Duration, extra ...string) (int64, error) {
	args := append([]string{"-n", "-M", "prepared", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(jobs),
		"-T", strconv.Itoa(int(d.Seconds())), "-D", "users=" + strconv.Itoa(b.users), "-f", filepath.Join(b.dir, script),
		"-h", ep.host, "-p", strconv.Itoa(ep.port), "-U", ep.user}, extra...)
	args = append(args, "postgres")
	cmd := exec.CommandContext(ctx, b.pgbenchBin, args...)
	cmd.Dir = b.dir
	cmd.Env = append(os.Environ(), "PGPASSWORD="+ep.password, "PGSSLMODE=disable")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench %s: %w\n%s", script, err, out)
	}
	m := reProcessed.FindSubmatch(out)
	if m == nil || strings.Contains(string(out), "aborted") {
		return 0, fmt.Errorf("pgbench %s: no result\n%s", script, out)
	}
	return strconv.ParseInt(string(m[1]), 10, 64)
}

// run runs the read workload through ep for d (p is the proxy behind it,
// nil straight to PostgreSQL); with writeRate, a second pgbench writes
// that many times a second the same keys straight on the shard.
func (b *bench) run(name string, ep endpoint, p *proxyProc, writeRate int, d time.Duration) result {
	t := b.t
	ctx, cancel := context.WithTimeout(context.Background(), d+2*time.Minute)
	defer cancel()
	logDir := filepath.Join(b.dir, fmt.Sprintf("log-%d", time.Now().UnixNano()))
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var h0 float64
	var ticks0 int64
	if p != nil {
		h0, _ = p.cacheCounters(t)
		ticks0 = cpuTicks(t, p.cmd.Process.Pid)
	}
	s0 := b.serverReads()
	var writes int64
	var werr error
	var wg sync.WaitGroup
	if writeRate > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			direct := endpoint{host: b.pg.Host, port: b.pg.Port, user: pgcluster.SuperuserName, password: pgcluster.SuperuserPassword}
			writes, werr = b.pgbench(ctx, direct, "write.sql", 2, 1, d, "-R", strconv.Itoa(writeRate))
		}()
	}
	reads, err := b.pgbench(ctx, ep, "read.sql", b.clients, 2, d,
		"-l", "--sampling-rate", strconv.FormatFloat(samplingRate, 'f', -1, 64), "--log-prefix", filepath.Join(logDir, "tx"))
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if werr != nil {
		t.Fatal(werr)
	}
	r := result{name: name, reads: reads, writes: writes, seconds: d.Seconds(), proxy: p != nil}
	r.serverReads = b.serverReads() - s0
	r.p50, r.p99 = latencies(t, logDir)
	if p != nil {
		h, st := p.cacheCounters(t)
		r.hits = h - h0
		r.cpuMicros = float64(cpuTicks(t, p.cmd.Process.Pid)-ticks0) / clockTicks * 1e6 / math.Max(float64(reads), 1)
		r.rssMiB = rssMiB(p.cmd.Process.Pid)
		if st != nil {
			r.stale50, r.stale99, r.staleMax, r.staleObservations = quantile(st, 0.5), quantile(st, 0.99), quantile(st, 1), st.GetSampleCount()
		}
	}
	return r
}

// latencies reads pgbench's per-transaction logs in dir (the latency in
// µs is the third field) and returns p50 and p99.
func latencies(t *testing.T, dir string) (time.Duration, time.Duration) {
	files, err := filepath.Glob(filepath.Join(dir, "tx*"))
	if err != nil {
		t.Fatal(err)
	}
	var all []int64
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 3 {
				continue
			}
			if us, err := strconv.ParseInt(fs[2], 10, 64); err == nil {
				all = append(all, us)
			}
		}
		fh.Close()
	}
	if len(all) == 0 {
		return 0, 0
	}
	slices.Sort(all)
	pct := func(q float64) time.Duration {
		return time.Duration(all[min(len(all)-1, int(q*float64(len(all))))]) * time.Microsecond
	}
	return pct(0.5), pct(0.99)
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

func report(rs []result, b *bench, rounds int, ab bool) string {
	var w strings.Builder
	fmt.Fprintf(&w, "\n## Hot-row cache (make bench-cache, %s)\n\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&w, "Zipfian (s = 1.1) point reads `SELECT name, email FROM users WHERE id = $1` of %d users: pgbench, %d clients, 2 threads, `-M prepared`, %v per run; "+
		"one PostgreSQL 15 server; each proxy a `bin/pgshard proxy` process of its own (pool of %d); %d cores.", b.users, b.clients, b.duration, b.clients, runtime.NumCPU())
	if rounds > 1 {
		fmt.Fprintf(&w, " Warm runs: the median of %d, alternating%s.", rounds, map[bool]string{true: " with the baseline binary", false: ""}[ab])
	}
	w.WriteString("\n\n| run | reads/s | p50 | p99 | answered from cache | reads reaching PostgreSQL | proxy CPU per read | proxy RSS |\n|---|---|---|---|---|---|---|---|\n")
	base := rs[0].rate()
	for _, r := range rs {
		share, cpu, rss := "—", "—", "—"
		if r.proxy {
			share = fmt.Sprintf("%.1f%%", 100*r.hits/math.Max(float64(r.reads), 1))
			cpu = fmt.Sprintf("%.1f µs", r.cpuMicros)
			rss = fmt.Sprintf("%.0f MiB", r.rssMiB)
		}
		fmt.Fprintf(&w, "| %s | %.0f (%.2f×) | %v | %v | %s | %.0f/s (%.0f%% of reads) | %s | %s |\n", r.name,
			r.rate(), r.rate()/base, r.p50, r.p99, share, r.serverReads/r.seconds, 100*r.serverReads/math.Max(float64(r.reads), 1), cpu, rss)
	}
	last := rs[len(rs)-1]
	w.WriteString("\nReads reaching PostgreSQL are counted by the server (pg_stat_statements calls of the read); answered from cache by the proxy (pgshard_cache_lookups_total{result=\"hit\"}); proxy CPU is utime+stime of its process (/proc/PID/stat) over the reads; p50/p99 from pgbench's per-transaction log (5% sampled).\n")
	fmt.Fprintf(&w, "\n90/10 mix: %d writes (`UPDATE users SET name = ... WHERE id = :id`, Zipfian, 2 pgbench clients straight on the shard); staleness (commit to invalidation, pgshard_cache_staleness_seconds, bucket upper bounds) p50 ≤ %gs, p99 ≤ %gs, max ≤ %gs over %d invalidations.\n",
		last.writes, last.stale50, last.stale99, last.staleMax, last.staleObservations)
	return w.String()
}
