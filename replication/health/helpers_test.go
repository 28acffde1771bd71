package health

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration"
)

// TestMain checks that no PostgreSQL server and no goroutine (a prober, a
// connection) outlives the tests.
func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaksOrGoroutines(m)) }

// startMonitor runs m until the test ends, and checks that Run returns.
func startMonitor(t *testing.T, m *Monitor) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("Monitor.Run did not return 10s after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// statusOf returns the status of the target at addr in m's snapshot.
func statusOf(m *Monitor, addr string) (Status, bool) {
	for _, s := range m.Snapshot() {
		if s.Addr == addr {
			return s, true
		}
	}
	return Status{}, false
}
