package difftest_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/difftest"
	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
)

// shards is how many shards the sharded runs use.
const shards = 4

// TestShardedMatchesReference loads the dataset into a reference server
// and through pgshard into four shards (range, then hash), runs the
// corpus on both in every mode, and checks, by querying the shards
// directly, that every row sits on the shard the map says and that the
// shards together hold exactly the reference's rows — after loading and
// again after the corpus's writes.
func TestShardedMatchesReference(t *testing.T) {
	corpus := loadCorpus(t)
	for _, tc := range []struct {
		strategy string
		bounds   []int64
	}{
		{"range", []int64{2500, 5000, 7500}},
		{"hash", nil},
	} {
		t.Run(tc.strategy, func(t *testing.T) {
			ref := integration.StartPostgres(t, integration.Name("reference"))
			cl := integration.NewCluster(t, integration.Shards(shards))
			m := writeMap(t, cl, tc.strategy, tc.bounds)
			cfg := testproxy.Config(t, cl.Shards[0])
			cfg.Shards = nil
			cfg.ShardMapFile = m.path
			p := testproxy.Start(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()

			refConn := mustConnect(t, ctx, ref.SuperDSN("postgres"))
			if err := difftest.Load(ctx, refConn, difftest.DefaultSize, seed); err != nil {
				t.Fatal(err)
			}
			direct := make(map[string]*pgx.Conn, shards)
			for i, s := range cl.Shards {
				direct[shardName(i)] = mustConnect(t, ctx, s.SuperDSN("postgres"))
			}
			proxyConn := mustConnect(t, ctx, p.DSN(""))
			loadThroughProxy(t, ctx, proxyConn, direct)
			dist := m.m.Distribution("users")
			checkPlacement(t, ctx, "after loading", refConn, direct, dist)

			r := difftest.Runner{Ref: refConn, Proxy: proxyConn, Sharded: true, Logf: t.Logf}
			rep, err := r.Run(ctx, corpus)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s over %d shards: %s", tc.strategy, shards, rep)
			for _, f := range rep.Failures {
				t.Error(f)
			}
			if n := rep.Runs[pgx.QueryExecModeSimpleProtocol][difftest.Identical]; n < 100 {
				t.Errorf("only %d statements answered identically in the simple protocol", n)
			}
			checkPlacement(t, ctx, "after the corpus", refConn, direct, dist)
			checkPlacementCanFail(t, ctx, refConn, direct, dist)
		})
	}
}

// seed generates the dataset.
const seed = 42

// loadThroughProxy loads the dataset through pgshard (see
// difftest.LoadThroughProxy).
func loadThroughProxy(t *testing.T, ctx context.Context, proxyConn *pgx.Conn, direct map[string]*pgx.Conn) {
	t.Helper()
	names := make([]string, 0, len(direct))
	for name := range direct {
		names = append(names, name)
	}
	if err := difftest.LoadThroughProxy(ctx, proxyConn, names, difftest.DefaultSize, seed); err != nil {
		t.Fatal(err)
	}
}

// checkPlacement fails the test when a row is on the wrong shard or the
// shards do not hold exactly the reference's rows.
func checkPlacement(t *testing.T, ctx context.Context, when string, ref *pgx.Conn, direct map[string]*pgx.Conn, d *shardmap.Distribution) {
	t.Helper()
	problems, err := difftest.CheckPlacement(ctx, ref, direct, d, difftest.Tables)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", when, p)
	}
}

// checkPlacementCanFail puts a copy of a row on a shard the map does not
// assign it to and checks that CheckPlacement notices, then removes it.
func checkPlacementCanFail(t *testing.T, ctx context.Context, ref *pgx.Conn, direct map[string]*pgx.Conn, d *shardmap.Distribution) {
	t.Helper()
	home, err := d.ShardForInt64(1)
	if err != nil {
		t.Fatal(err)
	}
	wrong := shardName(0)
	if home == wrong {
		wrong = shardName(1)
	}
	c := direct[wrong]
	if _, err := c.Exec(ctx, "INSERT INTO users (id, name, active, created_at) VALUES (1, 'misplaced', true, now())"); err != nil {
		t.Fatal(err)
	}
	problems, err := difftest.CheckPlacement(ctx, ref, direct, d, difftest.Tables)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "DELETE FROM users WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	if len(problems) != 2 || !strings.Contains(problems[0], "belong elsewhere, keys [1]") || !strings.Contains(problems[1], "1 extra") {
		t.Errorf("a misplaced row on shard %s was not reported as it should: %q", wrong, problems)
	}
}

func shardName(i int) string { return difftest.ShardName(i) }

func mustConnect(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

type shardMap struct {
	path string
	m    *shardmap.Map
}

// writeMap writes a map distributing users by id and orders by user_id.
func writeMap(t *testing.T, cl *pgcluster.Cluster, strategy string, bounds []int64) shardMap {
	t.Helper()
	var addrs []string
	for _, s := range cl.Shards {
		addrs = append(addrs, s.Addr())
	}
	text, err := difftest.MapYAML(addrs, strategy, bounds)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "map.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := shardmap.ParseYAML([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return shardMap{path: path, m: m}
}
