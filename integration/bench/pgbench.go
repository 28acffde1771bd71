package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pgshard/pgshard/integration/shardbench"
)

// endpoint is where pgbench connects.
type endpoint struct {
	host     string
	port     int
	user     string
	password string
	dbname   string
}

// hangTimeout is how long after its duration a pgbench run is killed.
const hangTimeout = time.Minute

// connectMode is the mode of a new connection per transaction (pgbench -C
// with the simple protocol): CPU per transaction is then per connection,
// authentication included.
const connectMode = "connect"

// selectOnlyWorkload is pgbench's built-in select-only script.
var selectOnlyWorkload = []string{"-S"}

// pgbenchResult is what one pgbench run reported.
type pgbenchResult struct {
	ok         bool    // exit status 0, no client aborted, a tps line
	exitErr    error   // pgbench's exit error, if any
	tps        float64 // "tps = X (without initial connection time)"
	latencyMs  float64 // "latency average = X ms"
	processed  int64   // "number of transactions actually processed"
	failed     int64   // "number of failed transactions"
	aborted    int     // clients that aborted
	hung       bool    // pgbench did not finish in time and was killed
	errors     []string
	output     string // stdout and stderr, for the console on failure
	haveTPS    bool
	haveLat    bool
	haveFailed bool
}

// runPgbench runs a workload (pgbench arguments that choose the script,
// like selectOnlyWorkload) against ep for d and parses the summary. It
// returns an error only when pgbench could not be run at all or ctx ended;
// a failing run is a result with ok false.
func runPgbench(ctx context.Context, bin string, ep endpoint, workload []string, mode string, clients, jobs int, d time.Duration) (pgbenchResult, error) {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	if mode == connectMode {
		workload = append(slices.Clone(workload), "-C")
		mode = "simple"
	}
	args := append(slices.Clone(workload),
		"-n",
		"-c", strconv.Itoa(clients), "-j", strconv.Itoa(jobs),
		"-T", strconv.Itoa(secs),
		"-M", mode,
		"-h", ep.host, "-p", strconv.Itoa(ep.port), "-U", ep.user,
		ep.dbname,
	)
	// A client that never gets an answer would keep pgbench waiting
	// forever: give up a minute after the run should have ended.
	runCtx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+hangTimeout)
	defer cancel()
	cmd := exec.CommandContext(runCtx, bin, args...)
	cmd.Env = append(os.Environ(),
		"PGPASSWORD="+ep.password,
		"PGSSLMODE=disable",
		"PGCONNECT_TIMEOUT=10",
		"PGAPPNAME=pgshard-bench",
	)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return pgbenchResult{}, ctx.Err()
	}
	if runCtx.Err() != nil {
		r := parsePgbench(out.String())
		r.exitErr = err
		r.hung = true
		return r, nil
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return pgbenchResult{}, fmt.Errorf("run pgbench: %w", err)
	}
	r := parsePgbench(out.String())
	r.exitErr = err
	r.ok = err == nil && r.aborted == 0 && r.haveTPS && r.processed > 0 && !r.hung
	return r, nil
}

var (
	reAborted   = regexp.MustCompile(`client \d+ (?:script \d+ )?aborted`)
	reClientNum = regexp.MustCompile(`client \d+`)
	reShardName = regexp.MustCompile(`shard "[^"]*"`)
)

// parsePgbench reads pgbench 15's summary (see shardbench.ParseOutput)
// and its error lines.
func parsePgbench(out string) pgbenchResult {
	s := shardbench.ParseOutput(out)
	return pgbenchResult{
		output:     out,
		processed:  s.Processed,
		failed:     s.Failed,
		latencyMs:  s.LatencyMs,
		tps:        s.TPS,
		haveFailed: s.HaveFailed,
		haveLat:    s.HaveLatency,
		haveTPS:    s.HaveTPS,
		aborted:    len(reAborted.FindAllString(out, -1)),
		errors:     distinctErrors(out),
	}
}

// distinctErrors returns pgbench's error messages, client numbers masked,
// each once with a count, most frequent first.
func distinctErrors(out string) []string {
	counts := map[string]int{}
	var order []string
	lines := strings.Split(out, "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, "pgbench: error:") && !strings.HasPrefix(l, "pgbench: fatal:") {
			continue
		}
		// libpq error texts may continue on following lines (DETAIL, HINT).
		for i+1 < len(lines) && strings.HasPrefix(lines[i+1], " ") {
			i++
			l += " " + strings.TrimSpace(lines[i])
		}
		l = reClientNum.ReplaceAllString(l, "client N")
		l = reShardName.ReplaceAllString(l, `shard "…"`)
		if counts[l] == 0 {
			order = append(order, l)
		}
		counts[l]++
	}
	sort.SliceStable(order, func(a, b int) bool { return counts[order[a]] > counts[order[b]] })
	res := make([]string, 0, len(order))
	for _, l := range order {
		if counts[l] > 1 {
			l = fmt.Sprintf("%s (×%d)", l, counts[l])
		}
		res = append(res, l)
	}
	return res
}

// pgbenchInit runs `pgbench -i -s scale` against ep.
func pgbenchInit(ctx context.Context, bin string, ep endpoint, scale int) error {
	cmd := exec.CommandContext(ctx, bin, "-i", "-q", "-s", strconv.Itoa(scale),
		"-h", ep.host, "-p", strconv.Itoa(ep.port), "-U", ep.user, ep.dbname)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+ep.password, "PGSSLMODE=disable")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, lastLines(string(out), 15))
	}
	return nil
}
