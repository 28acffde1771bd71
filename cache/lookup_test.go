package cache

import (
	"testing"
)

// lookupKey builds the key of a read of user id without its row, as the
// proxy does before planning.
func lookupKey(b *KeyBuilder, epoch uint64, id, role string) Key {
	b.BeginLookup(epoch)
	b.Statement("select * from users where id = $1")
	b.Param(0, []byte(id))
	b.Role(role, Primary)
	b.Formats(nil)
	return b.Key()
}

func noLSN(string) LSN { return 0 }

// fillRow stores v under k, read from user id's row on shard, as the
// proxy does after a lookup found nothing (BeginFillRow, read, Fill).
func fillRow(t *testing.T, c *Cache, k Key, shard, id, v string) {
	t.Helper()
	tok, st := c.BeginFillRow(k, shard, "public.users", []byte(id), 0, 0)
	if st != Miss {
		t.Fatalf("BeginFillRow = %v, want miss", st)
	}
	if !c.Fill(tok, []byte(v)) {
		t.Fatalf("fill of %q refused", v)
	}
	c.Wait()
}

func mustLookup(t *testing.T, c *Cache, k Key, lsns func(string) LSN, want string) {
	t.Helper()
	v, ok := c.Lookup(k, lsns)
	switch {
	case want == "" && ok:
		t.Fatalf("Lookup served %q, want nothing", v)
	case want != "" && !ok:
		t.Fatalf("Lookup served nothing, want %q", want)
	case want != "" && string(v) != want:
		t.Fatalf("Lookup = %q, want %q", v, want)
	}
}

// TestLookupCoherence: an entry found by a key without its row is served
// under exactly the rules of a lookup by its row: the row's, the table's
// and the shard's invalidations, the shard's stream, the table's
// settings, the epoch and the session's own commits all stop it.
func TestLookupCoherence(t *testing.T) {
	var b KeyBuilder
	cases := []struct {
		name  string
		act   func(c *Cache)
		lsns  func(string) LSN
		still bool // the entry is still served afterwards
	}{
		{name: "nothing", act: func(*Cache) {}, still: true},
		{name: "another row", act: func(c *Cache) { c.Invalidate("s1", "public.users", []byte("43"), 0) }, still: true},
		{name: "the row on another shard", act: func(c *Cache) { c.Invalidate("s2", "public.users", []byte("42"), 0) }, still: true},
		{name: "the row", act: func(c *Cache) { c.Invalidate("s1", "public.users", []byte("42"), 0) }},
		{name: "the row, from the stream", act: func(c *Cache) {
			c.Stream("s1").Invalidate("public.users", []byte("42"), 150, c.now())
		}},
		{name: "the table", act: func(c *Cache) { c.InvalidateTable("public.users", 0) }},
		{name: "flush", act: func(c *Cache) { c.Flush() }},
		{name: "stream down", act: func(c *Cache) { c.Stream("s1").Down() }},
		{name: "stream restarted", act: func(c *Cache) { c.Stream("s1").Up(300, testTables) }},
		{name: "table no longer streamed", act: func(c *Cache) { c.Stream("s1").Up(300, []string{"public.orders"}) }},
		{name: "table disabled", act: func(c *Cache) {
			c.SetTables(map[string]TableSettings{"public.users": {Enabled: false}, "public.orders": {Enabled: true}})
		}},
		{name: "new epoch", act: func(c *Cache) { c.SetEpoch(2) }},
		{name: "own commit not applied", act: func(*Cache) {}, lsns: func(shard string) LSN {
			if shard == "s1" {
				return 101
			}
			return 0
		}},
		{name: "own commit applied", act: func(*Cache) {}, lsns: func(string) LSN { return 100 }, still: true},
		{name: "own commit on another shard", act: func(*Cache) {}, lsns: func(shard string) LSN {
			if shard == "s2" {
				return 500
			}
			return 0
		}, still: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCache(t, nil)
			k := lookupKey(&b, 1, "42", "app")
			mustLookup(t, c, k, noLSN, "")
			fillRow(t, c, k, "s1", "42", "row 42")
			mustLookup(t, c, lookupKey(&b, 1, "42", "app"), noLSN, "row 42")
			tc.act(c)
			lsns := tc.lsns
			if lsns == nil {
				lsns = noLSN
			}
			want := ""
			if tc.still {
				want = "row 42"
			}
			mustLookup(t, c, lookupKey(&b, 1, "42", "app"), lsns, want)
		})
	}
}

// TestLookupKeys: keys without their row are told apart by every
// component, and never equal a key with its row.
func TestLookupKeys(t *testing.T) {
	c := newTestCache(t, nil)
	var b KeyBuilder
	fillRow(t, c, lookupKey(&b, 1, "42", "app"), "s1", "42", "row 42")
	mustLookup(t, c, lookupKey(&b, 1, "43", "app"), noLSN, "")
	mustLookup(t, c, lookupKey(&b, 1, "42", "other"), noLSN, "")
	if _, st := c.Get(userKey(&b, 1, "s1", "42", "app"), 0); st != Miss {
		t.Fatalf("Get by the row's key = %v, want miss", st)
	}
	b.BeginLookup(1)
	b.Statement("select * from users where id = $1")
	b.Param(1, []byte("42"))
	b.Role("app", Primary)
	b.Formats(nil)
	mustLookup(t, c, b.Key(), noLSN, "")
}

// TestBeginFillRowRaces: a read whose fill began before an invalidation
// of its row never lands after it.
func TestBeginFillRowRaces(t *testing.T) {
	c := newTestCache(t, nil)
	var b KeyBuilder
	k := lookupKey(&b, 1, "42", "app")
	tok, st := c.BeginFillRow(k, "s1", "public.users", []byte("42"), 0, 0)
	if st != Miss {
		t.Fatal(st)
	}
	c.Invalidate("s1", "public.users", []byte("42"), 0)
	if c.Fill(tok, []byte("old")) {
		t.Fatal("a fill begun before the row's invalidation was stored")
	}
	c.Wait()
	mustLookup(t, c, k, noLSN, "")
	if _, st := c.BeginFillRow(k, "s1", "public.users", []byte("42"), 101, 0); st != BypassReadYourWrites {
		t.Fatalf("BeginFillRow for a session ahead of the stream = %v, want %v", st, BypassReadYourWrites)
	}
}

// TestLookupHitAllocs: building a key without its row and serving a hit
// allocate nothing.
func TestLookupHitAllocs(t *testing.T) {
	c := newTestCache(t, nil)
	var b KeyBuilder
	fillRow(t, c, lookupKey(&b, 1, "42", "app"), "s1", "42", "row")
	allocs := testing.AllocsPerRun(200, func() {
		if _, ok := c.Lookup(lookupKey(&b, 1, "42", "app"), noLSN); !ok {
			t.Fatal("no hit")
		}
	})
	if allocs != 0 {
		t.Errorf("a hit allocates %.1f times, want 0", allocs)
	}
}
