package metarpc

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metapb"
)

// rawClient is a plain gRPC stub, to see codes and trailers as they
// cross the wire.
func rawClient(t testing.TB, addr string, opts ...grpc.DialOption) metapb.MetaServiceClient {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return metapb.NewMetaServiceClient(cc)
}

func TestRoundTrip(t *testing.T) {
	store := newFakeStore("n1")
	ts := startServer(t, store, insecureOpts, "")
	ctx := testContext(t, 10*time.Second)
	c, err := Dial(ctx, []string{ts.addr}, fastClient(ClientOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// No map yet.
	if v, err := c.GetMap(ctx); err != nil || v.Map != nil || v.Epoch != 0 {
		t.Fatalf("GetMap before any map = %+v, %v", v, err)
	}
	if epoch, shards, err := c.ListShards(ctx); err != nil || epoch != 0 || len(shards) != 0 {
		t.Fatalf("ListShards before any map = %d, %v, %v", epoch, shards, err)
	}

	// ApplyMap: the map's own epoch is ignored.
	m1 := testMap(t, 99)
	epoch, err := c.ApplyMap(ctx, m1, 0, "first")
	if err != nil || epoch != 1 {
		t.Fatalf("ApplyMap = %d, %v", epoch, err)
	}
	m2 := testMap(t, 2)
	if epoch, err = c.ApplyMap(ctx, m2, 1, "second"); err != nil || epoch != 2 {
		t.Fatalf("ApplyMap = %d, %v", epoch, err)
	}

	// GetMap returns the canonical YAML, parsed.
	v, err := c.GetMap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.Epoch != 2 || v.Comment != "second" || v.AppliedAt.IsZero() || v.Map == nil {
		t.Fatalf("GetMap = %+v", v)
	}
	got, _ := v.Map.YAML()
	want, _ := m2.YAML()
	if string(got) != string(want) {
		t.Fatalf("GetMap map:\n%s\nwant:\n%s", got, want)
	}
	if !v.AppliedAt.Equal(store.Map().AppliedAt) {
		t.Errorf("AppliedAt = %v, want %v", v.AppliedAt, store.Map().AppliedAt)
	}
	if string(v.YAML) != string(want) {
		t.Errorf("GetMap YAML:\n%s\nwant:\n%s", v.YAML, want)
	}

	// MapHistory, newest first, with and without maps.
	hist, err := c.MapHistory(ctx, 0, false)
	if err != nil || len(hist) != 2 || hist[0].Epoch != 2 || hist[1].Epoch != 1 || hist[1].Comment != "first" || hist[0].Map != nil {
		t.Fatalf("MapHistory = %+v, %v", hist, err)
	}
	hist, err = c.MapHistory(ctx, 1, true)
	if err != nil || len(hist) != 1 || hist[0].Map == nil || hist[0].Map.Epoch != 2 {
		t.Fatalf("MapHistory with maps = %+v, %v", hist, err)
	}

	// ListShards is derived from the map.
	epoch, shards, err := c.ListShards(ctx)
	if err != nil || epoch != 2 || len(shards) != 2 {
		t.Fatalf("ListShards = %d, %+v, %v", epoch, shards, err)
	}
	if s := shards[0]; s.Name != "s1" || s.Primary.String() != "10.0.0.1:5432" || len(s.Replicas) != 1 || s.Replicas[0].String() != "10.0.0.2:5432" || s.State != "active" {
		t.Errorf("shard 0 = %+v", s)
	}
	if s := shards[1]; s.Name != "s2" || s.State != "readonly" || len(s.Replicas) != 0 {
		t.Errorf("shard 1 = %+v", s)
	}

	// Members.
	if err := c.JoinMember(ctx, "n2", "127.0.0.1:7101"); err != nil {
		t.Fatal(err)
	}
	st, err := c.MemberStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ID != "n1" || st.RaftAddress != "127.0.0.1:7001" || st.APIAddress != "127.0.0.1:7000" || st.State != "leader" ||
		st.LeaderID != "n1" || st.LeaderRaftAddress != "127.0.0.1:7001" || st.LeaderAPIAddress != "127.0.0.1:7000" ||
		st.Term != 3 || st.LastIndex != 42 || st.CommitIndex != 41 || st.AppliedIndex != 40 || st.MapEpoch != 2 || len(st.Members) != 2 {
		t.Fatalf("MemberStatus = %+v", st)
	}
	if m := st.Members[0]; m.ID != "n1" || m.RaftAddress != "127.0.0.1:7001" || m.APIAddress != "127.0.0.1:7000" || m.Suffrage != "voter" || !m.Leader {
		t.Errorf("member n1 = %+v", m)
	}
	if m := st.Members[1]; m.ID != "n2" || m.RaftAddress != "127.0.0.1:7101" || m.APIAddress != "" || m.Suffrage != "voter" || m.Leader {
		t.Errorf("joined member = %+v", m)
	}
	if err := c.RemoveMember(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	if st, err = c.MemberStatus(ctx); err != nil || len(st.Members) != 1 {
		t.Fatalf("MemberStatus after RemoveMember = %+v, %v", st, err)
	}

	// Proxies.
	cur, err := c.ProxyHeartbeat(ctx, "p1", "10.1.0.1:6432", 1, nil)
	if err != nil || cur != 2 {
		t.Fatalf("ProxyHeartbeat = %d, %v", cur, err)
	}
	ps, err := c.ListProxies(ctx)
	if err != nil || len(ps) != 1 || ps[0].ID != "p1" || ps[0].Address != "10.1.0.1:6432" || ps[0].AppliedEpoch != 1 || !ps[0].Live || ps[0].LastSeen.IsZero() || ps[0].Lease != 10*time.Second {
		t.Fatalf("ListProxies = %+v, %v", ps, err)
	}
	err = c.WaitApplied(ctx, 2, 100*time.Millisecond)
	le, ok := as[*LaggingError](err)
	if !ok || le.Epoch != 2 || len(le.Proxies) != 1 || le.Proxies[0].ID != "p1" {
		t.Fatalf("WaitApplied with a lagging proxy = %v", err)
	}
	if !strings.Contains(err.Error(), "p1") {
		t.Errorf("LaggingError %q does not name the proxy", err)
	}
	// A wait in progress ends when the proxy catches up.
	waited := make(chan error, 1)
	go func() { waited <- c.WaitApplied(ctx, 2, 5*time.Second) }()
	testutil.Until(t, 5*time.Second, "the wait to begin", func() bool { return store.waiting() > 0 })
	if _, err := c.ProxyHeartbeat(ctx, "p1", "10.1.0.1:6432", 2, nil); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("WaitApplied after the proxy caught up = %v", err)
	}

	// WatchMap from the start gets the current map at once.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var seen []uint64
	err = c.WatchMap(wctx, 0, func(v MapVersion) error {
		seen = append(seen, v.Epoch)
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || len(seen) != 1 || seen[0] != 2 {
		t.Fatalf("WatchMap = %v, saw %v", err, seen)
	}
}

func TestRequestValidation(t *testing.T) {
	ts := startServer(t, newFakeStore("n1"), insecureOpts, "")
	raw := rawClient(t, ts.addr)
	ctx := testContext(t, 10*time.Second)
	cases := []struct {
		name  string
		call  func() error
		field string
	}{
		{"empty map", func() error { _, err := raw.ApplyMap(ctx, &metapb.ApplyMapRequest{}); return err }, "map_yaml"},
		{"long comment", func() error {
			_, err := raw.ApplyMap(ctx, &metapb.ApplyMapRequest{MapYaml: []byte(testMapYAML), Comment: strings.Repeat("x", 2000)})
			return err
		}, "comment"},
		{"join without id", func() error {
			_, err := raw.JoinMember(ctx, &metapb.JoinMemberRequest{RaftAddress: "127.0.0.1:1"})
			return err
		}, "id"},
		{"join with a bad address", func() error {
			_, err := raw.JoinMember(ctx, &metapb.JoinMemberRequest{Id: "n2", RaftAddress: "nowhere"})
			return err
		}, "raft_address"},
		{"remove without id", func() error { _, err := raw.RemoveMember(ctx, &metapb.RemoveMemberRequest{}); return err }, "id"},
		{"heartbeat with a space in the id", func() error {
			_, err := raw.ProxyHeartbeat(ctx, &metapb.ProxyHeartbeatRequest{ProxyId: "p 1"})
			return err
		}, "proxy_id"},
		{"wait for epoch 0", func() error { _, err := raw.WaitApplied(ctx, &metapb.WaitAppliedRequest{}); return err }, "epoch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("code = %v (%v), want InvalidArgument", status.Code(err), err)
			}
			ia, ok := typedError(err, nil).(*InvalidArgumentError)
			if !ok || ia.Field != tc.field {
				t.Fatalf("error %v names field %q, want %q", err, ia.Field, tc.field)
			}
			if !strings.Contains(status.Convert(err).Message(), tc.field) {
				t.Errorf("message %q does not name %s", status.Convert(err).Message(), tc.field)
			}
		})
	}
}

func TestInvalidMap(t *testing.T) {
	store := newFakeStore("n1")
	ts := startServer(t, store, insecureOpts, "")
	ctx := testContext(t, 10*time.Second)
	c := newClient(t, []string{ts.addr}, ClientOptions{})
	if _, err := c.ApplyMap(ctx, testMap(t, 1), 0, ""); err != nil {
		t.Fatal(err)
	}

	// A map that does not validate: an interval on an unknown shard and
	// a gap.
	bad := strings.Replace(testMapYAML, "{lo: 1000, hi: +inf, shard: s2}", "{lo: 2000, hi: +inf, shard: s9}", 1)
	raw := rawClient(t, ts.addr)
	_, err := raw.ApplyMap(ctx, &metapb.ApplyMapRequest{MapYaml: []byte(bad), ExpectedEpoch: 1})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("invalid map: code %v (%v), want InvalidArgument", status.Code(err), err)
	}
	msg := status.Convert(err).Message()
	for _, want := range []string{"map_yaml", "shard s9", "not a shard of the map", "from 1000 up to (not including) 2000"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not say %q", msg, want)
		}
	}
	ia, ok := typedError(err, nil).(*InvalidArgumentError)
	if !ok || ia.Field != "map_yaml" || len(ia.Problems) != 2 {
		t.Fatalf("typed error = %#v", typedError(err, nil))
	}

	// A map that does not parse names the line.
	_, err = raw.ApplyMap(ctx, &metapb.ApplyMapRequest{MapYaml: []byte("epoch: 1\nshardz: []\n"), ExpectedEpoch: 1})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "line 2") {
		t.Fatalf("unparsable map: %v", err)
	}

	// Through the client: *InvalidArgumentError at once, not retried.
	m := testMap(t, 2)
	m.Distributions[0].Intervals[1].Shard = "s9"
	_, err = c.ApplyMap(ctx, m, 1, "")
	ia, ok = as[*InvalidArgumentError](err)
	if !ok || status.Code(err) != codes.InvalidArgument || !strings.Contains(ia.Error(), "s9") {
		t.Fatalf("client ApplyMap of an invalid map = %v", err)
	}

	// The store's own refusal is InvalidArgument too.
	_, err = c.ApplyMap(ctx, testMap(t, 2), 1, "store says no")
	if ia, ok := as[*InvalidArgumentError](err); !ok || !strings.Contains(ia.Error(), "the store refuses this map") {
		t.Fatalf("store refusal = %v", err)
	}
	if store.appliesCount() != 1 || store.Map().Epoch != 1 {
		t.Fatalf("invalid maps were applied: %d applies, epoch %d", store.appliesCount(), store.Map().Epoch)
	}
}

