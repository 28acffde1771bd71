package meta

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// maxProxyID bounds the length of a proxy ID.
const maxProxyID = 200

// maxIncarnation bounds the length of a proxy's incarnation.
const maxIncarnation = 64

// Heartbeat registers the proxy proxyID, or renews its lease: it is
// listening on addr and applies map epoch applied. It goes through raft,
// on the leader only (a *NotLeaderError elsewhere). The leader stamps its
// clock and Config.ProxyLease into the entry; the proxy is alive until
// that time plus the lease. Proxies should call it every ProxyLease/3 or
// more often, and at once after applying a new epoch. A heartbeat that
// changes nothing and comes within a quarter lease of the last one is
// answered without writing to the log.
//
// unreachable are the endpoints (host:port) the proxy's own probes fail
// to reach now, at most 4096; nil reports them all reachable. The report
// replaces the proxy's previous one and stays in the leader's memory, out
// of the log (see Reports): a changed report alone writes nothing.
func (n *Node) Heartbeat(ctx context.Context, proxyID, addr string, applied uint64, unreachable []string) error {
	return n.HeartbeatIncarnation(ctx, proxyID, "", addr, applied, unreachable)
}

// HeartbeatIncarnation is Heartbeat from the run incarnation of the proxy
// process (ProxyStatus.Incarnation; at most 64 bytes): a heartbeat with
// another incarnation than the last one is written to the log at once.
func (n *Node) HeartbeatIncarnation(ctx context.Context, proxyID, incarnation, addr string, applied uint64, unreachable []string) error {
	if len(incarnation) > maxIncarnation {
		return fmt.Errorf("meta: heartbeat of proxy %s: an incarnation of at most %d bytes is required", proxyID, maxIncarnation)
	}
	if proxyID == "" || len(proxyID) > maxProxyID {
		return fmt.Errorf("meta: heartbeat: a proxy ID of 1 to %d bytes is required", maxProxyID)
	}
	report, err := normalizeReport(unreachable)
	if err != nil {
		return fmt.Errorf("meta: heartbeat of proxy %s: %w", proxyID, err)
	}
	if err := n.requireLeader(); err != nil {
		return err
	}
	n.recordReport(proxyID, report)
	st := n.fsm.state()
	if r, ok := st.proxies[proxyID]; ok && r.addr == addr && r.applied == applied && r.incarnation == incarnation &&
		r.lease == n.cfg.ProxyLease && r.alive(st.now) && n.cfg.now().Sub(r.lastSeen) < r.lease/4 {
		return nil
	}
	_, err = n.propose(ctx, cmdProxyHeartbeat, &heartbeatCmd{
		ProxyID: proxyID, Addr: addr, AppliedEpoch: applied, LeaseNanos: int64(n.cfg.ProxyLease), Incarnation: incarnation,
	})
	if err != nil {
		return fmt.Errorf("meta: heartbeat of proxy %s: %w", proxyID, err)
	}
	return nil
}

// Deregister forgets the proxy proxyID, e.g. when it shuts down cleanly,
// so that it no longer counts in WaitApplied or shows in Proxies. Leader
// only. Forgetting an unknown proxy is not an error.
func (n *Node) Deregister(ctx context.Context, proxyID string) error {
	if _, err := n.propose(ctx, cmdProxyDeregister, &deregisterCmd{ProxyID: proxyID}); err != nil {
		return fmt.Errorf("meta: deregister proxy %s: %w", proxyID, err)
	}
	return nil
}

// Proxies returns the proxies of this node's state, by ID. A proxy is
// Alive while its lease runs at the replicated clock (see ProxyStatus);
// the leader writes an entry to move that clock on when a lease runs out,
// so a dead proxy shows as such within about a quarter lease (at most one
// second) after its lease ends. Proxies dead for Config.ProxyForget are
// dropped.
func (n *Node) Proxies() []ProxyStatus { return n.fsm.state().proxyList() }

// WaitApplied waits until every live proxy has applied map epoch epoch or
// a later one, by the heartbeats in this node's state, and returns nil. A
// proxy counts as live while its lease runs (see Proxies): one whose lease
// ran out no longer blocks, and one that registers while WaitApplied
// waits must reach epoch too. With no live proxy it returns at once. It
// is meant for the leader, whose state is the most recent; on a follower
// it follows that follower's state.
//
// If ctx ends first it returns a *LaggingProxiesError naming the proxies
// still behind (it unwraps to ctx.Err()); ErrClosed if the node closes.
func (n *Node) WaitApplied(ctx context.Context, epoch uint64) error {
	for {
		st, changed, _ := n.fsm.watch()
		lagging := st.lagging(epoch)
		if len(lagging) == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return &LaggingProxiesError{Epoch: epoch, Lagging: lagging, Err: ctx.Err()}
		case <-n.ctx.Done():
			return ErrClosed
		}
	}
}

// maintain runs for the node's life. It drops the proxies' health reports
// that can no longer count (all of them off the leader). On the leader it
// records the node's API address in the state, and moves the replicated
// clock on (a tick entry) when a proxy's lease ran out by the leader's
// clock but not yet by the replicated one, or a dead proxy is due to be
// forgotten.
func (n *Node) maintain() {
	every := min(max(n.cfg.ProxyLease/4, 10*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.raft.LeaderCh():
		case <-t.C:
		}
		n.pruneReports()
		if n.raft.State() != raft.Leader {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 10*every)
		err := n.maintainOnce(ctx)
		cancel()
		if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrNotLeader) && n.ctx.Err() == nil {
			n.log.Warn("meta leader upkeep failed; will retry", "error", err)
		}
	}
}

func (n *Node) maintainOnce(ctx context.Context) error {
	st := n.fsm.state()
	if a := n.cfg.APIAddr; a != "" && st.apiAddrs[n.cfg.ID] != a {
		if _, err := n.propose(ctx, cmdMemberAPIAddr, &memberCmd{ID: n.cfg.ID, APIAddr: a}); err != nil {
			return fmt.Errorf("meta: record this node's API address: %w", err)
		}
	}
	now := n.cfg.now()
	tick := false
	for _, r := range st.proxies {
		expired := r.alive(st.now) && now.Sub(r.lastSeen) >= r.lease
		forget := now.Sub(r.lastSeen) >= r.lease+n.cfg.ProxyForget
		if expired || forget {
			tick = true
			break
		}
	}
	if tick {
		if _, err := n.propose(ctx, cmdTick, &tickCmd{ForgetNanos: int64(n.cfg.ProxyForget)}); err != nil {
			return fmt.Errorf("meta: expire proxy leases: %w", err)
		}
	}
	return nil
}
