package meta

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/shardmap"
)

// singleNode opens a bootstrapped one-voter cluster and waits until it
// leads.
func singleNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	cfg.Bootstrap = true
	n := openNode(t, cfg)
	eventually(t, 10*time.Second, func() error {
		if !n.IsLeader() {
			return errors.New("the single node does not lead")
		}
		return nil
	})
	return n
}

func TestSingleNodeApplyMap(t *testing.T) {
	checkLeaks(t)
	ctx := t.Context()
	cfg := testConfig(t, "m1", t.TempDir())
	cfg.APIAddr = "" // nothing but the test writes to the log
	n := singleNode(t, cfg)

	if v := n.Map(); v.Epoch != 0 || v.Map != nil {
		t.Fatalf("fresh cluster has map %+v", v)
	}
	m := testMap(t, 100)
	m.Epoch = 42 // ignored
	epoch, err := n.ApplyMapChange(ctx, m, 0, Change{Comment: "initial", Author: "ann"})
	if err != nil || epoch != 1 {
		t.Fatalf("ApplyMap = %d, %v", epoch, err)
	}
	if m.Epoch != 42 {
		t.Error("ApplyMap changed the caller's map")
	}
	v := n.Map()
	if v.Epoch != 1 || v.Map.Epoch != 1 || v.Comment != "initial" || v.Author != "ann" || !strings.Contains(string(v.YAML), "epoch: 1\n") {
		t.Errorf("Map() = %+v", v)
	}

	// Compare-and-set.
	_, err = n.ApplyMap(ctx, testMap(t, 200), 0, "")
	var stale *StaleEpochError
	if !errors.As(err, &stale) || stale.Current != 1 || stale.Expected != 0 {
		t.Fatalf("stale ApplyMap: %v", err)
	}
	if epoch, err := n.ApplyMap(ctx, testMap(t, 200), 1, "move 100..200 to s1"); err != nil || epoch != 2 {
		t.Fatalf("ApplyMap = %d, %v", epoch, err)
	}
	// An expectation ahead of the state is refused by the state machine.
	if _, err := n.ApplyMap(ctx, testMap(t, 300), 7, ""); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("ApplyMap ahead: %v", err)
	}
	if h := n.History(0); len(h) != 2 || h[0].Epoch != 2 || h[0].Comment != "move 100..200 to s1" || h[1].Epoch != 1 {
		t.Errorf("History = %+v", h)
	}

	// Invalid maps are refused before anything is written, with every
	// problem in words a DBA can act on.
	bad := testMap(t, 300)
	bad.Distributions[0].Intervals[1].Lo = shardmap.Int64Bound(400)
	bad.Tables = append(bad.Tables, shardmap.Table{Name: "public.orders", Kind: shardmap.Sharded, KeyColumn: "id", Distribution: "orders"})
	last := n.Status(ctx).LastIndex
	_, err = n.ApplyMap(ctx, bad, 2, "")
	if !errors.Is(err, ErrInvalidMap) {
		t.Fatalf("invalid map: %v", err)
	}
	for _, want := range []string{"from 300 up to (not including) 400", "table public.orders", "orders, which is not defined"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not mention %q:\n%v", want, err)
		}
	}
	t.Logf("a DBA reads:\n%v", err)
	if n.Map().Epoch != 2 || n.Status(ctx).LastIndex != last {
		t.Error("an invalid map was written to the log")
	}
	if _, err := n.ApplyMap(ctx, nil, 2, ""); err == nil {
		t.Error("a nil map was accepted")
	}
}

