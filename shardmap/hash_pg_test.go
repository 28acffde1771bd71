package shardmap_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/shardmap"
)

func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaks(m)) }

// pgValuesPerType is how many generated values of each key type the
// bit-for-bit test compares with PostgreSQL's own hash functions.
const pgValuesPerType = 100_000

// pgBatch is how many values go to the server in one array parameter.
const pgBatch = 10_000

// otherSeeds are compared on a slice of the values besides [shardmap.Seed]:
// 0 (PostgreSQL's unseeded path), a negative seed, a seed with an all-ones
// low word and one with a zero high word.
var otherSeeds = []int64{0, -1, math.MinInt64, 0x00000000ffffffff, 42, -8099569346997806113}

// TestHashMatchesPostgres computes hashint8extended, hashtextextended and
// uuid_hash_extended on a real server and compares every value with the
// Go implementation, bit for bit.
func TestHashMatchesPostgres(t *testing.T) {
	s := integration.StartPostgres(t, integration.Name("hash"))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.SuperDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	rng := rand.New(rand.NewPCG(1, 2))

	t.Run("int8", func(t *testing.T) {
		vals := int64Values(rng, pgValuesPerType)
		const q = `SELECT array_agg(hashint8extended(v, $2) ORDER BY i)
			FROM unnest($1::int8[]) WITH ORDINALITY AS t(v, i)`
		compare(ctx, t, conn, q, vals, shardmap.HashInt64Seed, func(v int64) any { return v })
	})
	t.Run("text", func(t *testing.T) {
		vals := textValues(rng, pgValuesPerType)
		const q = `SELECT array_agg(hashtextextended(v COLLATE "C", $2) ORDER BY i)
			FROM unnest($1::text[]) WITH ORDINALITY AS t(v, i)`
		compare(ctx, t, conn, q, vals, shardmap.HashTextSeed, func(v string) any { return v })
	})
	t.Run("uuid", func(t *testing.T) {
		vals := uuidValues(rng, pgValuesPerType)
		const q = `SELECT array_agg(uuid_hash_extended(v::uuid, $2) ORDER BY i)
			FROM unnest($1::text[]) WITH ORDINALITY AS t(v, i)`
		compare(ctx, t, conn, q, vals, shardmap.HashUUIDSeed, func(v [16]byte) any { return shardmap.UUID(v).String() })
	})
	t.Run("text_default_collation", func(t *testing.T) {
		// The database's default collation (C here, like a pgshard
		// deployment) must give the same result as an explicit COLLATE "C".
		vals := textValues(rng, 2_000)
		const q = `SELECT array_agg(hashtextextended(v, $2) ORDER BY i)
			FROM unnest($1::text[]) WITH ORDINALITY AS t(v, i)`
		compare(ctx, t, conn, q, vals, shardmap.HashTextSeed, func(v string) any { return v })
	})
	t.Run("sql_helper", func(t *testing.T) {
		// KeyType.HashSQL writes the expressions resharding uses.
		for _, c := range []struct {
			kt   shardmap.KeyType
			lit  string
			want int64
		}{
			{shardmap.KeyBigint, "-42", shardmap.HashInt64(-42)},
			{shardmap.KeyText, "'héllo wörld, long enough'", shardmap.HashText("héllo wörld, long enough")},
			{shardmap.KeyUUID, "'00112233-4455-6677-8899-aabbccddeeff'", shardmap.HashUUID(shardmap.MustParseUUID("00112233-4455-6677-8899-aabbccddeeff"))},
		} {
			var got int64
			q := "SELECT " + c.kt.HashSQL(c.lit)
			if err := conn.QueryRow(ctx, q).Scan(&got); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			if got != c.want {
				t.Errorf("%s = %d, Go says %d", q, got, c.want)
			}
		}
	})
}

// compare sends vals in batches, hashed with shardmap.Seed and, for the
// first batch, with each of otherSeeds, and reports every mismatch.
func compare[T any](ctx context.Context, t *testing.T, conn *pgx.Conn, q string, vals []T,
	hash func(T, int64) int64, param func(T) any) {
	t.Helper()
	matched := 0
	check := func(batch []T, seed int64) {
		params := make([]any, len(batch))
		for i, v := range batch {
			params[i] = param(v)
		}
		var got []int64
		if err := conn.QueryRow(ctx, q, params, seed).Scan(&got); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if len(got) != len(batch) {
			t.Fatalf("seed %d: server returned %d hashes for %d values", seed, len(got), len(batch))
		}
		bad := 0
		for i, v := range batch {
			if want := hash(v, seed); got[i] != want {
				if bad++; bad <= 10 {
					t.Errorf("seed %d: value %s: PostgreSQL %d, Go %d", seed, show(v), got[i], want)
				}
				continue
			}
			matched++
		}
		if bad > 10 {
			t.Errorf("seed %d: %d more mismatches", seed, bad-10)
		}
	}
	for i := 0; i < len(vals); i += pgBatch {
		check(vals[i:min(i+pgBatch, len(vals))], shardmap.Seed)
	}
	for _, seed := range otherSeeds {
		check(vals[:min(2_000, len(vals))], seed)
	}
	t.Logf("%d values with seed %d, %d more with %d other seeds: %d hashes matched PostgreSQL",
		len(vals), shardmap.Seed, min(2_000, len(vals))*len(otherSeeds), len(otherSeeds), matched)
}

