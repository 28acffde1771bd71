package metacluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/ledger"
	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
)

// heldStatements sums pgshard_interval_hold_statements_total over the
// proxies.
func heldStatements(ps ...*testproxy.Proxy) float64 {
	var held float64
	for _, p := range ps {
		rec := httptest.NewRecorder()
		p.Server.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		for _, line := range strings.Split(rec.Body.String(), "\n") {
			if v, ok := strings.CutPrefix(line, "pgshard_interval_hold_statements_total "); ok {
				var n float64
				fmt.Sscan(v, &n)
				held += n
			}
		}
	}
	return held
}

// kvRows reads kv's rows on s WHERE where.
func kvRows(t *testing.T, ctx context.Context, s *pgcluster.Server, where string) map[int64]string {
	t.Helper()
	conn, err := pgx.Connect(ctx, s.SuperDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	r, err := conn.Query(ctx, "SELECT id, v FROM kv WHERE "+where)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]string{}
	for r.Next() {
		var k int64
		var v string
		if err := r.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// compareLedger fails the test when got differs from the writers'
// ledgers (merged), restricted to the keys own accepts (nil: all).
func compareLedger(t *testing.T, what string, got map[int64]string, own func(k int64) bool, ws ...*ledger.Writer) {
	t.Helper()
	want := map[int64]string{}
	for _, w := range ws {
		for k, v := range w.Ledger {
			if own == nil || own(k) {
				want[k] = v
			}
		}
	}
	if diff := ledger.Diff(want, got); len(diff) > 0 {
		t.Errorf("%s differs from the ledger in %d keys: %s", what, len(diff), ledger.Summary(diff, 10))
	}
}

// TestReshardUnderLoad moves kv [400, 600) from s0 to a shard added with
// `pgshard shards add`, with `reshard move --cutover auto`, while writers
// insert, update and delete through two proxies following the meta member
// — keys inside the interval and outside it (on s0 and on s1) — keeping
// a ledger of acknowledged writes. Afterwards the target's rows of the
// interval equal the ledger, the source's rows outside it too; the only
// errors are the documented retryable ones; the longest gap between
// acknowledged writes is under 1 s inside the interval and under 200 ms
// outside it.
func TestReshardUnderLoad(t *testing.T) {
	pg := integration.NewCluster(t, integration.Shards(3))
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	s0, s1, s2 := pg.Shards[0], pg.Shards[1], pg.Shards[2]
	for _, s := range []*pgcluster.Server{s0, s1} {
		if err := s.Exec(ctx, "CREATE TABLE kv (id bigint PRIMARY KEY, v text NOT NULL)"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s0.Exec(ctx, "INSERT INTO kv SELECT i, 'v' || i FROM generate_series(1, 999) i"); err != nil {
		t.Fatal(err)
	}
	mc, client := startReshardMeta(t, "20s", metacluster.Members(1))
	two := twoShardKV(s0, s1, shardmap.Range, []shardmap.Interval{
		{Lo: shardmap.NegInf(), Hi: shardmap.Int64Bound(1000), Shard: "s0"},
		{Lo: shardmap.Int64Bound(1000), Hi: shardmap.PosInf(), Shard: "s1"},
	})
	if _, err := client.ApplyMap(ctx, two, 0, "two shards"); err != nil {
		t.Fatal(err)
	}
	cli := metaCLI(t, ctx, mc)
	if code, stdout, stderr := cli("shards", "add", "s2", "--primary", s2.Addr()); code != 0 {
		t.Fatalf("shards add: exit %d\n%s\n%s", code, stdout, stderr)
	}
	pa := startFollowingProxy(t, pg, mc.Addrs(), mc.ClientOptions(), "pa")
	pb := startFollowingProxy(t, pg, mc.Addrs(), mc.ClientOptions(), "pb")
	proxies := []string{pa.DSN(""), pb.DSN("")}

	// Writers: two inside the interval, two outside (s0 and s1), each
	// through one of the proxies, each on its own keys.
	keys := func(lo, hi, step, off int64) []int64 {
		var out []int64
		for k := lo + off; k < hi; k += step {
			out = append(out, k)
		}
		return out
	}
	seeded := func(k int64) (string, bool) { return fmt.Sprintf("v%d", k), k < 1000 } // the rows already there
	mk := func(name string, dsn string, ks []int64) *ledger.Writer {
		return ledger.New(t, ctx, name, dsn, ledger.KV, ks, seeded)
	}
	inside := []*ledger.Writer{mk("in-a", proxies[0], keys(400, 600, 2, 0)), mk("in-b", proxies[1], keys(400, 600, 2, 1))}
	outside := []*ledger.Writer{mk("out-s0", proxies[1], keys(100, 300, 1, 0)), mk("out-s1", proxies[0], keys(2000, 2200, 1, 0))}
	stop := ledger.Start(ctx, append(append([]*ledger.Writer{}, inside...), outside...)...)
	time.Sleep(300 * time.Millisecond) // writes before the move, not synchronisation
	start := time.Now()
	code, stdout, stderr := cli("reshard", "move", "--distribution", "kv", "--interval", "[400,600)", "--to", "s2", "--cutover", "auto", "--id", "mv1", "-o", "json", "--wait", "2m")
	took := time.Since(start)
	time.Sleep(300 * time.Millisecond) // writes after the move, routed to s2
	stop()
	var moved struct {
		State struct {
			Phase string `json:"phase"`
		} `json:"state"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &moved) != nil || moved.State.Phase != "cutover" {
		t.Fatalf("reshard move: exit %d\n%s\n%s", code, stdout, stderr)
	}
	t.Logf("move took %s", took.Round(time.Millisecond))
	ledger.Check(t, inside, outside, time.Second, 200*time.Millisecond)
	// The interval's statements were held by the proxies (not merely slow).
	held := heldStatements(pa, pb)
	t.Logf("statements held by the proxies: %v", held)
	if held == 0 {
		t.Error("no statement was held during the cutover (pgshard_interval_hold_statements_total 0 on both proxies)")
	}
	// The ledger against the servers.
	compareLedger(t, "s2's rows of [400, 600)", kvRows(t, ctx, s2, "id >= 400 AND id < 600"), nil, inside...)
	compareLedger(t, "s0's rows of [100, 300)", kvRows(t, ctx, s0, "id >= 100 AND id < 300"), nil, outside[0])
	compareLedger(t, "s1's rows of [2000, 2200)", kvRows(t, ctx, s1, "id >= 2000 AND id < 2200"), nil, outside[1])
}
