package meta

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// filledFSM returns an FSM with three maps, proxies and a member address.
func filledFSM(t *testing.T) *fsm {
	t.Helper()
	f := newFSM(testLogger(t))
	for e := range uint64(3) {
		apply(t, f, t0.Add(time.Duration(e)*time.Minute), cmdApplyMap,
			&applyMapCmd{MapYAML: mapYAML(t, testMap(t, int64(100*e)), e+1), ExpectEpoch: e, Comment: "change", Author: "ann"})
	}
	apply(t, f, t0.Add(3*time.Minute), cmdProxyHeartbeat, &heartbeatCmd{ProxyID: "p2", Addr: "a2:6432", AppliedEpoch: 3, LeaseNanos: int64(10 * time.Second)})
	apply(t, f, t0.Add(4*time.Minute), cmdProxyHeartbeat, &heartbeatCmd{ProxyID: "p1", Addr: "a1:6432", AppliedEpoch: 2, LeaseNanos: int64(10 * time.Second)})
	apply(t, f, t0.Add(4*time.Minute), cmdMemberAPIAddr, &memberCmd{ID: "m1", APIAddr: "10.2.0.1:7200"})
	return f
}

func persist(t *testing.T, f *fsm) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed %v, cancelled %v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func TestSnapshotRoundTrip(t *testing.T) {
	f := filledFSM(t)
	data := persist(t, f)

	g := newFSM(testLogger(t))
	_, changed, mapChanged := g.watch()
	if err := g.Restore(readCloser(data)); err != nil {
		t.Fatal(err)
	}
	if !closed(changed) || !closed(mapChanged) {
		t.Error("restore did not wake the watchers")
	}
	if !reflect.DeepEqual(f.state(), g.state()) {
		t.Errorf("restored state differs:\n%+v\n%+v", f.state(), g.state())
	}
	if again := persist(t, g); !bytes.Equal(data, again) {
		t.Errorf("equal states wrote different snapshots:\n%s\n%s", data, again)
	}
	// The restored state goes on like the original.
	for _, h := range []*fsm{f, g} {
		res := apply(t, h, t0.Add(time.Hour), cmdApplyMap, &applyMapCmd{MapYAML: mapYAML(t, testMap(t, 7), 4), ExpectEpoch: 3})
		if r := res.(applyMapResult); r.err != nil || r.epoch != 4 {
			t.Fatalf("apply after restore: %+v", r)
		}
	}
	if !reflect.DeepEqual(f.state(), g.state()) {
		t.Error("states differ after the same command")
	}
}

// TestSnapshotFixture: snapshots of format 1 stay readable.
func TestSnapshotFixture(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "snapshot.v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	g := newFSM(testLogger(t))
	if err := g.Restore(readCloser(data)); err != nil {
		t.Fatal(err)
	}
	// Compared without the YAML texts, which shardmap may write
	// differently one day.
	if want, got := withoutYAML(filledFSM(t).state()), withoutYAML(g.state()); !reflect.DeepEqual(want, got) {
		t.Errorf("the fixture restores to\n%+v\nwant\n%+v", got, want)
	}
	if snapshotFormat == 1 {
		if got := persist(t, g); !bytes.Equal(got, data) {
			t.Errorf("format 1 is written differently now; a change of layout needs format 2:\n%s", got)
		}
	}
}

// TestRestoreBadSnapshot: a snapshot that cannot be read leaves the state
// as it was.
func TestRestoreBadSnapshot(t *testing.T) {
	good := persist(t, filledFSM(t))
	for _, tc := range []struct{ name, data, want string }{
		{"garbage", "\x00\x01\x02 not json", "not a pgshard meta snapshot"},
		{"empty", "", "not a pgshard meta snapshot"},
		{"newer format", `{"format":3,"now":"2025-03-01T12:00:00Z","maps":[],"proxies":[],"members":[],"workflows":[]}`, "format 3"},
		{"no format", `{"now":"2025-03-01T12:00:00Z"}`, "format 0"},
		{"unknown field", `{"format":1,"now":"2025-03-01T12:00:00Z","maps":[],"proxies":[],"members":[],"extra":1}`, `unknown field "extra"`},
		{"bad map", strings.Replace(string(good), "key_type: bigint", "key_type: float", 1), "the map of epoch 1"},
		{"truncated", string(good[:len(good)/2]), "not a pgshard meta snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filledFSM(t)
			before := f.state()
			_, changed, _ := f.watch()
			err := f.Restore(readCloser([]byte(tc.data)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if f.state() != before || closed(changed) {
				t.Error("a failed restore changed the state")
			}
		})
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

func readCloser(b []byte) nopCloser { return nopCloser{bytes.NewReader(b)} }

func withoutYAML(s *state) state {
	c := *s
	c.versions = nil
	for _, v := range s.versions {
		v.YAML = nil
		c.versions = append(c.versions, v)
	}
	return c
}
