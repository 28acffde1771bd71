package twophase

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeCluster is a Cluster.
type fakeCluster struct {
	shards []Shard
	live   []string
	inc    map[string]string // live proxy → its incarnation ("" none)
}

func (c *fakeCluster) Primaries() []Shard { return c.shards }
func (c *fakeCluster) LiveProxies() []LiveProxy {
	var out []LiveProxy
	for _, id := range c.live {
		out = append(out, LiveProxy{ID: id, Incarnation: c.inc[id]})
	}
	return out
}

// fakeAdmin is an Admin over in-memory servers.
type fakeAdmin struct {
	mu       sync.Mutex
	max      map[string]int                      // addr → max_prepared_transactions (default 10)
	prepared map[string]map[string]time.Duration // addr → gid → age
	records  map[string]map[string]bool          // addr → gid → committed
	down     map[string]bool
	noTable  map[string]bool // addr → the table is missing
	// commitFirst: addr → gid whose coordinator commits it there just
	// before recovery's Finish (the race with a live coordinator).
	commitFirst map[string]string
	log         []string
	deleted     []map[string]bool // keep sets passed to Decisions
}

func newFakeAdmin() *fakeAdmin {
	return &fakeAdmin{max: map[string]int{}, prepared: map[string]map[string]time.Duration{},
		records: map[string]map[string]bool{}, down: map[string]bool{}, noTable: map[string]bool{}}
}

func (a *fakeAdmin) prepare(addr, gid string, age time.Duration) {
	if a.prepared[addr] == nil {
		a.prepared[addr] = map[string]time.Duration{}
	}
	a.prepared[addr][gid] = age
}

func (a *fakeAdmin) record(addr, gid string, committed bool) {
	if a.records[addr] == nil {
		a.records[addr] = map[string]bool{}
	}
	a.records[addr][gid] = committed
}

func (a *fakeAdmin) Scan(_ context.Context, addr string) (ServerScan, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down[addr] {
		return ServerScan{}, errors.New("connection refused")
	}
	m, ok := a.max[addr]
	if !ok {
		m = 10
	}
	sc := ServerScan{MaxPrepared: m, Databases: []string{"app"}}
	if a.noTable[addr] {
		sc.NoTable = []string{"app"}
	}
	for _, gid := range slices.Sorted(maps.Keys(a.prepared[addr])) {
		sc.Xacts = append(sc.Xacts, PreparedXact{GID: gid, Database: "app", Age: a.prepared[addr][gid]})
	}
	return sc, nil
}

func (a *fakeAdmin) EnsureSchema(_ context.Context, addr, db string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.log = append(a.log, "schema "+addr+" "+db)
	delete(a.noTable, addr)
	return nil
}

func (a *fakeAdmin) Finish(_ context.Context, addr, db, gid string, commit bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down[addr] {
		return errors.New("connection refused")
	}
	if a.commitFirst[addr] == gid {
		delete(a.prepared[addr], gid)
		if a.records[addr] == nil {
			a.records[addr] = map[string]bool{}
		}
		a.records[addr][gid] = true
	}
	if _, ok := a.prepared[addr][gid]; !ok {
		return ErrNotPrepared
	}
	a.log = append(a.log, fmt.Sprintf("%s %s commit=%v", addr, gid, commit))
	delete(a.prepared[addr], gid)
	return nil
}

func (a *fakeAdmin) Decide(_ context.Context, addr, db, gid string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.records[addr][gid]; !ok {
		if a.records[addr] == nil {
			a.records[addr] = map[string]bool{}
		}
		a.records[addr][gid] = false
		a.log = append(a.log, fmt.Sprintf("%s %s abort recorded", addr, gid))
	}
	return a.records[addr][gid], nil
}

func (a *fakeAdmin) Lookup(_ context.Context, addr, db, gid string) (bool, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.records[addr][gid]
	return ok, c, nil
}

