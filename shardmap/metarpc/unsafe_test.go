package metarpc

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metapb"
)

// failedOverMap is testMap after a failover of s1: 10.0.0.2 is the
// primary, the old primary 10.0.0.1 is fenced.
func failedOverMap(t *testing.T, epoch uint64) *shardmap.Map {
	t.Helper()
	m := testMap(t, epoch)
	s := m.Shard("s1")
	s.Primary, s.Replicas = s.Replicas[0], nil
	s.Fenced = []shardmap.Endpoint{{Host: "10.0.0.1", Port: 5432}}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestApplyMapRefusesUnsafeMaps: a map that makes a fenced server or a
// server in recovery a primary, or that drops a fence, is refused with
// FailedPrecondition naming the shard, the server and why; nothing is
// applied. Force applies it; a rejoin (fence moved to the replicas) is
// not refused.
func TestApplyMapRefusesUnsafeMaps(t *testing.T) {
	store := newFakeStore("n1")
	store.set(failedOverMap(t, 1), "after the failover of s1")
	opts := insecureOpts
	opts.Health = func() []EndpointHealth {
		return []EndpointHealth{
			{Shard: "s2", Addr: "10.0.0.3:5432", Probed: true, Up: true},
			{Shard: "s2", Addr: "10.0.0.4:5432", Probed: true, Up: true, InRecovery: true},
			// Down: its recovery state is unknown, which refuses nothing.
			{Shard: "s2", Addr: "10.0.0.5:5432", Probed: true,
				LastError: errors.New("connection refused"), InRecovery: true},
		}
	}
	ts := startServer(t, store, opts, "")
	ctx := testContext(t, 10*time.Second)
	c := newClient(t, []string{ts.addr}, ClientOptions{})

	withS2 := func(primary string, replicas ...string) *shardmap.Map {
		m := failedOverMap(t, 1)
		s := m.Shard("s2")
		s.Primary, _ = shardmap.ParseEndpoint(primary)
		for _, r := range replicas {
			e, _ := shardmap.ParseEndpoint(r)
			s.Replicas = append(s.Replicas, e)
		}
		return m
	}
	droppedFence := failedOverMap(t, 1)
	droppedFence.Shard("s1").Fenced = nil
	for _, c2 := range []struct {
		name  string
		m     *shardmap.Map
		kinds []string
		want  []string // in the message
	}{
		{"the original map again (fenced primary)", testMap(t, 1), []string{shardmap.HazardFencedPrimary},
			[]string{"shard s1: primary 10.0.0.1:5432 is fenced in the current map"}},
		{"dropped fence", droppedFence, []string{shardmap.HazardDroppedFence},
			[]string{"shard s1: 10.0.0.1:5432 is fenced in the current map and the new map drops its fence"}},
		{"primary in recovery", withS2("10.0.0.4:5432", "10.0.0.3:5432"), []string{shardmap.HazardPrimaryInRecovery},
			[]string{"shard s2: primary 10.0.0.4:5432 is in recovery"}},
	} {
		t.Run(c2.name, func(t *testing.T) {
			_, err := c.ApplyMap(ctx, c2.m, 1, "")
			ue, ok := as[*UnsafeMapError](err)
			if !ok || status.Code(err) != codes.FailedPrecondition || !errors.Is(err, ErrFailedPrecondition) {
				t.Fatalf("ApplyMap = %v (%T, code %v), want an UnsafeMapError", err, err, status.Code(err))
			}
			var kinds []string
			for _, h := range ue.Hazards {
				kinds = append(kinds, h.Kind)
			}
			if strings.Join(kinds, ",") != strings.Join(c2.kinds, ",") {
				t.Errorf("hazards %v, want kinds %v", ue.Hazards, c2.kinds)
			}
			for _, w := range c2.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if v := store.Map(); v.Epoch != 1 {
				t.Fatalf("a refused map was applied: epoch %d", v.Epoch)
			}
		})
	}

	// On the wire: FailedPrecondition with the problem in the message.
	y, _ := testMap(t, 1).YAML()
	_, err := rawClient(t, ts.addr).ApplyMap(ctx, &metapb.ApplyMapRequest{MapYaml: y, ExpectedEpoch: 1})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "10.0.0.1:5432") {
		t.Fatalf("raw ApplyMap = %v", err)
	}

	// A server that is down does not count as in recovery.
	if _, err := c.ApplyMap(ctx, withS2("10.0.0.5:5432", "10.0.0.3:5432"), 1, "down, not known in recovery"); err != nil {
		t.Fatalf("map with a down primary: %v", err)
	}
	// A rejoin: the fenced server moves to the replicas of its shard.
	rejoined := failedOverMap(t, 1)
	s1 := rejoined.Shard("s1")
	s1.Replicas, s1.Fenced = s1.Fenced, nil
	if _, err := c.ApplyMap(ctx, rejoined, 2, "rejoin"); err != nil {
		t.Fatalf("rejoin map: %v", err)
	}
	// Forced: applied, whatever it risks.
	store.set(failedOverMap(t, 1), "failed over again")
	cur := store.Map().Epoch
	epoch, err := c.ApplyMapWith(ctx, testMap(t, 1), cur, ApplyMapOptions{Comment: "forced", Force: true})
	if err != nil || epoch != cur+1 {
		t.Fatalf("forced ApplyMap = %d, %v", epoch, err)
	}
	if p := store.Map().Map.Shard("s1").Primary.String(); p != "10.0.0.1:5432" {
		t.Errorf("after the forced apply the primary of s1 is %s", p)
	}
}

// TestApplyMapUnsafeOnFollower: a follower does not judge a map by its
// own view; it redirects to the leader, which does.
func TestApplyMapUnsafeOnFollower(t *testing.T) {
	leader := newFakeStore("leader")
	leader.set(failedOverMap(t, 1), "")
	lts := startServer(t, leader, insecureOpts, "")
	follower := newFakeStore("follower").follow(lts.addr)
	follower.set(failedOverMap(t, 1), "")
	fts := startServer(t, follower, insecureOpts, "")
	ctx := testContext(t, 10*time.Second)
	c := newClient(t, []string{fts.addr}, ClientOptions{})
	_, err := c.ApplyMap(ctx, testMap(t, 1), 1, "")
	if _, ok := as[*UnsafeMapError](err); !ok {
		t.Fatalf("ApplyMap through a follower = %v, want the leader's UnsafeMapError", err)
	}
	if leader.appliesCount() != 0 {
		t.Errorf("the leader applied %d maps", leader.appliesCount())
	}
}
