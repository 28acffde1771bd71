package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgshard/pgshard/integration/shardbench"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
)

// Query modes (pgbench -M; connectMode is -C) and targets.
var (
	allModes     = []string{"simple", "extended", "prepared", connectMode}
	defaultModes = []string{"simple", "extended", "prepared"}
	allTargets   = []string{targetDirect, targetPgshard, targetPgshardOneCore, targetBaseline, targetBouncer, targetBouncerSession}
)

const (
	targetDirect         = "direct"
	targetPgshard        = "pgshard"
	targetPgshardOneCore = "pgshard-1core"    // the same binary with GOMAXPROCS=1, to show what the second core adds
	targetBaseline       = "pgshard-baseline" // another pgshard binary (-baseline), for before/after comparisons
	targetBouncer        = "pgbouncer"
	targetBouncerSession = "pgbouncer-session"
)

// The login role pgbench uses through every target.
const (
	benchUser     = "bench"
	benchPassword = "bench-secret"
	benchDB       = "postgres"
)

// options are the command-line flags.
type options struct {
	pgshardBin      string
	baselineBin     string // -baseline: a second pgshard binary run as target pgshard-baseline
	out             string
	duration        time.Duration
	warmup          time.Duration
	modes           []string
	targets         []string
	clients         int
	jobs            int
	scale           int
	poolSize        int
	rounds          int
	sessionFallback bool
	sharded         bool     // also run the sharded comparison (sharded.go)
	shardedOnly     bool     // run only the sharded comparison
	shards          int      // shards of the sharded comparison's multi-shard target
	shardStrategy   string   // range or hash
	scripts         []string // shardbench script names
	merged          bool     // also run the merged-read comparison (merged.go)
	mergedOnly      bool     // run only the merged-read comparison
	mergedRuns      int      // timed runs of each read on each target
	idleOnly        bool     // run only the idle-clients comparison (idle.go)
	idleClients     []int    // idle client counts
	idlePerProc     int      // idle clients per load-generator process
	idlePgbench     time.Duration
	idlePark        bool
	idleSettle      time.Duration
	auth            string   // client authentication of the select-only comparison: md5 or scram-sha-256
	idleAuth        string   // md5 or scram-sha-256
	idleProfiles    string   // directory for pgshard's heap profiles with the idle clients connected
	args            []string // as given, for the report
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == idleWorkerCmd {
		if err := idleWorker(os.Args[2:], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench idle-worker:", err)
			os.Exit(1)
		}
		return
	}
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{args: args}
	var modes, targets, scripts, idleClients string
	fs.StringVar(&o.pgshardBin, "pgshard", "bin/pgshard", "pgshard binary to benchmark")
	fs.StringVar(&o.baselineBin, "baseline", "", "another pgshard binary (an older build) to run in the same rounds as target "+targetBaseline+", for a before/after comparison")
	fs.StringVar(&o.out, "out", "docs/benchmarks.md", "Markdown report to write (only the parts between the bench markers are replaced)")
	fs.DurationVar(&o.duration, "duration", 15*time.Second, "length of each pgbench run (whole seconds)")
	fs.DurationVar(&o.warmup, "warmup", 5*time.Second, "pgbench run directly on PostgreSQL before measuring, to warm its caches; 0 skips it")
	fs.StringVar(&modes, "modes", strings.Join(defaultModes, ","), "pgbench query modes (-M) to run, of "+strings.Join(allModes, ", ")+" ("+connectMode+": a new connection per transaction, pgbench -C -M simple)")
	fs.StringVar(&targets, "targets", "direct,pgshard,pgbouncer", "targets to run: "+strings.Join(allTargets, ", "))
	fs.IntVar(&o.clients, "clients", 16, "pgbench clients (-c)")
	fs.IntVar(&o.jobs, "jobs", 2, "pgbench threads (-j)")
	fs.IntVar(&o.scale, "scale", 10, "pgbench scale factor: of pgbench -i for the select-only comparison, of the accounts for the sharded one")
	fs.IntVar(&o.poolSize, "pool-size", 20, "server connections per pool for pgshard and PgBouncer")
	fs.IntVar(&o.rounds, "rounds", 1, "times to run every mode and target; the report shows the run with the median TPS")
	fs.BoolVar(&o.sessionFallback, "session-fallback", true,
		"in a mode where PgBouncer's transaction pooling fails, also run PgBouncer in session mode as a labelled reference")
	fs.BoolVar(&o.sharded, "sharded", true,
		"also compare sharded pgbench (accounts by aid): pgshard over -shards shards vs over one shard vs direct")
	fs.BoolVar(&o.shardedOnly, "sharded-only", false,
		"run only the sharded comparison (its report section alone is rewritten)")
	fs.BoolVar(&o.merged, "merged", false,
		"also compare merged reads (ORDER BY ... LIMIT, count/sum, GROUP BY, an IN list) through pgshard over -shards shards with the shards directly and one server holding every row")
	fs.BoolVar(&o.mergedOnly, "merged-only", false, "run only the merged-read comparison (its report section alone is rewritten)")
	fs.IntVar(&o.mergedRuns, "merged-runs", 30, "timed runs of each merged read on each target")
	fs.IntVar(&o.shards, "shards", 4, "shards of the sharded comparison")
	fs.StringVar(&o.shardStrategy, "shard-strategy", string(shardmap.Hash), "distribution of the sharded comparison: hash or range over aid")
	fs.StringVar(&scripts, "scripts", strings.Join(shardbench.ScriptNames, ","),
		"scripts of the sharded comparison: "+strings.Join(shardbench.ScriptNames, ", "))
	fs.BoolVar(&o.idleOnly, "idle-only", false, "run only the idle-clients comparison of pgshard (and -baseline) with PgBouncer (its report section alone is rewritten)")
	fs.StringVar(&idleClients, "idle-clients", "1000,15000", "idle client counts of the idle-clients comparison")
	fs.IntVar(&o.idlePerProc, "idle-per-proc", 5000, "idle clients per load-generator process")
	fs.DurationVar(&o.idlePgbench, "idle-pgbench", 15*time.Second, "length of the pgbench run beside the largest count of idle clients")
	fs.StringVar(&o.auth, "auth", "scram-sha-256", "client authentication of the select-only comparison, on every proxy: scram-sha-256 or md5 (with -modes "+connectMode+", md5 leaves a connection's cost to the proxy rather than to the client's key derivation)")
	fs.StringVar(&o.idleAuth, "idle-auth", "md5", "client authentication of the idle-clients comparison: md5 (cheap, so that 15,000 clients connect in seconds) or scram-sha-256")
	fs.BoolVar(&o.idlePark, "idle-park", true, "also run pgshard with limits.park_idle_clients on (target "+targetParked+")")
	fs.DurationVar(&o.idleSettle, "idle-settle", 3*time.Second, "how long the idle clients stay idle before the proxy's RSS is read")
	fs.StringVar(&o.idleProfiles, "idle-profiles", "", "directory to save, with the idle clients connected, pgshard's heap profile, and before and after them each proxy's /proc/PID/smaps and pgshard's /metrics (empty: none)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	for v := range strings.SplitSeq(idleClients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-idle-clients: %q is not a positive count", v)
		}
		o.idleClients = append(o.idleClients, n)
	}
	if o.auth != "md5" && o.auth != "scram-sha-256" {
		return nil, fmt.Errorf("-auth: %q is not md5 or scram-sha-256", o.auth)
	}
	if o.idleAuth != "md5" && o.idleAuth != "scram-sha-256" {
		return nil, fmt.Errorf("-idle-auth: %q is not md5 or scram-sha-256", o.idleAuth)
	}
	if o.idlePerProc < 1 || o.idlePgbench < time.Second {
		return nil, errors.New("-idle-per-proc must be positive and -idle-pgbench at least 1s")
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if o.modes, err = splitList("-modes", modes, allModes); err != nil {
		return nil, err
	}
	if o.targets, err = splitList("-targets", targets, allTargets); err != nil {
		return nil, err
	}
	if o.baselineBin != "" && !slices.Contains(o.targets, targetBaseline) {
		o.targets = append(o.targets, targetBaseline)
	}
	if o.baselineBin == "" && slices.Contains(o.targets, targetBaseline) {
		return nil, errors.New("target " + targetBaseline + " needs -baseline")
	}
	if o.scripts, err = splitList("-scripts", scripts, shardbench.ScriptNames); err != nil {
		return nil, err
	}
	switch {
	case o.duration < time.Second:
		return nil, errors.New("-duration must be at least 1s")
	case o.clients < 1 || o.jobs < 1 || o.clients%o.jobs != 0:
		return nil, errors.New("-clients and -jobs must be positive and -clients a multiple of -jobs")
	case o.scale < 1 || o.poolSize < 1 || o.rounds < 1 || o.mergedRuns < 1:
		return nil, errors.New("-scale, -pool-size, -rounds and -merged-runs must be positive")
	case o.shardedOnly && o.mergedOnly, o.idleOnly && (o.shardedOnly || o.mergedOnly):
		return nil, errors.New("-sharded-only, -merged-only and -idle-only exclude each other")
	case o.shards < 2:
		return nil, errors.New("-shards must be at least 2")
	case o.shardStrategy != string(shardmap.Hash) && o.shardStrategy != string(shardmap.Range):
		return nil, fmt.Errorf("-shard-strategy: %q is not hash or range", o.shardStrategy)
	}
	return o, nil
}