func (a *fakeAdmin) Decisions(_ context.Context, addr, db string, limit int, keep map[string]bool, olderThan time.Duration) ([]Decision, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.deleted = append(a.deleted, keep)
	var out []Decision
	for gid, c := range a.records[addr] {
		out = append(out, Decision{Database: db, GID: gid, Committed: c})
	}
	return out, nil
}

func (a *fakeAdmin) actions() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.log)
}

func gidOf(t *testing.T, proxy, shard string) string {
	g, err := NewGID(proxy, shard)
	if err != nil {
		t.Fatal(err)
	}
	return string(g)
}

func newRecov(t *testing.T, c *fakeCluster, a *fakeAdmin, acts *[]Action) *Recoverer {
	r, err := NewRecoverer(RecoveryConfig{Cluster: c, Admin: a, MaxAge: time.Minute,
		OnAction: func(x Action) { *acts = append(*acts, x) }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var threeShards = []Shard{{Name: "s0", Addr: "h0:5432"}, {Name: "s1", Addr: "h1:5432"}, {Name: "s2", Addr: "h2:5432"}}

func TestRecoveryLeavesLiveCoordinatorsAlone(t *testing.T) {
	a := newFakeAdmin()
	g := gidOf(t, "p1", "s0")
	a.prepare("h0:5432", g, time.Second)
	a.prepare("h1:5432", g, time.Second)
	var acts []Action
	rep := newRecov(t, &fakeCluster{shards: threeShards, live: []string{"p1"}}, a, &acts).RunOnce(testCtx(t))
	if len(acts) != 0 {
		t.Fatalf("actions %v", acts)
	}
	if len(rep.InDoubt) != 2 || rep.InDoubt[0].State != "in progress" || !rep.InDoubt[0].ProxyAlive {
		t.Fatalf("in doubt %+v", rep.InDoubt)
	}
}

func TestRecoveryRollsBackUndecided(t *testing.T) {
	// The proxy died after PREPARE, before the decision: the decision
	// shard still has it prepared, so it is rolled back there first.
	a := newFakeAdmin()
	g := gidOf(t, "p1", "s1")
	a.prepare("h0:5432", g, time.Second)
	a.prepare("h1:5432", g, time.Second)
	var acts []Action
	rep := newRecov(t, &fakeCluster{shards: threeShards, live: []string{"p2"}}, a, &acts).RunOnce(testCtx(t))
	want := []string{"h1:5432 " + g + " commit=false", "h0:5432 " + g + " commit=false"}
	if got := a.actions(); !slices.Equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}
	if len(acts) != 2 || acts[0].Commit || rep.InDoubt[0].State != "rollback" {
		t.Fatalf("actions %+v report %+v", acts, rep.InDoubt)
	}
}

func TestRecoveryCommitsDecided(t *testing.T) {
	// The decision shard committed (its record exists), s2 did not get
	// COMMIT PREPARED: recovery commits it.
	a := newFakeAdmin()
	g := gidOf(t, "p1", "s0")
	a.record("h0:5432", g, true)
	a.prepare("h2:5432", g, 2*time.Second)
	var acts []Action
	newRecov(t, &fakeCluster{shards: threeShards}, a, &acts).RunOnce(testCtx(t))
	if got, want := a.actions(), []string{"h2:5432 " + g + " commit=true"}; !slices.Equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}
	if len(acts) != 1 || !acts[0].Commit || acts[0].Shard != "s2" {
		t.Fatalf("actions %+v", acts)
	}
}

func TestRecoveryAbortsWithoutRecord(t *testing.T) {
	// Not prepared on the decision shard and no record: abort recorded
	// (fencing a late PREPARE there), then rolled back.
	a := newFakeAdmin()
	g := gidOf(t, "p1", "s0")
	a.prepare("h1:5432", g, time.Second)
	var acts []Action
	newRecov(t, &fakeCluster{shards: threeShards}, a, &acts).RunOnce(testCtx(t))
	want := []string{"h0:5432 " + g + " abort recorded", "h1:5432 " + g + " commit=false"}
	if got := a.actions(); !slices.Equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}
}

