package reshardbench_test

import (
	"os"
	"testing"

	"github.com/pgshard/pgshard/integration/metacluster"
)

// pgshardBin is the pgshard binary TestMain builds (the meta member).
var pgshardBin string

// TestMain builds the pgshard binary, runs the benchmark, and checks that
// no PostgreSQL server, pgshard process or goroutine outlives it.
func TestMain(m *testing.M) { os.Exit(metacluster.RunTests(m, &pgshardBin)) }
