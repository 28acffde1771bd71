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

// TestShardedMatchesReference loads the dataset into a reference server
// and, split by the shard map, into the shards; every corpus query pgshard
// answers must return exactly the reference's rows. Queries it cannot run
// on several shards must be refused with 0A000 (counted, never wrong).
func TestShardedMatchesReference(t *testing.T) {
	for _, tc := range []struct {
		name, strategy string
		shards         int
		intervals      string
	}{
		{"range", "range", 2, "      - {lo: -inf, hi: 5000, shard: s0}\n      - {lo: 5000, hi: +inf, shard: s1}\n"},
		{"hash", "hash", 3, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := integration.StartPostgres(t, integration.Name("reference"))
			cl := integration.NewCluster(t, integration.Shards(tc.shards))
			m := writeMap(t, cl, tc.strategy, tc.intervals)
			cfg := testproxy.Config(t, cl.Shards[0])
			cfg.Shards = nil
			cfg.ShardMapFile = m.path
			p := testproxy.Start(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			refConn := mustConnect(t, ctx, ref.SuperDSN("postgres"))
			if err := difftest.Load(ctx, refConn, difftest.DefaultSize, 42); err != nil {
				t.Fatal(err)
			}
			loadSharded(t, ctx, cl, m.m)
			proxyConn := mustConnect(t, ctx, p.DSN(""))
			corpus, err := difftest.LoadCorpus("testdata/corpus.sql")
			if err != nil {
				t.Fatal(err)
			}
			answered, refused := 0, 0
			for _, q := range corpus {
				if q.Write {
					continue // writes need the same routing on both sides; reads only here
				}
				mode := pgx.QueryExecModeSimpleProtocol
				want, err := difftest.Run(ctx, refConn, q.SQL, mode)
				if err != nil {
					t.Fatalf("line %d on the reference: %v", q.Line, err)
				}
				got, err := difftest.Run(ctx, proxyConn, q.SQL, mode)
				if err != nil {
					t.Fatalf("line %d through pgshard: %v", q.Line, err)
				}
				if got.Code == "0A000" {
					refused++
					t.Logf("refused (0A000), line %d: %s", q.Line, strings.Join(strings.Fields(q.SQL), " "))
					continue
				}
				answered++
				if d := difftest.Diff(q, want, got); d != "" {
					t.Errorf("corpus line %d: %s\n%s", q.Line, d, q.SQL)
				}
			}
			t.Logf("%s over %d shards: %d queries answered identically, %d refused with 0A000", tc.name, tc.shards, answered, refused)
			if answered < 40 {
				t.Errorf("only %d queries answered", answered)
			}
		})
	}
}

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
		fmt.Fprintf(&b, "  - {name: s%d, primary: %q}\n", i, s.Addr())
		names = append(names, fmt.Sprintf("s%d", i))
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

// loadSharded creates the schema on every shard and copies each row to
// the shard the map assigns its key to.
func loadSharded(t *testing.T, ctx context.Context, cl *pgcluster.Cluster, m *shardmap.Map) {
	t.Helper()
	users, orders := difftest.Rows(difftest.DefaultSize, 42)
	d := m.Distribution("users")
	shardOf := func(key int64) int {
		name, err := d.ShardForInt64(key)
		if err != nil {
			t.Fatal(err)
		}
		var i int
		fmt.Sscanf(name, "s%d", &i)
		return i
	}
	perUsers := make([][][]any, len(cl.Shards))
	for _, r := range users {
		i := shardOf(r[0].(int64))
		perUsers[i] = append(perUsers[i], r)
	}
	perOrders := make([][][]any, len(cl.Shards))
	for _, r := range orders {
		i := shardOf(r[1].(int64))
		perOrders[i] = append(perOrders[i], r)
	}
	for i, s := range cl.Shards {
		c := mustConnect(t, ctx, s.SuperDSN("postgres"))
		if _, err := c.Exec(ctx, difftest.Schema); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CopyFrom(ctx, pgx.Identifier{"users"}, []string{"id", "name", "email", "country", "score", "active", "created_at"}, pgx.CopyFromRows(perUsers[i])); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CopyFrom(ctx, pgx.Identifier{"orders"}, []string{"id", "user_id", "amount", "quantity", "status", "note", "created_at"}, pgx.CopyFromRows(perOrders[i])); err != nil {
			t.Fatal(err)
		}
	}
}
