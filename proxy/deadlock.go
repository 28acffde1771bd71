package proxy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Deadlocks across shards (transactions.cross_shard: two_phase). Every
// PostgreSQL server breaks the deadlocks it sees; a cycle of lock waits
// that spans shards (T1 holds a row on s0 and waits for one on s1, T2
// holds that one and waits for T1's) is seen by none. Each participant
// of a transaction over several shards is tagged with the transaction's
// distributed ID (dtx), SET LOCAL application_name = 'pgshard dtx <id>',
// sent with the BEGIN on every shard it opens and on the first shard once
// a second is attached: it reverts at the transaction's end, so nothing
// stays on the pooled connection, and any proxy can tell, from
// pg_stat_activity, which backends belong to which distributed
// transaction. A proxy's detector (deadlock_detect.go) looks only while
// one of its own transactions over several shards has waited longer than
// transactions.deadlock_timeout for an answer: it lists every primary's
// backends with pg_blocking_pids, builds the wait-for graph between
// distributed transactions (waitEdges), and breaks each cycle that spans
// shards by failing its youngest transaction (chooseVictims): the same
// choice on every proxy that sees the cycle, and only the proxy owning
// that transaction acts, cancelling its waiting statement; the session
// reports the cancel as 40P01 (deadlock_session.go).

// dtxTagPrefix starts the application_name of a participant of a
// distributed transaction.
const dtxTagPrefix = "pgshard dtx "

// newDtxID makes a distributed transaction's ID: its start time in
// microseconds since 1970 (16 digits, so that IDs sort by age), the
// proxy's random nonce and a counter. 34 bytes or so: with the prefix it
// fits application_name (63 bytes).
func newDtxID(start time.Time, nonce uint32, seq uint64) string {
	return fmt.Sprintf("%016d-%08x-%d", start.UnixMicro(), nonce, seq)
}

// dtxOfApp returns the distributed transaction ID in a backend's
// application_name, or "".
func dtxOfApp(app string) string {
	id, ok := strings.CutPrefix(app, dtxTagPrefix)
	if !ok {
		return ""
	}
	return id
}

// dtxTagSQL is the statement that tags a participant of transaction id.
func dtxTagSQL(id string) string {
	return "SET LOCAL application_name = '" + dtxTagPrefix + id + "'"
}

// dlProc is a backend of one server as the detector lists it: its pid,
// its distributed transaction ("" for any other session) and the pids
// that block it (pg_blocking_pids).
type dlProc struct {
	pid      int32
	dtx      string
	blockers []int32
}

// dlEdge says distributed transaction from waits on shard (its backend
// pid there) for transaction to.
type dlEdge struct {
	from, to, shard string
	pid             int32
}

// waitEdges returns the waits between distributed transactions on one
// shard: a tagged backend waits for a tagged one of another transaction
// directly or through backends of other sessions (the transitive waits
// through them are followed).
func waitEdges(shard string, procs []dlProc) []dlEdge {
	byPID := make(map[int32]*dlProc, len(procs))
	for i := range procs {
		byPID[procs[i].pid] = &procs[i]
	}
	var edges []dlEdge
	for i := range procs {
		p := &procs[i]
		if p.dtx == "" || len(p.blockers) == 0 {
			continue
		}
		seen := map[int32]bool{p.pid: true}
		to := map[string]bool{}
		stack := slices.Clone(p.blockers)
		for len(stack) > 0 {
			b := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[b] {
				continue
			}
			seen[b] = true
			q := byPID[b]
			if q == nil {
				continue // gone, a prepared transaction (pid 0), or not listed
			}
			if q.dtx != "" {
				if q.dtx != p.dtx && !to[q.dtx] {
					to[q.dtx] = true
					edges = append(edges, dlEdge{from: p.dtx, to: q.dtx, shard: shard, pid: p.pid})
				}
				continue
			}
			stack = append(stack, q.blockers...)
		}
	}
	return edges
}

