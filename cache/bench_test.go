package cache

import (
	"fmt"
	"testing"
)

// TestLookupAllocs: building a key and looking it up allocates nothing,
// on a hit and on a miss (a miss's BeginFill copies the key: one
// allocation for the fill that follows a server round trip anyway).
func TestLookupAllocs(t *testing.T) {
	c := newTestCache(t, nil)
	var b KeyBuilder
	fill(t, c, userKey(&b, 1, "s1", "42", "app"), "row")
	for _, id := range []string{"42", "43"} {
		allocs := testing.AllocsPerRun(200, func() {
			_, _ = c.Get(userKey(&b, 1, "s1", id, "app"), 0)
		})
		if allocs != 0 {
			t.Errorf("key %s: a lookup allocates %.1f times, want 0", id, allocs)
		}
	}
}

func BenchmarkGetHit(b *testing.B) {
	c, err := New(Config{MaxBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetEpoch(1)
	c.SetTables(map[string]TableSettings{"public.users": {Enabled: true}})
	c.Stream("s1").Up(1, testTables)
	var kb KeyBuilder
	const keys = 1024
	for i := range keys {
		k := userKey(&kb, 1, "s1", fmt.Sprint(i), "app")
		c.Fill(c.BeginFill(k, 0), make([]byte, 200))
	}
	c.Wait()
	ids := make([]string, keys)
	for i := range ids {
		ids[i] = fmt.Sprint(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var kb KeyBuilder
		i := 0
		for pb.Next() {
			_, _ = c.Get(userKey(&kb, 1, "s1", ids[i%keys], "app"), 0)
			i++
		}
	})
}

// BenchmarkLookupHit is a hit as the proxy serves it: a key built without
// its row, looked up without planning.
func BenchmarkLookupHit(b *testing.B) {
	c, err := New(Config{MaxBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetEpoch(1)
	c.SetTables(map[string]TableSettings{"public.users": {Enabled: true}})
	c.Stream("s1").Up(1, testTables)
	var kb KeyBuilder
	const keys = 1024
	ids := make([]string, keys)
	for i := range ids {
		ids[i] = fmt.Sprint(i)
		tok, _ := c.BeginFillRow(lookupKey(&kb, 1, ids[i], "app"), "s1", "public.users", []byte(ids[i]), 0, 0)
		c.Fill(tok, make([]byte, 200))
	}
	c.Wait()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var kb KeyBuilder
		i := 0
		for pb.Next() {
			_, _ = c.Lookup(lookupKey(&kb, 1, ids[i%keys], "app"), noLSN)
			i++
		}
	})
}
