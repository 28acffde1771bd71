package meta

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFSMApplyMap(t *testing.T) {
	f := newFSM(testLogger(t))
	if v := f.state().current(); v.Epoch != 0 || v.Map != nil {
		t.Fatalf("empty state has map %+v", v)
	}
	res := apply(t, f, t0, cmdApplyMap, &applyMapCmd{MapYAML: mapYAML(t, testMap(t, 100), 1), Comment: "first", Author: "ann"})
	if r := res.(applyMapResult); r.err != nil || r.epoch != 1 {
		t.Fatalf("first apply: %+v", r)
	}
	cur := f.state().current()
	if cur.Epoch != 1 || cur.Map.Epoch != 1 || !cur.AppliedAt.Equal(t0) || cur.Comment != "first" || cur.Author != "ann" {
		t.Errorf("current = %+v", cur)
	}
	if s, _ := cur.Map.Distribution("users").ShardForInt64(150); s != "s2" {
		t.Errorf("key 150 on %s, want s2", s)
	}

	// A stale expectation is refused with both epochs, and changes nothing
	// but the clock.
	res = apply(t, f, t0.Add(time.Second), cmdApplyMap, &applyMapCmd{MapYAML: mapYAML(t, testMap(t, 200), 1), ExpectEpoch: 0})
	r := res.(applyMapResult)
	var stale *StaleEpochError
	if !errors.As(r.err, &stale) || stale.Current != 1 || stale.Expected != 0 || !errors.Is(r.err, ErrStaleEpoch) {
		t.Fatalf("stale apply: %+v", r)
	}
	if !strings.Contains(r.err.Error(), "at epoch 1, not 0") {
		t.Errorf("message %q", r.err)
	}
	if f.state().epoch() != 1 || !f.state().now.Equal(t0.Add(time.Second)) {
		t.Errorf("after a stale apply: epoch %d, clock %v", f.state().epoch(), f.state().now)
	}

	// The epoch is the state's, whatever the text says.
	res = apply(t, f, t0.Add(2*time.Second), cmdApplyMap, &applyMapCmd{MapYAML: mapYAML(t, testMap(t, 300), 99), ExpectEpoch: 1})
	if r := res.(applyMapResult); r.err != nil || r.epoch != 2 {
		t.Fatalf("second apply: %+v", r)
	}
	if m := f.state().current().Map; m.Epoch != 2 {
		t.Errorf("map epoch %d, want 2", m.Epoch)
	}
	h := f.state().history(0)
	if len(h) != 2 || h[0].Epoch != 2 || h[1].Epoch != 1 {
		t.Errorf("history %+v", h)
	}
}

func TestFSMHistoryBounded(t *testing.T) {
	f := newFSM(testLogger(t))
	for e := uint64(0); e < maxHistory+10; e++ {
		apply(t, f, t0.Add(time.Duration(e)*time.Second), cmdApplyMap, &applyMapCmd{MapYAML: mapYAML(t, testMap(t, int64(e)), e+1), ExpectEpoch: e})
	}
	h := f.state().history(0)
	if len(h) != maxHistory || h[0].Epoch != maxHistory+10 || h[len(h)-1].Epoch != 11 {
		t.Errorf("history has %d versions, %d to %d", len(h), h[0].Epoch, h[len(h)-1].Epoch)
	}
	if h := f.state().history(3); len(h) != 3 || h[2].Epoch != maxHistory+8 {
		t.Errorf("history(3) = %d versions", len(h))
	}
}

func TestFSMAppliesFixture(t *testing.T) {
	f := newFSM(testLogger(t))
	res := f.Apply(rlog(readFixture(t, "apply_map.v1.json")))
	if r := res.(applyMapResult); r.err != nil || r.epoch != 1 {
		t.Fatalf("apply: %+v", r)
	}
	if v := f.state().current(); v.Author != "dba@example.com" || v.Map.Table("public.users") == nil {
		t.Errorf("current %+v", v)
	}
}

