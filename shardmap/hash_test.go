package shardmap_test

import (
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// The vectors below were recorded from PostgreSQL 15.18 on x86_64 (see
// TestHashMatchesPostgres for the live comparison), with shardmap.Seed and
// with seed 0, PostgreSQL's unseeded path.

func TestHashInt64Vectors(t *testing.T) {
	for _, c := range []struct {
		v             int64
		seeded, seed0 int64
	}{
		{0, 1762199801050222566, 4154612158245552303},
		{1, 2009604229820612236, -3670598878359251130},
		{-1, -5772068886086826122, -1888257769727981238},
		{42, 681524027357300648, 8010225493015854792},
		{-42, 6028253902961608478, 8809670066178192187},
		{2147483647, -6368098517638444986, -9109110466470504941},
		{2147483648, -1716199560901601098, 1977219185673256887},
		{-2147483648, -1716199560901601098, 1977219185673256887},
		{-2147483649, -6368098517638444986, -9109110466470504941},
		{9223372036854775807, -1716199560901601098, 1977219185673256887},
		{-9223372036854775808, -6368098517638444986, -9109110466470504941},
		{1000000, -6066557500055444305, 8952854757942890677},
	} {
		if got := shardmap.HashInt64(c.v); got != c.seeded {
			t.Errorf("HashInt64(%d) = %d, PostgreSQL says %d", c.v, got, c.seeded)
		}
		if got := shardmap.HashInt64Seed(c.v, 0); got != c.seed0 {
			t.Errorf("HashInt64Seed(%d, 0) = %d, PostgreSQL says %d", c.v, got, c.seed0)
		}
	}
}

func TestHashTextVectors(t *testing.T) {
	for _, c := range []struct {
		v             string
		seeded, seed0 int64
	}{
		{"", -1186739498979436372, -6939563903564495251},
		{"a", 6089213767867246494, 3591986179850072241},
		{"abcd", 281717713609824887, -1038429303365892052},
		{"hello world!", -3398874936708080778, -2866487628948787489}, // 12 bytes: one full block
		{"hello world!!", -3526592247966235690, 2407105755976055416},
		{"pgshard", -4106846642300045312, -8382488566336083116},
		{"héllo wörld", -365501249178757576, 6639232088034648728},
		{"日本語のテキスト", -589630294310974843, -4412647243937365494},
		{"🙂🚀", -360892042363269088, -1894857041361662533},
		{strings.Repeat("x", 24), 7253486020955660408, 8354420297927256613},
		{strings.Repeat("y", 25), 8527802774279513033, 9104311212303822513},
		{strings.Repeat("0123456789", 10), -1666464955791371055, 271243376806927533},
	} {
		if got := shardmap.HashText(c.v); got != c.seeded {
			t.Errorf("HashText(%q) = %d, PostgreSQL says %d", c.v, got, c.seeded)
		}
		if got := shardmap.HashTextSeed(c.v, 0); got != c.seed0 {
			t.Errorf("HashTextSeed(%q, 0) = %d, PostgreSQL says %d", c.v, got, c.seed0)
		}
	}
}

func TestHashUUIDVectors(t *testing.T) {
	for _, c := range []struct {
		v             string
		seeded, seed0 int64
	}{
		{"00000000-0000-0000-0000-000000000000", -6755791021097805539, -6859010066814654381},
		{"ffffffff-ffff-ffff-ffff-ffffffffffff", -99561873406287526, 293445543803463785},
		{"00112233-4455-6677-8899-aabbccddeeff", 452651602311367939, 4462459420613485749},
		{"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", -8095357347787400534, 7543054272012930821},
	} {
		u := shardmap.MustParseUUID(c.v)
		if got := shardmap.HashUUID(u); got != c.seeded {
			t.Errorf("HashUUID(%s) = %d, PostgreSQL says %d", c.v, got, c.seeded)
		}
		if got := shardmap.HashUUIDSeed(u, 0); got != c.seed0 {
			t.Errorf("HashUUIDSeed(%s, 0) = %d, PostgreSQL says %d", c.v, got, c.seed0)
		}
	}
}

// TestHashInt64Fold checks the fold of hashint8extended: the high half is
// xor-ed into the low half (complemented for negative values), so these
// pairs of values hash alike, in PostgreSQL too (see the vectors above).
func TestHashInt64Fold(t *testing.T) {
	for _, p := range [][2]int64{
		{2147483648, -2147483648},
		{2147483647, -2147483649},
		{9223372036854775807, -2147483648},
	} {
		if a, b := shardmap.HashInt64(p[0]), shardmap.HashInt64(p[1]); a != b {
			t.Errorf("HashInt64(%d) = %d, HashInt64(%d) = %d; PostgreSQL gives both the same", p[0], a, p[1], b)
		}
	}
}

func TestHashSQL(t *testing.T) {
	for kt, want := range map[shardmap.KeyType]string{
		shardmap.KeyBigint: "hashint8extended((id)::int8, 8099569346997806113)",
		shardmap.KeyText:   `hashtextextended((id)::text COLLATE "C", 8099569346997806113)`,
		shardmap.KeyUUID:   "uuid_hash_extended((id)::uuid, 8099569346997806113)",
		"int":              "",
	} {
		if got := kt.HashSQL("id"); got != want {
			t.Errorf("%s: HashSQL = %q, want %q", kt, got, want)
		}
	}
}

func TestHashAllocs(t *testing.T) {
	u := shardmap.MustParseUUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
	s := strings.Repeat("x", 100)
	var sink int64
	if n := testing.AllocsPerRun(100, func() {
		sink += shardmap.HashInt64(12345) + shardmap.HashText(s) + shardmap.HashUUID(u)
	}); n != 0 {
		t.Errorf("hashing allocates %v times", n)
	}
}

func BenchmarkHashInt64(b *testing.B) {
	for i := range b.N {
		shardmap.HashInt64(int64(i))
	}
}

func BenchmarkHashText32(b *testing.B) {
	s := strings.Repeat("k", 32)
	for range b.N {
		shardmap.HashText(s)
	}
}

func BenchmarkHashUUID(b *testing.B) {
	var u shardmap.UUID
	for i := range b.N {
		u[0] = byte(i)
		shardmap.HashUUID(u)
	}
}
