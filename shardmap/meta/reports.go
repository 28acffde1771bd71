package meta

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Proxy health reports.
//
// Each heartbeat may carry the endpoints the proxy's own probes fail to
// reach. They are a second observer for failover: the leader's monitor
// says a primary is down, the proxies say whether they see it down too.
// Reports change as often as endpoints flap and are worthless a lease
// later, so they are not replicated: the leader that receives them keeps
// them in memory, and a new leader has fresh ones within a heartbeat. A
// report is tagged with the raft term it was received in, so that a node
// that lost and regained leadership never counts what it heard in an
// earlier term.

// maxReportAddrs bounds the endpoints one report may list.
const maxReportAddrs = 4096

// proxyReport is the latest report of one proxy.
type proxyReport struct {
	at          time.Time // the leader's clock when it was received
	term        uint64    // the raft term it was received in
	unreachable []string  // host:port, sorted, without duplicates
}

// reportBook holds the latest report of each proxy.
type reportBook struct {
	mu      sync.Mutex
	byProxy map[string]proxyReport // by proxy ID
}

func (b *reportBook) put(id string, r proxyReport) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.byProxy == nil {
		b.byProxy = make(map[string]proxyReport)
	}
	b.byProxy[id] = r
}

// prune drops what can no longer count: every report off the leader, and
// on it the reports of another term or older than maxAge.
func (b *reportBook) prune(leader bool, term uint64, now time.Time, maxAge time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, r := range b.byProxy {
		if !leader || r.term != term || now.Sub(r.at) >= maxAge {
			delete(b.byProxy, id)
		}
	}
}

// normalizeReport checks and sorts the endpoints of a report, dropping
// duplicates. The caller's slice is not changed.
func normalizeReport(unreachable []string) ([]string, error) {
	if len(unreachable) > maxReportAddrs {
		return nil, fmt.Errorf("%d unreachable endpoints reported, more than %d", len(unreachable), maxReportAddrs)
	}
	if len(unreachable) == 0 {
		return nil, nil
	}
	out := slices.Clone(unreachable)
	slices.Sort(out)
	out = slices.Compact(out)
	if out[0] == "" {
		return nil, errors.New("an empty endpoint is reported unreachable")
	}
	return out, nil
}

// recordReport keeps the report of proxyID, received now on the leader.
func (n *Node) recordReport(proxyID string, unreachable []string) {
	n.reports.put(proxyID, proxyReport{at: n.cfg.now(), term: n.raft.CurrentTerm(), unreachable: unreachable})
}

// Reports counts the proxies' view of the endpoint addr (host:port, as
// shardmap.Endpoint.String formats it): reporting is how many proxies are
// alive by their lease (at this node's clock) and sent a report within
// their lease in the current term, and unreachable is how many of those
// list addr as unreachable. Reports are kept by the leader that receives
// them, in memory: on a follower, and on a new leader until the proxies'
// next heartbeats, both are 0.
func (n *Node) Reports(addr string) (unreachable, reporting int) {
	if n.raft.State() != raft.Leader {
		return 0, 0
	}
	term := n.raft.CurrentTerm()
	now := n.cfg.now()
	st := n.fsm.state()
	n.reports.mu.Lock()
	defer n.reports.mu.Unlock()
	for id, rep := range n.reports.byProxy {
		p, ok := st.proxies[id]
		if !ok || rep.term != term || now.Sub(p.lastSeen) >= p.lease || now.Sub(rep.at) >= p.lease {
			continue
		}
		reporting++
		if _, found := slices.BinarySearch(rep.unreachable, addr); found {
			unreachable++
		}
	}
	return unreachable, reporting
}

// pruneReports drops the reports that can no longer count (see
// reportBook.prune); maintain calls it.
func (n *Node) pruneReports() {
	n.reports.prune(n.raft.State() == raft.Leader, n.raft.CurrentTerm(), n.cfg.now(), 2*n.cfg.ProxyLease)
}
