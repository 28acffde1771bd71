package testutil

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestPollHolds: Poll returns as soon as the condition holds, having
// called it until then.
func TestPollHolds(t *testing.T) {
	var calls atomic.Int32
	ok, why := Poll(5*time.Second, func() (bool, string) {
		n := calls.Add(1)
		return n >= 3, fmt.Sprintf("call %d", n)
	})
	if !ok || why != "" {
		t.Fatalf("Poll = %v, %q; want true, \"\"", ok, why)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
}

// TestPollTimesOut: a condition that never holds makes Poll return false
// with what the condition said last, once the timeout has passed and not
// long after.
func TestPollTimesOut(t *testing.T) {
	var calls atomic.Int32
	start := time.Now()
	ok, why := Poll(50*time.Millisecond, func() (bool, string) {
		return false, fmt.Sprintf("call %d", calls.Add(1))
	})
	took := time.Since(start)
	if ok {
		t.Fatal("Poll reported a condition that never holds as held")
	}
	if want := fmt.Sprintf("call %d", calls.Load()); why != want {
		t.Errorf("why = %q, want the last call's %q", why, want)
	}
	if took < 50*time.Millisecond || took > 2*time.Second {
		t.Errorf("Poll took %v for a 50ms timeout", took)
	}
}

// fakeT records Fatalf instead of ending the test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

// TestWaitForFails: WaitFor and Until fail with what they waited for and
// (WaitFor) the condition's last word; they do not fail when it holds.
func TestWaitForFails(t *testing.T) {
	ft := &fakeT{TB: t}
	WaitFor(ft, 10*time.Millisecond, "the moon", func() (bool, string) { return false, "still cheese" })
	if !strings.Contains(ft.failed, "the moon") || !strings.Contains(ft.failed, "still cheese") {
		t.Errorf("WaitFor failed with %q; want the thing waited for and the last description", ft.failed)
	}
	ft = &fakeT{TB: t}
	Until(ft, 10*time.Millisecond, "the tide", func() bool { return false })
	if !strings.Contains(ft.failed, "the tide") {
		t.Errorf("Until failed with %q; want the thing waited for", ft.failed)
	}
	ft = &fakeT{TB: t}
	WaitFor(ft, time.Second, "x", func() (bool, string) { return true, "" })
	Until(ft, time.Second, "y", func() bool { return true })
	if ft.failed != "" {
		t.Errorf("a condition that holds failed the test: %q", ft.failed)
	}
}
