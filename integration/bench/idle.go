package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/internal/pgcluster"
)

// targetParked is pgshard with limits.park_idle_clients on (-idle-park;
// the default since 2026-12-07, while targetPgshard here runs with it
// off), targetBaselineParked the -baseline binary with it on.
const (
	targetParked         = "pgshard-parked"
	targetBaselineParked = "pgshard-baseline-parked"
)

// idleResult is one idle-clients run: a proxy started afresh, N clients
// that authenticated and ran one query, then idle.
type idleResult struct {
	target   string
	clients  int
	fdLimit  string // the proxy's "Max open files" (soft) from /proc/PID/limits
	before   int64  // proxy VmRSS in bytes before the clients connected
	after    int64  // and with them connected, idle
	ok       int64  // clients connected and answered
	failed   int64  // clients that failed to connect or query
	checkOK  int64  // clients that answered the check query after pgbench
	checkBad int64
	firstErr string
	// Go runtime figures of pgshard from its /metrics, before and after
	// (zero for PgBouncer): stack and heap in use, goroutines.
	stack, heap, goroutines [2]float64
	haveGo                  bool
	pgbench                 *result // the pgbench run with the clients connected
	note                    string
}

func (r idleResult) perClient() float64 {
	if r.ok == 0 {
		return 0
	}
	return float64(r.after-r.before) / float64(r.ok)
}

