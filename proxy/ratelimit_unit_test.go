package proxy

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// TestBuckets: a bucket lets its burst through at once, then one token per
// 1/rate; a changed rate or burst applies to the existing bucket at its
// next use; buckets are per key; idle buckets are dropped once the table
// is large.
func TestBuckets(t *testing.T) {
	var b buckets
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		if !b.allow("u", 1, 3, t0) {
			t.Fatalf("token %d of a burst of 3 refused", i+1)
		}
	}
	if b.allow("u", 1, 3, t0) {
		t.Fatal("a 4th token at once with burst 3")
	}
	if !b.allow("v", 1, 3, t0) {
		t.Fatal("another key shares u's bucket")
	}
	if !b.allow("u", 1, 3, t0.Add(time.Second)) || b.allow("u", 1, 3, t0.Add(time.Second)) {
		t.Fatal("not exactly one token after 1s at 1/s")
	}
	// Raise the rate: from then on tokens come back at the new rate (at
	// 1/s, none would be back 50ms later).
	b.allow("u", 100, 3, t0.Add(time.Second+10*time.Millisecond))
	if !b.allow("u", 100, 3, t0.Add(time.Second+60*time.Millisecond)) {
		t.Fatal("the raised rate did not apply")
	}
	// Default burst: the rate rounded up, at least 1.
	var d buckets
	for i := range 3 {
		if !d.allow("x", 2.5, 0, t0) {
			t.Fatalf("token %d of the default burst (3 for 2.5/s) refused", i+1)
		}
	}
	if d.allow("x", 2.5, 0, t0) {
		t.Fatal("the default burst for 2.5/s is more than 3")
	}
	var e buckets
	if !e.allow("y", 0.1, 0, t0) || e.allow("y", 0.1, 0, t0) {
		t.Fatal("the default burst for 0.1/s is not 1")
	}
	// Sweep.
	var s buckets
	for i := range bucketSweep {
		s.allow(fmt.Sprint(i), 1, 1, t0)
	}
	s.allow("late", 1, 1, t0.Add(bucketIdle+time.Second))
	if len(s.m) != 1 {
		t.Fatalf("%d buckets after a sweep, want 1", len(s.m))
	}
}

func TestClientIP(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5000}, "10.1.2.3"},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 5000}, "::1"},
		{&net.UnixAddr{Name: "/tmp/s", Net: "unix"}, "/tmp/s"},
	} {
		if got := clientIP(c.addr); got != c.want {
			t.Errorf("clientIP(%v) = %q, want %q", c.addr, got, c.want)
		}
	}
}
