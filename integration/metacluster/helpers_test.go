package metacluster_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// pgshardBin is the pgshard binary TestMain builds.
var pgshardBin string

// TestMain builds the pgshard binary once, runs the tests, and checks
// that no PostgreSQL server, no pgshard process and no goroutine of the
// in-process proxies and meta members outlives them.
func TestMain(m *testing.M) { os.Exit(metacluster.RunTests(m, &pgshardBin)) }

// The table the tests route: kv, range-sharded by id over s0 and s1.
const (
	kvTable = "public.kv"
	// probeLow and probeHigh are keys on s0 and s1 under every map the
	// tests apply (splits stay between them).
	probeLow  = int64(1)
	probeHigh = int64(1_000_000)
)

// shardName is the map's name of the i-th shard.
func shardName(i int) string { return "s" + strconv.Itoa(i) }

// setupShards creates kv on every shard of pg and puts the probe rows on
// the shards the maps give them.
func setupShards(t *testing.T, pg *pgcluster.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, s := range pg.Shards {
		if err := s.Exec(ctx, "CREATE TABLE kv (id bigint PRIMARY KEY, v text NOT NULL)"); err != nil {
			t.Fatal(err)
		}
	}
	if err := pg.Shards[0].Exec(ctx, fmt.Sprintf("INSERT INTO kv VALUES (%d, 'low')", probeLow)); err != nil {
		t.Fatal(err)
	}
	if err := pg.Shards[1].Exec(ctx, fmt.Sprintf("INSERT INTO kv VALUES (%d, 'high')", probeHigh)); err != nil {
		t.Fatal(err)
	}
}

// kvMap is newKVMap for the test goroutine.
func kvMap(t testing.TB, pg *pgcluster.Cluster, split int64) *shardmap.Map {
	t.Helper()
	m, err := newKVMap(pg, split)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// newKVMap is the map of kv over the shards of pg: ids below split on s0,
// the others on s1.
func newKVMap(pg *pgcluster.Cluster, split int64) (*shardmap.Map, error) {
	m := &shardmap.Map{Epoch: 1}
	for i, s := range pg.Shards {
		m.Shards = append(m.Shards, shardmap.Shard{
			Name: shardName(i), Primary: shardmap.Endpoint{Host: s.Host, Port: s.Port}, State: shardmap.StateActive,
		})
	}
	b := shardmap.Int64Bound(split)
	m.Distributions = []shardmap.Distribution{{
		Name: "kv", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range, DefaultShard: shardName(0),
		Intervals: []shardmap.Interval{
			{Lo: shardmap.NegInf(), Hi: b, Shard: shardName(0)},
			{Lo: b, Hi: shardmap.PosInf(), Shard: shardName(1)},
		},
	}}
	m.Tables = []shardmap.Table{{Name: kvTable, Kind: shardmap.Sharded, KeyColumn: "id", Distribution: "kv"}}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("the kv map split at %d: %w", split, err)
	}
	return m, nil
}

// rowOn reports whether the kv row id is on server s.
func rowOn(t *testing.T, s *pgcluster.Server, id int64) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	v, err := s.QueryValue(ctx, fmt.Sprintf("SELECT count(*) FROM kv WHERE id = %d", id))
	if err != nil {
		t.Fatal(err)
	}
	return v == "1"
}

// assertPlaced checks that the kv row id is on pg's shard want and on no
// other.
func assertPlaced(t *testing.T, pg *pgcluster.Cluster, id int64, want int) {
	t.Helper()
	for i, s := range pg.Shards {
		if got := rowOn(t, s, id); got != (i == want) {
			t.Errorf("row id=%d on shard %s: %v; want it on %s only", id, shardName(i), got, shardName(want))
		}
	}
}

// proxyConfig is testproxy's configuration with every shard of pg.
func proxyConfig(t testing.TB, pg *pgcluster.Cluster) *proxy.Config {
	t.Helper()
	cfg := testproxy.Config(t, pg.Shards[0])
	cfg.Shards = nil
	for i, s := range pg.Shards {
		cfg.Shards = append(cfg.Shards, proxy.ShardConfig{Name: shardName(i), Host: s.Host, Port: s.Port})
	}
	return cfg
}