func TestStaleEpoch(t *testing.T) {
	store := newFakeStore("n1")
	ts := startServer(t, store, insecureOpts, "")
	ctx := testContext(t, 10*time.Second)
	c := newClient(t, []string{ts.addr}, ClientOptions{})
	for e := uint64(0); e < 3; e++ {
		if _, err := c.ApplyMap(ctx, testMap(t, e+1), e, ""); err != nil {
			t.Fatal(err)
		}
	}
	raw := rawClient(t, ts.addr)
	y, _ := testMap(t, 1).YAML()
	_, err := raw.ApplyMap(ctx, &metapb.ApplyMapRequest{MapYaml: y, ExpectedEpoch: 1})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("code %v (%v), want FailedPrecondition", status.Code(err), err)
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "epoch 3") || !strings.Contains(msg, "expected epoch 1") {
		t.Errorf("message %q does not give both epochs", msg)
	}
	_, err = c.ApplyMap(ctx, testMap(t, 1), 1, "")
	se, ok := as[*StaleEpochError](err)
	if !ok || se.Current != 3 || se.Expected != 1 || status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("client error = %v", err)
	}
	if store.Map().Epoch != 3 {
		t.Fatalf("epoch = %d after stale applies", store.Map().Epoch)
	}
}

// An ApplyMap whose reply is lost is retried; the retry's stale epoch is
// recognised as the lost attempt's success.
func TestApplyMapLostReply(t *testing.T) {
	store := newFakeStore("n1")
	store.loseReplies = 1
	ts := startServer(t, store, insecureOpts, "")
	ctx := testContext(t, 10*time.Second)
	c := newClient(t, []string{ts.addr}, ClientOptions{})
	epoch, err := c.ApplyMap(ctx, testMap(t, 1), 0, "once")
	if err != nil || epoch != 1 {
		t.Fatalf("ApplyMap = %d, %v", epoch, err)
	}
	if n := store.appliesCount(); n != 1 {
		t.Fatalf("%d applies, want 1", n)
	}
	// Someone else's change is still a conflict.
	store.mu.Lock()
	store.loseReplies = 1
	store.mu.Unlock()
	if _, err := c.ApplyMap(ctx, testMap(t, 2), 1, "mine"); err != nil {
		t.Fatal(err)
	}
	_, err = c.ApplyMap(ctx, testMap(t, 5), 1, "other")
	if _, ok := as[*StaleEpochError](err); !ok {
		t.Fatalf("conflicting ApplyMap = %v, want a stale epoch", err)
	}
}

