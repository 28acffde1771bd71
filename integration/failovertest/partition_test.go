package failovertest_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration/netfault"
	"github.com/pgshard/pgshard/shardmap"
)

// inFlightDeadline is how soon a statement in flight on a primary that
// became unreachable must fail: the proxy's default backend.ack_timeout
// (5 s: a server connection with data in flight and nothing received for
// that long is reset) and a margin for a loaded machine. The failover's
// fence step usually resets it sooner.
const inFlightDeadline = 8 * time.Second

// TestPartitionedPrimary: s0's primary is cut off silently (its port
// blackholed: no reset, no answer — also for its replicas and the meta
// members) under load, with asynchronous replication. The meta cluster
// fails over; statements in flight on the old primary fail with 08006
// within inFlightDeadline; new sessions writing to s1 are not delayed
// (their startup does not need s0, and their first Parse/Describe, if
// it went to s0 before the health checks saw it cut off, is sent to
// another server after 300 ms without an answer); when the network
// heals, the old primary refuses writes by itself, and no client was ever
// told a write succeeded that is not on the map's current primary.
func TestPartitionedPrimary(t *testing.T) {
	netfault.Require(t)
	e := setup(t, map[string]string{"synchronous_commit": "on"})
	l := e.startLoad(t, 2)
	fresh := e.startFreshSessions(t, 1)
	old := e.pg.Shards[0]
	l.waitAcks(t, 0, 50, 20*time.Second)
	l.waitAcks(t, 1, 50, 20*time.Second)

	cut := time.Now()
	heal := netfault.Blackhole(t, old.Port)
	// The partition is complete only now: Blackhole installs two rules,
	// requests then replies, one iptables run each (tens of milliseconds
	// on a loaded machine), and a statement sent before both are in force
	// may still have been answered by the old primary.
	inForce := time.Now()
	m := e.waitMap(t, 30*time.Second, "failover of s0", func(m *shardmap.Map) bool {
		sh := m.Shard("s0")
		return sh.Switch == nil && sh.Primary.String() != old.Addr()
	})
	committed := time.Since(cut)
	l.waitAcks(t, 0, 50, 20*time.Second)
	healed := time.Now()
	heal()
	fencedAfter := waitRefusesWrites(t, old, 30*time.Second)
	// More load after the heal: a reply the old primary sends only now
	// must not reach a client as success.
	l.waitAcks(t, 0, 100, 20*time.Second)
	l.waitAcks(t, 1, 100, 20*time.Second)
	fresh.stop()
	l.stop()

	gap, gapAt := l.maxGap(0, cut.Add(-time.Second))
	otherGap, _ := l.maxGap(1, cut.Add(-time.Second))
	var slowestErr time.Duration
	l.mu.Lock()
	for _, le := range l.errs {
		if !le.at.After(cut) {
			continue
		}
		if le.shard != 0 || le.code != "08006" {
			t.Errorf("client error during the partition (want only 08006 on s0): s%d %v", le.shard, le.err)
			continue
		}
		slowestErr = max(slowestErr, le.took)
		if le.took > inFlightDeadline {
			t.Errorf("a statement on the partitioned primary failed only after %s (want within %s): %v", le.took.Round(time.Millisecond), inFlightDeadline, le.err)
		}
	}
	l.mu.Unlock()
	t.Logf("partition of s0's primary %s: new map (epoch %d, primary %s) committed after %s; longest write gap on s0 %s (from %s after the cut); on s1 %s; slowest 08006 of a statement in flight %s; healed %s after the cut, refusing writes by itself %s after the heal",
		old.Addr(), m.Epoch, m.Shard("s0").Primary, committed.Round(time.Millisecond), gap.Round(time.Millisecond),
		gapAt.Sub(cut).Round(time.Millisecond), otherGap.Round(time.Millisecond), slowestErr.Round(time.Millisecond),
		healed.Sub(cut).Round(time.Millisecond), fencedAfter.Round(time.Millisecond))
	if gap > 2*availabilityTarget {
		t.Errorf("s0: writes stopped for %s, want under %s", gap.Round(time.Millisecond), 2*availabilityTarget)
	}
	if otherGap > time.Second {
		t.Errorf("s1's writes stopped for %s during the partition of s0", otherGap.Round(time.Millisecond))
	}
	fresh.check(t, cut, time.Second)

	// The oracle: a write a client saw succeed is on the map's current
	// primary if it was sent once the partition was in force (only a
	// server reachable since can have answered it) or acknowledged after
	// the heal (the old primary's answer to a statement it got across the
	// partition). What was sent before that, answered by the old primary
	// and not yet shipped is the loss window of asynchronous replication,
	// reported like the kill -9 test's.
	final := e.currentMap(t)
	lost := 0
	for _, w := range l.missing(t, final) {
		if w.start.After(inForce) || w.at.After(healed) {
			t.Errorf("s%d: id %d (sent %s, acknowledged %s after the cut; healed at %s) is not on the primary %s", w.shard, w.id,
				w.start.Sub(cut).Round(time.Millisecond), w.at.Sub(cut).Round(time.Millisecond), healed.Sub(cut).Round(time.Millisecond),
				final.Shard(fmt.Sprintf("s%d", w.shard)).Primary)
			continue
		}
		lost++
	}
	t.Logf("load: %d writes, %d reads; errors by shard and SQLSTATE: %v; asynchronous replication: %d acknowledged writes sent before the partition was in force (%s after the cut) missing",
		l.writes, l.reads, l.errorSummary(), lost, inForce.Sub(cut).Round(time.Millisecond))
}

