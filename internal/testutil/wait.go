package testutil

import (
	"testing"
	"time"
)

// Poll intervals: the first retry comes soon (most conditions hold within
// a few milliseconds), later ones back off so a slow condition (a query
// to a server, a Raft election) is not hammered.
const (
	firstInterval = time.Millisecond
	maxInterval   = 20 * time.Millisecond
)

// Poll calls cond until it reports true or timeout has passed, and
// reports whether it held; why is what cond said on its last call when it
// did not. cond is called at least once, and once more after the
// deadline has passed.
func Poll(timeout time.Duration, cond func() (ok bool, why string)) (bool, string) {
	deadline := time.Now().Add(timeout)
	interval := firstInterval
	for {
		ok, why := cond()
		if ok {
			return true, ""
		}
		if time.Now().After(deadline) {
			return false, why
		}
		time.Sleep(interval)
		interval = min(2*interval, maxInterval)
	}
}

// WaitFor polls cond until it reports true, and fails the test (Fatalf,
// so call it from the test's goroutine) when it has not within timeout,
// naming what it waited for and what cond said last.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (ok bool, why string)) {
	t.Helper()
	if ok, why := Poll(timeout, cond); !ok {
		t.Fatalf("timed out after %v waiting for %s; last: %s", timeout, what, why)
	}
}

// Until is WaitFor for a condition that has nothing to say about itself.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if ok, _ := Poll(timeout, func() (bool, string) { return cond(), "" }); !ok {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}
