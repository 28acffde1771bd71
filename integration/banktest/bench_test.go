package banktest_test

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// The benchmark of transactions over several shards (make bench-2pc):
// the latency and throughput of a transfer between two accounts on two
// shards against one between two accounts on one shard, through the same
// pgshard proxy process in the same run, and the recovery time of an
// in-doubt transaction (its proxy killed -9 between PREPARE and COMMIT
// PREPARED; the meta leader resolves it). Servers run with fsync and
// synchronous_commit on. It prints markdown for docs/benchmarks.md.
//
// Knobs (environment): PGSHARD_BENCH_2PC=1 runs it; _CLIENTS (8),
// _DURATION (10s per round and kind), _ROUNDS (2, alternating the kinds),
// _RECOVERIES (3 proxy kills).

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// benchAccounts is the number of accounts per shard.
const benchAccounts = 10000

func TestBench2PC(t *testing.T) {
	if os.Getenv("PGSHARD_BENCH_2PC") != "1" {
		t.Skip("a benchmark: set PGSHARD_BENCH_2PC=1 (make bench-2pc)")
	}
	clients := envInt(t, "PGSHARD_BENCH_2PC_CLIENTS", 8)
	rounds := envInt(t, "PGSHARD_BENCH_2PC_ROUNDS", 2)
	recoveries := envInt(t, "PGSHARD_BENCH_2PC_RECOVERIES", 3)
	duration := 10 * time.Second
	if v := os.Getenv("PGSHARD_BENCH_2PC_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("PGSHARD_BENCH_2PC_DURATION=%q: %v", v, err)
		}
		duration = d
	}

	durable := integration.Settings(map[string]string{"fsync": "on", "synchronous_commit": "on"})
	var shards []*pgcluster.Server
	for i := range 2 {
		shards = append(shards, integration.StartPostgres(t, integration.Name(fmt.Sprintf("tpc-s%d", i)), durable))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	meta := metacluster.Start(t, pgshardBin,
		metacluster.Args("--pg-user", pgcluster.SuperuserName, "--pg-sslmode", "disable"),
		metacluster.Environ("PGSHARD_META_PG_PASSWORD="+pgcluster.SuperuserPassword))
	m := shardmaptest.New().Shard("s0", shards[0].Addr()).Shard("s1", shards[1].Addr()).
		Hash("acct", "s0", "s1").Table("public.accounts", "id").Map(t)
	if _, err := meta.Client(t).ApplyMap(ctx, m, 0, "2pc benchmark"); err != nil {
		t.Fatal(err)
	}
	dist := m.Distribution("acct")
	ids := make([][]int64, 2)
	for id := int64(1); len(ids[0]) < benchAccounts || len(ids[1]) < benchAccounts; id++ {
		name, err := dist.ShardForInt64(id)
		if err != nil {
			t.Fatal(err)
		}
		i := int(name[1] - '0')
		if len(ids[i]) < benchAccounts {
			ids[i] = append(ids[i], id)
		}
	}
	for i, s := range shards {
		var vals []string
		for _, id := range ids[i] {
			vals = append(vals, fmt.Sprintf("(%d, 0)", id))
		}
		if err := s.Exec(ctx, "CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL); INSERT INTO accounts VALUES "+strings.Join(vals, ", ")); err != nil {
			t.Fatal(err)
		}
		if err := s.Exec(ctx, "VACUUM ANALYZE accounts"); err != nil {
			t.Fatal(err)
		}
	}
	waitDecisionTables(t, shards)
	dir := t.TempDir()
	px := newProxyProc(t, meta, shards[0], dir, "bench", 0) // the default lease
	px.Start(t, pgshardBin)
	waitWritable(t, px, []int64{ids[0][0], ids[1][0]})

	// Latency and throughput, the kinds alternating.
	type result struct {
		n        int
		elapsed  time.Duration
		lat, com []time.Duration
	}
	res := map[int]*result{1: {}, 2: {}}
	for r := range rounds {
		for _, kind := range []int{1, 2} {
			if r == 0 && kind == 1 {
				transfers(t, px, ids, kind, clients, 2*time.Second) // warm up
			}
			n, el, lat, com := transfers(t, px, ids, kind, clients, duration)
			x := res[kind]
			x.n += n
			x.elapsed += el
			x.lat = append(x.lat, lat...)
			x.com = append(x.com, com...)
		}
	}

	// Recovery of in-doubt transactions.
	type rec struct {
		prepared, committed int
		took                time.Duration
	}
	var recs []rec
	for i := range recoveries {
		p := newProxyProc(t, meta, shards[0], dir, fmt.Sprintf("rec%d", i+1), 0)
		p.Start(t, pgshardBin)
		waitWritable(t, p, []int64{ids[0][0], ids[1][0]})
		lctx, stop := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { transferLoop(lctx, p, ids, 2, nil) })
		}
		gids := killProxyMidCommit(t, p, shards)
		killed := time.Now()
		stop()
		wg.Wait()
		only := map[string]bool{}
		for _, g := range gids {
			only[g] = true
		}
		took := waitNoPrepared(t, shards, only, 2*time.Minute, "recovery")
		committed := 0
		for _, g := range gids {
			for _, s := range shards {
				v, err := s.QueryValue(ctx, "SELECT count(*) FROM pgshard.commit_decisions WHERE committed AND gid = '"+g+"'")
				if err != nil {
					t.Fatal(err)
				}
				if v == "1" {
					committed++
				}
			}
		}
		recs = append(recs, rec{prepared: len(gids), committed: committed, took: took})
		t.Logf("recovery %d: proxy killed -9 with %d prepared transactions; resolved %s after the kill", i+1, len(gids), time.Since(killed).Round(time.Millisecond))
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\n| transfer (BEGIN, 2 UPDATEs, COMMIT) | clients | transfers/s | latency p50 | latency p99 | COMMIT p50 | COMMIT p99 |\n|---|---|---|---|---|---|---|\n")
	for _, kind := range []int{1, 2} {
		x := res[kind]
		name := map[int]string{1: "1 shard (one-phase COMMIT)", 2: "2 shards (two-phase commit)"}[kind]
		fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %s | %s | %s |\n", name, clients, float64(x.n)/x.elapsed.Seconds(),
			ms(pct(x.lat, 50)), ms(pct(x.lat, 99)), ms(pct(x.com, 50)), ms(pct(x.com, 99)))
	}
	fmt.Fprintf(&b, "\n| in-doubt recovery (proxy killed -9 after PREPARE, default meta_lease 10 s) | prepared at the kill | of them committed (decided before the kill) | kill → pg_prepared_xacts empty |\n|---|---|---|---|\n")
	for i, r := range recs {
		fmt.Fprintf(&b, "| run %d | %d | %d | %.1f s |\n", i+1, r.prepared, r.committed, r.took.Seconds())
	}
	t.Logf("%d rounds of %s per kind, %d clients, extended protocol (pgx), fsync and synchronous_commit on", rounds, duration, clients)
	fmt.Println(b.String())
}

