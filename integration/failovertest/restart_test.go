package failovertest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/proxy"
)

// TestRestartsAfterFailover is the operator's path after a failover, with
// `pgshard proxy --meta` processes: s0's primary is killed and replaced;
// the old primary is started again (not rejoined); every proxy is
// restarted — one whose configuration still lists the shards' original
// primaries, one without any shard endpoints. Every write a client saw
// succeed is on the map's primary, none on the old one, and the old
// primary refuses a direct write by itself.
func TestRestartsAfterFailover(t *testing.T) {
	e := setup(t, map[string]string{"synchronous_commit": "on"})
	dir := t.TempDir()
	stale := []proxy.ShardConfig{}
	for i, p := range e.pg.Shards {
		stale = append(stale, proxy.ShardConfig{Name: fmt.Sprintf("s%d", i), Host: p.Host, Port: p.Port})
	}
	procs := []*metacluster.ProxyCommand{
		e.newProxyProc(t, dir, "pa", stale),
		e.newProxyProc(t, dir, "pb", nil),
	}
	e.targets = nil
	for _, p := range procs {
		p.Start(t, pgshardBin)
		e.targets = append(e.targets, p)
	}
	l := e.startLoad(t, 2)
	_, killed := failover(t, e, l, 0)
	// The killed postmaster's children serve what they already read for
	// a moment: from the new map on, the old primary is surely gone.
	replaced := time.Now()
	old := e.pg.Shards[0]

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := old.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// The proxies restart at once, before meta had a chance to fence the
	// old primary again: they must not write there whatever their
	// configuration says.
	for _, p := range procs {
		if err := p.Proc.Stop(10 * time.Second); err != nil {
			t.Errorf("stop %s: %v", p.ID, err)
		}
		p.Start(t, pgshardBin)
	}
	m := e.currentMap(t)
	for _, p := range procs {
		if got := p.Proc.MapEpoch(t); got != m.Epoch {
			t.Errorf("restarted proxy %s routes by epoch %d, want meta's %d", p.ID, got, m.Epoch)
		}
	}
	restarted := time.Now()
	l.waitAcks(t, 0, 200, 30*time.Second)
	l.waitAcks(t, 1, 200, 30*time.Second)
	l.stop()
	fencedAfter := waitRefusesWrites(t, old, 30*time.Second)

	m = e.currentMap(t)
	// The oracle: a write sent after the failover replaced the old
	// primary can only have been committed by the new one; if a client
	// saw it succeed it must be there, and never on the old one — which
	// was started again meanwhile. (What the old primary committed before
	// it died and had not shipped is the loss window of asynchronous
	// replication, reported.)
	lost := 0
	for _, w := range l.missing(t, m) {
		if w.start.After(replaced) {
			t.Errorf("s%d: id %d sent %s after the failover and acknowledged is not on the primary %s", w.shard, w.id, w.start.Sub(replaced).Round(time.Millisecond), m.Shard(fmt.Sprintf("s%d", w.shard)).Primary)
			continue
		}
		lost++
	}
	l.mu.Lock()
	var after []int64
	afterRestart := 0
	for i, id := range l.acked[0] {
		if l.ackStart[0][i].After(replaced) {
			after = append(after, id)
		}
		if l.ackAt[0][i].After(restarted) {
			afterRestart++
		}
	}
	l.mu.Unlock()
	if on := idsOn(t, ctx, old, after); len(on) > 0 {
		t.Errorf("%d writes sent after the failover and acknowledged are on the fenced old primary %s", len(on), old.Addr())
	}
	t.Logf("load: %d writes, %d reads; %d acknowledged on s0 after the proxies restarted; errors by shard and SQLSTATE: %v; asynchronous replication: %d acknowledged writes committed by the old primary before it died (killed at %s) missing; the old primary refused writes by itself within %s of the end of the load",
		l.writes, l.reads, afterRestart, l.errorSummary(), lost, killed.Format("15:04:05.000"), fencedAfter.Round(time.Millisecond))
}

// newProxyProc writes the configuration of a proxy process that follows
// e's meta cluster, with shards (nil: none) in its configuration file.
func (e *env) newProxyProc(t *testing.T, dir, id string, shards []proxy.ShardConfig) *metacluster.ProxyCommand {
	t.Helper()
	return metacluster.NewProxyCommand(t, e.meta, e.pg.Shards[0], dir, id, func(cfg *proxy.Config) { cfg.Shards = shards })
}
