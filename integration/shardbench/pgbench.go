package shardbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pgshard/pgshard/internal/pgcluster"
)

// Pgbench is one run of pgbench with a script file.
type Pgbench struct {
	// Bin is the pgbench binary; see FindPgbench.
	Bin string
	// Where and as whom to connect.
	Host     string
	Port     int
	User     string
	Password string
	Database string
	// Script is the script file (-f), see WriteScript.
	Script string
	// Mode is the query mode (-M): simple, extended or prepared.
	Mode string
	// Clients and Jobs are -c and -j.
	Clients, Jobs int
	// Transactions per client (-t); when 0, the run lasts Duration (-T,
	// whole seconds).
	Transactions int
	Duration     time.Duration
	// Scale sets the script's variable scale (-s).
	Scale int
}

// Args returns pgbench's arguments: no vacuum (-n), no initialisation.
func (p Pgbench) Args() []string {
	args := []string{
		"-n", "-f", p.Script,
		"-M", p.Mode,
		"-c", strconv.Itoa(p.Clients), "-j", strconv.Itoa(p.Jobs),
		"-s", strconv.Itoa(p.Scale),
	}
	if p.Transactions > 0 {
		args = append(args, "-t", strconv.Itoa(p.Transactions))
	} else {
		secs := max(int(p.Duration.Round(time.Second)/time.Second), 1)
		args = append(args, "-T", strconv.Itoa(secs))
	}
	return append(args, "-h", p.Host, "-p", strconv.Itoa(p.Port), "-U", p.User, p.Database)
}

// Run runs pgbench and parses its summary. A run that pgbench itself
// reports as failed (an exit status other than 0) is an Output with
// ExitErr set, not an error; the error is for a pgbench that could not be
// run, and for ctx ending (pgbench is killed then, and the Output holds
// what it printed).
func (p Pgbench) Run(ctx context.Context) (Output, error) {
	cmd := exec.CommandContext(ctx, p.Bin, p.Args()...)
	cmd.Env = append(withoutPGVars(os.Environ()),
		"PGPASSWORD="+p.Password,
		"PGSSLMODE=disable",
		"PGCONNECT_TIMEOUT=10",
		"PGAPPNAME=pgshard-shardbench",
	)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return Output{Text: out.String()}, fmt.Errorf("pgbench: %w", ctx.Err())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return Output{}, fmt.Errorf("run pgbench: %w", err)
	}
	o := ParseOutput(out.String())
	o.ExitErr = err
	return o, nil
}

// withoutPGVars drops libpq's PG* variables from env, so that the
// caller's environment (PGOPTIONS, PGDATABASE, ...) cannot change a run.
func withoutPGVars(env []string) []string {
	var res []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PG") {
			res = append(res, kv)
		}
	}
	return res
}

// Output is what pgbench (version 15) printed; a Have flag is false when
// the line was missing.
type Output struct {
	Text      string  // stdout and stderr
	ExitErr   error   // pgbench's exit error, nil for exit status 0
	Processed int64   // "number of transactions actually processed: N"
	Planned   int64   // its "/M" with -t (clients × transactions); 0 with -T
	Failed    int64   // "number of failed transactions: N"
	LatencyMs float64 // "latency average = X ms"
	TPS       float64 // "tps = X (without initial connection time)", with -C "(including reconnection times)"

	HaveProcessed, HaveFailed, HaveLatency, HaveTPS bool
}

var (
	reProcessed = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)(?:/(\d+))?`)
	reFailed    = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	reLatency   = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
	reTPS       = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \((?:without initial connection time|including reconnection times)\)`)
)

// ParseOutput reads pgbench's summary from its output.
func ParseOutput(text string) Output {
	o := Output{Text: text}
	if m := reProcessed.FindStringSubmatch(text); m != nil {
		o.Processed, _ = strconv.ParseInt(m[1], 10, 64)
		o.Planned, _ = strconv.ParseInt(m[2], 10, 64) // "" with -T: 0
		o.HaveProcessed = true
	}
	if m := reFailed.FindStringSubmatch(text); m != nil {
		o.Failed, _ = strconv.ParseInt(m[1], 10, 64)
		o.HaveFailed = true
	}
	if m := reLatency.FindStringSubmatch(text); m != nil {
		o.LatencyMs, _ = strconv.ParseFloat(m[1], 64)
		o.HaveLatency = true
	}
	if m := reTPS.FindStringSubmatch(text); m != nil {
		o.TPS, _ = strconv.ParseFloat(m[1], 64)
		o.HaveTPS = true
	}
	return o
}

// FindPgbench returns PostgreSQL's pgbench, preferring the one beside the
// server binaries the harness uses (see pgcluster.FindBinDir).
func FindPgbench() (string, error) {
	if dir, err := pgcluster.FindBinDir(); err == nil {
		p := filepath.Join(dir, "pgbench")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("pgbench")
	if err != nil {
		return "", fmt.Errorf("pgbench not found (install the postgresql-contrib or postgresql package): %w", err)
	}
	return p, nil
}

// WriteScript writes the script called name (see Script) into dir and
// returns the file's path.
func WriteScript(dir, name string) (string, error) {
	text, err := Script(name)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name+".pgbench")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return "", fmt.Errorf("shardbench: write pgbench script: %w", err)
	}
	return path, nil
}