func TestWatchMap(t *testing.T) {
	store := newFakeStore("n1")
	store.set(testMap(t, 1), "")
	ts := startServer(t, store, insecureOpts, "")
	ctx := testContext(t, 30*time.Second)
	// The first address is dead: the watch moves on to the live one.
	c := newClient(t, []string{deadAddr(t), ts.addr}, ClientOptions{})

	got := make(chan MapVersion, 100)
	wctx, cancel := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- c.WatchMap(wctx, 0, func(v MapVersion) error {
			got <- v
			return nil
		})
	}()
	defer func() {
		cancel()
		if err := <-watchDone; !errors.Is(err, context.Canceled) {
			t.Errorf("WatchMap ended with %v", err)
		}
	}()
	next := func(want uint64, within time.Duration) {
		t.Helper()
		timer := time.NewTimer(within)
		defer timer.Stop()
		for {
			select {
			case v := <-got:
				if v.Map == nil || v.Map.Epoch != v.Epoch {
					t.Fatalf("watch delivered %+v", v)
				}
				if v.Epoch == want {
					return
				}
				if v.Epoch > want {
					t.Fatalf("watch delivered epoch %d, want %d", v.Epoch, want)
				}
			case <-timer.C:
				t.Fatalf("epoch %d not delivered within %v", want, within)
			}
		}
	}
	next(1, 5*time.Second)

	// A new epoch arrives within a second.
	start := time.Now()
	store.set(testMap(t, 2), "")
	next(2, time.Second)
	t.Logf("epoch 2 delivered in %v", time.Since(start))

	// Epochs in a burst arrive in order, coalesced, ending at the last.
	for e := uint64(3); e <= 20; e++ {
		store.set(testMap(t, e), "")
	}
	next(20, time.Second)

	// The server restarts; the watch resumes after the last epoch it saw.
	ts.stop()
	store.set(testMap(t, 21), "") // while it is down
	time.Sleep(300 * time.Millisecond)
	startServer(t, store, insecureOpts, ts.addr)
	next(21, 5*time.Second)
	store.set(testMap(t, 22), "")
	next(22, time.Second)
	select {
	case v := <-got:
		t.Fatalf("unexpected delivery of epoch %d", v.Epoch)
	case <-time.After(100 * time.Millisecond):
	}
}

