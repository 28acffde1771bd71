package cache

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test closes its caches: ristretto's goroutines end with Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