// freshSessions opens a new client session for every write (the first
// statement of a pgx session sends Parse and Describe before any Bind),
// inserting into one shard, and records how long each took.
type freshSessions struct {
	e      *env
	shard  int
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	ids   []int64
	tries []freshTry
}

type freshTry struct {
	at   time.Time // start
	took time.Duration
	err  error
}

// startFreshSessions starts writing to shard through new sessions, one at
// a time, until stop.
func (e *env) startFreshSessions(t *testing.T, shard int) *freshSessions {
	ctx, cancel := context.WithCancel(context.Background())
	f := &freshSessions{e: e, shard: shard, cancel: cancel}
	f.wg.Go(func() {
		name := fmt.Sprintf("s%d", shard)
		seq := int64(0)
		for ctx.Err() == nil {
			var id int64
			for {
				seq++
				id = int64(1000)<<32 | seq
				if s, err := e.dist.ShardForInt64(id); err == nil && s == name {
					break
				}
			}
			start := time.Now()
			qctx, qcancel := context.WithTimeout(ctx, 20*time.Second)
			c, err := pgx.Connect(qctx, e.targets[int(seq)%len(e.targets)].DSN(""))
			if err == nil {
				_, err = c.Exec(qctx, "INSERT INTO acct (id, writer) VALUES ($1, 1000)", id)
				_ = c.Close(qctx)
			}
			qcancel()
			if ctx.Err() != nil {
				return
			}
			f.mu.Lock()
			f.tries = append(f.tries, freshTry{at: start, took: time.Since(start), err: err})
			if err == nil {
				f.ids = append(f.ids, id)
			}
			f.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	})
	return f
}

func (f *freshSessions) stop() {
	f.cancel()
	f.wg.Wait()
}

// check asserts that no new session after since failed or took longer
// than limit, and that every write it saw succeed is on its shard's
// primary.
func (f *freshSessions) check(t *testing.T, since time.Time, limit time.Duration) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	n, slowest := 0, time.Duration(0)
	for _, tr := range f.tries {
		if tr.at.Before(since) {
			continue
		}
		n++
		slowest = max(slowest, tr.took)
		if tr.err != nil {
			t.Errorf("a new session writing to s%d failed %s after the cut: %v", f.shard, tr.at.Sub(since).Round(time.Millisecond), tr.err)
		} else if tr.took > limit {
			t.Errorf("a new session writing to s%d took %s (%s after the cut), want under %s", f.shard, tr.took.Round(time.Millisecond), tr.at.Sub(since).Round(time.Millisecond), limit)
		}
	}
	t.Logf("new sessions writing to s%d: %d after the cut, the slowest took %s", f.shard, n, slowest.Round(time.Millisecond))
	if n == 0 {
		t.Errorf("no new session wrote to s%d after the cut", f.shard)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	m := f.e.currentMap(t)
	primary := f.e.server(m.Shard(fmt.Sprintf("s%d", f.shard)).Primary.String())
	present := idsOn(t, ctx, primary, f.ids)
	for _, id := range f.ids {
		if !present[id] {
			t.Errorf("s%d: id %d written by a new session is not on the primary %s", f.shard, id, primary.Addr())
		}
	}
}