// dlVictim is a distributed transaction chosen to break a cycle: its
// waits inside the cycle (the statements to cancel), the transactions
// and the shards of the cycle.
type dlVictim struct {
	dtx     string
	waits   []dlEdge
	members []string
	shards  []string
}

// chooseVictims breaks every cycle of waits that spans shards: in each
// strongly connected set of transactions whose waits are on two or more
// shards, the youngest transaction (the greatest ID) is the victim; it is
// taken out and the rest looked at again. A cycle on one shard is left to
// that PostgreSQL server's own detector. The choice depends on the edges
// only, so every proxy that sees the same waits picks the same victims.
func chooseVictims(edges []dlEdge) []dlVictim {
	var victims []dlVictim
	out := map[string]bool{}
	for {
		var live []dlEdge
		for _, e := range edges {
			if !out[e.from] && !out[e.to] {
				live = append(live, e)
			}
		}
		v, ok := firstCycleVictim(live)
		if !ok {
			return victims
		}
		victims = append(victims, v)
		out[v.dtx] = true
	}
}

// firstCycleVictim returns the victim of the first strongly connected set
// (in ID order) that spans shards.
func firstCycleVictim(edges []dlEdge) (dlVictim, bool) {
	for _, scc := range stronglyConnected(edges) {
		if len(scc) < 2 {
			continue
		}
		in := make(map[string]bool, len(scc))
		for _, n := range scc {
			in[n] = true
		}
		victim := slices.Max(scc)
		var shards []string
		var waits []dlEdge
		for _, e := range edges {
			if !in[e.from] || !in[e.to] {
				continue
			}
			if !slices.Contains(shards, e.shard) {
				shards = append(shards, e.shard)
			}
			if e.from == victim {
				waits = append(waits, e)
			}
		}
		if len(shards) < 2 {
			continue
		}
		slices.Sort(shards)
		members := slices.Clone(scc)
		slices.Sort(members)
		return dlVictim{dtx: victim, waits: waits, members: members, shards: shards}, true
	}
	return dlVictim{}, false
}

// stronglyConnected returns the strongly connected components of the
// graph of edges (Tarjan), each sorted, in the order of their smallest
// node; nodes and neighbours are visited in ID order, so the result
// depends on the set of edges only.
func stronglyConnected(edges []dlEdge) [][]string {
	adj := map[string][]string{}
	for _, e := range edges {
		if !slices.Contains(adj[e.from], e.to) {
			adj[e.from] = append(adj[e.from], e.to)
		}
		if _, ok := adj[e.to]; !ok {
			adj[e.to] = nil
		}
	}
	nodes := make([]string, 0, len(adj))
	for n := range adj {
		nodes = append(nodes, n)
		slices.Sort(adj[n])
	}
	slices.Sort(nodes)
	index := map[string]int{}
	low := map[string]int{}
	onStack := map[string]bool{}
	var stack []string
	var sccs [][]string
	var visit func(n string)
	visit = func(n string) {
		index[n] = len(index)
		low[n] = index[n]
		stack = append(stack, n)
		onStack[n] = true
		for _, m := range adj[n] {
			if _, ok := index[m]; !ok {
				visit(m)
				low[n] = min(low[n], low[m])
			} else if onStack[m] {
				low[n] = min(low[n], index[m])
			}
		}
		if low[n] == index[n] {
			var scc []string
			for {
				m := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[m] = false
				scc = append(scc, m)
				if m == n {
					break
				}
			}
			slices.Sort(scc)
			sccs = append(sccs, scc)
		}
	}
	for _, n := range nodes {
		if _, ok := index[n]; !ok {
			visit(n)
		}
	}
	slices.SortFunc(sccs, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	return sccs
}

// parsePIDArray parses pg_blocking_pids' text form, {1,2,3}.
func parsePIDArray(s string) ([]int32, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		return nil, fmt.Errorf("not an array: %q", s)
	}
	s = s[1 : len(s)-1]
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	pids := make([]int32, 0, len(parts))
	for _, p := range parts {
		n, err := strconv.ParseInt(p, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("pid %q: %w", p, err)
		}
		pids = append(pids, int32(n))
	}
	return pids, nil
}
