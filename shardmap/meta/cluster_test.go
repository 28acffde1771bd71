package meta

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// cluster is an in-process meta cluster on 127.0.0.1 with real TCP
// transports and data directories.
type cluster struct {
	t     *testing.T
	nodes map[string]*Node // open nodes by ID
	cfgs  map[string]Config
}

// newCluster starts n nodes: m1 bootstraps, the others join it.
func newCluster(t *testing.T, n int, tune func(*Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, nodes: map[string]*Node{}, cfgs: map[string]Config{}}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("m%d", i)
		cfg := testConfig(t, id, t.TempDir())
		cfg.Bootstrap = i == 1
		if tune != nil {
			tune(&cfg)
		}
		node := c.open(cfg)
		cfg.RaftAddr = node.Addr() // a restart reuses the port
		c.cfgs[id] = cfg
	}
	leader := c.nodes["m1"]
	eventually(t, 10*time.Second, func() error {
		if !leader.IsLeader() {
			return errors.New("m1 does not lead after bootstrap")
		}
		return nil
	})
	for i := 2; i <= n; i++ {
		id := fmt.Sprintf("m%d", i)
		if err := leader.Join(t.Context(), id, c.nodes[id].Addr()); err != nil {
			t.Fatalf("join %s: %v", id, err)
		}
	}
	c.converged()
	return c
}