func TestSingleNodeWatch(t *testing.T) {
	checkLeaks(t)
	ctx := t.Context()
	n := singleNode(t, testConfig(t, "m1", t.TempDir()))
	if _, err := n.ApplyMap(ctx, testMap(t, 1), 0, ""); err != nil {
		t.Fatal(err)
	}

	wctx, cancel := context.WithCancel(ctx)
	ch, err := n.Watch(wctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if v := recv(t, ch); v.Epoch != 1 {
		t.Fatalf("first version %d, want 1", v.Epoch)
	}
	// A watcher that does not read holds nothing up, and then gets the
	// latest version only.
	for e := uint64(1); e < 4; e++ {
		if _, err := n.ApplyMap(ctx, testMap(t, int64(e)), e, ""); err != nil {
			t.Fatal(err)
		}
	}
	if v := recv(t, ch); v.Epoch != 4 || v.Map.Epoch != 4 {
		t.Fatalf("after three changes got epoch %d, want 4", v.Epoch)
	}
	// Heartbeats do not wake watchers of the map.
	if err := n.Heartbeat(ctx, "p1", "a:1", 4, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-ch:
		t.Fatalf("got epoch %d without a change", v.Epoch)
	case <-time.After(50 * time.Millisecond):
	}
	// A watch from an epoch ahead waits for it.
	ahead, err := n.Watch(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.ApplyMap(ctx, testMap(t, 9), 4, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := n.ApplyMap(ctx, testMap(t, 10), 5, ""); err != nil {
		t.Fatal(err)
	}
	if v := recv(t, ahead); v.Epoch != 6 {
		t.Fatalf("watch after 5 got %d", v.Epoch)
	}
	cancel()
	for range ch { // closed when its context ends
	}
	// The other watch ends with the node (checkLeaks verifies it).
}

func recv(t *testing.T, ch <-chan MapVersion) MapVersion {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no map version within 10s")
	}
	return MapVersion{}
}

func TestSingleNodeProxies(t *testing.T) {
	checkLeaks(t)
	ctx := t.Context()
	cfg := testConfig(t, "m1", t.TempDir())
	cfg.ProxyLease = 600 * time.Millisecond
	n := singleNode(t, cfg)
	if _, err := n.ApplyMap(ctx, testMap(t, 1), 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitApplied(ctx, 1); err != nil {
		t.Fatalf("WaitApplied with no proxies: %v", err)
	}
	for _, p := range []string{"p1", "p2"} {
		if err := n.Heartbeat(ctx, p, p+":6432", 1, nil); err != nil {
			t.Fatal(err)
		}
	}
	if ps := n.Proxies(); len(ps) != 2 || !ps[0].Alive || ps[0].ID != "p1" || ps[1].Addr != "p2:6432" || ps[1].Lease != cfg.ProxyLease {
		t.Fatalf("Proxies = %+v", ps)
	}
	if _, err := n.ApplyMap(ctx, testMap(t, 2), 1, ""); err != nil {
		t.Fatal(err)
	}

	// Both proxies are behind: a short wait names them.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	err := n.WaitApplied(short, 2)
	cancel()
	var lag *LaggingProxiesError
	if !errors.As(err, &lag) || len(lag.Lagging) != 2 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitApplied: %v", err)
	}
	t.Logf("a DBA reads: %v", err)

	// p1 applies epoch 2 and keeps heartbeating; p2 dies. WaitApplied
	// returns once p2's lease ran out (the leader ticks the clock on).
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- n.WaitApplied(ctx, 2) }()
	stop := make(chan struct{})
	beats := make(chan error, 1)
	go func() {
		t := time.NewTicker(cfg.ProxyLease / 4)
		defer t.Stop()
		for {
			if err := n.Heartbeat(ctx, "p1", "p1:6432", 2, nil); err != nil {
				beats <- err
				return
			}
			select {
			case <-stop:
				beats <- nil
				return
			case <-t.C:
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitApplied did not return after p2's lease ran out")
	}
	close(stop)
	if err := <-beats; err != nil {
		t.Fatal(err)
	}
	t.Logf("WaitApplied returned after %v (lease %v)", time.Since(start), cfg.ProxyLease)
	ps := n.Proxies()
	if len(ps) != 2 || !ps[0].Alive || ps[0].AppliedEpoch != 2 || ps[1].Alive {
		t.Errorf("Proxies = %+v", ps)
	}

	// A dead proxy that comes back behind blocks again.
	if err := n.Heartbeat(ctx, "p2", "p2:6432", 1, nil); err != nil {
		t.Fatal(err)
	}
	short, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
	err = n.WaitApplied(short, 2)
	cancel()
	if !errors.As(err, &lag) || len(lag.Lagging) != 1 || lag.Lagging[0].ID != "p2" {
		t.Fatalf("WaitApplied with p2 back at epoch 1: %v", err)
	}
	if err := n.Deregister(ctx, "p2"); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitApplied(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := n.Heartbeat(ctx, "", "x", 1, nil); err == nil {
		t.Error("a heartbeat without an ID was accepted")
	}
}

// TestSingleNodeReopen: a node restarts from its data directory with its
// state; Bootstrap refuses a node with state; the API address recorded.
func TestSingleNodeReopen(t *testing.T) {
	checkLeaks(t)
	ctx := t.Context()
	dir := t.TempDir()
	cfg := testConfig(t, "m1", dir)
	cfg.Bootstrap = true
	n, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		_, err := n.ApplyMap(ctx, testMap(t, 5), 0, "")
		return err
	})
	if err := n.Heartbeat(ctx, "p1", "p1:6432", 1, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if st := n.Status(ctx); st.LeaderAPIAddr != "api-m1" {
			return errors.New("the leader's API address is not recorded")
		}
		return nil
	})
	if err := n.Bootstrap(ctx); !errors.Is(err, ErrAlreadyBootstrapped) {
		t.Errorf("Bootstrap again: %v", err)
	}
	cfg.RaftAddr = n.Addr()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := n.ApplyMap(ctx, testMap(t, 5), 1, ""); !errors.Is(err, ErrClosed) {
		t.Errorf("ApplyMap after Close: %v", err)
	}
	if _, err := n.Watch(ctx, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Watch after Close: %v", err)
	}

	n = openNode(t, cfg)
	eventually(t, 10*time.Second, func() error {
		if n.Map().Epoch != 1 || len(n.Proxies()) != 1 {
			return errors.New("the state is not back")
		}
		return nil
	})
	st := n.Status(ctx)
	if st.ID != "m1" || st.Addr != cfg.RaftAddr || len(st.Members) != 1 || st.Members[0].Suffrage != "voter" {
		t.Errorf("Status = %+v", st)
	}
	// A second process on the same data directory is refused.
	cfg2 := cfg
	cfg2.RaftAddr = "127.0.0.1:0"
	if _, err := Open(ctx, cfg2); err == nil || !strings.Contains(err.Error(), "another pgshard meta") {
		t.Errorf("second Open of the data dir: %v", err)
	}
}

func TestOpenConfigErrors(t *testing.T) {
	checkLeaks(t)
	_, err := Open(t.Context(), Config{Peers: []Peer{{ID: "x"}}})
	for _, want := range []string{"node ID", "raft address", "data directory", "peer"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
	cfg := testConfig(t, "m1", t.TempDir())
	cfg.RaftAddr = "0.0.0.0:0"
	if _, err := Open(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "advertise") {
		t.Errorf("unspecified address: %v", err)
	}
	cfg = testConfig(t, "m1", t.TempDir())
	cfg.LeaderLeaseTimeout = time.Hour
	if _, err := Open(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "raft config") {
		t.Errorf("bad raft config: %v", err)
	}
}

// TestErrorsForRPC: the errors carry what the RPC layer needs, through
// wrapping, as the small interfaces metarpc matches with errors.As.
func TestErrorsForRPC(t *testing.T) {
	var redirect interface{ LeaderAddress() string }
	err := fmt.Errorf("wrapped: %w", &NotLeaderError{LeaderID: "m2", LeaderAddr: "10.0.0.2:7100", LeaderAPIAddr: "10.0.0.2:7200"})
	if !errors.As(err, &redirect) || redirect.LeaderAddress() != "10.0.0.2:7200" || !errors.Is(err, ErrNotLeader) {
		t.Errorf("NotLeaderError: %v", err)
	}
	if msg := (&NotLeaderError{}).Error(); !strings.Contains(msg, "no leader is known") {
		t.Errorf("NotLeaderError without a leader: %s", msg)
	}
	var conflict interface{ StaleEpoch() (uint64, uint64) }
	err = fmt.Errorf("wrapped: %w", &StaleEpochError{Current: 5, Expected: 3})
	if !errors.As(err, &conflict) || !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("StaleEpochError: %v", err)
	} else if c, e := conflict.StaleEpoch(); c != 5 || e != 3 {
		t.Errorf("StaleEpoch() = %d, %d", c, e)
	}
	bad := testMap(t, 1)
	bad.Shards[1].Name = "s 2"
	bad.Tables[0].Distribution = "nope"
	ime := invalidMap(bad.Validate())
	var input interface{ InvalidArgument() bool }
	if err := fmt.Errorf("w: %w", ime); !errors.As(err, &input) || !input.InvalidArgument() || !errors.Is(err, ErrInvalidMap) {
		t.Errorf("InvalidMapError: %v", err)
	}
	if n := len(ime.Problems); n < 3 {
		t.Errorf("%d problems, want one per problem:\n%v", n, ime)
	}
}

// SetMemberAPIAddr records another member's API address (given when it
// joins), which Members then names; an empty one is refused.
func TestSetMemberAPIAddr(t *testing.T) {
	checkLeaks(t)
	n := singleNode(t, testConfig(t, "m1", t.TempDir()))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := n.SetMemberAPIAddr(ctx, "m2", "10.0.0.2:6440"); err != nil {
		t.Fatal(err)
	}
	if err := n.SetMemberAPIAddr(ctx, "m2", "10.0.0.2:6440"); err != nil {
		t.Fatalf("again: %v", err)
	}
	if err := n.SetMemberAPIAddr(ctx, "m2", ""); err == nil {
		t.Error("an empty address was accepted")
	}
	if got := n.fsm.state().apiAddrs["m2"]; got != "10.0.0.2:6440" {
		t.Errorf("recorded API address of m2 = %q", got)
	}
	// Members names it once m2 is a member (it need not run for that).
	if err := n.Join(ctx, "m2", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	members, err := n.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 2 || members[1].ID != "m2" || members[1].APIAddr != "10.0.0.2:6440" {
		t.Errorf("members %+v", members)
	}
}