// The watch delivers in epoch order and never the same epoch twice, also
// when fn is slow and the epochs come fast.
func TestWatchMapCoalesces(t *testing.T) {
	store := newFakeStore("n1")
	ts := startServer(t, store, insecureOpts, "")
	ctx := testContext(t, 30*time.Second)
	c := newClient(t, []string{ts.addr}, ClientOptions{})
	var (
		mu   sync.Mutex
		seen []uint64
	)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.WatchMap(wctx, 0, func(v MapVersion) error {
			mu.Lock()
			seen = append(seen, v.Epoch)
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			if v.Epoch == 50 {
				return io.EOF // fn's error ends the watch, unchanged
			}
			return nil
		})
	}()
	for e := uint64(1); e <= 50; e++ {
		store.set(testMap(t, e), "")
	}
	select {
	case err := <-done:
		if err != io.EOF {
			t.Fatalf("WatchMap = %v, want fn's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("epoch 50 not delivered")
	}
	cancel()
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("epochs out of order: %v", seen)
		}
	}
	if len(seen) >= 50 || seen[len(seen)-1] != 50 {
		t.Fatalf("deliveries %v: want fewer than 50, ending at 50", seen)
	}
	t.Logf("50 epochs in %d deliveries", len(seen))
}

func TestRedirectToLeader(t *testing.T) {
	leader := startServer(t, newFakeStore("leader"), insecureOpts, "")
	followerStore := newFakeStore("follower").follow(leader.addr)
	follower := startServer(t, followerStore, insecureOpts, "")
	ctx := testContext(t, 10*time.Second)

	// On the wire: Unavailable naming the leader, in the message and the
	// trailer.
	raw := rawClient(t, follower.addr)
	y, _ := testMap(t, 1).YAML()
	var trailer metadata.MD
	_, err := raw.ApplyMap(ctx, &metapb.ApplyMapRequest{MapYaml: y}, grpc.Trailer(&trailer))
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), leader.addr) {
		t.Fatalf("write on a follower = %v", err)
	}
	if got := trailer.Get(LeaderMetadataKey); len(got) != 1 || got[0] != leader.addr {
		t.Fatalf("trailer %s = %v, want %s", LeaderMetadataKey, got, leader.addr)
	}

	// The client, given only the follower, follows the redirect.
	c := newClient(t, []string{follower.addr}, ClientOptions{})
	epoch, err := c.ApplyMap(ctx, testMap(t, 1), 0, "via follower")
	if err != nil || epoch != 1 {
		t.Fatalf("ApplyMap through a follower = %d, %v", epoch, err)
	}
	if leader.store.appliesCount() != 1 || followerStore.appliesCount() != 0 {
		t.Fatalf("applies: leader %d, follower %d", leader.store.appliesCount(), followerStore.appliesCount())
	}
	if _, err := c.ProxyHeartbeat(ctx, "p1", "", 1, nil); err != nil {
		t.Fatal(err)
	}
	if ps, err := c.ListProxies(ctx); err != nil || len(ps) != 1 {
		t.Fatalf("ListProxies = %v, %v", ps, err)
	}
	if err := c.JoinMember(ctx, "n3", "127.0.0.1:9"); err != nil {
		t.Fatal(err)
	}
	// Reads stay where they were sent... and the client now prefers the
	// leader it learned.
	if st, err := c.MemberStatus(ctx); err != nil || st.ID != "leader" {
		t.Fatalf("MemberStatus after the redirect = %+v, %v", st, err)
	}

	// A follower that knows no leader: Unavailable, retried until the
	// context ends, then a *NotLeaderError.
	orphan := startServer(t, &noLeaderStore{newFakeStore("orphan")}, insecureOpts, "")
	c2 := newClient(t, []string{orphan.addr}, ClientOptions{})
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = c2.ApplyMap(sctx, testMap(t, 1), 0, "")
	if _, ok := as[*NotLeaderError](err); !ok || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ApplyMap without a leader = %v", err)
	}
	if orphan.store.appliesCount() != 0 {
		t.Fatal("applied without a leader")
	}
}