// splitList parses a comma-separated flag whose values must be in allowed,
// keeping allowed's order.
func splitList(name, s string, allowed []string) ([]string, error) {
	var got []string
	for v := range strings.SplitSeq(s, ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if !slices.Contains(allowed, v) {
			return nil, fmt.Errorf("%s: unknown value %q (want %s)", name, v, strings.Join(allowed, ", "))
		}
		got = append(got, v)
	}
	if len(got) == 0 {
		return nil, fmt.Errorf("%s: empty", name)
	}
	var res []string
	for _, v := range allowed {
		if slices.Contains(got, v) {
			res = append(res, v)
		}
	}
	return res, nil
}

// result is one pgbench run against one target in one mode (and, in the
// sharded comparison, with one script).
type result struct {
	script       string // shardbench script name; "" for the select-only workload
	mode, target string
	pgbench      pgbenchResult
	cpuSeconds   float64 // proxy CPU during the run; 0 for direct
	haveCPU      bool
	note         string // why the run failed or what it stands for
	runs         int    // runs this result stands for (see aggregate)
}

// aggregate reduces the runs of each script, mode and target to one result, in the
// order they first ran: the run with the median TPS (the lower one of an
// even count), or the first failed run when any failed, since a failure is
// what needs looking at.
func aggregate(results []result) []result {
	type key struct{ script, mode, target string }
	groups := map[key][]result{}
	var order []key
	for _, r := range results {
		k := key{r.script, r.mode, r.target}
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	out := make([]result, 0, len(order))
	for _, k := range order {
		rs := groups[k]
		pick := -1
		failed := 0
		for i, r := range rs {
			if !r.pgbench.ok {
				if failed == 0 {
					pick = i
				}
				failed++
			}
		}
		var r result
		if pick >= 0 {
			r = rs[pick]
			if len(rs) > 1 {
				r.note = fmt.Sprintf("%s (failed in %d of %d rounds)", r.note, failed, len(rs))
			}
		} else {
			sorted := slices.Clone(rs)
			slices.SortFunc(sorted, func(a, b result) int { return cmp.Compare(a.pgbench.tps, b.pgbench.tps) })
			r = sorted[(len(sorted)-1)/2]
		}
		r.runs = len(rs)
		out = append(out, r)
	}
	return out
}

// cpuPerTx returns the proxy's CPU microseconds per processed transaction.
func (r result) cpuPerTx() (float64, bool) {
	if !r.haveCPU || r.pgbench.processed == 0 {
		return 0, false
	}
	return r.cpuSeconds * 1e6 / float64(r.pgbench.processed), true
}

// run does the whole benchmark and writes the report.
func run(ctx context.Context, o *options, console io.Writer) (err error) {
	logf := func(format string, a ...any) {
		fmt.Fprintf(console, "bench: "+format+"\n", a...)
	}
	selectOnly := !o.shardedOnly && !o.mergedOnly && !o.idleOnly
	sharded := (o.sharded || o.shardedOnly) && !o.mergedOnly && !o.idleOnly
	merged := (o.merged || o.mergedOnly) && !o.idleOnly
	wantBouncer := selectOnly && (slices.Contains(o.targets, targetBouncer) || slices.Contains(o.targets, targetBouncerSession)) || o.idleOnly
	if _, err := os.Stat(o.pgshardBin); err != nil && (sharded || merged || slices.Contains(o.targets, targetPgshard)) {
		return fmt.Errorf("-pgshard: %w (build it with `make build`)", err)
	}
	pgbenchBin, err := shardbench.FindPgbench()
	if err != nil {
		return err
	}
	var bouncerBin string
	if wantBouncer {
		if bouncerBin, err = ensurePgBouncer(ctx, logf); err != nil {
			return err
		}
	}
	env := collectEnv(ctx, o, pgbenchBin, bouncerBin)
	if env.busyPercent > 10 {
		logf("warning: %s of the machine's CPU was busy before the benchmark started: other work will skew the results", env.busyBefore)
	}

	// Everything started below is stopped by defers, in reverse order,
	// also when ctx ends on Ctrl-C.
	tmp, err := os.MkdirTemp("", "pgshard-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil { // PgBouncer (OS user postgres) reads its subdirectory
		return err
	}
	defer func() { _ = pgcluster.RemoveRootDir() }() // runs after the servers are gone
	if selectOnly {
		if err := runSelectOnly(ctx, o, &env, tmp, pgbenchBin, bouncerBin, logf); err != nil {
			return err
		}
	}
	if sharded {
		if err := runSharded(ctx, o, &env, tmp, pgbenchBin, logf); err != nil {
			return fmt.Errorf("sharded comparison: %w", err)
		}
	}
	if o.idleOnly {
		if err := runIdle(ctx, o, &env, tmp, pgbenchBin, bouncerBin, logf); err != nil {
			return fmt.Errorf("idle-clients comparison: %w", err)
		}
	}
	if merged {
		if err := runMerged(ctx, o, &env, tmp, logf); err != nil {
			return fmt.Errorf("merged-read comparison: %w", err)
		}
	}
	return nil
}

// startPostgres starts the one PostgreSQL server (named name) of a
// comparison with the bench user and records its version in env.
func startPostgres(ctx context.Context, name string, env *environment) (*pgcluster.Server, error) {
	pg, err := pgcluster.Start(ctx, pgcluster.Options{
		Name: name,
		Settings: map[string]string{
			"max_connections": "200",
			"shared_buffers":  "128MB",
		},
		Users: []pgcluster.User{{Name: benchUser, Password: benchPassword}},
	})
	if err != nil {
		return nil, fmt.Errorf("start PostgreSQL: %w", err)
	}
	if env.postgres, err = pg.QueryValue(ctx, "SHOW server_version"); err != nil {
		destroyPostgres(ctx, pg, &err)
		return nil, fmt.Errorf("query server version: %w", err)
	}
	return pg, nil
}

// destroyPostgres stops pg and removes its files (within a minute, even
// when ctx has ended), joining a failure to *err.
func destroyPostgres(ctx context.Context, pg *pgcluster.Server, err *error) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if derr := pg.Destroy(sctx); derr != nil {
		*err = errors.Join(*err, derr)
	}
}

