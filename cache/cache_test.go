package cache

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgshard/pgshard/internal/testutil"
)

// fakeClock is a settable clock for the staleness bound.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// testTables are the tables the tests' streams cover.
var testTables = []string{"public.users", "public.orders"}

// newTestCache returns a cache at epoch 1 with public.users cacheable and
// shards s1 and s2 up at LSN 100.
func newTestCache(t *testing.T, clk *fakeClock) *Cache {
	t.Helper()
	cfg := Config{MaxBytes: 1 << 20}
	if clk != nil {
		cfg.Now = clk.Now
	} else {
		// A long bound: tests on the real clock must not turn "behind".
		cfg.MaxStreamLag = time.Hour
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	c.SetEpoch(1)
	c.SetTables(map[string]TableSettings{"public.users": {Enabled: true}, "public.orders": {Enabled: true}})
	c.Stream("s1").Up(100, testTables)
	c.Stream("s2").Up(100, testTables)
	return c
}

func userKey(b *KeyBuilder, epoch uint64, shard, id, role string) Key {
	b.Begin(epoch, shard, "public.users", []byte(id))
	b.Statement("select * from users where id = $1")
	b.Param(0, []byte(id))
	b.Role(role, Primary)
	b.Formats(nil)
	return b.Key()
}

// fill stores v under k as a reader would (BeginFill, read, Fill) and waits
// until it is visible.
func fill(t *testing.T, c *Cache, k Key, v string) {
	t.Helper()
	tok := c.BeginFill(k, 0)
	if !c.Fill(tok, []byte(v)) {
		t.Fatalf("fill of %q refused", v)
	}
	c.Wait()
}

func mustGet(t *testing.T, c *Cache, k Key, lsn LSN, want Status) []byte {
	t.Helper()
	v, st := c.Get(k, lsn)
	if st != want {
		t.Fatalf("Get = %v, want %v", st, want)
	}
	return v
}

func TestKeyEquality(t *testing.T) {
	var b KeyBuilder
	build := func(f func(*KeyBuilder)) Key {
		var nb KeyBuilder
		f(&nb)
		return nb.Key().clone()
	}
	base := func(b *KeyBuilder) {
		b.Begin(1, "s1", "public.users", []byte("42"))
		b.Statement("select name from users where id = $1")
		b.Param(0, []byte("42"))
		b.Role("app", Primary)
		b.Formats([]int16{0})
	}
	k := build(base)
	if !k.Equal(build(base)) {
		t.Fatal("the same components gave different keys")
	}
	variants := map[string]func(*KeyBuilder){
		"epoch":     func(b *KeyBuilder) { b.Begin(2, "s1", "public.users", []byte("42")) },
		"shard":     func(b *KeyBuilder) { b.Begin(1, "s2", "public.users", []byte("42")) },
		"table":     func(b *KeyBuilder) { b.Begin(1, "s1", "public.user", []byte("s42")) },
		"row":       func(b *KeyBuilder) { b.Begin(1, "s1", "public.users", []byte("43")) },
		"statement": func(b *KeyBuilder) { b.Statement("select * from users where id = $1") },
		"param":     func(b *KeyBuilder) { b.Param(0, []byte("4")); b.Param(0, []byte("2")) },
		"null":      func(b *KeyBuilder) { b.Param(0, nil) },
		"empty":     func(b *KeyBuilder) { b.Param(0, []byte{}) },
		"binary":    func(b *KeyBuilder) { b.Param(1, []byte("42")) },
		"role":      func(b *KeyBuilder) { b.Role("app2", Primary) },
		"replica":   func(b *KeyBuilder) { b.Role("app", Replica) },
		"formats":   func(b *KeyBuilder) { b.Formats([]int16{1}) },
		"noformats": func(b *KeyBuilder) { b.Formats(nil) },
	}
	seen := map[uint64]string{k.Hash(): "base"}
	for name, v := range variants {
		o := build(func(b *KeyBuilder) {
			// Replace the matching component of base by v's.
			switch name {
			case "epoch", "shard", "table", "row":
				v(b)
				b.Statement("select name from users where id = $1")
				b.Param(0, []byte("42"))
				b.Role("app", Primary)
				b.Formats([]int16{0})
			case "statement":
				b.Begin(1, "s1", "public.users", []byte("42"))
				v(b)
				b.Param(0, []byte("42"))
				b.Role("app", Primary)
				b.Formats([]int16{0})
			case "param", "null", "empty", "binary":
				b.Begin(1, "s1", "public.users", []byte("42"))
				b.Statement("select name from users where id = $1")
				v(b)
				b.Role("app", Primary)
				b.Formats([]int16{0})
			case "role", "replica":
				b.Begin(1, "s1", "public.users", []byte("42"))
				b.Statement("select name from users where id = $1")
				b.Param(0, []byte("42"))
				v(b)
				b.Formats([]int16{0})
			default:
				b.Begin(1, "s1", "public.users", []byte("42"))
				b.Statement("select name from users where id = $1")
				b.Param(0, []byte("42"))
				b.Role("app", Primary)
				v(b)
			}
		})
		if o.Equal(k) {
			t.Errorf("variant %s equals the base key", name)
		}
		if prev, ok := seen[o.Hash()]; ok {
			t.Errorf("variant %s has the hash of %s", name, prev)
		}
		seen[o.Hash()] = name
	}
	// A builder reused for another key, then for the first again, gives
	// the first key back (and no allocation once warm).
	base(&b)
	b.Begin(9, "x", "y", []byte("z"))
	base(&b)
	if !b.Key().Equal(k) {
		t.Fatal("a reused builder gave a different key")
	}
	allocs := testing.AllocsPerRun(100, func() {
		base(&b)
		_ = b.Key()
	})
	if allocs != 0 {
		t.Errorf("building a key allocates %.0f times, want 0", allocs)
	}
}

// TestHashCollision stores an entry under a hash that another key shares:
// the other key misses instead of getting the first key's result.
func TestHashCollision(t *testing.T) {
	c := newTestCache(t, nil)
	var b KeyBuilder
	k1 := userKey(&b, 1, "s1", "1", "app").clone()
	k2 := userKey(&b, 1, "s1", "2", "app").clone()
	k2.hash = k1.hash // forge a collision
	fill(t, c, k1, "one")
	if v := mustGet(t, c, k1, 0, Hit); string(v) != "one" {
		t.Fatalf("got %q", v)
	}
	mustGet(t, c, k2, 0, Miss)
}

func TestHitMissAndInvalidate(t *testing.T) {
	c := newTestCache(t, nil)
	var b KeyBuilder
	k := userKey(&b, 1, "s1", "42", "app").clone()
	other := userKey(&b, 1, "s1", "43", "app").clone()
	mustGet(t, c, k, 0, Miss)
	fill(t, c, k, "v1")
	fill(t, c, other, "w1")
	if v := mustGet(t, c, k, 0, Hit); string(v) != "v1" {
		t.Fatalf("got %q", v)
	}
	// Another role never sees the entry.
	mustGet(t, c, userKey(&b, 1, "s1", "42", "reader"), 0, Miss)

	c.Invalidate("s1", "public.users", []byte("42"), 0)
	mustGet(t, c, k, 0, Miss)
	mustGet(t, c, other, 0, Hit)
	// An invalidation of the same key on another shard or table does not
	// touch it.
	fill(t, c, k, "v2")
	c.Invalidate("s2", "public.users", []byte("42"), 0)
	c.Invalidate("s1", "public.orders", []byte("42"), 0)
	mustGet(t, c, k, 0, Hit)

	c.InvalidateTable("public.users", 0)
	mustGet(t, c, k, 0, Miss)
	mustGet(t, c, other, 0, Miss)

	fill(t, c, k, "v3")
	c.FlushTable("public.users")
	mustGet(t, c, k, 0, Miss)
	fill(t, c, k, "v4")
	c.Flush()
	mustGet(t, c, k, 0, Miss)
}

func TestTableSettings(t *testing.T) {
	c := newTestCache(t, nil)
	var b KeyBuilder
	b.Begin(1, "s1", "public.items", []byte("1"))
	b.Statement("select 1")
	items := b.Key().clone()
	mustGet(t, c, items, 0, BypassTable)
	if c.BeginFill(items, 0).Valid() {
		t.Fatal("BeginFill of an uncached table gave a valid token")
	}

	k := userKey(&b, 1, "s1", "1", "app").clone()
	c.SetTables(map[string]TableSettings{"public.users": {Enabled: true, MaxEntryBytes: 10}})
	if c.Fill(c.BeginFill(k, 0), bytes.Repeat([]byte("x"), 11)) {
		t.Fatal("an entry over MaxEntryBytes was stored")
	}
	fill(t, c, k, "0123456789")
	mustGet(t, c, k, 0, Hit)

	// Disabling the table bypasses it; enabling it again does not bring
	// back what was cached before.
	c.SetTables(map[string]TableSettings{"public.users": {Enabled: false}})
	mustGet(t, c, k, 0, BypassTable)
	c.SetTables(map[string]TableSettings{"public.users": {Enabled: true}})
	mustGet(t, c, k, 0, Miss)
	// A fill begun before the table was dropped from the settings fails.
	tok := c.BeginFill(k, 0)
	c.SetTables(map[string]TableSettings{})
	c.SetTables(map[string]TableSettings{"public.users": {Enabled: true}})
	if c.Fill(tok, []byte("old")) {
		t.Fatal("a fill begun under an older table setting was stored")
	}
}

func TestTTL(t *testing.T) {
	c := newTestCache(t, nil)
	c.SetTables(map[string]TableSettings{"public.users": {Enabled: true, TTL: 50 * time.Millisecond}})
	var b KeyBuilder
	k := userKey(&b, 1, "s1", "1", "app").clone()
	fill(t, c, k, "v")
	mustGet(t, c, k, 0, Hit)
	testutil.Until(t, 5*time.Second, "the entry expires after its TTL", func() bool {
		_, st := c.Get(k, 0)
		return st == Miss
	})
}

func TestBudget(t *testing.T) {
	const budget = 256 << 10
	c, err := New(Config{MaxBytes: budget, MaxStreamLag: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetEpoch(1)
	c.SetTables(map[string]TableSettings{"public.users": {Enabled: true}})
	c.Stream("s1").Up(1, testTables)
	var b KeyBuilder
	val := bytes.Repeat([]byte("v"), 1000)
	for i := range 2000 { // ~2 MB offered into 256 KiB
		k := userKey(&b, 1, "s1", fmt.Sprint(i), "app")
		c.Fill(c.BeginFill(k, 0), val)
		if i%100 == 0 {
			c.Wait()
		}
	}
	c.Wait()
	used := c.rc.MaxCost() - c.rc.RemainingCost()
	if used > budget {
		t.Fatalf("cache holds %d bytes, budget %d", used, budget)
	}
	if used < budget/4 {
		t.Fatalf("cache holds only %d bytes of a %d budget", used, budget)
	}
	hits := 0
	for i := range 2000 {
		if _, st := c.Get(userKey(&b, 1, "s1", fmt.Sprint(i), "app"), 0); st == Hit {
			hits++
		}
	}
	if hits == 0 || hits > budget/1000 {
		t.Fatalf("%d entries of 1000 bytes served from a %d byte budget", hits, budget)
	}
	t.Logf("budget %d: %d bytes used, %d entries", budget, used, hits)
}

func TestEpochDrop(t *testing.T) {
	c := newTestCache(t, nil)
	var b KeyBuilder
	k1 := userKey(&b, 1, "s1", "1", "app").clone()
	fill(t, c, k1, "v")
	tok := c.BeginFill(k1, 0)
	c.SetEpoch(2)
	mustGet(t, c, k1, 0, BypassEpoch)
	if c.Fill(tok, []byte("v")) {
		t.Fatal("a fill begun under epoch 1 was stored under epoch 2")
	}
	k2 := userKey(&b, 2, "s1", "1", "app").clone()
	mustGet(t, c, k2, 0, Miss)
	fill(t, c, k2, "v2")
	mustGet(t, c, k2, 0, Hit)
	c.SetEpoch(1) // older: ignored
	if c.Epoch() != 2 {
		t.Fatalf("epoch went back to %d", c.Epoch())
	}
	mustGet(t, c, k2, 0, Hit)
}

func TestStreamBypass(t *testing.T) {
	clk := newFakeClock()
	c := newTestCache(t, clk)
	var b KeyBuilder
	k := userKey(&b, 1, "s1", "1", "app").clone()
	k2 := userKey(&b, 1, "s2", "2", "app").clone()
	unknown := userKey(&b, 1, "s9", "1", "app").clone()
	mustGet(t, c, unknown, 0, BypassStreamDown)
	fill(t, c, k, "v")
	fill(t, c, k2, "w")

	// Down: not served, fills refused; the other shard is untouched.
	s1 := c.Stream("s1")
	tok := c.BeginFill(k, 0)
	s1.Down()
	mustGet(t, c, k, 0, BypassStreamDown)
	mustGet(t, c, k2, 0, Hit)
	if c.BeginFill(k, 0).Valid() {
		t.Fatal("BeginFill on a down shard gave a valid token")
	}
	if c.Fill(tok, []byte("x")) {
		t.Fatal("a fill was stored while its shard's stream is down")
	}
	// Up again: what was cached before is gone (changes while down were
	// not seen), and so is a fill begun before.
	s1.Up(200, testTables)
	if c.Fill(tok, []byte("x")) {
		t.Fatal("a fill begun before the stream came back was stored")
	}
	mustGet(t, c, k, 0, Miss)
	fill(t, c, k, "v2")
	mustGet(t, c, k, 0, Hit)

	// Behind by time: no confirmation within the bound.
	clk.Advance(DefaultMaxStreamLag + time.Millisecond)
	mustGet(t, c, k, 0, BypassStreamBehind)
	if c.Fill(c.BeginFill(k, 0), []byte("x")) {
		t.Fatal("a fill was stored while the stream is behind")
	}
	s1.Progress(210)
	mustGet(t, c, k, 0, Hit)
	// Behind by delay: a transaction applied long after its commit.
	s1.Committed(220, clk.Now().Add(-2*DefaultMaxStreamLag))
	mustGet(t, c, k, 0, BypassStreamBehind)
	s1.Committed(230, clk.Now())
	mustGet(t, c, k, 0, Hit)
	// A keepalive right after a delayed commit does not end "behind" (the
	// stream may be working through a backlog); one with no commit since
	// the previous keepalive does.
	s1.Committed(232, clk.Now().Add(-2*DefaultMaxStreamLag))
	s1.Progress(232)
	mustGet(t, c, k, 0, BypassStreamBehind)
	s1.Progress(232)
	mustGet(t, c, k, 0, Hit)
	s1.Committed(230, clk.Now()) // an older end LSN does not move applied back
	if got := s1.Applied(); got != 232 {
		t.Fatalf("applied %v, want 232", got)
	}

	// Behind by the server's position: the stream is alive (keepalives)
	// but has not applied a WAL position observed longer than the bound
	// ago. A later position does not replace the pending one.
	s1.ServerPosition(300, clk.Now())
	clk.Advance(DefaultMaxStreamLag / 2)
	s1.Progress(250)
	s1.ServerPosition(400, clk.Now())
	mustGet(t, c, k, 0, Hit)
	clk.Advance(DefaultMaxStreamLag/2 + time.Millisecond)
	s1.Progress(299)
	mustGet(t, c, k, 0, BypassStreamBehind)
	s1.Progress(300)
	mustGet(t, c, k, 0, Hit)
	s1.ServerPosition(250, clk.Now()) // already applied: nothing pending
	clk.Advance(DefaultMaxStreamLag)
	s1.Progress(300)
	mustGet(t, c, k, 0, Hit)

	// Read your writes: a session whose commit the stream has not applied
	// bypasses; once applied it hits.
	mustGet(t, c, k, 301, BypassReadYourWrites)
	mustGet(t, c, k, 300, Hit)
	s1.Progress(340)
	mustGet(t, c, k, 301, Hit)
	if got := c.Stream("s1").Applied(); got != 340 {
		t.Fatalf("applied %v, want 340", got)
	}
}

// TestNotStreamed: a table the shard's stream does not cover (not in its
// publication) is bypassed on that shard until a stream covers it.
func TestNotStreamed(t *testing.T) {
	c := newTestCache(t, nil)
	c.SetTables(map[string]TableSettings{"public.users": {Enabled: true}, "public.items": {Enabled: true}})
	var b KeyBuilder
	b.Begin(1, "s1", "public.items", []byte("1"))
	b.Statement("select * from items where id = $1")
	k := b.Key().clone()
	mustGet(t, c, k, 0, BypassNotStreamed)
	if c.BeginFill(k, 0).Valid() {
		t.Fatal("BeginFill of a table outside the stream gave a valid token")
	}
	c.Stream("s1").Up(300, []string{"public.users", "public.items"})
	mustGet(t, c, k, 0, Miss)
	fill(t, c, k, "v")
	mustGet(t, c, k, 0, Hit)
	if s := c.Shards(); len(s) != 2 {
		t.Fatalf("Shards() = %+v", s)
	}
}

// TestReplicaFill: a result read on a replica that has not replayed an
// invalidated commit of its key is not stored.
func TestReplicaFill(t *testing.T) {
	c := newTestCache(t, nil)
	var b KeyBuilder
	k := userKey(&b, 1, "s1", "1", "app").clone()
	c.Stream("s1").Invalidate("public.users", []byte("1"), 500, time.Now())
	if c.Fill(c.BeginFill(k, 400), []byte("old")) {
		t.Fatal("a replica result older than the key's last invalidation was stored")
	}
	if !c.Fill(c.BeginFill(k, 500), []byte("new")) {
		t.Fatal("a replica result at the invalidation's LSN was refused")
	}
	c.Stream("s1").InvalidateTable("public.users", 600, time.Now())
	if c.Fill(c.BeginFill(k, 550), []byte("old")) {
		t.Fatal("a replica result older than a table-wide invalidation was stored")
	}
}

// TestNoStaleFill runs readers and writers on a few hot keys. Each writer
// commits a new version of a key in the "database", then invalidates it,
// then publishes the version as invalidated. A reader records the latest
// invalidated version before its lookup; a hit must be at least that new.
// Readers fill on misses with what they read (BeginFill before the read),
// so any fill that lands after an invalidation it raced is caught.
func TestNoStaleFill(t *testing.T) {
	c := newTestCache(t, nil)
	const keys = 4
	var (
		db          [keys]atomic.Uint64 // committed version per key
		invalidated [keys]atomic.Uint64 // latest version whose invalidation returned
		hits, fills atomic.Int64
		stop        atomic.Bool
		wg          sync.WaitGroup
		failed      atomic.Value
	)
	keyOf := func(b *KeyBuilder, i int) Key { return userKey(b, 1, "s1", fmt.Sprint(i), "app") }
	deadline := time.Now().Add(2 * time.Second)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				key := (i + w) % keys
				v := db[key].Add(1) // commit
				switch {
				case i%50 == 0:
					c.InvalidateTable("public.users", 0)
				case i%97 == 0:
					s := c.Stream("s1")
					s.Down()
					s.Up(100, testTables)
				default:
					c.Invalidate("s1", "public.users", []byte(fmt.Sprint(key)), 0)
				}
				storeMax(&invalidated[key], v)
			}
		})
	}
	for r := range 8 {
		wg.Go(func() {
			var b KeyBuilder
			for i := 0; !stop.Load(); i++ {
				key := (i + r) % keys
				k := keyOf(&b, key)
				floor := invalidated[key].Load()
				v, st := c.Get(k, 0)
				switch st {
				case Hit:
					hits.Add(1)
					var got uint64
					fmt.Sscan(string(v), &got)
					if got < floor {
						failed.Store(fmt.Sprintf("key %d: served version %d after version %d was invalidated", key, got, floor))
						stop.Store(true)
					}
				case Miss:
					tok := c.BeginFill(k, 0)
					read := db[key].Load() // the read runs after BeginFill
					if c.Fill(tok, fmt.Append(nil, read)) {
						fills.Add(1)
					}
				}
				if time.Now().After(deadline) {
					stop.Store(true)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f != nil {
		t.Fatal(f)
	}
	if hits.Load() == 0 || fills.Load() == 0 {
		t.Fatalf("the test exercised nothing: %d hits, %d fills", hits.Load(), fills.Load())
	}
	t.Logf("%d hits, %d fills stored", hits.Load(), fills.Load())
}
