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
)

// fakeResharder records the calls and answers what it is told.
type fakeResharder struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (f *fakeResharder) record(s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
	return f.err
}

func (f *fakeResharder) AddShard(_ context.Context, s shardmap.Shard) (uint64, error) {
	return 8, f.record(fmt.Sprintf("add %s %s %v %s", s.Name, s.Primary, s.Replicas, s.State))
}

func (f *fakeResharder) Split(_ context.Context, dist, at string) (uint64, error) {
	return 9, f.record("split " + dist + " " + at)
}

func (f *fakeResharder) StartMove(_ context.Context, r MoveRequest) (ReshardMove, error) {
	err := f.record(fmt.Sprintf("move %s %s %s %s %s", r.ID, r.Distribution, r.Interval, r.To, r.Cutover))
	return ReshardMove{ID: "m1", Version: 3, UpdatedAt: time.Unix(100, 0), State: []byte(`{"phase":"prepare"}`)}, err
}

func (f *fakeResharder) Act(_ context.Context, ref MoveRef, action string, force bool) (ReshardMove, error) {
	err := f.record(fmt.Sprintf("act %s %s %s %s %v", ref.ID, ref.Distribution, ref.Interval, action, force))
	return ReshardMove{ID: "m1", Version: 4, State: []byte(`{}`)}, err
}

func (f *fakeResharder) List(ref MoveRef) ([]ReshardMove, error) {
	err := f.record("list " + ref.ID)
	return []ReshardMove{{ID: "m1", Version: 4, State: []byte(`{"phase":"copying"}`)}, {ID: "m2"}}, err
}

func TestReshardRPCs(t *testing.T) {
	h := &fakeResharder{}
	opts := insecureOpts
	opts.Reshard = h
	ts := startServer(t, newFakeStore("n1"), opts, "")
	c := newClient(t, []string{ts.addr}, ClientOptions{})
	ctx := testContext(t, 10*time.Second)

	if e, err := c.AddShard(ctx, "s3", "10.0.0.9:5432", []string{"10.0.0.10:5432"}); err != nil || e != 8 {
		t.Fatalf("AddShard = %d, %v", e, err)
	}
	if e, err := c.SplitInterval(ctx, "users", "401"); err != nil || e != 9 {
		t.Fatalf("SplitInterval = %d, %v", e, err)
	}
	mv, err := c.StartMove(ctx, MoveRequest{Distribution: "users", Interval: "[401,501)", To: "s3", Cutover: "auto"})
	if err != nil || mv.ID != "m1" || mv.Version != 3 || string(mv.State) != `{"phase":"prepare"}` || !mv.UpdatedAt.Equal(time.Unix(100, 0)) {
		t.Fatalf("StartMove = %+v, %v", mv, err)
	}
	if _, err := c.ReshardAction(ctx, MoveRef{Distribution: "users", Interval: "[401,501)"}, "cutover", true); err != nil {
		t.Fatal(err)
	}
	mvs, err := c.ListMoves(ctx, MoveRef{})
	if err != nil || len(mvs) != 2 || string(mvs[0].State) != `{"phase":"copying"}` {
		t.Fatalf("ListMoves = %+v, %v", mvs, err)
	}
	want := []string{
		"add s3 10.0.0.9:5432 [10.0.0.10:5432] active",
		"split users 401",
		"move  users [401,501) s3 auto",
		"act  users [401,501) cutover true",
		"list ",
	}
	if strings.Join(h.calls, "\n") != strings.Join(want, "\n") {
		t.Fatalf("calls:\n%s\nwant:\n%s", strings.Join(h.calls, "\n"), strings.Join(want, "\n"))
	}

	// Refusals keep their meaning on the client.
	h.err = fmt.Errorf("%w: move m1 is copying", ErrFailedPrecondition)
	if _, err := c.ReshardAction(ctx, MoveRef{ID: "m1"}, "rollback", false); !errors.Is(err, ErrFailedPrecondition) || !strings.Contains(err.Error(), "move m1 is copying") {
		t.Fatalf("refused action = %v", err)
	}
	h.err = fmt.Errorf("%w: no move", ErrNotFound)
	if _, err := c.ListMoves(ctx, MoveRef{ID: "zz"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown move = %v", err)
	}
	// Malformed requests never reach the hook.
	n := len(h.calls)
	if _, err := c.ReshardAction(ctx, MoveRef{Distribution: "users"}, "cutover", false); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a reference without id or interval = %v", err)
	}
	if _, err := c.AddShard(ctx, "s4", "nohost", nil); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a bad primary = %v", err)
	}
	if len(h.calls) != n {
		t.Fatalf("malformed requests reached the hook: %v", h.calls[n:])
	}
}

func TestReshardRPCsUnimplemented(t *testing.T) {
	ts := startServer(t, newFakeStore("n1"), insecureOpts, "")
	c := newClient(t, []string{ts.addr}, ClientOptions{})
	_, err := c.ListMoves(testContext(t, 5*time.Second), MoveRef{})
	if !errors.Is(err, ErrUnimplemented) || !strings.Contains(err.Error(), "no resharding controller") {
		t.Fatalf("ListMoves without a hook = %v", err)
	}
}

// A follower redirects the writes to the leader.
func TestReshardRPCsRedirect(t *testing.T) {
	lh, fh := &fakeResharder{}, &fakeResharder{}
	lopts, fopts := insecureOpts, insecureOpts
	lopts.Reshard, fopts.Reshard = lh, fh
	leader := startServer(t, newFakeStore("n1"), lopts, "")
	follower := startServer(t, newFakeStore("n2").follow(leader.addr), fopts, "")
	c := newClient(t, []string{follower.addr}, ClientOptions{})
	if _, err := c.SplitInterval(testContext(t, 10*time.Second), "users", "7"); err != nil {
		t.Fatal(err)
	}
	if len(fh.calls) != 0 || len(lh.calls) != 1 {
		t.Fatalf("follower calls %v, leader calls %v", fh.calls, lh.calls)
	}
}
