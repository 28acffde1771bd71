package pgcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// EnvPGBin names the environment variable that, when set, is the directory
// holding the PostgreSQL server binaries (initdb, postgres, pg_basebackup).
const EnvPGBin = "PGSHARD_PG_BIN"

// ErrNoPostgres is the error returned when no PostgreSQL server binaries can
// be found. Check for it with errors.As.
type ErrNoPostgres struct {
	// Searched lists the places that were looked at.
	Searched []string
}

// Error implements error and says how to install PostgreSQL.
func (e *ErrNoPostgres) Error() string {
	return fmt.Sprintf("pgcluster: no PostgreSQL server binaries found (searched %s); "+
		"install them with `apt-get install -y postgresql` or set %s to the directory holding initdb and postgres",
		strings.Join(e.Searched, ", "), EnvPGBin)
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// FindBinDir returns the directory holding the PostgreSQL server binaries:
// $PGSHARD_PG_BIN if set, else the highest-versioned
// /usr/lib/postgresql/*/bin containing postgres, else `pg_config --bindir`
// from PATH. It returns an *ErrNoPostgres when none is found. The result is
// computed once per process.
func FindBinDir() (string, error) {
	binOnce.Do(func() { binDir, binErr = findBinDir() })
	return binDir, binErr
}

func findBinDir() (string, error) {
	var searched []string
	if d := os.Getenv(EnvPGBin); d != "" {
		if isFile(filepath.Join(d, "postgres")) {
			return d, nil
		}
		return "", &ErrNoPostgres{Searched: []string{EnvPGBin + "=" + d}}
	}
	searched = append(searched, "$"+EnvPGBin)

	const pattern = "/usr/lib/postgresql/*/bin"
	searched = append(searched, pattern)
	dirs, _ := filepath.Glob(pattern)
	type cand struct {
		dir   string
		major float64
	}
	var cands []cand
	for _, d := range dirs {
		if !isFile(filepath.Join(d, "postgres")) {
			continue
		}
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		if err != nil {
			v = 0
		}
		cands = append(cands, cand{d, v})
	}
	if len(cands) > 0 {
		sort.Slice(cands, func(i, j int) bool { return cands[i].major > cands[j].major })
		return cands[0].dir, nil
	}

	searched = append(searched, "pg_config --bindir")
	if pc, err := exec.LookPath("pg_config"); err == nil {
		out, err := exec.Command(pc, "--bindir").Output()
		if err == nil {
			d := strings.TrimSpace(string(out))
			if isFile(filepath.Join(d, "postgres")) {
				return d, nil
			}
		}
	}
	return "", &ErrNoPostgres{Searched: searched}
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) ([0-9][0-9A-Za-z.]*)`)

// serverVersion returns the version of the postgres binary in dir, e.g. "15.8".
func serverVersion(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, filepath.Join(dir, "postgres"), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("pgcluster: run postgres --version: %w", err)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("pgcluster: cannot parse postgres --version output %q", strings.TrimSpace(string(out)))
	}
	return string(m[1]), nil
}
