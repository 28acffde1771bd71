package stream_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/pgshard/pgshard/integration"
)

// Every reader a test starts has stopped when it ends.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, integration.GoleakOptions()...) }
