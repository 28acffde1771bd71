package pgshardtest

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
)

// skipWithoutPostgres skips (or, in CI, fails) the test when no
// PostgreSQL server binaries are installed.
func skipWithoutPostgres(t testing.TB) {
	t.Helper()
	_, err := pgcluster.FindBinDir()
	if err == nil {
		return
	}
	if skip, msg := missingPostgres(err, os.Getenv); skip {
		t.Skip(msg)
	} else {
		t.Fatal(msg)
	}
}

// missingPostgres decides what a test does without PostgreSQL (err says
// where it looked): skip outside CI, fail in CI ($CI set to anything
// but false or 0, as CI systems set it) unless PGSHARD_ALLOW_SKIP=1.
func missingPostgres(err error, getenv func(string) string) (skip bool, msg string) {
	where := err.Error()
	if np, ok := errors.AsType[*pgcluster.ErrNoPostgres](err); ok {
		where = "looked in " + strings.Join(np.Searched, ", ")
	}
	help := "no PostgreSQL server binaries (initdb, postgres, pg_basebackup) found (" + where + "); " +
		"install them (Debian, Ubuntu: apt-get install -y postgresql) or set " + pgcluster.EnvPGBin + " to their directory"
	ci := getenv("CI")
	inCI := ci != ""
	if b, perr := strconv.ParseBool(ci); perr == nil {
		inCI = b
	}
	switch {
	case !inCI:
		return true, "pgshardtest: skipped: " + help
	case getenv(integration.EnvAllowSkip) == "1":
		return true, "pgshardtest: skipped (" + integration.EnvAllowSkip + "=1): " + help
	}
	return false, "pgshardtest: " + help + " (this fails because CI is set; " + integration.EnvAllowSkip + "=1 skips instead)"
}

// GoleakOptions are the options for go.uber.org/goleak in a package that
// uses Start: they ignore the one goroutine that starts the servers,
// which lives as long as the test process on purpose. Every other
// goroutine of a cluster has ended when its test's cleanup returns.
func GoleakOptions() []goleak.Option { return integration.GoleakOptions() }

// VerifyNoLeaks runs the tests, then checks that no PostgreSQL server
// they started is still running (leftovers are killed and named) and,
// when they passed, that no goroutine outlives them (goleak with
// GoleakOptions). Use it in TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgshardtest.VerifyNoLeaks(m)) }
func VerifyNoLeaks(m *testing.M) int { return integration.VerifyNoLeaksOrGoroutines(m) }
