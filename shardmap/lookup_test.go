package shardmap_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

func iv(lo, hi shardmap.Bound, shard string) shardmap.Interval {
	return shardmap.Interval{Lo: lo, Hi: hi, Shard: shard}
}

var (
	ninf = shardmap.NegInf()
	pinf = shardmap.PosInf()
	i64  = shardmap.Int64Bound
	txt  = shardmap.TextBound
	uid  = func(s string) shardmap.Bound { return shardmap.UUIDBound(shardmap.MustParseUUID(s)) }
)

func TestShardForInt64Range(t *testing.T) {
	d := &shardmap.Distribution{Name: "users", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
		Intervals: []shardmap.Interval{iv(ninf, i64(0), "a"), iv(i64(0), i64(100), "b"), iv(i64(100), pinf, "c")}}
	for _, c := range []struct {
		key  int64
		want string
	}{
		{math.MinInt64, "a"},
		{-1, "a"},
		{0, "b"}, // lo belongs to the interval
		{1, "b"},
		{99, "b"},
		{100, "c"}, // hi belongs to the next
		{math.MaxInt64, "c"},
	} {
		got, err := d.ShardForInt64(c.key)
		if err != nil || got != c.want {
			t.Errorf("ShardForInt64(%d) = %q, %v; want %q", c.key, got, err, c.want)
		}
		if got, err := d.ShardForKey(c.key); err != nil || got != c.want {
			t.Errorf("ShardForKey(%d) = %q, %v; want %q", c.key, got, err, c.want)
		}
	}
	for _, k := range []any{int(5), int32(5), int16(5)} {
		if got, err := d.ShardForKey(k); err != nil || got != "b" {
			t.Errorf("ShardForKey(%T 5) = %q, %v; want b", k, got, err)
		}
	}
}

func TestShardForTextRange(t *testing.T) {
	d := &shardmap.Distribution{Name: "tenants", KeyType: shardmap.KeyText, Strategy: shardmap.Range,
		Intervals: []shardmap.Interval{iv(ninf, txt("g"), "a"), iv(txt("g"), txt("m"), "b"), iv(txt("m"), pinf, "c")}}
	for _, c := range []struct {
		key  string
		want string
	}{
		{"", "a"},
		{"M", "a"}, // bytewise: upper case sorts before lower case
		{"fzzzz", "a"},
		{"g", "b"},
		{"g\x01", "b"},
		{"lzzz", "b"},
		{"m", "c"},
		{"é", "c"}, // bytewise: 0xc3 > 'm', unlike in a linguistic collation
		{"\U0010ffff", "c"},
	} {
		got, err := d.ShardForText(c.key)
		if err != nil || got != c.want {
			t.Errorf("ShardForText(%q) = %q, %v; want %q", c.key, got, err, c.want)
		}
		if got, err := d.ShardForKey(c.key); err != nil || got != c.want {
			t.Errorf("ShardForKey(%q) = %q, %v; want %q", c.key, got, err, c.want)
		}
	}
}

func TestShardForUUIDRange(t *testing.T) {
	mid := "80000000-0000-0000-0000-000000000000"
	d := &shardmap.Distribution{Name: "things", KeyType: shardmap.KeyUUID, Strategy: shardmap.Range,
		Intervals: []shardmap.Interval{iv(ninf, uid(mid), "a"), iv(uid(mid), pinf, "b")}}
	for _, c := range []struct {
		key  string
		want string
	}{
		{"00000000-0000-0000-0000-000000000000", "a"},
		{"7fffffff-ffff-ffff-ffff-ffffffffffff", "a"},
		{mid, "b"},
		{"80000000-0000-0000-0000-000000000001", "b"},
		{"ffffffff-ffff-ffff-ffff-ffffffffffff", "b"},
	} {
		u := shardmap.MustParseUUID(c.key)
		got, err := d.ShardForUUID(u)
		if err != nil || got != c.want {
			t.Errorf("ShardForUUID(%s) = %q, %v; want %q", c.key, got, err, c.want)
		}
		for _, k := range []any{c.key, u, [16]byte(u)} {
			if got, err := d.ShardForKey(k); err != nil || got != c.want {
				t.Errorf("ShardForKey(%T %s) = %q, %v; want %q", k, c.key, got, err, c.want)
			}
		}
	}
}