func TestRecoveryOldTransactionOfLiveProxy(t *testing.T) {
	a := newFakeAdmin()
	g := gidOf(t, "p1", "s0")
	a.record("h0:5432", g, true)
	a.prepare("h1:5432", g, 2*time.Minute) // older than MaxAge
	var acts []Action
	newRecov(t, &fakeCluster{shards: threeShards, live: []string{"p1"}}, a, &acts).RunOnce(testCtx(t))
	if len(acts) != 1 || !acts[0].Commit {
		t.Fatalf("actions %+v", acts)
	}
}

func TestRecoveryDecisionShardUnreachable(t *testing.T) {
	// During a failover of the decision shard nothing is decided; the
	// next round, with the new primary in the map, resolves it.
	a := newFakeAdmin()
	g := gidOf(t, "p1", "s0")
	a.prepare("h0:5432", g, time.Second)
	a.prepare("h1:5432", g, time.Second)
	a.down["h0:5432"] = true
	c := &fakeCluster{shards: threeShards}
	var acts []Action
	r := newRecov(t, c, a, &acts)
	rep := r.RunOnce(testCtx(t))
	if len(acts) != 0 {
		t.Fatalf("actions %+v", acts)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Shard != "s0" || !strings.HasPrefix(rep.InDoubt[0].State, "blocked: its decision shard s0") {
		t.Fatalf("report %+v", rep)
	}
	for _, keep := range a.deleted {
		if keep != nil {
			t.Fatalf("decisions deleted while a shard was not scanned: keep %v", keep)
		}
	}
	// Failover: s0's new primary (with the prepared transaction, by
	// synchronous replication) is in the map.
	a.prepare("h0b:5432", g, time.Second)
	c.shards = []Shard{{Name: "s0", Addr: "h0b:5432"}, {Name: "s1", Addr: "h1:5432"}, {Name: "s2", Addr: "h2:5432"}}
	r.RunOnce(testCtx(t))
	want := []string{"h0b:5432 " + g + " commit=false", "h1:5432 " + g + " commit=false"}
	if got := a.actions(); !slices.Equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}
	if last := a.deleted[len(a.deleted)-1]; last == nil || !last[g] {
		t.Fatalf("keep set %v should hold %s (listed prepared this round)", last, g)
	}
}

func TestRecoveryProblems(t *testing.T) {
	a := newFakeAdmin()
	a.max["h1:5432"] = 0
	a.noTable["h2:5432"] = true
	var acts []Action
	rep := newRecov(t, &fakeCluster{shards: threeShards}, a, &acts).RunOnce(testCtx(t))
	if len(rep.Problems) != 1 || rep.Problems[0].Shard != "s1" || !strings.Contains(rep.Problems[0].Error, "max_prepared_transactions = 0") {
		t.Fatalf("problems %+v", rep.Problems)
	}
	if got := a.actions(); !slices.Equal(got, []string{"schema h2:5432 app"}) {
		t.Fatalf("actions %q", got)
	}
}

func TestRecoveryCommitsDecidedEarly(t *testing.T) {
	// The proxy lives, but lost s2 after the decision: its decided commit
	// is finished after DecidedAge, not MaxAge; an undecided one and one
	// without a record are left alone.
	a := newFakeAdmin()
	decided, undecided, norecord := gidOf(t, "p1", "s0"), gidOf(t, "p1", "s0"), gidOf(t, "p1", "s0")
	a.record("h0:5432", decided, true)
	a.prepare("h2:5432", decided, 6*time.Second)
	a.prepare("h0:5432", undecided, 6*time.Second)
	a.prepare("h1:5432", undecided, 6*time.Second)
	a.prepare("h1:5432", norecord, 6*time.Second)
	var acts []Action
	newRecov(t, &fakeCluster{shards: threeShards, live: []string{"p1"}}, a, &acts).RunOnce(testCtx(t))
	if got, want := a.actions(), []string{"h2:5432 " + decided + " commit=true"}; !slices.Equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}
	// Younger than DecidedAge: left to the coordinator.
	a = newFakeAdmin()
	a.record("h0:5432", decided, true)
	a.prepare("h2:5432", decided, time.Second)
	newRecov(t, &fakeCluster{shards: threeShards, live: []string{"p1"}}, a, &acts).RunOnce(testCtx(t))
	if got := a.actions(); len(got) != 0 {
		t.Fatalf("actions %q", got)
	}
}

