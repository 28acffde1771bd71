package cachebench_test

import (
	"os"
	"testing"

	"github.com/pgshard/pgshard/integration"
)

// TestMain checks that no PostgreSQL server and no goroutine outlives the
// run.
func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaksOrGoroutines(m)) }
