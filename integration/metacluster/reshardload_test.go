package metacluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
)

// ledgerWriter inserts, updates and deletes its own keys through one
// proxy, one autocommit statement at a time, and keeps a ledger of the
// writes the proxy acknowledged: key → value, absent when deleted.
type ledgerWriter struct {
	name   string
	keys   []int64
	conn   *pgx.Conn
	ledger map[int64]string
	writes int
	maxGap time.Duration
	// retryable counts errors the documented retryable SQLSTATEs of a
	// cutover gave (08006: held past buffer.window, did not run; PS001:
	// reached the fenced source, did not run); err is any other.
	retryable map[string]int
	err       error
}

// run writes until stop is set (checked between statements, so that
// every statement's outcome is known), or ctx ends.
func (w *ledgerWriter) run(ctx context.Context, stop *atomic.Bool) {
	last := time.Now()
	for n := 0; !stop.Load() && ctx.Err() == nil; n++ {
		k := w.keys[n%len(w.keys)]
		v, present := w.ledger[k]
		nv := fmt.Sprintf("%s-%d", w.name, n)
		var sql string
		var args []any
		switch {
		case !present:
			sql, args = `INSERT INTO kv (id, v) VALUES ($1, $2)`, []any{k, nv}
		case n%3 == 0:
			sql, args = `DELETE FROM kv WHERE id = $1 AND v = $2`, []any{k, v}
		default:
			sql, args = `UPDATE kv SET v = $2 WHERE id = $1 AND v = $3`, []any{k, nv, v}
		}
		tag, err := w.conn.Exec(ctx, sql, args...)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var pe *pgconn.PgError
			if errors.As(err, &pe) && (pe.Code == wire.SQLStateConnectionFailure || pe.Code == wire.SQLStateIntervalFenced) {
				w.retryable[pe.Code]++
				continue
			}
			w.err = fmt.Errorf("%s: %s %v: %w", w.name, sql, args, err)
			return
		}
		if tag.RowsAffected() != 1 {
			w.err = fmt.Errorf("%s: %s %v affected %d rows: the ledger and the servers disagree", w.name, sql, args, tag.RowsAffected())
			return
		}
		switch {
		case !present:
			w.ledger[k] = nv
		case n%3 == 0:
			delete(w.ledger, k)
		default:
			w.ledger[k] = nv
		}
		now := time.Now()
		w.maxGap = max(w.maxGap, now.Sub(last))
		last = now
		w.writes++
	}
}

// newLedgerWriter connects a writer named name through dsn for keys;
// initial gives the value a key's row has before the writes (false: no
// row).
func newLedgerWriter(t *testing.T, ctx context.Context, name, dsn string, keys []int64, initial func(k int64) (string, bool)) *ledgerWriter {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	w := &ledgerWriter{name: name, keys: keys, conn: conn, ledger: map[int64]string{}, retryable: map[string]int{}}
	for _, k := range keys {
		if v, ok := initial(k); ok {
			w.ledger[k] = v
		}
	}
	return w
}

// startWriters runs ws until the returned stop is called, which waits
// for them.
func startWriters(ctx context.Context, ws ...*ledgerWriter) (stop func()) {
	var stopping atomic.Bool
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { w.run(ctx, &stopping) })
	}
	return func() {
		stopping.Store(true)
		wg.Wait()
	}
}

// checkWriters logs each writer's counts and fails the test on a
// writer's error, on a PS001 (the proxy retries an autocommit statement
// that met the fence), on a gap of maxIn or more between acknowledged
// writes of a writer inside a moving interval, and on a gap of maxOut or
// more or any error of a writer outside.
func checkWriters(t *testing.T, inside, outside []*ledgerWriter, maxIn, maxOut time.Duration) {
	t.Helper()
	for _, w := range append(append([]*ledgerWriter{}, inside...), outside...) {
		t.Logf("%s: %d acknowledged writes, longest gap %s, retryable errors %v", w.name, w.writes, w.maxGap.Round(time.Millisecond), w.retryable)
		if w.err != nil {
			t.Error(w.err)
		}
		if n := w.retryable[wire.SQLStateIntervalFenced]; n > 0 {
			t.Errorf("%s: %d autocommit writes failed with PS001: the proxy did not retry them", w.name, n)
		}
	}
	for _, w := range inside {
		if w.maxGap >= maxIn {
			t.Errorf("%s: longest gap inside the moving interval %s, want < %s", w.name, w.maxGap, maxIn)
		}
	}
	for _, w := range outside {
		if w.maxGap >= maxOut {
			t.Errorf("%s: longest gap outside the moving interval %s, want < %s", w.name, w.maxGap, maxOut)
		}
		if len(w.retryable) > 0 {
			t.Errorf("%s: errors outside the moving interval: %v", w.name, w.retryable)
		}
	}
}

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
func compareLedger(t *testing.T, what string, got map[int64]string, own func(k int64) bool, ws ...*ledgerWriter) {
	t.Helper()
	want := map[int64]string{}
	for _, w := range ws {
		for k, v := range w.ledger {
			if own == nil || own(k) {
				want[k] = v
			}
		}
	}
	var diff []string
	for k, v := range want {
		if got[k] != v {
			diff = append(diff, fmt.Sprintf("%d: ledger %q, server %q", k, v, got[k]))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			diff = append(diff, fmt.Sprintf("%d: not in the ledger, server %q", k, v))
		}
	}
	sort.Strings(diff)
	if len(diff) > 0 {
		t.Errorf("%s differs from the ledger in %d keys: %s", what, len(diff), strings.Join(diff[:min(len(diff), 10)], "; "))
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
	mk := func(name string, dsn string, ks []int64) *ledgerWriter {
		return newLedgerWriter(t, ctx, name, dsn, ks, seeded)
	}
	inside := []*ledgerWriter{mk("in-a", proxies[0], keys(400, 600, 2, 0)), mk("in-b", proxies[1], keys(400, 600, 2, 1))}
	outside := []*ledgerWriter{mk("out-s0", proxies[1], keys(100, 300, 1, 0)), mk("out-s1", proxies[0], keys(2000, 2200, 1, 0))}
	stop := startWriters(ctx, append(append([]*ledgerWriter{}, inside...), outside...)...)
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
	checkWriters(t, inside, outside, time.Second, 200*time.Millisecond)
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