func show(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q (%d bytes)", v, len(v))
	case [16]byte:
		return shardmap.UUID(v).String()
	}
	return fmt.Sprint(v)
}

// int64Values returns edge values (0, ±1, int32 and int64 boundaries and
// their neighbours, powers of two) followed by random values of every
// magnitude.
func int64Values(rng *rand.Rand, n int) []int64 {
	vals := []int64{
		0, 1, -1, 2, -2,
		math.MaxInt32, math.MaxInt32 + 1, math.MaxInt32 - 1,
		math.MinInt32, math.MinInt32 - 1, math.MinInt32 + 1,
		math.MaxUint32, math.MaxUint32 + 1, -math.MaxUint32, -math.MaxUint32 - 1,
		math.MaxInt64, math.MaxInt64 - 1, math.MinInt64, math.MinInt64 + 1,
	}
	for i := range 63 {
		p := int64(1) << i
		vals = append(vals, p, -p, p-1, -p+1, p+1, -p-1)
	}
	for len(vals) < n {
		var v int64
		switch rng.IntN(4) {
		case 0: // any 64-bit value
			v = int64(rng.Uint64())
		case 1: // small, like serial ids
			v = rng.Int64N(1_000_000)
		case 2: // int32 range, both signs
			v = int64(int32(rng.Uint32()))
		default: // random magnitude
			v = int64(rng.Uint64() >> rng.IntN(64))
			if rng.IntN(2) == 0 {
				v = -v
			}
		}
		vals = append(vals, v)
	}
	return vals[:n]
}

// textValues returns edge strings (empty, every length from 1 to 40 around
// lookup3's 12-byte blocks, multi-byte UTF-8, emoji, long strings)
// followed by random strings. PostgreSQL text cannot hold NUL, so none
// has one.
func textValues(rng *rand.Rand, n int) []string {
	vals := []string{"", "a", "ab", "abc", "abcd", "é", "日本語", "🙂", "👩‍👩‍👧‍👦", "\x7f", "\u00ff"}
	for l := 1; l <= 40; l++ {
		vals = append(vals, strings.Repeat("x", l), strings.Repeat("é", l), strings.Repeat("\U0010ffff", l)[:4*l])
	}
	vals = append(vals, strings.Repeat("0123456789", 1000))
	alphabets := [][]rune{
		[]rune("abcdefghijklmnopqrstuvwxyz0123456789-_ "),
		[]rune("äöüßéèçñÅØ€£¥©"),
		[]rune("日本語中文한국어العربيةрусский"),
		[]rune("🙂🚀🎉👍🏽🔥💾\U0001F9D1\u200d\U0001F4BB"),
	}
	for len(vals) < n {
		var l int
		switch rng.IntN(4) {
		case 0:
			l = rng.IntN(13) // around the first 12-byte block
		case 1:
			l = 20 + rng.IntN(9) // around 24
		case 2:
			l = rng.IntN(64)
		default:
			l = rng.IntN(600)
		}
		var b strings.Builder
		for b.Len() < l {
			switch rng.IntN(5) {
			case 0: // any valid rune but NUL
				r := rune(1 + rng.IntN(utf8.MaxRune))
				if utf8.ValidRune(r) {
					b.WriteRune(r)
				}
			default:
				a := alphabets[rng.IntN(len(alphabets))]
				b.WriteRune(a[rng.IntN(len(a))])
			}
		}
		vals = append(vals, b.String())
	}
	return vals[:n]
}

// uuidValues returns edge uuids (all zero, all ff, single bytes set)
// followed by random ones.
func uuidValues(rng *rand.Rand, n int) [][16]byte {
	var vals [][16]byte
	var zero, ff [16]byte
	for i := range ff {
		ff[i] = 0xff
	}
	vals = append(vals, zero, ff)
	for i := range 16 {
		var one, notOne [16]byte = zero, ff
		one[i], notOne[i] = 0x80, 0x7f
		vals = append(vals, one, notOne)
	}
	for len(vals) < n {
		var u [16]byte
		for i := range u {
			u[i] = byte(rng.Uint32())
		}
		if rng.IntN(2) == 0 { // version 4 layout
			u[6] = u[6]&0x0f | 0x40
			u[8] = u[8]&0x3f | 0x80
		}
		vals = append(vals, u)
	}
	return vals[:n]
}