func TestRecoveryLetGo(t *testing.T) {
	// A live proxy's coordinator aborted with a participant whose
	// PREPARE got no answer (s1 holds it prepared) and wrote a let-go
	// record on the decision shard s0: resolved at once (after letGoAge),
	// not after MaxAge.
	a := newFakeAdmin()
	g := gidOf(t, "p1", "s0")
	a.prepare("h1:5432", g, 2*time.Second)
	a.record("h0:5432", LetGoKey(g), false)
	var acts []Action
	live := &fakeCluster{shards: threeShards, live: []string{"p1"}}
	newRecov(t, live, a, &acts).RunOnce(testCtx(t))
	want := []string{"h0:5432 " + g + " abort recorded", "h1:5432 " + g + " commit=false"}
	if got := a.actions(); !slices.Equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}

	// The decision participant's own PREPARE got no answer (s0 holds
	// it prepared, with its commit record): the let-go record is on s2;
	// s0 is rolled back first, which decides the abort.
	a = newFakeAdmin()
	g = gidOf(t, "p1", "s0")
	a.prepare("h0:5432", g, 2*time.Second)
	a.record("h2:5432", LetGoKey(g), false)
	newRecov(t, live, a, &acts).RunOnce(testCtx(t))
	if got, want := a.actions(), []string{"h0:5432 " + g + " commit=false"}; !slices.Equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}

	// Without a let-go record, or too young, it is left to its coordinator.
	a = newFakeAdmin()
	young := gidOf(t, "p1", "s0")
	a.prepare("h0:5432", g, 2*time.Second)
	a.prepare("h1:5432", young, 100*time.Millisecond)
	a.record("h0:5432", LetGoKey(young), false)
	rep := newRecov(t, live, a, &acts).RunOnce(testCtx(t))
	if got := a.actions(); len(got) != 0 {
		t.Fatalf("actions %q", got)
	}
	for _, d := range rep.InDoubt {
		if d.State != "in progress" {
			t.Fatalf("in doubt %+v", rep.InDoubt)
		}
	}
}

func TestRecoveryAfterFailover(t *testing.T) {
	now := time.Now()
	failedOver := func(shard string, ago time.Duration) *fakeCluster {
		c := &fakeCluster{shards: slices.Clone(threeShards), live: []string{"p1"}}
		for i := range c.shards {
			if c.shards[i].Name == shard {
				c.shards[i].PrimarySince = now.Add(-ago)
			}
		}
		return c
	}
	var acts []Action

	// (a) The decision shard s0 failed over during COMMIT PREPARED, which
	// its new primary has (the record is there); s1 waits for its commit.
	// The proxy lives and the transaction is 1 s old: committed at once.
	a := newFakeAdmin()
	g := gidOf(t, "p1", "s0")
	a.record("h0:5432", g, true)
	a.prepare("h1:5432", g, 3*time.Second)
	newRecov(t, failedOver("s0", time.Second), a, &acts).RunOnce(testCtx(t))
	if got, want := a.actions(), []string{"h1:5432 " + g + " commit=true"}; !slices.Equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}

	// ... or the COMMIT PREPARED did not reach it: still prepared on the
	// new primary (prepared before it took over): rolled back at once.
	a = newFakeAdmin()
	a.prepare("h0:5432", g, 3*time.Second)
	a.prepare("h1:5432", g, 3*time.Second)
	newRecov(t, failedOver("s0", time.Second), a, &acts).RunOnce(testCtx(t))
	if got, want := a.actions(), []string{"h0:5432 " + g + " commit=false", "h1:5432 " + g + " commit=false"}; !slices.Equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}

	// (b) A participant, s1, failed over after its PREPARE, whose answer
	// was lost: its coordinator rolled s0 back. No record on s0: an abort
	// is recorded, s1 rolled back.
	a = newFakeAdmin()
	a.prepare("h1:5432", g, 3*time.Second)
	newRecov(t, failedOver("s1", time.Second), a, &acts).RunOnce(testCtx(t))
	if got, want := a.actions(), []string{"h0:5432 " + g + " abort recorded", "h1:5432 " + g + " commit=false"}; !slices.Equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}

	// Prepared after the failover, on the new primaries: left alone.
	a = newFakeAdmin()
	a.prepare("h0:5432", g, 500*time.Millisecond)
	a.prepare("h1:5432", g, 500*time.Millisecond)
	rep := newRecov(t, failedOver("s0", 2*time.Second), a, &acts).RunOnce(testCtx(t))
	if got := a.actions(); len(got) != 0 || rep.InDoubt[0].State != "in progress" {
		t.Fatalf("actions %q, report %+v", got, rep.InDoubt)
	}
}