// runIdle compares what idle clients cost pgshard and PgBouncer: for each
// count in -idle-clients, a freshly started proxy gets that many clients
// (from -idle-procs load-generator processes), each authenticated and having
// run one query, and the proxy's RSS is read before and after; with the
// largest count connected, pgbench runs through the same proxy, and then
// every idle client runs one more query.
func runIdle(ctx context.Context, o *options, env *environment, tmp, pgbenchBin, bouncerBin string, logf func(string, ...any)) (err error) {
	logf("idle clients: starting PostgreSQL")
	pg, err := startPostgres(ctx, "idle", env)
	if err != nil {
		return err
	}
	defer destroyPostgres(ctx, pg, &err)
	super := endpoint{host: pg.Host, port: pg.Port, user: pgcluster.SuperuserName, password: pgcluster.SuperuserPassword, dbname: benchDB}
	if err := pgbenchInit(ctx, pgbenchBin, super, 1); err != nil {
		return err
	}
	if err := pg.Exec(ctx, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO "+benchUser); err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	maxN := 0
	for _, n := range o.idleClients {
		maxN = max(maxN, n)
	}
	type target struct {
		name string
		bin  string
		park bool
	}
	targets := []target{{targetPgshard, o.pgshardBin, false}}
	if o.idlePark {
		targets = append(targets, target{targetParked, o.pgshardBin, true})
	}
	if o.baselineBin != "" {
		targets = append(targets, target{targetBaseline, o.baselineBin, false})
		if o.idlePark {
			targets = append(targets, target{targetBaselineParked, o.baselineBin, true})
		}
	}
	targets = append(targets, target{targetBouncer, bouncerBin, false})
	var results []idleResult
	for _, n := range o.idleClients {
		for _, t := range targets {
			logf("idle clients: %s with %d clients", t.name, n)
			dir := filepath.Join(tmp, fmt.Sprintf("idle-%s-%d", t.name, n))
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
			var (
				proc        *child
				ep          endpoint
				metricsAddr string
			)
			if t.name == targetBouncer {
				c, addr, err := startPgBouncerMax(ctx, t.bin, dir, pg.Host, pg.Port, o.poolSize, benchUser, benchPassword, 20000, o.idleAuth)
				if err != nil {
					return fmt.Errorf("start PgBouncer: %w", err)
				}
				proc, ep = c, endpointAt(addr, bouncerDBTx)
			} else {
				port, err := freePort()
				if err != nil {
					return err
				}
				metricsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
				setAuth := clientAuth(o.idleAuth)
				c, addr, err := startPgshardWith(ctx, t.bin, dir, []pgshardShard{{Name: "s0", Host: pg.Host, Port: pg.Port}}, "", o.poolSize, benchUser, benchPassword,
					func(c *pgshardConfig) {
						c.AdminListen = metricsAddr
						c.Limits = &pgshardLimits{MaxClientConn: 20000, ParkIdleClients: t.park}
						if setAuth != nil {
							setAuth(c)
						}
					})
				if err != nil {
					return fmt.Errorf("start %s: %w", t.name, err)
				}
				proc, ep = c, endpointAt(addr, benchDB)
			}
			r, err := idleRun(ctx, o, proc, ep, metricsAddr, n, n == maxN, pgbenchBin, logf)
			proc.stop(10 * time.Second)
			if err != nil {
				return fmt.Errorf("%s with %d idle clients: %w", t.name, n, err)
			}
			r.target = t.name
			results = append(results, r)
			logf("  %s", idleSummary(r))
		}
	}
	report := renderIdleReport(*env, o, results)
	fmt.Fprint(os.Stdout, report)
	if o.out != "" {
		if err := writeReport(o.out, idleBeginMarker, idleEndMarker, report); err != nil {
			return err
		}
		logf("wrote %s", o.out)
	}
	return nil
}

// idleRun measures one proxy with n idle clients.
func idleRun(ctx context.Context, o *options, proc *child, ep endpoint, metricsAddr string, n int, withPgbench bool, pgbenchBin string, logf func(string, ...any)) (idleResult, error) {
	r := idleResult{clients: n, fdLimit: fdLimit(proc.pid())}
	dsn := fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable", ep.host, ep.port, ep.user, ep.password, ep.dbname)
	// Clients first, so the proxy has its server connections (the whole
	// pool: a cost bounded by the pool size, not a client's) and whatever
	// it sets up once before the baseline is read; one of them stays.
	first, err := idleWarm(ctx, dsn, o.poolSize)
	if err != nil {
		return r, fmt.Errorf("first clients: %w", err)
	}
	defer first.Close(context.Background())
	if r.before, err = stableRSS(ctx, proc.pid()); err != nil {
		return r, err
	}
	saveSmaps(ctx, o, proc, metricsAddr, "before", logf)
	if metricsAddr != "" {
		r.stack[0], r.heap[0], r.goroutines[0], r.haveGo = goMetrics(ctx, metricsAddr)
	}
	procs := max(1, (n+o.idlePerProc-1)/o.idlePerProc)
	workers := make([]*idleWorkerProc, 0, procs)
	defer func() {
		for _, w := range workers {
			w.stop()
		}
	}()
	exe, err := os.Executable()
	if err != nil {
		return r, err
	}
	start := time.Now()
	for i := range procs {
		share := n / procs
		if i < n%procs {
			share++
		}
		w, err := startIdleWorker(exe, dsn, share)
		if err != nil {
			return r, err
		}
		workers = append(workers, w)
	}
	for _, w := range workers {
		ok, bad, first, err := w.await(ctx, "ready", 5*time.Minute)
		if err != nil {
			return r, err
		}
		r.ok += ok
		r.failed += bad
		if r.firstErr == "" {
			r.firstErr = first
		}
	}
	logf("  %d clients connected in %s (%d failed); idle for %s before the RSS is read", r.ok, time.Since(start).Round(100*time.Millisecond), r.failed, o.idleSettle)
	// The clients are idle clients: the proxy may treat a client that has
	// been quiet for a while differently (limits.park_idle_clients parks it
	// after one to two seconds), so the reading starts after -idle-settle.
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(o.idleSettle):
	}
	if r.after, err = stableRSS(ctx, proc.pid()); err != nil {
		return r, err
	}
	saveSmaps(ctx, o, proc, metricsAddr, "after", logf)
	if metricsAddr != "" {
		var have bool
		r.stack[1], r.heap[1], r.goroutines[1], have = goMetrics(ctx, metricsAddr)
		r.haveGo = r.haveGo && have
		if o.idleProfiles != "" {
			path := filepath.Join(o.idleProfiles, fmt.Sprintf("heap-%s-%d.pprof", filepath.Base(proc.logPath[:len(proc.logPath)-len("/pgshard.log")]), n))
			if err := saveHeapProfile(ctx, metricsAddr, path); err != nil {
				logf("  heap profile: %v", err)
			} else {
				logf("  heap profile with the clients connected: %s", path)
			}
		}
	}
	if withPgbench {
		logf("  pgbench -S for %s through the proxy with the clients connected", o.idlePgbench)
		bo := *o
		bo.duration = o.idlePgbench
		pr, err := measure(ctx, pgbenchBin, ep, proc, clockTicks(), selectOnlyWorkload, "simple", &bo)
		if err != nil {
			return r, err
		}
		annotate(&pr, "", bo.clients)
		r.pgbench = &pr
	}
	for _, w := range workers {
		if _, err := io.WriteString(w.stdin, "check\n"); err != nil {
			return r, fmt.Errorf("idle worker: %w", err)
		}
	}
	for _, w := range workers {
		ok, bad, first, err := w.await(ctx, "checked", 5*time.Minute)
		if err != nil {
			return r, err
		}
		r.checkOK += ok
		r.checkBad += bad
		if r.firstErr == "" {
			r.firstErr = first
		}
	}
	if !proc.alive() {
		r.note = fmt.Sprintf("%s exited: %v", proc.name, proc.waitErr)
	}
	return r, nil
}

