package meta

import (
	"bytes"
	"testing"
)

// TestHeartbeatIncarnation: a proxy's incarnation is recorded with its
// heartbeat, replicated in snapshots, and a heartbeat with a new one (a
// proxy restarted under the same ID) is written at once, even within a
// quarter lease of the last.
func TestHeartbeatIncarnation(t *testing.T) {
	checkLeaks(t)
	ctx := t.Context()
	n := singleNode(t, testConfig(t, "m1", t.TempDir()))
	if err := n.HeartbeatIncarnation(ctx, "p1", "aaaaaaaaaaaa", "p1:6432", 0, nil); err != nil {
		t.Fatal(err)
	}
	if ps := n.Proxies(); len(ps) != 1 || ps[0].Incarnation != "aaaaaaaaaaaa" || !ps[0].Alive {
		t.Fatalf("Proxies = %+v", ps)
	}
	if err := n.HeartbeatIncarnation(ctx, "p1", "bbbbbbbbbbbb", "p1:6432", 0, nil); err != nil {
		t.Fatal(err)
	}
	if ps := n.Proxies(); ps[0].Incarnation != "bbbbbbbbbbbb" {
		t.Fatalf("after a restart: Proxies = %+v", ps)
	}
	// Snapshots keep it.
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, n.fsm.state()); err != nil {
		t.Fatal(err)
	}
	back, err := readSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.proxies["p1"].incarnation; got != "bbbbbbbbbbbb" {
		t.Fatalf("restored incarnation %q", got)
	}
	if err := n.HeartbeatIncarnation(ctx, "p1", string(make([]byte, 65)), "p1:6432", 0, nil); err == nil {
		t.Fatal("a 65-byte incarnation was accepted")
	}
}
