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
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pgshard/pgshard/shardmap/metapb"
)

// switchHook is a ServerOptions.Switchover that records its calls and
// answers with answer.
type switchHook struct {
	mu     sync.Mutex
	calls  []string      // "shard to"
	left   time.Duration // time left until the deadline of the last call
	answer func(ctx context.Context, shard, to string) (uint64, string, error)
}

func (h *switchHook) hook(ctx context.Context, shard, to string) (uint64, string, error) {
	h.mu.Lock()
	h.calls = append(h.calls, shard+" "+to)
	if d, ok := ctx.Deadline(); ok {
		h.left = time.Until(d)
	}
	h.mu.Unlock()
	return h.answer(ctx, shard, to)
}

func (h *switchHook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.calls)
}

func promoteTo(primary string) func(context.Context, string, string) (uint64, string, error) {
	return func(context.Context, string, string) (uint64, string, error) { return 7, primary, nil }
}

func TestSwitchover(t *testing.T) {
	h := &switchHook{answer: promoteTo("10.0.0.2:5432")}
	opts := insecureOpts
	opts.Switchover = h.hook
	ts := startServer(t, newFakeStore("n1"), opts, "")
	// The first address is dead: the leader is found on the second.
	c := newClient(t, []string{deadAddr(t), ts.addr}, ClientOptions{})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	epoch, primary, err := c.Switchover(ctx, "s1", "10.0.0.2:5432")
	if err != nil || epoch != 7 || primary != "10.0.0.2:5432" {
		t.Fatalf("Switchover = %d, %q, %v", epoch, primary, err)
	}
	h.mu.Lock()
	calls, left := h.calls, h.left
	h.mu.Unlock()
	if len(calls) != 1 || calls[0] != "s1 10.0.0.2:5432" {
		t.Errorf("hook calls %q", calls)
	}
	// The leader gets the caller's time, less a margin for the answer.
	if left <= 8*time.Second || left > 9*time.Second+500*time.Millisecond {
		t.Errorf("the hook had %v left of the caller's 10 s", left)
	}

	// Without a deadline the server's default applies.
	if _, _, err := c.Switchover(context.Background(), "s1", ""); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	left = h.left
	h.mu.Unlock()
	if left <= 55*time.Second || left > defaultSwitchover {
		t.Errorf("the hook had %v left without a deadline, want about %v", left, defaultSwitchover)
	}
}

func TestSwitchoverUnimplemented(t *testing.T) {
	ts := startServer(t, newFakeStore("n1"), insecureOpts, "")
	c := newClient(t, []string{ts.addr}, ClientOptions{})
	_, _, err := c.Switchover(testContext(t, 5*time.Second), "s1", "")
	if !errors.Is(err, ErrUnimplemented) || status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "no failover controller") {
		t.Fatalf("Switchover without a hook = %v", err)
	}
	if errors.Is(err, ErrMaybeStarted) {
		t.Errorf("an unimplemented switchover may have started: %v", err)
	}
}

// A follower redirects before anything is done; the client follows.
func TestSwitchoverRedirect(t *testing.T) {
	lh := &switchHook{answer: promoteTo("10.0.0.2:5432")}
	fh := &switchHook{answer: promoteTo("wrong:1")}
	lopts, fopts := insecureOpts, insecureOpts
	lopts.Switchover, fopts.Switchover = lh.hook, fh.hook
	leader := startServer(t, newFakeStore("leader"), lopts, "")
	follower := startServer(t, newFakeStore("follower").follow(leader.addr), fopts, "")
	ctx := testContext(t, 10*time.Second)

	raw := rawClient(t, follower.addr)
	_, err := raw.Switchover(ctx, &metapb.SwitchoverRequest{Shard: "s1"})
	if _, ok := typedError(err, nil).(*NotLeaderError); !ok || !isRedirect(err) {
		t.Fatalf("Switchover on a follower = %v", err)
	}

	c := newClient(t, []string{follower.addr}, ClientOptions{})
	if _, primary, err := c.Switchover(ctx, "s1", ""); err != nil || primary != "10.0.0.2:5432" {
		t.Fatalf("Switchover through a follower = %q, %v", primary, err)
	}
	if lh.count() != 1 || fh.count() != 0 {
		t.Errorf("hook calls: leader %d, follower %d", lh.count(), fh.count())
	}
}