func TestRecoveryRaceWithCoordinator(t *testing.T) {
	// Recovery saw gid prepared on its decision shard, but its coordinator
	// (alive past MaxAge, slow) commits it there just before recovery's
	// ROLLBACK PREPARED: recovery must follow the record (commit), never
	// roll the others back.
	a := newFakeAdmin()
	g := gidOf(t, "p1", "s0")
	a.prepare("h0:5432", g, 2*time.Minute)
	a.prepare("h1:5432", g, 2*time.Minute)
	a.commitFirst = map[string]string{"h0:5432": g}
	var acts []Action
	newRecov(t, &fakeCluster{shards: threeShards, live: []string{"p1"}}, a, &acts).RunOnce(testCtx(t))
	if got, want := a.actions(), []string{"h1:5432 " + g + " commit=true"}; !slices.Equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}
}

func TestRecoveryRestartedProxy(t *testing.T) {
	// Proxy p1 restarted under the same ID before its lease ran out: its
	// lease now names the new incarnation, so its predecessor's undecided
	// transaction (1 s old) is a dead proxy's at once; the new
	// incarnation's own is left alone.
	a := newFakeAdmin()
	old, cur := "aaaaaaaaaaaa", "bbbbbbbbbbbb"
	prev := string(newGID(old, "p1", "s0"))
	mine := string(newGID(cur, "p1", "s0"))
	a.prepare("h0:5432", prev, time.Second)
	a.prepare("h1:5432", prev, time.Second)
	a.prepare("h0:5432", mine, time.Second)
	a.prepare("h1:5432", mine, time.Second)
	var acts []Action
	c := &fakeCluster{shards: threeShards, live: []string{"p1"}, inc: map[string]string{"p1": cur}}
	rep := newRecov(t, c, a, &acts).RunOnce(testCtx(t))
	want := []string{"h0:5432 " + prev + " commit=false", "h1:5432 " + prev + " commit=false"}
	if got := a.actions(); !slices.Equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}
	for _, d := range rep.InDoubt {
		if d.GID == mine && (d.State != "in progress" || !d.ProxyAlive) {
			t.Fatalf("new incarnation's transaction: %+v", d)
		}
		if d.GID == prev && d.ProxyAlive {
			t.Fatalf("predecessor's transaction counted alive: %+v", d)
		}
	}

	// A proxy that sends no incarnation: any of its GIDs is its own.
	a = newFakeAdmin()
	a.prepare("h0:5432", prev, time.Second)
	c.inc = nil
	newRecov(t, c, a, &acts).RunOnce(testCtx(t))
	if got := a.actions(); len(got) != 0 {
		t.Fatalf("actions %q", got)
	}
}