func TestShardForHash(t *testing.T) {
	shards := []string{"s1", "s2", "s3", "s4"}
	for _, kt := range []shardmap.KeyType{shardmap.KeyBigint, shardmap.KeyText, shardmap.KeyUUID} {
		d := &shardmap.Distribution{Name: "h", KeyType: kt, Strategy: shardmap.Hash,
			Intervals: shardmap.EvenHashIntervals(shards)}
		// Boundaries: -2^62, 0, 2^62.
		for _, c := range []struct {
			h    int64
			want string
		}{
			{math.MinInt64, "s1"}, {-1 << 62, "s2"}, {-1<<62 - 1, "s1"}, {-1, "s2"},
			{0, "s3"}, {1 << 62, "s4"}, {1<<62 - 1, "s3"}, {math.MaxInt64, "s4"},
		} {
			if got, err := d.ShardForHash(c.h); err != nil || got != c.want {
				t.Errorf("%s: ShardForHash(%d) = %q, %v; want %q", kt, c.h, got, err, c.want)
			}
		}
		// A key goes where its hash goes.
		rng := rand.New(rand.NewPCG(3, 4))
		for range 1000 {
			var got string
			var h int64
			switch kt {
			case shardmap.KeyBigint:
				k := int64(rng.Uint64())
				got, h = must(d.ShardForInt64(k)), shardmap.HashInt64(k)
			case shardmap.KeyText:
				k := string(rune(rng.IntN(0x10000))) + "key"
				got, h = must(d.ShardForText(k)), shardmap.HashText(k)
			case shardmap.KeyUUID:
				var u shardmap.UUID
				for i := range u {
					u[i] = byte(rng.Uint32())
				}
				got, h = must(d.ShardForUUID(u)), shardmap.HashUUID(u)
			}
			want := shards[int(uint64(h)>>62^2)] // top two bits of h+2^63
			if got != want {
				t.Fatalf("%s: key with hash %d on %q; want %q", kt, h, got, want)
			}
		}
	}
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

func TestLookupErrors(t *testing.T) {
	r := &shardmap.Distribution{Name: "users", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
		Intervals: []shardmap.Interval{iv(ninf, i64(0), "a"), iv(i64(10), pinf, "b")}} // gap [0, 10)
	if _, err := r.ShardForInt64(5); !errors.Is(err, shardmap.ErrNotCovered) {
		t.Errorf("key in a gap: %v, want ErrNotCovered", err)
	}
	for name, f := range map[string]func() (string, error){
		"text on bigint":     func() (string, error) { return r.ShardForText("x") },
		"uuid on bigint":     func() (string, error) { return r.ShardForUUID(shardmap.UUID{}) },
		"float key":          func() (string, error) { return r.ShardForKey(1.5) },
		"string on bigint":   func() (string, error) { return r.ShardForKey("5") },
		"int on text":        func() (string, error) { return (&shardmap.Distribution{KeyType: shardmap.KeyText}).ShardForInt64(1) },
		"bigint on uuid":     func() (string, error) { return (&shardmap.Distribution{KeyType: shardmap.KeyUUID}).ShardForKey(1) },
		"hash on range dist": func() (string, error) { return r.ShardForHash(1) },
	} {
		if s, err := f(); err == nil {
			t.Errorf("%s: got %q, want an error", name, s)
		} else if name != "hash on range dist" && !errors.Is(err, shardmap.ErrKeyType) {
			t.Errorf("%s: %v, want ErrKeyType", name, err)
		}
	}
	u := &shardmap.Distribution{Name: "u", KeyType: shardmap.KeyUUID, Strategy: shardmap.Range,
		Intervals: []shardmap.Interval{iv(ninf, pinf, "a")}}
	if _, err := u.ShardForKey("not-a-uuid"); err == nil {
		t.Error("bad uuid text: no error")
	}
	// An empty or broken distribution answers without panicking.
	var empty shardmap.Distribution
	empty.KeyType, empty.Strategy = shardmap.KeyBigint, shardmap.Range
	if _, err := empty.ShardForInt64(1); !errors.Is(err, shardmap.ErrNotCovered) {
		t.Errorf("no intervals: %v", err)
	}
}

// TestLookupMatchesLinearScan compares the binary search with a linear
// scan over many intervals, at every bound and around it.
func TestLookupMatchesLinearScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	cuts := make([]int64, 500)
	for i := range cuts {
		cuts[i] = int64(rng.Uint64())
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	d := &shardmap.Distribution{Name: "d", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range}
	lo := ninf
	for i, c := range cuts {
		d.Intervals = append(d.Intervals, iv(lo, i64(c), string(rune('a'+i%26))+string(rune('0'+i/26%10))))
		lo = i64(c)
	}
	d.Intervals = append(d.Intervals, iv(lo, pinf, "last"))
	linear := func(k int64) string {
		for _, in := range d.Intervals {
			if in.Lo.Compare(i64(k)) <= 0 && i64(k).Compare(in.Hi) < 0 {
				return in.Shard
			}
		}
		return ""
	}
	keys := []int64{math.MinInt64, math.MaxInt64, 0}
	for _, c := range cuts {
		keys = append(keys, c, c-1, c+1)
	}
	for range 2000 {
		keys = append(keys, int64(rng.Uint64()))
	}
	for _, k := range keys {
		got, err := d.ShardForInt64(k)
		if want := linear(k); err != nil || got != want {
			t.Fatalf("ShardForInt64(%d) = %q, %v; linear scan says %q", k, got, err, want)
		}
		if i := d.IntervalIndex(i64(k)); i < 0 || d.Intervals[i].Shard != got {
			t.Fatalf("IntervalIndex(%d) = %d, disagrees with ShardForInt64 %q", k, i, got)
		}
	}
}

func TestEvenHashIntervals(t *testing.T) {
	if got := shardmap.EvenHashIntervals(nil); got != nil {
		t.Errorf("no shards: %v", got)
	}
	if got := shardmap.EvenHashIntervals([]string{"a"}); !slices.Equal(got, []shardmap.Interval{iv(ninf, pinf, "a")}) {
		t.Errorf("one shard: %v", got)
	}
	want4 := []shardmap.Interval{iv(ninf, i64(-1<<62), "a"), iv(i64(-1<<62), i64(0), "b"), iv(i64(0), i64(1<<62), "c"), iv(i64(1<<62), pinf, "d")}
	if got := shardmap.EvenHashIntervals([]string{"a", "b", "c", "d"}); !slices.Equal(got, want4) {
		t.Errorf("four shards: %v, want %v", got, want4)
	}
	for _, n := range []int{2, 3, 5, 7, 10, 64, 1000} {
		names := make([]string, n)
		for i := range names {
			names[i] = "s" + string(rune('A'+i%26)) + string(rune('0'+i/26%10)) + string(rune('0'+i/260))
		}
		ivs := shardmap.EvenHashIntervals(names)
		d := shardmap.Distribution{Name: "h", KeyType: shardmap.KeyBigint, Strategy: shardmap.Hash, Intervals: ivs}
		m := &shardmap.Map{Epoch: 1, Distributions: []shardmap.Distribution{d}}
		for i, s := range names {
			m.Shards = append(m.Shards, shardmap.Shard{Name: s, Primary: shardmap.Endpoint{Host: "h", Port: 1 + i}, State: shardmap.StateActive})
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("%d shards: %v", n, err)
		}
		// Widths (in uint64 space) differ by at most one.
		var widths []uint64
		for i := 1; i+1 < len(ivs); i++ {
			lo, _ := ivs[i].Lo.Int64()
			hi, _ := ivs[i].Hi.Int64()
			widths = append(widths, uint64(hi)-uint64(lo))
		}
		if len(widths) > 0 && slices.Max(widths)-slices.Min(widths) > 1 {
			t.Errorf("%d shards: widths from %d to %d", n, slices.Min(widths), slices.Max(widths))
		}
	}
}

func TestLookupAllocs(t *testing.T) {
	r := &shardmap.Distribution{Name: "d", KeyType: shardmap.KeyText, Strategy: shardmap.Range,
		Intervals: []shardmap.Interval{iv(ninf, txt("g"), "a"), iv(txt("g"), pinf, "b")}}
	h := &shardmap.Distribution{Name: "d", KeyType: shardmap.KeyUUID, Strategy: shardmap.Hash,
		Intervals: shardmap.EvenHashIntervals([]string{"a", "b", "c"})}
	b := &shardmap.Distribution{Name: "d", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
		Intervals: []shardmap.Interval{iv(ninf, i64(1000), "a"), iv(i64(1000), pinf, "b")}}
	u := shardmap.MustParseUUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
	if n := testing.AllocsPerRun(100, func() {
		_, _ = r.ShardForText("hello")
		_, _ = h.ShardForUUID(u)
		_, _ = b.ShardForInt64(123456)
	}); n != 0 {
		t.Errorf("lookups allocate %v times", n)
	}
}

func BenchmarkShardForInt64Range1000(b *testing.B) {
	d := &shardmap.Distribution{Name: "d", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range}
	lo := ninf
	for i := range 999 {
		d.Intervals = append(d.Intervals, iv(lo, i64(int64(i)*1000), "s"))
		lo = i64(int64(i) * 1000)
	}
	d.Intervals = append(d.Intervals, iv(lo, pinf, "s"))
	for i := range b.N {
		_, _ = d.ShardForInt64(int64(i % 1_000_000))
	}
}