func (c *cluster) open(cfg Config) *Node {
	c.t.Helper()
	n, err := c.tryOpen(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return n
}

func (c *cluster) tryOpen(cfg Config) (*Node, error) {
	n, err := Open(c.t.Context(), cfg)
	if err != nil {
		return nil, err
	}
	c.nodes[cfg.ID] = n
	c.t.Cleanup(func() { c.close(cfg.ID) })
	return n, nil
}

func (c *cluster) close(id string) {
	if n := c.nodes[id]; n != nil {
		if err := n.Close(); err != nil {
			c.t.Errorf("close %s: %v", id, err)
		}
		delete(c.nodes, id)
	}
}

// leader waits until one open node leads and every open node knows it.
func (c *cluster) leader() *Node {
	c.t.Helper()
	var leader *Node
	eventually(c.t, 10*time.Second, func() error {
		leader = nil
		for _, n := range c.nodes {
			if n.IsLeader() {
				if leader != nil {
					return fmt.Errorf("%s and %s both lead", leader.ID(), n.ID())
				}
				leader = n
			}
		}
		if leader == nil {
			return errors.New("no leader")
		}
		for _, n := range c.nodes {
			if st := n.Status(c.t.Context()); st.LeaderID != leader.ID() {
				return fmt.Errorf("%s thinks the leader is %q, not %s", n.ID(), st.LeaderID, leader.ID())
			}
		}
		return nil
	})
	return leader
}

// converged waits until every open node has the leader's epoch, proxies
// and members.
func (c *cluster) converged() {
	c.t.Helper()
	eventually(c.t, 10*time.Second, func() error {
		leader := c.leader()
		want := leader.Status(c.t.Context())
		for _, n := range c.nodes {
			st := n.Status(c.t.Context())
			if st.Epoch != want.Epoch || st.AppliedIndex < want.CommitIndex || len(st.Members) != len(want.Members) ||
				len(n.Proxies()) != len(leader.Proxies()) {
				return fmt.Errorf("%s: epoch %d applied %d members %d, leader %s: epoch %d commit %d members %d",
					n.ID(), st.Epoch, st.AppliedIndex, len(st.Members), leader.ID(), want.Epoch, want.CommitIndex, len(want.Members))
			}
		}
		return nil
	})
}

// applyMap applies a map at expect+1 on the leader, riding out leader
// changes that a loaded machine can cause.
func (c *cluster) applyMap(expect uint64) {
	c.t.Helper()
	eventually(c.t, 10*time.Second, func() error {
		leader := c.leader()
		_, err := leader.ApplyMap(c.t.Context(), testMap(c.t, int64(expect)), expect, "")
		if errors.Is(err, ErrStaleEpoch) && leader.Map().Epoch == expect+1 {
			return nil // an uncertain attempt did commit
		}
		return err
	})
}

func TestCluster(t *testing.T) {
	checkLeaks(t)
	ctx := t.Context()
	c := newCluster(t, 3, func(cfg *Config) {
		// Snapshot often and keep a short log, so that a node that was
		// down must catch up from a snapshot.
		cfg.SnapshotInterval = 100 * time.Millisecond
		cfg.SnapshotThreshold = 4
		cfg.TrailingLogs = 4
	})
	leader := c.leader()
	if st := leader.Status(ctx); len(st.Members) != 3 || st.State != "leader" || st.Term == 0 {
		t.Fatalf("leader status %+v", st)
	}

	// A map applied on the leader reaches every node.
	c.applyMap(0)
	c.converged()
	for _, n := range c.nodes {
		if v := n.Map(); v.Epoch != 1 || v.Map.Shard("s2") == nil {
			t.Errorf("%s has map %+v", n.ID(), v)
		}
	}

	// Followers refuse changes and name the leader (with its API address,
	// once the leader recorded it).
	for _, n := range c.nodes {
		eventually(t, 10*time.Second, func() error {
			leader := c.leader()
			if n == leader {
				return nil
			}
			_, err := n.ApplyMap(ctx, testMap(t, 1), 1, "")
			var nl *NotLeaderError
			if !errors.As(err, &nl) || !errors.Is(err, ErrNotLeader) {
				return fmt.Errorf("ApplyMap on follower %s: %v", n.ID(), err)
			}
			if nl.LeaderID != leader.ID() || nl.LeaderAddr != leader.Addr() || nl.LeaderAPIAddr != "api-"+leader.ID() {
				return fmt.Errorf("follower %s says %+v; leader is %s at %s", n.ID(), nl, leader.ID(), leader.Addr())
			}
			// Calls that would do no harm if n just became the leader.
			for name, err := range map[string]error{
				"Heartbeat": n.Heartbeat(ctx, "p1", "10.1.0.1:6432", 1, nil),
				"Join":      n.Join(ctx, leader.ID(), leader.Addr()),
				"Remove":    n.Remove(ctx, "nobody"),
			} {
				if !errors.Is(err, ErrNotLeader) {
					return fmt.Errorf("%s on follower %s: %v", name, n.ID(), err)
				}
			}
			return nil
		})
	}
	leader = c.leader()
	if err := leader.Heartbeat(ctx, "p1", "10.1.0.1:6432", 1, []string{"10.0.0.1:5432"}); err != nil {
		t.Fatal(err)
	}
	c.converged()
	// Health reports stay in the leader's memory: followers have none.
	for _, n := range c.nodes {
		un, rep := n.Reports("10.0.0.1:5432")
		if want := n == leader; (un == 1 && rep == 1) != want || (!want && (un != 0 || rep != 0)) {
			t.Errorf("Reports on %s (leader %v) = %d of %d", n.ID(), want, un, rep)
		}
	}

	// The leader goes away: the others elect a new one within 3 s, with
	// every committed epoch, and go on with two of three voters.
	old := leader.ID()
	oldLast := leader.Status(ctx).LastIndex
	start := time.Now()
	c.close(old)
	var next *Node
	eventually(t, 10*time.Second, func() error {
		for _, n := range c.nodes {
			if n.IsLeader() {
				next = n
				return nil
			}
		}
		return errors.New("no new leader")
	})
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("a new leader took %v", took)
	} else {
		t.Logf("%s leads %v after %s closed", next.ID(), took, old)
	}
	// The new leader starts without reports, and hears them again.
	if un, rep := next.Reports("10.0.0.1:5432"); un != 0 || rep != 0 {
		t.Errorf("new leader %s has reports at once: %d of %d", next.ID(), un, rep)
	}
	eventually(t, 10*time.Second, func() error {
		return next.Heartbeat(ctx, "p1", "10.1.0.1:6432", 1, []string{"10.0.0.1:5432"})
	})
	if un, rep := next.Reports("10.0.0.1:5432"); un != 1 || rep != 1 {
		t.Errorf("new leader %s after a heartbeat: %d of %d", next.ID(), un, rep)
	}
	eventually(t, 10*time.Second, func() error {
		if e := next.Map().Epoch; e != 1 {
			return fmt.Errorf("new leader %s at epoch %d, want 1", next.ID(), e)
		}
		return nil
	})
	for e := uint64(1); e < 6; e++ {
		c.applyMap(e)
	}
	c.converged()

	// The old leader restarts from its data directory after the others
	// compacted their logs past its last entry: it catches up from a
	// snapshot.
	eventually(t, 10*time.Second, func() error {
		for _, n := range c.nodes {
			first, err := n.store.FirstIndex()
			if err != nil {
				return err
			}
			if first <= oldLast {
				return fmt.Errorf("%s still has the log from %d (the old leader stopped at %d)", n.ID(), first, oldLast)
			}
		}
		return nil
	})
	var back *Node
	eventually(t, 10*time.Second, func() error { // the port may be busy a moment
		var err error
		back, err = c.tryOpen(c.cfgs[old])
		return err
	})
	c.converged()
	if v := back.Map(); v.Epoch != 6 || len(back.History(0)) != 6 || len(back.Proxies()) != 1 {
		t.Errorf("restarted %s: epoch %d, %d versions, proxies %+v", old, v.Epoch, len(back.History(0)), back.Proxies())
	}

	// Remove a member: the configuration shrinks everywhere.
	leader = c.leader()
	var victim string
	for id := range c.nodes {
		if id != leader.ID() {
			victim = id
			break
		}
	}
	if err := leader.Remove(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if err := leader.Remove(ctx, "nobody"); !errors.Is(err, ErrNotMember) {
		t.Errorf("remove an unknown member: %v", err)
	}
	c.close(victim)
	c.converged()
	members, err := c.leader().Members(ctx)
	if err != nil || len(members) != 2 {
		t.Errorf("members after remove: %+v, %v", members, err)
	}
}
