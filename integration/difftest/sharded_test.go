package difftest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/difftest"
	"github.com/pgshard/pgshard/integration/pgcluster"
	"github.com/pgshard/pgshard/integration/testproxy"
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
		strategy  string
		intervals string
	}{
		{"range", "      - {lo: -inf, hi: 2500, shard: s0}\n      - {lo: 2500, hi: 5000, shard: s1}\n" +
			"      - {lo: 5000, hi: 7500, shard: s2}\n      - {lo: 7500, hi: +inf, shard: s3}\n"},
		{"hash", ""},
	} {
		t.Run(tc.strategy, func(t *testing.T) {
			ref := integration.StartPostgres(t, integration.Name("reference"))
			cl := integration.NewCluster(t, integration.Shards(shards))
			m := writeMap(t, cl, tc.strategy, tc.intervals)
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

// loadThroughProxy creates the schema through pgshard (DDL on sharded
// tables runs on every shard), the functions on every shard (with a
// routing hint each, as they name no table), and copies the rows in
// through pgshard (binary COPY, split by key).
func loadThroughProxy(t *testing.T, ctx context.Context, proxyConn *pgx.Conn, direct map[string]*pgx.Conn) {
	t.Helper()
	if err := difftest.CreateSchema(ctx, proxyConn); err != nil {
		t.Fatal(err)
	}
	for name := range direct {
		for _, f := range difftest.Functions {
			if _, err := proxyConn.Exec(ctx, "/* pgshard: shard="+name+" */ "+f); err != nil {
				t.Fatalf("shard %s: %v", name, err)
			}
		}
	}
	users, orders := difftest.Rows(difftest.DefaultSize, seed)
	if err := difftest.CopyRows(ctx, proxyConn, users, orders); err != nil {
		t.Fatalf("through pgshard: %v", err)
	}
	if err := difftest.Analyze(ctx, proxyConn); err != nil {
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

func shardName(i int) string { return fmt.Sprintf("s%d", i) }

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
func writeMap(t *testing.T, cl *pgcluster.Cluster, strategy, intervals string) shardMap {
	t.Helper()
	var b strings.Builder
	b.WriteString("epoch: 1\nshards:\n")
	var names []string
	for i, s := range cl.Shards {
		fmt.Fprintf(&b, "  - {name: %s, primary: %q}\n", shardName(i), s.Addr())
		names = append(names, shardName(i))
	}
	fmt.Fprintf(&b, "distributions:\n  - name: users\n    key_type: bigint\n    strategy: %s\n    default_shard: s0\n", strategy)
	if intervals != "" {
		b.WriteString("    intervals:\n" + intervals)
	} else {
		fmt.Fprintf(&b, "    shards_even: [%s]\n", strings.Join(names, ", "))
	}
	b.WriteString("tables:\n  - {name: public.users, distribution: users, key: id}\n  - {name: public.orders, distribution: users, key: user_id}\n")
	path := filepath.Join(t.TempDir(), "map.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := shardmap.ParseYAML([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return shardMap{path: path, m: m}
}
