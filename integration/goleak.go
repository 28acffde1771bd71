package integration

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// GoleakOptions are the goleak options for test packages that use the
// harness: they ignore the harness's process-spawner goroutine, which
// lives as long as the test process on purpose (see pgcluster).
func GoleakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/pgshard/pgshard/internal/pgcluster.StartOnSpawner.func1.1"),
	}
}

// VerifyNoLeaksOrGoroutines is VerifyNoLeaks followed, when the tests
// passed, by a check that no goroutine outlives them (goleak with
// GoleakOptions). Use it in TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaksOrGoroutines(m)) }
func VerifyNoLeaksOrGoroutines(m *testing.M) int {
	return CheckGoroutines(VerifyNoLeaks(m))
}

// CheckGoroutines returns code, or 1 when code is 0 and a goroutine other
// than the harness's own is still running (it is named on stderr).
func CheckGoroutines(code int) int {
	if code == 0 {
		if err := goleak.Find(GoleakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			return 1
		}
	}
	return code
}
