package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgshard/pgshard/replication/reshard"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// TestMemberResharding: a member that knows a PostgreSQL role serves the
// resharding RPCs over its node: a split commits an epoch, a move is a
// workflow record any caller lists, which the leader's controller
// drives (here it cannot reach the shard: the record shows the error and
// the attempts), and refusals keep their kind and a plain message; a
// cancel is recorded, and Close stops the controller (no goroutine left).
func TestMemberResharding(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	seed, err := shardmap.ParseYAML([]byte(seedYAML))
	if err != nil {
		t.Fatal(err)
	}
	seed.Shards = append(seed.Shards, shardmap.Shard{Name: "s2", Primary: shardmap.Endpoint{Host: "127.0.0.1", Port: 2}, State: shardmap.StateActive})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(ctx, Config{
		Node:       meta.Config{ID: "m1", RaftAddr: "127.0.0.1:0", DataDir: t.TempDir(), Bootstrap: true},
		API:        lis,
		Server:     metarpc.ServerOptions{Token: "tok"},
		WaitLeader: 20 * time.Second, Seed: seed, SeedComment: "seed",
		PG:         &PGLogin{User: "nobody", SSLMode: "disable"},
		LeaderPoll: 5 * time.Millisecond,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c, err := metarpc.NewClient([]string{m.Addr()}, metarpc.ClientOptions{Token: "tok", Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if mvs, err := c.ListMoves(ctx, metarpc.MoveRef{}); err != nil || len(mvs) != 0 {
		t.Fatalf("ListMoves = %v, %v", mvs, err)
	}
	epoch, err := c.SplitInterval(ctx, "d", "0")
	if err != nil || epoch != 2 {
		t.Fatalf("SplitInterval = %d, %v", epoch, err)
	}
	if got := m.Node().Map().Map.Distribution("d").DescribeIntervals(); got != "hash [-inf, 0) on s1, hash [0, +inf) on s1" {
		t.Fatalf("after the split: %s", got)
	}
	_, err = c.AddShard(ctx, "s1", "127.0.0.1:9", nil)
	if !errors.Is(err, metarpc.ErrFailedPrecondition) || !strings.Contains(err.Error(), "shard s1 is in the map already") || strings.Contains(err.Error(), "not allowed now") {
		t.Fatalf("AddShard of an existing shard = %v", err)
	}
	if _, err := c.StartMove(ctx, metarpc.MoveRequest{Distribution: "nope", Interval: "[0,+inf)", To: "s2"}); !errors.Is(err, metarpc.ErrNotFound) {
		t.Fatalf("StartMove of an unknown distribution = %v", err)
	}
	var ia *metarpc.InvalidArgumentError
	if _, err := c.StartMove(ctx, metarpc.MoveRequest{Distribution: "d", Interval: "[5,1)", To: "s2"}); !errors.As(err, &ia) || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("StartMove of an empty interval = %v", err)
	}
	mv, err := c.StartMove(ctx, metarpc.MoveRequest{ID: "m1", Distribution: "d", Interval: "[0,+inf)", To: "s2"})
	if err != nil || mv.ID != "m1" {
		t.Fatalf("StartMove = %+v, %v", mv, err)
	}
	// The controller tries to prepare the target, which does not answer.
	var st reshard.State
	for {
		mvs, err := c.ListMoves(ctx, metarpc.MoveRef{Distribution: "d", Interval: "[0, +inf)"})
		if err != nil || len(mvs) != 1 {
			t.Fatalf("ListMoves = %v, %v", mvs, err)
		}
		if err := json.Unmarshal(mvs[0].State, &st); err != nil {
			t.Fatal(err)
		}
		if st.Attempts > 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the controller never tried the move: %+v", st)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if st.Phase != reshard.PhasePrepare || st.From != "s1" || !strings.Contains(st.LastError, "127.0.0.1") {
		t.Fatalf("move state %+v", st)
	}
	if _, err := c.ReshardAction(ctx, metarpc.MoveRef{ID: "m1"}, "rollback", false); !errors.Is(err, metarpc.ErrFailedPrecondition) {
		t.Fatalf("rollback of a move being prepared = %v", err)
	}
	if _, err := c.ReshardAction(ctx, metarpc.MoveRef{ID: "m1"}, "cancel", false); err != nil {
		t.Fatal(err)
	}
	if r, ok := m.Node().Workflow("m1"); !ok || r.Kind != reshard.WorkflowKind {
		t.Fatalf("record %+v, %v", r, ok)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}