// saveSmaps copies the proxy's /proc/PID/smaps (and pgshard's /metrics)
// into -idle-profiles, so a reading can be split by mapping (Go heap,
// thread stacks, C arenas) and by the Go runtime's own accounts.
func saveSmaps(ctx context.Context, o *options, proc *child, metricsAddr, when string, logf func(string, ...any)) {
	if o.idleProfiles == "" {
		return
	}
	prefix := filepath.Join(o.idleProfiles, filepath.Base(filepath.Dir(proc.logPath))+"-"+when)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", proc.pid()))
	if err == nil {
		err = os.WriteFile(prefix+".smaps", b, 0o644)
	}
	if err != nil {
		logf("  smaps: %v", err)
	}
	if metricsAddr == "" {
		return
	}
	if err := fetchTo(ctx, "http://"+metricsAddr+"/metrics", prefix+".metrics"); err != nil {
		logf("  metrics: %v", err)
	}
}

// idleWarm connects once and runs the idle clients' query.
func idleWarm(ctx context.Context, dsn string, poolSize int) (first *pgconn.PgConn, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// poolSize clients at once in a transaction each, so the proxy opens
	// every server connection of its pool; all but the first leave.
	var conns []*pgconn.PgConn
	defer func() {
		for i, c := range conns {
			if i > 0 || err != nil {
				c.Close(context.Background())
			}
		}
	}()
	for range max(poolSize, 1) {
		c, err := pgconn.Connect(ctx, dsn)
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
		if err := c.Exec(ctx, "BEGIN; SELECT 1").Close(); err != nil {
			return nil, err
		}
	}
	for _, c := range conns {
		if err := c.Exec(ctx, "COMMIT").Close(); err != nil {
			return nil, err
		}
	}
	if err := idleQuery(ctx, conns[0]); err != nil {
		return nil, err
	}
	return conns[0], nil
}

// idleWorkerProc is a running load generator (idleworker.go).
type idleWorkerProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // its stdout, line by line; closed at its end
	done  chan struct{}
}

func startIdleWorker(exe, dsn string, n int) (*idleWorkerProc, error) {
	cmd := exec.Command(exe, idleWorkerCmd, "-dsn", dsn, "-n", strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start idle worker: %w", err)
	}
	w := &idleWorkerProc{cmd: cmd, stdin: stdin, lines: make(chan string, 4), done: make(chan struct{})}
	go func() {
		defer close(w.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
	}()
	return w, nil
}

// await reads the worker's next report, which must start with word.
func (w *idleWorkerProc) await(ctx context.Context, word string, timeout time.Duration) (ok, failed int64, first string, err error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return 0, 0, "", ctx.Err()
	case <-t.C:
		return 0, 0, "", fmt.Errorf("idle worker: no %q report within %s", word, timeout)
	case line, open := <-w.lines:
		if !open {
			return 0, 0, "", fmt.Errorf("idle worker exited before reporting %q", word)
		}
		f := strings.SplitN(line, " ", 4)
		if len(f) != 4 || f[0] != word {
			return 0, 0, "", fmt.Errorf("idle worker: unexpected report %q", line)
		}
		ok, err1 := strconv.ParseInt(f[1], 10, 64)
		failed, err2 := strconv.ParseInt(f[2], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return 0, 0, "", fmt.Errorf("idle worker: report %q: %w", line, err)
		}
		if f[3] != "-" {
			first = f[3]
		}
		return ok, failed, first, nil
	}
}

