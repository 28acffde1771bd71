package metacluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/ledger"
	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
)

// moveAuto runs `pgshard reshard move ... --cutover auto` through cli
// and fails the test unless the move ends cut over; it returns how long
// it took.
func moveAuto(t *testing.T, cli func(args ...string) (int, string, string), dist, interval, to, id string) time.Duration {
	t.Helper()
	start := time.Now()
	code, stdout, stderr := cli("reshard", "move", "--distribution", dist, "--interval", interval, "--to", to, "--cutover", "auto", "--id", id, "-o", "json", "--wait", "2m")
	took := time.Since(start)
	var moved struct {
		State struct {
			Phase string `json:"phase"`
		} `json:"state"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &moved) != nil || moved.State.Phase != "cutover" {
		t.Fatalf("reshard move %s %s to %s: exit %d\n%s\n%s", dist, interval, to, code, stdout, stderr)
	}
	t.Logf("move %s %s to %s took %s", dist, interval, to, took.Round(time.Millisecond))
	return took
}

// seedKV inserts the row (k, initial value) of each key on the server
// of the shard m gives it.
func seedKV(t *testing.T, ctx context.Context, m *shardmap.Map, servers map[string]*pgcluster.Server, keys []int64, value func(int64) string) {
	t.Helper()
	d := m.Distribution("kv")
	rows := map[string][]string{}
	for _, k := range keys {
		sh, err := d.ShardForInt64(k)
		if err != nil {
			t.Fatal(err)
		}
		rows[sh] = append(rows[sh], fmt.Sprintf("(%d, '%s')", k, value(k)))
	}
	for sh, vs := range rows {
		if err := servers[sh].Exec(ctx, "INSERT INTO kv (id, v) VALUES "+strings.Join(vs, ", ")); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReshardHashTwoToThree grows a 2-shard hash distribution to 3
// shards as an operator would: `pgshard shards add s2`, `reshard split`
// at -2^63/3 and 2^63/3 (hash values), then `reshard move` of [-2^63/3,
// 0) from s0 and of [0, 2^63/3) from s1 to s2 (--cutover auto), while
// writers insert, update and delete through two proxies following the
// meta member — keys whose hash lies in each moving interval, and keys
// staying on s0 and on s1 — keeping a ledger of acknowledged writes.
// Afterwards the map is the three even thirds; every shard's rows of the
// keys it owns (by hash) equal the ledger; the only errors are the
// documented retryable ones (none outside the moving intervals); the
// longest gap between acknowledged writes is under 1 s for keys of a
// moving interval and under 200 ms for the others.
func TestReshardHashTwoToThree(t *testing.T) {
	pg := integration.NewCluster(t, integration.Shards(3))
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	s0, s1, s2 := pg.Shards[0], pg.Shards[1], pg.Shards[2]
	for _, s := range []*pgcluster.Server{s0, s1} {
		if err := s.Exec(ctx, "CREATE TABLE kv (id bigint PRIMARY KEY, v text NOT NULL)"); err != nil {
			t.Fatal(err)
		}
	}
	two := twoShardKV(s0, s1, shardmap.Hash, shardmap.EvenHashIntervals([]string{"s0", "s1"}))
	// The target layout: the even thirds, the middle one on s2.
	third := shardmap.EvenHashIntervals([]string{"s0", "s2", "s1"})
	a, b := third[0].Hi, third[1].Hi
	intervalA := fmt.Sprintf("[%s,0)", a)
	intervalB := fmt.Sprintf("[0,%s)", b)

	var all []int64
	for k := int64(1); k <= 3000; k++ {
		all = append(all, k)
	}
	seeded := func(k int64) (string, bool) { return fmt.Sprintf("v%d", k), k <= 2000 }
	var seedKeys []int64
	for _, k := range all {
		if _, ok := seeded(k); ok {
			seedKeys = append(seedKeys, k)
		}
	}
	seedKV(t, ctx, two, map[string]*pgcluster.Server{"s0": s0, "s1": s1}, seedKeys, func(k int64) string { v, _ := seeded(k); return v })

	mc, client := startReshardMeta(t, "20s", metacluster.Members(1))
	if _, err := client.ApplyMap(ctx, two, 0, "two shards, hash"); err != nil {
		t.Fatal(err)
	}
	cli := metaCLI(t, ctx, mc)
	if code, stdout, stderr := cli("shards", "add", "s2", "--primary", s2.Addr()); code != 0 {
		t.Fatalf("shards add: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, at := range []shardmap.Bound{a, b} {
		if code, stdout, stderr := cli("reshard", "split", "--distribution", "kv", "--at="+at.String()); code != 0 {
			t.Fatalf("reshard split at %s: exit %d\n%s\n%s", at, code, stdout, stderr)
		}
	}
	pa := startFollowingProxy(t, pg, mc.Addrs(), mc.ClientOptions(), "pa")
	pb := startFollowingProxy(t, pg, mc.Addrs(), mc.ClientOptions(), "pb")
	proxies := []string{pa.DSN(""), pb.DSN("")}

	// Keys by where their hash lies: below a (stays on s0), [a, 0) (moves
	// from s0), [0, b) (moves from s1), from b (stays on s1).
	zero := shardmap.Int64Bound(0)
	part := func(k int64) int {
		h := shardmap.Int64Bound(shardmap.HashInt64(k))
		switch {
		case h.Compare(a) < 0:
			return 0
		case h.Compare(zero) < 0:
			return 1
		case h.Compare(b) < 0:
			return 2
		}
		return 3
	}
	var parts [4][]int64
	for _, k := range all {
		if p := part(k); len(parts[p]) < 240 {
			parts[p] = append(parts[p], k)
		}
	}
	split := func(ks []int64, i int) []int64 {
		var out []int64
		for j := i; j < len(ks); j += 2 {
			out = append(out, ks[j])
		}
		return out
	}
	mk := func(name, dsn string, ks []int64) *ledger.Writer {
		return ledger.New(t, ctx, name, dsn, ledger.KV, ks, seeded)
	}
	inside := []*ledger.Writer{
		mk("in-a-pa", proxies[0], split(parts[1], 0)), mk("in-a-pb", proxies[1], split(parts[1], 1)),
		mk("in-b-pa", proxies[0], split(parts[2], 0)), mk("in-b-pb", proxies[1], split(parts[2], 1)),
	}
	outside := []*ledger.Writer{mk("out-s0", proxies[1], parts[0]), mk("out-s1", proxies[0], parts[3])}
	everyone := append(append([]*ledger.Writer{}, inside...), outside...)
	stop := ledger.Start(ctx, everyone...)
	time.Sleep(300 * time.Millisecond) // writes before the moves, not synchronisation
	moveAuto(t, cli, "kv", intervalA, "s2", "mva")
	moveAuto(t, cli, "kv", intervalB, "s2", "mvb")
	time.Sleep(300 * time.Millisecond) // writes after the moves, routed to s2
	stop()

	ledger.Check(t, inside, outside, time.Second, 200*time.Millisecond)
	held := heldStatements(pa, pb)
	t.Logf("statements held by the proxies: %v", held)
	if held == 0 {
		t.Error("no statement was held during the cutovers (pgshard_interval_hold_statements_total 0 on both proxies)")
	}

	// The map meta ends with: the even thirds.
	mv, err := client.GetMap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := mv.Map.Distribution("kv")
	var got []string
	for _, iv := range d.Intervals {
		got = append(got, fmt.Sprintf("[%s,%s) %s", iv.Lo, iv.Hi, iv.Shard))
	}
	want := []string{
		fmt.Sprintf("[-inf,%s) s0", a), fmt.Sprintf("[%s,0) s2", a), fmt.Sprintf("[0,%s) s2", b), fmt.Sprintf("[%s,+inf) s1", b),
	}
	if strings.Join(got, " ") != strings.Join(want, " ") || len(d.Moving) != 0 {
		t.Fatalf("kv after the moves: %v (moving %v), want %v", got, d.Moving, want)
	}
	// Every shard's rows of the writers' keys it owns equal the ledger
	// (the sources keep the moved rows, fenced, until cleanup: they are
	// not theirs; the other seeded rows are nobody's ledger).
	written := map[int64]bool{}
	for _, w := range everyone {
		for _, k := range w.Keys {
			written[k] = true
		}
	}
	for name, s := range map[string]*pgcluster.Server{"s0": s0, "s1": s1, "s2": s2} {
		owns := func(k int64) bool { sh, err := d.ShardForInt64(k); return err == nil && sh == name }
		rows := kvRows(t, ctx, s, "true")
		for k := range rows {
			if !owns(k) || !written[k] {
				delete(rows, k)
			}
		}
		t.Logf("%s owns %d rows", name, len(rows))
		compareLedger(t, name+"'s rows of the keys it owns", rows, owns, everyone...)
	}
}