// heartbeatEvery is how often the in-process proxies report to meta.
const heartbeatEvery = 500 * time.Millisecond

// startFollowingProxy starts an in-process proxy over the shards of pg
// that follows the meta cluster at addrs (srv.FollowMeta, in a goroutine
// stopped before the proxy shuts down) with the ID id.
func startFollowingProxy(t *testing.T, pg *pgcluster.Cluster, addrs []string, opts metarpc.ClientOptions, id string) *testproxy.Proxy {
	t.Helper()
	return metacluster.StartFollowingProxy(t, proxyConfig(t, pg), addrs, opts, id, heartbeatEvery)
}

// waitProxyEpoch waits until the proxy routes with epoch or a later one.
func waitProxyEpoch(t *testing.T, p *testproxy.Proxy, epoch uint64, timeout time.Duration) {
	t.Helper()
	ok, why := testutil.Poll(timeout, func() (bool, string) {
		got := p.Server.MapEpoch()
		return got >= epoch, fmt.Sprintf("it routes with epoch %d", got)
	})
	if !ok {
		t.Fatalf("proxy %s did not apply epoch %d within %s: %s", p.Addr, epoch, timeout, why)
	}
}

// waitFor polls cond until it holds or d passes, and returns whether it
// held and what cond said last.
func waitFor(d time.Duration, cond func() (bool, string)) (bool, string) {
	deadline := time.Now().Add(d)
	for {
		ok, why := cond()
		if ok || time.Now().After(deadline) {
			return ok, why
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startReshardMeta starts a meta cluster (opts: e.g. its size) that
// moves intervals, with no failover and cutoverTimeout for a move's
// cutover, and returns it with a client.
func startReshardMeta(t *testing.T, cutoverTimeout string, opts ...metacluster.Option) (*metacluster.Cluster, *metarpc.Client) {
	t.Helper()
	mc := metacluster.Start(t, pgshardBin, append(opts,
		metacluster.Args("--pg-user", pgcluster.SuperuserName, "--pg-sslmode", "disable", "--no-failover", "--reshard-cutover-timeout", cutoverTimeout),
		metacluster.Environ("PGSHARD_META_PG_PASSWORD="+pgcluster.SuperuserPassword))...)
	return mc, mc.Client(t)
}

// twoShardKV is the map of kv (bigint id, distribution kv of strategy
// and intervals) over s0 and s1.
func twoShardKV(s0, s1 *pgcluster.Server, strategy shardmap.Strategy, intervals []shardmap.Interval) *shardmap.Map {
	m := &shardmap.Map{Epoch: 1, Tables: []shardmap.Table{{Name: kvTable, Kind: shardmap.Sharded, KeyColumn: "id", Distribution: "kv"}}}
	for i, s := range []*pgcluster.Server{s0, s1} {
		m.Shards = append(m.Shards, shardmap.Shard{Name: shardName(i), Primary: shardmap.Endpoint{Host: s.Host, Port: s.Port}, State: shardmap.StateActive})
	}
	m.Distributions = []shardmap.Distribution{{Name: "kv", KeyType: shardmap.KeyBigint, Strategy: strategy, Intervals: intervals}}
	return m
}

// metaCLI runs the pgshard CLI with args against mc's first member and
// returns its exit code, stdout and stderr.
func metaCLI(t *testing.T, ctx context.Context, mc *metacluster.Cluster) func(args ...string) (int, string, string) {
	return func(args ...string) (int, string, string) {
		return runCLIExit(t, ctx, append(args, "--meta", mc.Members[0].APIAddr, "--token", mc.Token)...)
	}
}

// countKV is the number of kv rows on s WHERE where.
func countKV(t *testing.T, ctx context.Context, s *pgcluster.Server, where string) int64 {
	t.Helper()
	v, err := s.QueryValue(ctx, "SELECT count(*) FROM kv WHERE "+where)
	if err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	var n int64
	if _, err := fmt.Sscan(v, &n); err != nil {
		t.Fatalf("%s: count %q: %v", s.Name, v, err)
	}
	return n
}
