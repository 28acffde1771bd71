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

// TestReshardStaleRowsRead: a move of kv [400, 600) from s0 to s1, which
// already owns [1000, +inf), so that a read without a key reaches both
// shards while both hold the interval's rows: the target's copy once the
// copy is done, the source's fenced rows after the cutover, until
// cleanup. Through a proxy, count(*), sum(id), an ORDER BY ... OFFSET
// ... LIMIT and COPY TO give the true answer (each row once) then, and
// after a rollback; an UPDATE without a key after the cutover succeeds
// (no PS001 from the source's fenced rows) and changes each row once.
func TestReshardStaleRowsRead(t *testing.T) {
	pg := integration.NewCluster(t, integration.Shards(2))
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	s0, s1 := pg.Shards[0], pg.Shards[1]
	for _, s := range []*pgcluster.Server{s0, s1} {
		if err := s.Exec(ctx, "CREATE TABLE kv (id bigint PRIMARY KEY, v text NOT NULL)"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s0.Exec(ctx, "INSERT INTO kv SELECT i, 'v' || i FROM generate_series(1, 999) i"); err != nil {
		t.Fatal(err)
	}
	if err := s1.Exec(ctx, "INSERT INTO kv SELECT i, 'v' || i FROM generate_series(1000, 1999) i"); err != nil {
		t.Fatal(err)
	}
	mc := metacluster.Start(t, pgshardBin, metacluster.Members(1),
		metacluster.Args("--pg-user", pgcluster.SuperuserName, "--pg-sslmode", "disable", "--no-failover", "--reshard-cutover-timeout", "20s"),
		metacluster.Environ("PGSHARD_META_PG_PASSWORD="+pgcluster.SuperuserPassword))
	client := mc.Client(t)
	two := &shardmap.Map{Epoch: 1, Tables: []shardmap.Table{{Name: kvTable, Kind: shardmap.Sharded, KeyColumn: "id", Distribution: "kv"}}}
	for i, s := range []*pgcluster.Server{s0, s1} {
		two.Shards = append(two.Shards, shardmap.Shard{Name: shardName(i), Primary: shardmap.Endpoint{Host: s.Host, Port: s.Port}, State: shardmap.StateActive})
	}
	two.Distributions = []shardmap.Distribution{{Name: "kv", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range, Intervals: []shardmap.Interval{
		{Lo: shardmap.NegInf(), Hi: shardmap.Int64Bound(1000), Shard: "s0"},
		{Lo: shardmap.Int64Bound(1000), Hi: shardmap.PosInf(), Shard: "s1"},
	}}}
	if _, err := client.ApplyMap(ctx, two, 0, "two shards"); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (int, string, string) {
		return runCLIExit(t, ctx, append(args, "--meta", mc.Members[0].APIAddr, "--token", mc.Token)...)
	}
	cfg := proxyConfig(t, pg)
	cfg.BroadcastWrites = "allow"
	cfg.Transactions.CrossShard = proxy.CrossShardTwoPhase // reads over shards in a transaction
	p := metacluster.StartFollowingProxy(t, cfg, mc.Addrs(), mc.ClientOptions(), "pa", heartbeatEvery)
	conn, err := pgx.Connect(ctx, p.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	// count is the number of kv rows on s whose id is in [lo, hi).
	count := func(s *pgcluster.Server, lo, hi int) int {
		t.Helper()
		v, err := s.QueryValue(ctx, fmt.Sprintf("SELECT count(*) FROM kv WHERE id >= %d AND id < %d", lo, hi))
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		var n int
		fmt.Sscan(v, &n)
		return n
	}
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
		rows, err := conn.Query(ctx, "SELECT id, v FROM kv ORDER BY id OFFSET 397 LIMIT 5")
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
		want := []string{"398=v398" + suffix, "399=v399" + suffix, "400=v400" + suffix, "401=v401" + suffix, "402=v402" + suffix}
		if !slices.Equal(got, want) {
			t.Errorf("%s: ORDER BY id OFFSET 397 LIMIT 5 = %v, want %v", when, got, want)
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
		if len(lines) != 1999 || len(seen) != 1999 || !seen["450\tv450"+suffix] || !seen["1500\tv1500"+suffix] {
			t.Errorf("%s: COPY kv TO STDOUT gave %d lines, %d distinct; want 1999, each row once", when, len(lines), len(seen))
		}
		// The simple protocol, and inside a transaction.
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
	if code, stdout, stderr := cli("reshard", "move", "--distribution", "kv", "--interval", "[400,600)", "--to", "s1", "--id", "mv1", "--detach"); code != 0 {
		t.Fatalf("reshard move: exit %d\n%s\n%s", code, stdout, stderr)
	}
	ok, why := waitFor(time.Minute, func() (bool, string) {
		_, out, _ := cli("reshard", "status", "mv1", "-o", "json")
		return strings.Contains(out, `"phase": "copied"`), out
	})
	if !ok {
		t.Fatalf("mv1 never copied: %s", why)
	}
	if n := count(s1, 400, 600); n != 200 {
		t.Fatalf("the target has %d rows of [400, 600) once copied, want 200", n)
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
	if s, _ := v.Map.Distribution("kv").ShardForInt64(450); s != "s1" || count(s0, 400, 600) != 200 {
		t.Fatalf("after the cutover key 450 is on %s and s0 has %d rows of the interval", s, count(s0, 400, 600))
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
	if v, _ := s1.QueryValue(ctx, "SELECT v FROM kv WHERE id = 450"); v != "v450+" {
		t.Errorf("row 450 on its owner s1 is %q after the update, want v450+", v)
	}
	if v, _ := s0.QueryValue(ctx, "SELECT v FROM kv WHERE id = 450"); v != "v450" {
		t.Errorf("the source's stale row 450 is %q after the update, want it untouched (v450)", v)
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
	if n := count(s1, 400, 600); n != 0 {
		t.Errorf("the target keeps %d rows of the interval after the rollback", n)
	}
	reads("rolled back", "+")
	assertNoReplication(ctx, t, s0, s1)

	// Moved again and cleaned up: the marker goes with the source's rows.
	if code, stdout, stderr := cli("reshard", "move", "--distribution", "kv", "--interval", "[400,600)", "--to", "s1", "--id", "mv2", "--cutover", "auto", "--wait", "2m"); code != 0 {
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
	if d := v.Map.Distribution("kv"); len(d.Stale) != 0 || count(s0, 400, 600) != 0 {
		t.Fatalf("after cleanup: stale rows %s, %d rows of the interval on the source", shardmap.DescribeStale(d.Stale), count(s0, 400, 600))
	}
	waitProxyEpoch(t, p, v.Epoch, 10*time.Second)
	reads("cleaned up", "+")
}