// transfers runs clients clients doing transfers of kind (1: both
// accounts on one shard, 2: on two shards) through px for d, and returns
// how many committed, the time taken, and each one's latency and its
// COMMIT's.
func transfers(t *testing.T, px *metacluster.ProxyCommand, ids [][]int64, kind, clients int, d time.Duration) (int, time.Duration, []time.Duration, []time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	var mu sync.Mutex
	var lat, com []time.Duration
	var errs []error
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			var l, c []time.Duration
			err := transferLoop(ctx, px, ids, kind, func(total, commit time.Duration) {
				l, c = append(l, total), append(c, commit)
			})
			mu.Lock()
			lat, com = append(lat, l...), append(com, c...)
			if err != nil {
				errs = append(errs, err)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, err := range errs {
		t.Errorf("%d-shard transfers: %v", kind, err)
	}
	return len(lat), elapsed, lat, com
}

// transferLoop runs transfers of kind through px on one connection until
// ctx ends, reporting each committed one to done (when not nil). It
// returns the first error that is not ctx's end.
func transferLoop(ctx context.Context, px *metacluster.ProxyCommand, ids [][]int64, kind int, done func(total, commit time.Duration)) error {
	c, err := pgx.Connect(ctx, px.DSN(""))
	if err != nil {
		return ignoreEnd(ctx, err)
	}
	defer c.Close(context.Background())
	rng := mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64()))
	for ctx.Err() == nil {
		var a, b int64
		if kind == 1 {
			s := ids[rng.IntN(2)]
			a, b = s[rng.IntN(len(s))], s[rng.IntN(len(s))]
			for b == a {
				b = s[rng.IntN(len(s))]
			}
		} else {
			a, b = ids[0][rng.IntN(len(ids[0]))], ids[1][rng.IntN(len(ids[1]))]
		}
		start := time.Now()
		if _, err := c.Exec(ctx, "BEGIN"); err != nil {
			return ignoreEnd(ctx, err)
		}
		// The lower account first: transfers never wait in a cycle.
		for _, id := range []int64{min(a, b), max(a, b)} {
			if _, err := c.Exec(ctx, "UPDATE accounts SET balance = balance + $1 WHERE id = $2", map[bool]int64{true: -1, false: 1}[id == a], id); err != nil {
				return ignoreEnd(ctx, err)
			}
		}
		cs := time.Now()
		tag, err := c.Exec(ctx, "COMMIT")
		if err != nil {
			return ignoreEnd(ctx, err)
		}
		if tag.String() != "COMMIT" {
			return fmt.Errorf("COMMIT answered %q", tag)
		}
		if done != nil {
			done(time.Since(start), time.Since(cs))
		}
	}
	return nil
}

func ignoreEnd(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// pct returns the p-th percentile of ds.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