// stop closes the worker's stdin (it closes its connections and exits) and
// waits for it, killing it after 30 seconds.
func (w *idleWorkerProc) stop() {
	_ = w.stdin.Close()
	done := make(chan struct{})
	go func() {
		for range w.lines { // drain so it is not blocked writing
		}
		_ = w.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = w.cmd.Process.Kill()
		<-done
	}
}

// stableRSS returns the VmRSS of pid once three samples half a second apart
// differ by less than 1% (the proxy has settled after the connections), or
// the last sample after 15 seconds.
func stableRSS(ctx context.Context, pid int) (int64, error) {
	deadline := time.Now().Add(15 * time.Second)
	var prev int64 = -1
	steady := 0
	for {
		rss, err := vmRSS(pid)
		if err != nil {
			return 0, err
		}
		if prev >= 0 && abs64(rss-prev)*100 < rss {
			steady++
		} else {
			steady = 0
		}
		if steady >= 2 || time.Now().After(deadline) {
			return rss, nil
		}
		prev = rss
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// vmRSS returns the resident set size of pid in bytes.
func vmRSS(pid int) (int64, error) {
	return procStatusKB(pid, "VmRSS:")
}

func procStatusKB(pid int, key string) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, key)
}

// fdLimit returns the soft and hard limit of open files of pid.
func fdLimit(pid int) string {
	for line := range strings.SplitSeq(readFile("/proc/"+strconv.Itoa(pid)+"/limits"), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) >= 2 {
				return f[0] + "/" + f[1]
			}
		}
	}
	return "?"
}

// goMetrics scrapes pgshard's Go runtime figures from its admin listener.
func goMetrics(ctx context.Context, addr string) (stack, heap, goroutines float64, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, 0, 0, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, 0, false
	}
	defer resp.Body.Close()
	found := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, cut := strings.Cut(sc.Text(), " ")
		if !cut {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_memstats_stack_inuse_bytes":
			stack = v
			found++
		case "go_memstats_heap_inuse_bytes":
			heap = v
			found++
		case "go_goroutines":
			goroutines = v
			found++
		}
	}
	return stack, heap, goroutines, found == 3
}

// saveHeapProfile writes pgshard's heap profile (admin /debug/pprof/heap,
// after a GC) to path.
func saveHeapProfile(ctx context.Context, addr, path string) error {
	return fetchTo(ctx, "http://"+addr+"/debug/pprof/heap?gc=1", path)
}

// fetchTo writes the body of a GET of url to path.
func fetchTo(ctx context.Context, url, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func idleSummary(r idleResult) string {
	s := fmt.Sprintf("RSS %.1f → %.1f MiB, %.2f KiB per client, %d ok, %d failed; check %d ok, %d failed",
		mib(r.before), mib(r.after), r.perClient()/1024, r.ok, r.failed, r.checkOK, r.checkBad)
	if r.haveGo {
		s += fmt.Sprintf("; Go stack %.2f KiB, heap %.2f KiB per client, goroutines %.0f → %.0f",
			(r.stack[1]-r.stack[0])/1024/float64(max(r.ok, 1)), (r.heap[1]-r.heap[0])/1024/float64(max(r.ok, 1)), r.goroutines[0], r.goroutines[1])
	}
	if r.pgbench != nil {
		s += "; pgbench: " + summary(*r.pgbench)
	}
	if r.firstErr != "" {
		s += "; first error: " + r.firstErr
	}
	return s
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
