package pgshardtest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration/pgshardtest"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap/metarpc"
	"github.com/pgshard/pgshard/wire"
)

// Hash-sharded, colocated tables over three shards, created with Schema,
// written by a second user: every row is on the shard ShardFor names (and
// the proxy routes by), an order lives with its user, Settings reach the
// servers and ProxyConfig the proxy, and the meta API holds the map and
// sees the proxy.
func TestHashShardedUsersAndMeta(t *testing.T) {
	c := pgshardtest.Start(t,
		pgshardtest.Shards(3),
		pgshardtest.HashSharded(pgshardtest.Table{Name: "users", Key: "id"}, pgshardtest.Table{Name: "public.orders", Key: "user_id"}),
		pgshardtest.Users(pgshardtest.User{Name: "alice", Password: "a-secret"}, pgshardtest.User{Name: "bob", Password: "b-secret"}),
		pgshardtest.Schema("CREATE TABLE users (id bigint PRIMARY KEY)", "CREATE TABLE orders (user_id bigint, n int)"),
		pgshardtest.Settings(map[string]string{"work_mem": "7MB"}),
		pgshardtest.ProxyConfig(func(c *proxy.Config) { c.BroadcastWrites = "allow" }))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if len(c.Shards) != 3 || len(c.Shards[0].Replicas) != 0 {
		t.Fatalf("shards: %+v", c.Shards)
	}

	db, err := pgx.Connect(ctx, c.UserDSN("bob"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	const users = 30
	want := map[string]int{}
	for id := range int64(users) {
		if _, err := db.Exec(ctx, "INSERT INTO users VALUES ($1)", id); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(ctx, "INSERT INTO orders VALUES ($1, 1)", id); err != nil {
			t.Fatal(err)
		}
		s, err := c.ShardFor("users", id)
		if err != nil {
			t.Fatal(err)
		}
		want[s.Name]++
	}
	// ProxyConfig: an UPDATE without a key condition runs on every shard
	// (refused with 0A000 by default).
	if _, err := db.Exec(ctx, "UPDATE orders SET n = 2"); err != nil {
		t.Fatalf("UPDATE on every shard: %v", err)
	}
	for _, s := range c.Shards {
		if want[s.Name] == 0 {
			t.Errorf("no key of 0..%d hashes to %s", users-1, s.Name)
		}
		conn, err := pgx.Connect(ctx, s.Primary)
		if err != nil {
			t.Fatal(err)
		}
		var n, misplaced, orphans, unchanged int
		var workMem string
		err = conn.QueryRow(ctx, "SELECT count(*), current_setting('work_mem'), (SELECT count(*) FROM orders WHERE n <> 2) FROM users").Scan(&n, &workMem, &unchanged)
		for _, id := range collectIDs(t, ctx, conn, "SELECT id FROM users") {
			if s2, _ := c.ShardFor("users", id); s2.Name != s.Name {
				misplaced++
			}
		}
		if err == nil {
			err = conn.QueryRow(ctx, "SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT FROM users u WHERE u.id = o.user_id)").Scan(&orphans)
		}
		conn.Close(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n != want[s.Name] || misplaced != 0 || orphans != 0 {
			t.Errorf("%s holds %d users (want %d), %d of them belong elsewhere, %d orders without their user", s.Name, n, want[s.Name], misplaced, orphans)
		}
		if workMem != "7MB" || unchanged != 0 {
			t.Errorf("%s: work_mem %s (want 7MB from Settings), %d orders the UPDATE missed", s.Name, workMem, unchanged)
		}
	}

	// Only the configured users and passwords log in.
	if conn, err := pgx.Connect(ctx, c.UserDSN("alice")); err != nil {
		t.Errorf("alice: %v", err)
	} else {
		conn.Close(context.Background())
	}
	var pgErr *pgconn.PgError
	bad := pgshardtest.User{Name: "alice", Password: "wrong"}
	if _, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", bad.Name, bad.Password, c.ProxyAddr)); !errors.As(err, &pgErr) || pgErr.Code != wire.SQLStateInvalidPassword {
		t.Errorf("a wrong password: %v, want SQLSTATE %s", err, wire.SQLStateInvalidPassword)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("UserDSN of an unknown user did not panic")
			}
		}()
		c.UserDSN("app")
	}()

	// The meta member serves the map the proxy follows.
	mc, err := metarpc.NewClient([]string{c.MetaAddr}, metarpc.ClientOptions{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	mv, err := mc.GetMap(ctx)
	if err != nil || mv.Epoch != 1 || mv.Map == nil || len(mv.Map.Shards) != 3 || mv.Map.Table("public.orders") == nil {
		t.Errorf("meta's map: epoch %d, %+v, %v", mv.Epoch, mv.Map, err)
	}
	ps, err := mc.ListProxies(ctx)
	if err != nil || len(ps) != 1 || ps[0].Address != c.ProxyAddr || ps[0].AppliedEpoch != 1 {
		t.Errorf("meta's proxies: %+v, %v; want the proxy at %s on epoch 1", ps, err, c.ProxyAddr)
	}
}

// When the test that started a cluster ends, nothing of it is left: no
// server runs, its addresses refuse connections, the servers' data is
// gone. Before, the replicas serve the Schema.
func TestCleanupStopsEverything(t *testing.T) {
	var addrs []string
	var root string // the harness directory holding the servers' data
	t.Run("cluster", func(t *testing.T) {
		c := pgshardtest.Start(t, pgshardtest.Shards(2), pgshardtest.Replicas(1),
			pgshardtest.Schema("CREATE TABLE t (id bigint)"))
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		for _, s := range c.Shards {
			if len(s.Replicas) != 1 || len(s.ReplicaAddrs) != 1 {
				t.Fatalf("%s: replicas %v", s.Name, s.Replicas)
			}
			conn, err := pgx.Connect(ctx, s.Replicas[0])
			if err != nil {
				t.Fatal(err)
			}
			var recovery bool
			var table *string
			err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), to_regclass('public.t')::text").Scan(&recovery, &table)
			conn.Close(context.Background())
			if err != nil || !recovery || table == nil {
				t.Errorf("replica of %s: in recovery %v, table t %v, %v", s.Name, recovery, table, err)
			}
			addrs = append(addrs, s.PrimaryAddr, s.ReplicaAddrs[0])
		}
		addrs = append(addrs, c.ProxyAddr, c.MetaAddr)
		var err error
		if root, err = pgcluster.RootDir(); err != nil {
			t.Fatal(err)
		}
	})
	if t.Failed() {
		return
	}
	pids, err := pgcluster.Running()
	if err != nil || len(pids) != 0 {
		t.Errorf("servers still running after the test: pids %v (%v)", pids, err)
	}
	for _, a := range addrs {
		if conn, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after the test", a)
		}
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		entries, _ := os.ReadDir(root)
		t.Errorf("the servers' directory %s remains after the test (stat: %v; holds %v)", root, err, entries)
	}
}

func collectIDs(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string) []int64 {
	t.Helper()
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}
