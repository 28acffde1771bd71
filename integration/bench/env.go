package main

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// environment describes the machine and the software versions of a run.
type environment struct {
	date        time.Time
	nproc       int
	cpuModel    string
	memory      string
	kernel      string
	goVersion   string // the Go that built pgshard (else this program's)
	pgshardRev  string // VCS revision embedded in the pgshard binary
	postgres    string // server_version, filled in once the server runs
	pgbench     string
	pgbouncer   string // version number only, "" when not used
	busyBefore  string // CPU busy before anything started, like "3%"
	busyPercent float64
}

// cpuBusy samples /proc/stat for d and returns the share of the machine's
// CPU time that was not idle, in percent: the load other work puts on the
// machine when sampled before the benchmark starts anything.
func cpuBusy(ctx context.Context, d time.Duration) (float64, bool) {
	sample := func() (busy, total int64, ok bool) {
		line, _, _ := strings.Cut(readFile("/proc/stat"), "\n")
		f := strings.Fields(line)
		if len(f) < 6 || f[0] != "cpu" {
			return 0, 0, false
		}
		for i, v := range f[1:] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, 0, false
			}
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
		return busy, total, true
	}
	b0, t0, ok0 := sample()
	select {
	case <-ctx.Done():
		return 0, false
	case <-time.After(d):
	}
	b1, t1, ok1 := sample()
	if !ok0 || !ok1 || t1 <= t0 {
		return 0, false
	}
	return 100 * float64(b1-b0) / float64(t1-t0), true
}

func collectEnv(ctx context.Context, o *options, pgbenchBin, bouncerBin string) environment {
	e := environment{
		date:       time.Now().UTC(),
		nproc:      runtime.NumCPU(),
		cpuModel:   cpuinfo("model name"),
		memory:     meminfo(),
		kernel:     strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")),
		goVersion:  runtime.Version(),
		busyBefore: "unknown",
	}
	if p, ok := cpuBusy(ctx, 2*time.Second); ok {
		e.busyBefore = fmt.Sprintf("%.0f%%", p)
		e.busyPercent = p
	}
	if bi, err := buildinfo.ReadFile(o.pgshardBin); err == nil {
		e.goVersion = bi.GoVersion
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" && modified == "true" {
			rev += " (with uncommitted changes)"
		}
		e.pgshardRev = rev
	}
	if e.pgshardRev == "" {
		e.pgshardRev = gitRevision(ctx)
	}
	if out, err := exec.CommandContext(ctx, pgbenchBin, "--version").Output(); err == nil {
		e.pgbench = strings.Replace(strings.TrimSpace(string(out)), "pgbench (PostgreSQL)", "pgbench", 1)
	}
	if bouncerBin != "" {
		e.pgbouncer, _ = pgbouncerVersion(ctx, bouncerBin)
	}
	return e
}

// gitRevision describes the checkout in the current directory, for a
// pgshard binary built without VCS information (go build -buildvcs=false,
// or a repository git does not trust).
func gitRevision(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return ""
	}
	rev := "checkout at " + strings.TrimSpace(string(out))
	if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		rev += " (with uncommitted changes)"
	}
	return rev
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}

// cpuinfo returns the first value of key in /proc/cpuinfo.
func cpuinfo(key string) string {
	sc := bufio.NewScanner(strings.NewReader(readFile("/proc/cpuinfo")))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// meminfo returns MemTotal from /proc/meminfo, like "7.8 GiB".
func meminfo() string {
	for line := range strings.SplitSeq(readFile("/proc/meminfo"), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
				}
			}
		}
	}
	return "unknown"
}
