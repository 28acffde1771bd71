package integration

import "go.uber.org/goleak"

// GoleakOptions are the goleak options for test packages that use the
// harness: they ignore the harness's process-spawner goroutine, which
// lives as long as the test process on purpose (see pgcluster).
func GoleakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/pgshard/pgshard/integration/pgcluster.StartOnSpawner.func1.1"),
	}
}
