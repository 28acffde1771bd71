package controlplane

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

const seedYAML = `epoch: 1
shards:
  - {name: s1, primary: "127.0.0.1:1"}
distributions:
  - {name: d, key_type: bigint, strategy: hash, shards_even: [s1]}
tables:
  - {name: public.t, distribution: d, key: id}
`

// TestMemberServesAndCloses: New bootstraps a single-voter member, seeds
// its map, serves the API (a client reads the seeded map and ListShards
// reports the monitor's view), registers the failover controller (and
// two-phase recovery, as it knows a PostgreSQL role) and runs it on the
// leader; Close stops every goroutine it started and the
// address refuses connections.
func TestMemberServesAndCloses(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var logs syncBuffer
	seed, err := shardmap.ParseYAML([]byte(seedYAML))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(ctx, Config{
		Node:        meta.Config{ID: "m1", RaftAddr: "127.0.0.1:0", DataDir: t.TempDir(), Bootstrap: true},
		API:         lis,
		Server:      metarpc.ServerOptions{Token: "tok"},
		WaitLeader:  20 * time.Second,
		Seed:        seed,
		SeedComment: "seed",
		Failover:    &FailoverConfig{PGUser: "nobody", PGSSLMode: "disable", FailAfter: time.Hour},
		LeaderPoll:  5 * time.Millisecond,
	}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = m.Close()
		}
	}()
	if got := m.leader.names(); len(got) != 3 || got[0] != "failover" || got[1] != "twophase-recovery" || got[2] != "reshard" {
		t.Fatalf("leader-side controllers %v, want [failover twophase-recovery reshard]", got)
	}
	c, err := metarpc.NewClient([]string{m.Addr()}, metarpc.ClientOptions{Token: "tok", Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	epoch, shards, err := c.ListShards(ctx)
	if err != nil || epoch != 1 || len(shards) != 1 || shards[0].Name != "s1" {
		t.Fatalf("ListShards = %d %+v %v; want the seeded map at epoch 1", epoch, shards, err)
	}
	// The monitor probes the seeded primary (nothing listens there): its
	// view reaches ListShards.
	for {
		_, shards, err := c.ListShards(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if eps := shards[0].Endpoints; len(eps) == 1 && eps[0].State == metarpc.StateDown {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("ListShards never reported the primary down: %+v", shards)
		case <-time.After(20 * time.Millisecond):
		}
	}
	c.Close()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if conn, err := net.DialTimeout("tcp", m.Addr(), time.Second); err == nil {
		conn.Close()
		t.Fatal("the API address accepts connections after Close")
	}
	if err := m.Wait(ctx); err != nil {
		t.Errorf("Wait after Close: %v", err)
	}
	if !strings.Contains(logs.String(), "failover: meta leader; checking primaries") {
		t.Errorf("the failover controller did not run on the leader; log:\n%s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use (a log sink).
type syncBuffer = testutil.Buffer