func TestFSMNotifies(t *testing.T) {
	f := newFSM(testLogger(t))
	_, changed, mapChanged := f.watch()
	apply(t, f, t0, cmdProxyHeartbeat, &heartbeatCmd{ProxyID: "p1", LeaseNanos: int64(time.Second)})
	if !closed(changed) || closed(mapChanged) {
		t.Error("a heartbeat: want changed closed, mapChanged open")
	}
	_, changed, mapChanged = f.watch()
	apply(t, f, t0, cmdApplyMap, &applyMapCmd{MapYAML: mapYAML(t, testMap(t, 1), 1)})
	if !closed(changed) || !closed(mapChanged) {
		t.Error("a new map: want both closed")
	}
	_, changed, mapChanged = f.watch()
	apply(t, f, t0, cmdApplyMap, &applyMapCmd{MapYAML: mapYAML(t, testMap(t, 1), 1)}) // stale
	if !closed(changed) || closed(mapChanged) {
		t.Error("a refused map: want changed closed, mapChanged open")
	}
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// TestProxyLease: liveness comes from the times in the entries, never from
// the clock of the replica applying them.
func TestProxyLease(t *testing.T) {
	f := newFSM(testLogger(t))
	lease := int64(10 * time.Second)
	apply(t, f, t0, cmdProxyHeartbeat, &heartbeatCmd{ProxyID: "p1", Addr: "a1:6432", AppliedEpoch: 1, LeaseNanos: lease})
	apply(t, f, t0.Add(5*time.Second), cmdProxyHeartbeat, &heartbeatCmd{ProxyID: "p2", Addr: "a2:6432", AppliedEpoch: 1, LeaseNanos: lease})
	alive := func() string {
		var b strings.Builder
		for _, p := range f.state().proxyList() {
			if p.Alive {
				b.WriteString(p.ID)
			} else {
				b.WriteString("-")
			}
		}
		return b.String()
	}
	if got := alive(); got != "p1p2" {
		t.Fatalf("at t0+5s: %s", got)
	}
	// 9.999s after p1's heartbeat it is alive; at 10s it is not.
	apply(t, f, t0.Add(10*time.Second-time.Millisecond), cmdTick, &tickCmd{ForgetNanos: int64(time.Hour)})
	if got := alive(); got != "p1p2" {
		t.Errorf("at t0+9.999s: %s", got)
	}
	apply(t, f, t0.Add(10*time.Second), cmdProxyHeartbeat, &heartbeatCmd{ProxyID: "p2", Addr: "a2:6432", AppliedEpoch: 2, LeaseNanos: lease})
	if got := alive(); got != "-p2" {
		t.Errorf("at t0+10s: %s", got)
	}
	p := f.state().proxyStatus("p1")
	if p.Addr != "a1:6432" || p.AppliedEpoch != 1 || !p.LastSeen.Equal(t0) || p.Lease != 10*time.Second {
		t.Errorf("p1 = %+v", p)
	}
	// A new leader with a clock behind does not move time back.
	apply(t, f, t0.Add(3*time.Second), cmdProxyHeartbeat, &heartbeatCmd{ProxyID: "p3", Addr: "a3:6432", LeaseNanos: lease})
	if now := f.state().now; !now.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("clock went back to %v", now)
	}
	// p1 comes back.
	apply(t, f, t0.Add(11*time.Second), cmdProxyHeartbeat, &heartbeatCmd{ProxyID: "p1", Addr: "a1:6432", AppliedEpoch: 2, LeaseNanos: lease})
	if got := alive(); got != "p1p2p3" {
		t.Errorf("at t0+11s: %s", got)
	}
	// Ticks expire, then forget.
	apply(t, f, t0.Add(20*time.Second), cmdTick, &tickCmd{ForgetNanos: int64(time.Minute)})
	if got := alive(); got != "p1--" { // p1 seen at t0+11s
		t.Errorf("at t0+20s: %s", got)
	}
	apply(t, f, t0.Add(73*time.Second), cmdTick, &tickCmd{ForgetNanos: int64(time.Minute)})
	if got := alive(); got != "--" { // p3 (seen at t0+3s) forgotten at t0+73s
		t.Errorf("at t0+73s: %s", got)
	}
	apply(t, f, t0.Add(73*time.Second), cmdProxyDeregister, &deregisterCmd{ProxyID: "p1"})
	if got := alive(); got != "-" {
		t.Errorf("after deregistering p1: %s", got)
	}
}

// TestLagging is WaitApplied's condition.
func TestLagging(t *testing.T) {
	f := newFSM(testLogger(t))
	lease := int64(10 * time.Second)
	ids := func(ps []ProxyStatus) string {
		var s []string
		for _, p := range ps {
			s = append(s, p.ID)
		}
		return strings.Join(s, ",")
	}
	if got := ids(f.state().lagging(5)); got != "" {
		t.Errorf("no proxies: lagging %q", got)
	}
	apply(t, f, t0, cmdProxyHeartbeat, &heartbeatCmd{ProxyID: "p1", AppliedEpoch: 4, LeaseNanos: lease})
	apply(t, f, t0, cmdProxyHeartbeat, &heartbeatCmd{ProxyID: "p2", AppliedEpoch: 5, LeaseNanos: lease})
	apply(t, f, t0.Add(time.Second), cmdProxyHeartbeat, &heartbeatCmd{ProxyID: "p3", AppliedEpoch: 3, LeaseNanos: lease})
	if got := ids(f.state().lagging(5)); got != "p1,p3" {
		t.Errorf("lagging %q, want p1,p3", got)
	}
	apply(t, f, t0.Add(2*time.Second), cmdProxyHeartbeat, &heartbeatCmd{ProxyID: "p1", AppliedEpoch: 6, LeaseNanos: lease})
	if got := ids(f.state().lagging(5)); got != "p3" {
		t.Errorf("lagging %q, want p3", got)
	}
	// p3's lease ends at t0+11s: dead proxies do not block.
	apply(t, f, t0.Add(10*time.Second), cmdTick, &tickCmd{ForgetNanos: lease})
	if got := ids(f.state().lagging(5)); got != "p3" {
		t.Errorf("at t0+10s lagging %q, want p3", got)
	}
	apply(t, f, t0.Add(11*time.Second), cmdTick, &tickCmd{ForgetNanos: lease})
	if got := ids(f.state().lagging(5)); got != "" {
		t.Errorf("at t0+11s lagging %q, want none", got)
	}
}
