package metacluster

import (
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"testing"

	"github.com/pgshard/pgshard/integration"
)

// RunTests is a TestMain body for packages that run pgshard processes: it
// builds the pgshard binary (its path goes to *bin), keeps the in-process
// proxies' logs to warnings, runs the tests, and checks that no
// PostgreSQL server, no pgshard process and no goroutine outlives them
// (leftover processes are killed). It returns the exit code.
func RunTests(m *testing.M, bin *string) int {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	dir, err := os.MkdirTemp("", "pgshard-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin, err = Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := integration.VerifyNoLeaks(m)
	if pids := Running(); len(pids) > 0 {
		fmt.Fprintf(os.Stderr, "metacluster: pgshard processes left running after the tests (pids %v); killing them\n", pids)
		for _, pid := range pids {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
		code = max(code, 1)
	}
	return integration.CheckGoroutines(code)
}
