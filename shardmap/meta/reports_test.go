package meta

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Config.now that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestNormalizeReport(t *testing.T) {
	got, err := normalizeReport([]string{"b:1", "a:1", "b:1"})
	if err != nil || !slices.Equal(got, []string{"a:1", "b:1"}) {
		t.Errorf("normalizeReport = %q, %v", got, err)
	}
	in := []string{"z:1", "a:1"}
	if _, err := normalizeReport(in); err != nil || in[0] != "z:1" {
		t.Errorf("the caller's slice changed: %q, %v", in, err)
	}
	if got, err := normalizeReport(nil); got != nil || err != nil {
		t.Errorf("normalizeReport(nil) = %q, %v", got, err)
	}
	if _, err := normalizeReport([]string{"a:1", ""}); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("an empty endpoint: %v", err)
	}
	many := make([]string, maxReportAddrs+1)
	for i := range many {
		many[i] = fmt.Sprintf("10.0.%d.%d:5432", i/256, i%256)
	}
	if _, err := normalizeReport(many); err == nil || !strings.Contains(err.Error(), "more than 4096") {
		t.Errorf("too many endpoints: %v", err)
	}
}

func TestReportBookPrune(t *testing.T) {
	var b reportBook
	b.put("old-term", proxyReport{at: t0, term: 1})
	b.put("stale", proxyReport{at: t0.Add(-30 * time.Second), term: 2})
	b.put("fresh", proxyReport{at: t0.Add(-time.Second), term: 2})
	b.prune(true, 2, t0, 20*time.Second)
	if len(b.byProxy) != 1 || b.byProxy["fresh"].at.IsZero() {
		t.Errorf("after prune on the leader: %+v", b.byProxy)
	}
	b.prune(false, 2, t0, 20*time.Second)
	if len(b.byProxy) != 0 {
		t.Errorf("a follower keeps reports: %+v", b.byProxy)
	}
}

// TestSingleNodeReports: reports count per endpoint among live proxies,
// never write to the log, and expire with the proxy's lease.
func TestSingleNodeReports(t *testing.T) {
	checkLeaks(t)
	ctx := t.Context()
	clk := &fakeClock{t: time.Now().UTC()}
	cfg := testConfig(t, "m1", t.TempDir())
	cfg.APIAddr = "" // nothing but the test writes to the log
	cfg.ProxyLease = 10 * time.Second
	cfg.now = clk.now
	n := singleNode(t, cfg)
	const a, b, c = "10.0.0.1:5432", "10.0.0.2:5432", "10.0.0.3:5432"

	if un, rep := n.Reports(a); un != 0 || rep != 0 {
		t.Fatalf("Reports before any heartbeat = %d of %d", un, rep)
	}
	beat := func(id string, unreachable ...string) {
		t.Helper()
		if err := n.Heartbeat(ctx, id, id+":6432", 1, unreachable); err != nil {
			t.Fatal(err)
		}
	}
	want := func(addr string, wantUn, wantRep int) {
		t.Helper()
		if un, rep := n.Reports(addr); un != wantUn || rep != wantRep {
			t.Errorf("Reports(%s) = %d of %d, want %d of %d", addr, un, rep, wantUn, wantRep)
		}
	}
	beat("p1", a)
	beat("p2", b, a, a)
	beat("p3")
	want(a, 2, 3)
	want(b, 1, 3)
	want(c, 0, 3)

	// A changed report alone does not write to the log.
	last := n.Status(ctx).LastIndex
	beat("p1")
	beat("p2", a, b, c)
	if got := n.Status(ctx).LastIndex; got != last {
		t.Errorf("changed reports wrote to the log: last index %d -> %d", last, got)
	}
	want(a, 1, 3)
	want(c, 1, 3)

	// p3 stops heartbeating: once its lease ran out it no longer counts,
	// nor does its report.
	clk.advance(6 * time.Second)
	beat("p1", c)
	beat("p2", c)
	want(c, 2, 3)
	clk.advance(5 * time.Second)
	want(c, 2, 2)
	want(a, 0, 2)

	// A deregistered proxy's report does not count.
	if err := n.Deregister(ctx, "p2"); err != nil {
		t.Fatal(err)
	}
	want(c, 1, 1)

	// A report from an earlier term (a previous time this node led) does
	// not count.
	n.reports.put("p1", proxyReport{at: clk.now(), term: n.raft.CurrentTerm() - 1, unreachable: []string{c}})
	want(c, 0, 0)
	kept := func() []string {
		n.pruneReports()
		n.reports.mu.Lock()
		defer n.reports.mu.Unlock()
		return slices.Sorted(maps.Keys(n.reports.byProxy))
	}
	// p1's report, of another term, goes; p2's and p3's are younger than
	// two leases.
	if got := kept(); !slices.Equal(got, []string{"p2", "p3"}) {
		t.Errorf("reports kept after prune: %q", got)
	}
	clk.advance(10 * time.Second) // p3's report is 21 s old, p2's 15 s
	if got := kept(); !slices.Equal(got, []string{"p2"}) {
		t.Errorf("reports kept after prune: %q", got)
	}

	// Reports are checked before anything is recorded.
	if err := n.Heartbeat(ctx, "p1", "p1:6432", 1, []string{""}); err == nil {
		t.Error("an empty endpoint was accepted")
	}
}
