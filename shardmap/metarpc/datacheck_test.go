package metarpc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metapb"
)

// fakeCounter is a CountRows hook answering rows[server][where] and
// recording every call.
type fakeCounter struct {
	mu    sync.Mutex
	rows  map[string]int64 // by table + " WHERE " + where
	down  map[string]bool  // servers that cannot be reached
	calls []string         // server: table WHERE where
}

func (f *fakeCounter) count(_ context.Context, server string, qs []RowQuery) ([]int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down[server] {
		f.calls = append(f.calls, server+": down")
		return nil, errors.New("connect to " + server + ": connection refused")
	}
	out := make([]int64, len(qs))
	for i, q := range qs {
		k := q.Table + " WHERE " + q.Where
		f.calls = append(f.calls, server+": "+k)
		out[i] = f.rows[k]
	}
	return out, nil
}

func (f *fakeCounter) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// TestApplyMapRefusesDataMoves: a map that gives a key interval holding
// rows to another shard is refused with FailedPrecondition naming the
// distribution, the interval, both owners, the server and the count per
// table; nothing is applied. An empty interval moves; NoDataCheck applies
// without counting; an unreachable old owner refuses; a map that moves no
// interval asks no server.
func TestApplyMapRefusesDataMoves(t *testing.T) {
	store := newFakeStore("n1")
	store.set(testMap(t, 1), "") // users: [-inf, 1001) on s1, [1001, +inf) on s2
	fc := &fakeCounter{rows: map[string]int64{
		`public.users WHERE ("id" >= (901)::int8 AND "id" < (1001)::int8)`: 100,
	}, down: map[string]bool{}}
	opts := insecureOpts
	opts.CountRows = fc.count
	ts := startServer(t, store, opts, "")
	ctx := testContext(t, 10*time.Second)
	c := newClient(t, []string{ts.addr}, ClientOptions{})

	moved := func(lo int64) *shardmap.Map { // users: [lo, 1001) moves from s1 to s2
		m := testMap(t, 1)
		m.Distributions[0].Intervals[0].Hi = shardmap.Int64Bound(lo)
		m.Distributions[0].Intervals[1].Lo = shardmap.Int64Bound(lo)
		return m
	}
	_, err := c.ApplyMap(ctx, moved(901), 1, "move [901, 1001)")
	dn, ok := as[*DataNotMovedError](err)
	if !ok || status.Code(err) != codes.FailedPrecondition || !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("ApplyMap = %v (%T, code %v), want a DataNotMovedError", err, err, status.Code(err))
	}
	want := MovedRows{Distribution: "users", Interval: "[901, 1001)", From: "s1", To: "s2", Server: "10.0.0.1:5432",
		Tables: []TableRows{{Table: "public.users", Rows: 100}}}
	if len(dn.Moves) != 1 || fmt.Sprint(dn.Moves[0]) != fmt.Sprint(want) {
		t.Fatalf("moves = %+v, want [%+v]", dn.Moves, want)
	}
	if w := "distribution users [901, 1001) from s1 to s2: 100 rows on 10.0.0.1:5432 (public.users 100)"; !strings.Contains(err.Error(), w) {
		t.Errorf("error %q lacks %q", err, w)
	}
	if calls := fc.takeCalls(); len(calls) != 1 || !strings.HasPrefix(calls[0], "10.0.0.1:5432: ") {
		t.Errorf("counted %q, want one count on the old owner's primary 10.0.0.1:5432", calls)
	}
	if v := store.Map(); v.Epoch != 1 {
		t.Fatalf("a refused map was applied: epoch %d", v.Epoch)
	}
	// On the wire: the message has the count.
	y, _ := moved(901).YAML()
	_, err = rawClient(t, ts.addr).ApplyMap(ctx, &metapb.ApplyMapRequest{MapYaml: y, ExpectedEpoch: 1})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "100 rows on 10.0.0.1:5432") {
		t.Fatalf("raw ApplyMap = %v", err)
	}

	// The old owner is down: refused, naming it.
	fc.down["10.0.0.1:5432"] = true
	_, err = c.ApplyMap(ctx, moved(901), 1, "")
	if dn, ok := as[*DataNotMovedError](err); !ok || dn.Moves[0].Error == "" || !strings.Contains(err.Error(), "cannot count its rows on 10.0.0.1:5432") {
		t.Fatalf("ApplyMap with the old owner down = %v, want a DataNotMovedError naming 10.0.0.1:5432", err)
	}
	fc.down = map[string]bool{}
	fc.takeCalls()

	// Splitting an interval on its owner asks no server.
	split := testMap(t, 1)
	split.Distributions[0].Intervals = append([]shardmap.Interval{{Lo: shardmap.NegInf(), Hi: shardmap.Int64Bound(0), Shard: "s1"}}, split.Distributions[0].Intervals...)
	split.Distributions[0].Intervals[1].Lo = shardmap.Int64Bound(0)
	if _, err := c.ApplyMap(ctx, split, 1, "split"); err != nil {
		t.Fatalf("split: %v", err)
	}
	if calls := fc.takeCalls(); len(calls) != 0 {
		t.Errorf("a split counted rows: %q", calls)
	}
	// An empty interval moves.
	if _, err := c.ApplyMap(ctx, moved(951), 2, "move the empty [951, 1001)"); err != nil {
		t.Fatalf("empty interval: %v", err)
	}
	if calls := fc.takeCalls(); len(calls) != 1 {
		t.Errorf("counted %q, want one count", calls)
	}
	// NoDataCheck: applied without counting.
	epoch, err := c.ApplyMapWith(ctx, moved(901), 3, ApplyMapOptions{Comment: "rows copied", NoDataCheck: true})
	if err != nil || epoch != 4 {
		t.Fatalf("ApplyMap with NoDataCheck = %d, %v", epoch, err)
	}
	if calls := fc.takeCalls(); len(calls) != 0 {
		t.Errorf("NoDataCheck counted rows: %q", calls)
	}
}