// noLeaderStore refuses writes: no leader is known.
type noLeaderStore struct{ *fakeStore }

func (s *noLeaderStore) ApplyMap(context.Context, *shardmap.Map, uint64, string) (uint64, error) {
	return 0, fakeNotLeader{""}
}

// A member whose Store stops ends its watches with Unavailable; the
// client follows the map on another member.
func TestWatchMapStoreStops(t *testing.T) {
	a, b := newFakeStore("a"), newFakeStore("b")
	a.set(testMap(t, 1), "")
	b.set(testMap(t, 1), "")
	sa := startServer(t, a, insecureOpts, "")
	sb := startServer(t, b, insecureOpts, "")
	ctx := testContext(t, 10*time.Second)

	raw := rawClient(t, sa.addr)
	stream, err := raw.WatchMap(ctx, &metapb.WatchMapRequest{AfterEpoch: 1})
	if err != nil {
		t.Fatal(err)
	}

	c := newClient(t, []string{sa.addr, sb.addr}, ClientOptions{})
	got := make(chan uint64, 10)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.WatchMap(wctx, 0, func(v MapVersion) error {
			got <- v.Epoch
			return nil
		})
	}()
	if e := <-got; e != 1 {
		t.Fatalf("first epoch %d", e)
	}
	a.stop()
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("watch on a stopped member = %v, want Unavailable", err)
	}
	b.set(testMap(t, 2), "")
	select {
	case e := <-got:
		if e != 2 {
			t.Fatalf("epoch %d, want 2", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not move to the other member")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("WatchMap = %v", err)
	}
}