// The hook's errors choose the code; the client never sends a switchover
// twice, and says when one may have started.
func TestSwitchoverErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answer  error
		code    codes.Code
		is      error
		maybe   bool
		message string
	}{
		{"unknown shard", fmt.Errorf("shard %q: %w", "s9", ErrNotFound), codes.NotFound, ErrNotFound, false, `shard "s9": not found`},
		{"already switching", fmt.Errorf("shard s1 is already switching (failover at step promote): %w", ErrFailedPrecondition),
			codes.FailedPrecondition, ErrFailedPrecondition, false, "already switching"},
		{"rolled back", fmt.Errorf("10.0.0.2:5432 did not catch up in time: %w", ErrAborted), codes.Aborted, ErrAborted, false, "did not catch up"},
		{"not a replica", fmt.Errorf("10.0.0.7:5432 is not a replica of s1: %w", ErrInvalidArgument), codes.InvalidArgument, nil, false, "not a replica"},
		{"leadership lost", fmt.Errorf("promote: %w", fakeNotLeader{"127.0.0.1:1"}), codes.Unavailable, ErrMaybeStarted, true, "stopped leading"},
		{"plain error", errors.New("pg_promote failed"), codes.Unknown, ErrMaybeStarted, true, "pg_promote failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &switchHook{answer: func(context.Context, string, string) (uint64, string, error) { return 0, "", tc.answer }}
			opts := insecureOpts
			opts.Switchover = h.hook
			ts := startServer(t, newFakeStore("n1"), opts, "")
			c := newClient(t, []string{ts.addr}, ClientOptions{})
			_, _, err := c.Switchover(testContext(t, 5*time.Second), "s1", "")
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.message) {
				t.Errorf("error %v (code %v), want code %v saying %q", err, status.Code(err), tc.code, tc.message)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not match %v", err, tc.is)
			}
			if errors.Is(err, ErrMaybeStarted) != tc.maybe {
				t.Errorf("error %v: maybe started %v, want %v", err, !tc.maybe, tc.maybe)
			}
			if tc.code == codes.InvalidArgument {
				if ia, ok := as[*InvalidArgumentError](err); !ok || ia.Field != "to" {
					t.Errorf("error %#v is not about to", err)
				}
			}
			if n := h.count(); n != 1 {
				t.Errorf("the hook ran %d times", n)
			}
		})
	}
}

// A switchover that outlasts the caller's deadline is not retried, and
// may have started.
func TestSwitchoverTimeout(t *testing.T) {
	h := &switchHook{answer: func(ctx context.Context, _, _ string) (uint64, string, error) {
		<-ctx.Done()
		return 0, "", fmt.Errorf("wait for the replica: %w", ctx.Err())
	}}
	opts := insecureOpts
	opts.Switchover = h.hook
	ts := startServer(t, newFakeStore("n1"), opts, "")
	c := newClient(t, []string{ts.addr}, ClientOptions{})
	start := time.Now()
	_, _, err := c.Switchover(testContext(t, time.Second), "s1", "")
	if !errors.Is(err, ErrMaybeStarted) || status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Switchover past its deadline = %v (code %v)", err, status.Code(err))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v with a 1 s deadline", d)
	}
	if n := h.count(); n != 1 {
		t.Errorf("the hook ran %d times", n)
	}
}

func TestSwitchoverValidation(t *testing.T) {
	h := &switchHook{answer: promoteTo("x:1")}
	opts := insecureOpts
	opts.Switchover = h.hook
	ts := startServer(t, newFakeStore("n1"), opts, "")
	raw := rawClient(t, ts.addr)
	ctx := testContext(t, 5*time.Second)
	for _, tc := range []struct {
		req   *metapb.SwitchoverRequest
		field string
	}{
		{&metapb.SwitchoverRequest{}, "shard"},
		{&metapb.SwitchoverRequest{Shard: "s 1"}, "shard"},
		{&metapb.SwitchoverRequest{Shard: "s1", To: "nowhere"}, "to"},
		{&metapb.SwitchoverRequest{Shard: "s1", Timeout: durationpb.New(-time.Second)}, "timeout"},
	} {
		_, err := raw.Switchover(ctx, tc.req)
		if ia, ok := typedError(err, nil).(*InvalidArgumentError); !ok || ia.Field != tc.field {
			t.Errorf("%v: %v, want InvalidArgument about %s", tc.req, err, tc.field)
		}
	}
	if h.count() != 0 {
		t.Errorf("the hook ran for invalid requests")
	}
}
