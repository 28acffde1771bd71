package metacluster_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
)

// TestReshardStaleRowsRead: a move of part of kv from s0 to s1, which
// already owns another interval, so that a read without a key reaches both
// shards while both hold the interval's rows: the target's copy once the
// copy is done, the source's fenced rows after the cutover, until
// cleanup. Through a proxy, count(*), sum(id), an ORDER BY ... OFFSET
// ... LIMIT and COPY TO give the true answer (each row once) then, after a
// rollback and after cleanup; an UPDATE without a key after the cutover
// succeeds (no PS001 from the source's fenced rows) and changes each row
// once (the source's copy only through the reverse replication). For a range distribution (kv [400, 600)) and a hash one (the lower
// half of s0's hash interval, as when a hash distribution grows).
func TestReshardStaleRowsRead(t *testing.T) {
	t.Run("range", func(t *testing.T) {
		testStaleRows(t, shardmap.Range, "[400,600)", shardmap.Int64Bound(400), shardmap.Int64Bound(600))
	})
	t.Run("hash", func(t *testing.T) {
		testStaleRows(t, shardmap.Hash, "[-inf,-4611686018427387904)", shardmap.NegInf(), shardmap.Int64Bound(-1<<62))
	})
}

func testStaleRows(t *testing.T, strategy shardmap.Strategy, interval string, lo, hi shardmap.Bound) {
	pg := integration.NewCluster(t, integration.Shards(2))
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	s0, s1 := pg.Shards[0], pg.Shards[1]
	for _, s := range []*pgcluster.Server{s0, s1} {
		if err := s.Exec(ctx, "CREATE TABLE kv (id bigint PRIMARY KEY, v text NOT NULL)"); err != nil {
			t.Fatal(err)
		}
	}
	intervals := []shardmap.Interval{
		{Lo: shardmap.NegInf(), Hi: shardmap.Int64Bound(1000), Shard: "s0"},
		{Lo: shardmap.Int64Bound(1000), Hi: shardmap.PosInf(), Shard: "s1"},
	}
	if strategy == shardmap.Hash {
		intervals = shardmap.EvenHashIntervals([]string{"s0", "s1"})
	}
	// Each shard gets the rows 1..1999 it owns.
	for i, s := range []*pgcluster.Server{s0, s1} {
		own := shardmap.IntervalPredicate(shardmap.KeyBigint, strategy, "i", intervals[i].Lo, intervals[i].Hi)
		if err := s.Exec(ctx, "INSERT INTO kv SELECT i, 'v' || i FROM generate_series(1, 1999) i WHERE "+own); err != nil {
			t.Fatal(err)
		}
	}
	moving := shardmap.IntervalPredicate(shardmap.KeyBigint, strategy, "id", lo, hi)
	mc, client := startReshardMeta(t, "20s", metacluster.Members(1))
	two := twoShardKV(s0, s1, strategy, intervals)
	if _, err := client.ApplyMap(ctx, two, 0, "two shards"); err != nil {
		t.Fatal(err)
	}
	cli := metaCLI(t, ctx, mc)
	cfg := proxyConfig(t, pg)
	cfg.BroadcastWrites = "allow"
	cfg.Transactions.CrossShard = proxy.CrossShardTwoPhase // reads over shards in a transaction
	p := metacluster.StartFollowingProxy(t, cfg, mc.Addrs(), mc.ClientOptions(), "pa", heartbeatEvery)
	conn, err := pgx.Connect(ctx, p.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	// count is the number of kv rows of the moving interval on s.
	count := func(s *pgcluster.Server) int64 { t.Helper(); return countKV(t, ctx, s, moving) }
	rowsIn := count(s0)
	// key is a key of the moving interval (with two keys below it).
	key, err := s0.QueryValue(ctx, "SELECT min(id) FROM kv WHERE id >= 3 AND "+moving)
	if err != nil || rowsIn < 100 || rowsIn > 1900 {
		t.Fatalf("the interval has %d rows (key %s): %v", rowsIn, key, err)
	}
	var k int64
	fmt.Sscan(key, &k)
	// reads checks the keyless reads through the proxy against the
	// truth: every row 1..1999 once, with v = 'v' || id || suffix.
	reads := func(when, suffix string) {
		t.Helper()
		var n, sum int64
		if err := conn.QueryRow(ctx, "SELECT count(*), sum(id) FROM kv").Scan(&n, &sum); err != nil {
			t.Fatalf("%s: count: %v", when, err)
		}
		if n != 1999 || sum != 1999*2000/2 {
			t.Errorf("%s: count(*) %d, sum(id) %d; want 1999 and %d (each row once)", when, n, sum, 1999*2000/2)
		}
		rows, err := conn.Query(ctx, "SELECT id, v FROM kv ORDER BY id OFFSET $1 LIMIT 5", k-3)
		if err != nil {
			t.Fatalf("%s: ORDER BY: %v", when, err)
		}
		var got []string
		for rows.Next() {
			var id int64
			var v string
			if err := rows.Scan(&id, &v); err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%d=%s", id, v))
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: ORDER BY: %v", when, err)
		}
		var want []string
		for i := k - 2; i <= k+2; i++ {
			want = append(want, fmt.Sprintf("%d=v%d%s", i, i, suffix))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: ORDER BY id OFFSET %d LIMIT 5 = %v, want %v", when, k-3, got, want)
		}
		var buf bytes.Buffer
		if _, err := conn.PgConn().CopyTo(ctx, &buf, "COPY kv TO STDOUT"); err != nil {
			t.Fatalf("%s: COPY TO: %v", when, err)
		}
		lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
		seen := make(map[string]bool, len(lines))
		for _, l := range lines {
			seen[l] = true
		}
		if len(lines) != 1999 || len(seen) != 1999 || !seen[key+"\tv"+key+suffix] || !seen["1500\tv1500"+suffix] {
			t.Errorf("%s: COPY kv TO STDOUT gave %d lines, %d distinct; want 1999, each row once", when, len(lines), len(seen))
		}
		// The simple protocol, and a read over shards inside a
		// transaction.
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM kv WHERE v LIKE 'v4%'", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 111 {
			t.Errorf("%s: simple protocol count of v4%%: %d, %v; want 111", when, n, err)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM kv").Scan(&n); err != nil || n != 1999 {
			t.Errorf("%s: count(*) in a transaction: %d, %v; want 1999", when, n, err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	reads("before the move", "")

	// The copy done, the target holds the interval's rows too.
	if code, stdout, stderr := cli("reshard", "move", "--distribution", "kv", "--interval", interval, "--to", "s1", "--id", "mv1", "--detach"); code != 0 {
		t.Fatalf("reshard move: exit %d\n%s\n%s", code, stdout, stderr)
	}
	ok, why := waitFor(time.Minute, func() (bool, string) {
		_, out, _ := cli("reshard", "status", "mv1", "-o", "json")
		return strings.Contains(out, `"phase": "copied"`), out
	})
	if !ok {
		t.Fatalf("mv1 never copied: %s", why)
	}
	if n := count(s1); n != rowsIn {
		t.Fatalf("the target has %d rows of %s once copied, want %d", n, interval, rowsIn)
	}
	reads("copied, before the cutover", "")

	// After the cutover the source keeps its rows until cleanup.
	if code, stdout, stderr := cli("reshard", "cutover", "mv1", "--wait", "2m"); code != 0 {
		t.Fatalf("reshard cutover: exit %d\n%s\n%s", code, stdout, stderr)
	}
	v, err := client.GetMap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := v.Map.Distribution("kv").ShardForInt64(k); s != "s1" || count(s0) != rowsIn {
		t.Fatalf("after the cutover key %s is on %s and s0 has %d rows of the interval", key, s, count(s0))
	}
	waitProxyEpoch(t, p, v.Epoch, 10*time.Second)
	reads("cut over, before cleanup", "")

	// A keyless UPDATE changes each row once, and not the source's
	// fenced copy.
	tag, err := conn.Exec(ctx, "UPDATE kv SET v = v || '+'")
	if err != nil {
		t.Fatalf("UPDATE without a key after the cutover: %v", err)
	}
	if tag.RowsAffected() != 1999 {
		t.Errorf("UPDATE without a key changed %d rows, want 1999", tag.RowsAffected())
	}
	if v, _ := s1.QueryValue(ctx, "SELECT v FROM kv WHERE id = "+key); v != "v"+key+"+" {
		t.Errorf("row %s on its owner s1 is %q after the update, want v%s+", key, v, key)
	}
	// The source's copy is not written by the statement (fenced: that
	// would fail with PS001); the reverse replication carries the
	// owner's change there, once.
	ok, why = waitFor(20*time.Second, func() (bool, string) {
		v, err := s0.QueryValue(ctx, "SELECT v FROM kv WHERE id = "+key)
		return v == "v"+key+"+", fmt.Sprintf("%q %v", v, err)
	})
	if !ok {
		t.Errorf("the source's copy of row %s after the update: %s, want v%s+ (from the reverse replication)", key, why, key)
	}
	reads("cut over, after a keyless update", "+")

	// The rollback brings the interval back, with the update.
	if code, stdout, stderr := cli("reshard", "rollback", "mv1", "--wait", "2m"); code != 0 {
		t.Fatalf("reshard rollback: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if v, err = client.GetMap(ctx); err != nil {
		t.Fatal(err)
	}
	if d := v.Map.Distribution("kv"); len(d.Stale) != 0 || len(d.Moving) != 0 {
		t.Fatalf("markers left after the rollback: %s; stale rows %s", shardmap.DescribeMoving(d.Moving), shardmap.DescribeStale(d.Stale))
	}
	waitProxyEpoch(t, p, v.Epoch, 10*time.Second)
	if n := count(s1); n != 0 {
		t.Errorf("the target keeps %d rows of the interval after the rollback", n)
	}
	reads("rolled back", "+")
	assertNoReplication(ctx, t, s0, s1)

	// Moved again and cleaned up: the marker goes with the source's rows.
	if code, stdout, stderr := cli("reshard", "move", "--distribution", "kv", "--interval", interval, "--to", "s1", "--id", "mv2", "--cutover", "auto", "--wait", "2m"); code != 0 {
		t.Fatalf("reshard move mv2: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if v, err = client.GetMap(ctx); err != nil {
		t.Fatal(err)
	}
	waitProxyEpoch(t, p, v.Epoch, 10*time.Second)
	reads("moved again, before cleanup", "+")
	if code, stdout, stderr := cli("reshard", "cleanup", "mv2", "--wait", "2m"); code != 0 {
		t.Fatalf("reshard cleanup: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if v, err = client.GetMap(ctx); err != nil {
		t.Fatal(err)
	}
	if d := v.Map.Distribution("kv"); len(d.Stale) != 0 || count(s0) != 0 {
		t.Fatalf("after cleanup: stale rows %s, %d rows of the interval on the source", shardmap.DescribeStale(d.Stale), count(s0))
	}
	waitProxyEpoch(t, p, v.Epoch, 10*time.Second)
	reads("cleaned up", "+")
}