// runSelectOnly runs the select-only workload against one PostgreSQL
// server directly, through pgshard and through PgBouncer, and writes its
// section of the report.
func runSelectOnly(ctx context.Context, o *options, env *environment, tmp, pgbenchBin, bouncerBin string, logf func(string, ...any)) (err error) {
	wantBouncer := bouncerBin != ""
	logf("starting PostgreSQL")
	pg, err := startPostgres(ctx, "bench", env)
	if err != nil {
		return err
	}
	defer destroyPostgres(ctx, pg, &err)

	logf("pgbench -i -s %d", o.scale)
	super := endpoint{host: pg.Host, port: pg.Port, user: pgcluster.SuperuserName, password: pgcluster.SuperuserPassword, dbname: benchDB}
	if err := pgbenchInit(ctx, pgbenchBin, super, o.scale); err != nil {
		return err
	}
	if err := pg.Exec(ctx, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO "+benchUser); err != nil {
		return fmt.Errorf("grant: %w", err)
	}

	endpoints := map[string]endpoint{
		targetDirect: {host: pg.Host, port: pg.Port, user: benchUser, password: benchPassword, dbname: benchDB},
	}
	procs := map[string]*child{}
	pgshards := []struct {
		target, bin, what string
		env               []string
	}{
		{targetPgshard, o.pgshardBin, "pgshard", nil},
		{targetPgshardOneCore, o.pgshardBin, "pgshard with GOMAXPROCS=1", []string{"GOMAXPROCS=1"}},
		{targetBaseline, o.baselineBin, "the baseline pgshard", nil},
	}
	for _, t := range pgshards {
		if !slices.Contains(o.targets, t.target) {
			continue
		}
		dir := filepath.Join(tmp, t.target)
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		c, addr, err := startPgshardWith(ctx, t.bin, dir, []pgshardShard{{Name: "s0", Host: pg.Host, Port: pg.Port}}, "", o.poolSize, benchUser, benchPassword, clientAuth(o.auth), t.env...)
		if err != nil {
			return fmt.Errorf("start %s: %w", t.what, err)
		}
		defer c.stop(10 * time.Second)
		procs[t.target] = c
		endpoints[t.target] = endpointAt(addr, benchDB)
	}
	if wantBouncer {
		dir := filepath.Join(tmp, "pgbouncer")
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		c, addr, err := startPgBouncerMax(ctx, bouncerBin, dir, pg.Host, pg.Port, o.poolSize, benchUser, benchPassword, 500, o.auth)
		if err != nil {
			return fmt.Errorf("start PgBouncer: %w", err)
		}
		defer c.stop(5 * time.Second)
		procs[targetBouncer] = c
		procs[targetBouncerSession] = c
		endpoints[targetBouncer] = endpointAt(addr, bouncerDBTx)
		endpoints[targetBouncerSession] = endpointAt(addr, bouncerDBSession)
	}

	if o.warmup > 0 {
		logf("warm-up: %s directly on PostgreSQL", o.warmup)
		if _, err := runPgbench(ctx, pgbenchBin, endpoints[targetDirect], selectOnlyWorkload, "prepared", o.clients, o.jobs, o.warmup); err != nil {
			return err
		}
	}

	hz := clockTicks()
	var results []result
	extra := map[string][]string{} // per mode: targets added by -session-fallback
	for round := range o.rounds {
		for _, mode := range o.modes {
			// Later rounds rotate the order so that no target always runs
			// first or last.
			targets := append(slices.Clone(o.targets), extra[mode]...)
			k := round % len(targets)
			targets = append(targets[k:], targets[:k]...)
			for i := 0; i < len(targets); i++ {
				target := targets[i]
				logf("round %d/%d, mode %s, target %s: pgbench for %s", round+1, o.rounds, mode, target, o.duration)
				r, err := measure(ctx, pgbenchBin, endpoints[target], procs[target], hz, selectOnlyWorkload, mode, o)
				if err != nil {
					return err
				}
				r.target = target
				annotate(&r, env.pgbouncer, o.clients)
				results = append(results, r)
				logf("  %s", summary(r))
				if !r.pgbench.ok {
					logf("  pgbench output:\n%s", indent(lastLines(r.pgbench.output, 25)))
					if c := procs[target]; c != nil {
						logf("  %s log (last lines):\n%s", c.name, indent(tail(c.logPath, 15)))
					}
				}
				if target == targetBouncer && !r.pgbench.ok && o.sessionFallback &&
					!slices.Contains(targets, targetBouncerSession) {
					targets = append(targets, targetBouncerSession)
					extra[mode] = append(extra[mode], targetBouncerSession)
				}
			}
		}
	}

	report := renderReport(*env, o, aggregate(results))
	if err := writeReport(o.out, beginMarker, endMarker, report); err != nil {
		return err
	}
	logf("wrote %s", o.out)
	return nil
}

