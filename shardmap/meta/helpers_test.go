package meta

import (
	"bytes"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// checkLeaks fails t if goroutines started during t outlive it. Call it
// first, so that its cleanup runs after the nodes' (cleanups run last
// registered first).
func checkLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// testLogger logs to the test's output (shown with -v or on failure), at
// the level of $META_TEST_LOG (debug, info, warn; default warn).
func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	switch os.Getenv("META_TEST_LOG") {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

// testMap returns a valid map: bigint range split at split over s1, s2.
func testMap(t *testing.T, split int64) *shardmap.Map {
	t.Helper()
	return shardmaptest.New().
		Shard("s1", "10.0.0.1:5432").
		Shard("s2", "10.0.0.2:5432", "10.0.0.3:5432").
		Range("users", split).
		Table("public.users", "id").
		Unsharded("public.settings").
		Map(t)
}

// mapYAML is m's YAML with the given epoch, as a leader proposes it.
func mapYAML(t *testing.T, m *shardmap.Map, epoch uint64) string {
	t.Helper()
	m = m.Clone()
	m.Epoch = epoch
	b, err := m.YAML()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// t0 is the time of the first command in FSM tests.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

var testIndex uint64

// apply encodes a command at time at and applies it to f as raft would.
func apply(t *testing.T, f *fsm, at time.Time, typ cmdType, body any) any {
	t.Helper()
	data, err := encodeCommand(typ, at, body)
	if err != nil {
		t.Fatal(err)
	}
	testIndex++
	return f.Apply(&raft.Log{Index: testIndex, Term: 1, Type: raft.LogCommand, Data: data})
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	cancelled, closed bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

func rlog(data []byte) *raft.Log {
	testIndex++
	return &raft.Log{Index: testIndex, Term: 1, Type: raft.LogCommand, Data: data}
}

// testConfig is a node config with raft timing for tests: fast, but with
// room for a loaded 2-core machine running -race.
func testConfig(t *testing.T, id, dir string) Config {
	return Config{
		ID: id, RaftAddr: "127.0.0.1:0", APIAddr: "api-" + id, DataDir: dir,
		Logger:           testLogger(t),
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		TransportTimeout: 2 * time.Second,
		noSync:           true,
	}
}

// openNode opens a node and closes it at the end of the test.
func openNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close %s: %v", n.ID(), err)
		}
	})
	return n
}

// eventually polls f until it returns nil, or fails t after timeout with
// f's last error.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	var err error
	if ok, _ := testutil.Poll(timeout, func() (bool, string) { err = f(); return err == nil, "" }); !ok {
		t.Fatalf("after %v: %v", timeout, err)
	}
}