// measure runs pgbench once against ep with the workload's arguments,
// sampling the proxy's CPU time around the run when proc is not nil.
func measure(ctx context.Context, pgbenchBin string, ep endpoint, proc *child, hz int64, workload []string, mode string, o *options) (result, error) {
	r := result{mode: mode}
	if proc != nil && !proc.alive() {
		r.note = fmt.Sprintf("%s is not running (%v)", proc.name, proc.waitErr)
		return r, nil
	}
	var before int64
	if proc != nil {
		t, err := cpuTicks(proc.pid())
		if err != nil {
			return r, fmt.Errorf("read CPU time of %s: %w", proc.name, err)
		}
		before = t
	}
	res, err := runPgbench(ctx, pgbenchBin, ep, workload, mode, o.clients, o.jobs, o.duration)
	if err != nil {
		return r, err
	}
	r.pgbench = res
	if proc != nil {
		after, err := cpuTicks(proc.pid())
		if err != nil {
			r.note = fmt.Sprintf("%s died during the run: %v", proc.name, err)
			r.pgbench.ok = false
			return r, nil
		}
		r.cpuSeconds = float64(after-before) / float64(hz)
		r.haveCPU = true
	}
	return r, nil
}

// annotate explains a failed run.
func annotate(r *result, bouncerVersion string, clients int) {
	if r.pgbench.ok || r.note != "" {
		return
	}
	if r.target == targetBouncer && r.mode == "prepared" && bouncerVersion != "" && !versionAtLeast(bouncerVersion, 1, 21) {
		r.note = fmt.Sprintf("n/a: PgBouncer %s lacks prepared statements in transaction mode (max_prepared_statements came in 1.21)", bouncerVersion)
		return
	}
	switch {
	case r.pgbench.hung:
		r.note = fmt.Sprintf("pgbench did not finish within %s of its end: a client got no answer (killed)", hangTimeout)
	case r.pgbench.aborted > 0:
		r.note = fmt.Sprintf("%d of %d clients aborted", r.pgbench.aborted, clients)
	case r.pgbench.exitErr != nil:
		r.note = fmt.Sprintf("pgbench failed: %v", r.pgbench.exitErr)
	default:
		r.note = "pgbench printed no result"
	}
}

// summary is a one-line account of a run for the console.
func summary(r result) string {
	var b strings.Builder
	if r.pgbench.haveTPS {
		fmt.Fprintf(&b, "tps %.0f, latency %.3f ms, processed %d, failed %d", r.pgbench.tps, r.pgbench.latencyMs, r.pgbench.processed, r.pgbench.failed)
	} else {
		b.WriteString("no tps")
	}
	if us, ok := r.cpuPerTx(); ok {
		fmt.Fprintf(&b, ", proxy CPU %.2f s = %.1f µs/tx", r.cpuSeconds, us)
	}
	if !r.pgbench.ok {
		fmt.Fprintf(&b, " — FAILED: %s", r.note)
	}
	return b.String()
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// endpointAt is the bench user's endpoint at a proxy's address.
func endpointAt(addr, dbname string) endpoint {
	host, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	return endpoint{host: host, port: port, user: benchUser, password: benchPassword, dbname: dbname}
}
