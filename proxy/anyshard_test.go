package proxy_test

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/netfault"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/proxy"
)

// kvShardsTr starts two shards with table kv (k < 100 on s0, the default
// shard; the rest on s1) behind a proxy routing by the map, with a trust
// user "tr" for raw sessions.
func kvShardsTr(t *testing.T, adjust ...func(*proxy.Config)) (*testProxy, [2]*pgx.Conn, [2]int) {
	t.Helper()
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.Users = append(cfg.Users, proxy.UserConfig{Name: "tr", Auth: "trust"})
	for _, f := range adjust {
		f(cfg)
	}
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	var direct [2]*pgx.Conn
	var ports [2]int
	for i, srv := range c.Shards {
		direct[i] = connect(t, srv.SuperDSN("postgres"))
		if _, err := direct[i].Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text)`); err != nil {
			t.Fatal(err)
		}
		ports[i] = srv.Port
	}
	return p, direct, ports
}

// rowOn reports whether kv has row k on the server c is connected to.
func rowOn(t *testing.T, c *pgx.Conn, k int) bool {
	t.Helper()
	var n int
	if err := c.QueryRow(ctxT(t), `SELECT count(*) FROM kv WHERE k = $1`, k).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// TestDescribeAvoidsUnreachableDefaultShard: a new pgx session's first
// statement is Parse, Describe and Sync with no Bind; with the default
// shard's primary down (stopped, or its packets dropped), the statement
// is described by a healthy server and a write for the other shard goes
// through at once.
func TestDescribeAvoidsUnreachableDefaultShard(t *testing.T) {
	for _, how := range []string{"stopped", "blackholed"} {
		t.Run(how, func(t *testing.T) {
			c, _, p, s1 := faultyKVShards(t, how)
			ctx := ctxT(t)
			// The proxy has served the default shard before (it holds an
			// idle connection to it, and its parameters for new clients).
			warm := connect(t, p.dsn(""))
			if _, err := warm.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'before')`, 1); err != nil {
				t.Fatal(err)
			}
			takeDown(t, ctx, p, "s0", c.Shards[0], how)

			qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			start := time.Now()
			conn, err := pgx.Connect(qctx, p.dsn("")) // QueryExecModeCacheStatement
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = conn.Close(context.Background()) }()
			if _, err := conn.Exec(qctx, `INSERT INTO kv (k, v) VALUES ($1, $2)`, 150, "while s0 is down"); err != nil {
				t.Fatalf("insert for s1 with s0 down: %v (after %v)", err, time.Since(start))
			}
			var v string
			if err := conn.QueryRow(qctx, `SELECT v FROM kv WHERE k = $1`, 150).Scan(&v); err != nil || v != "while s0 is down" {
				t.Fatalf("read back from s1: %q %v", v, err)
			}
			// Described only (no Bind): any shard answers, with the
			// server's own parameter and row descriptions.
			sd, err := conn.Prepare(qctx, "plus", `SELECT $1::int + 1 AS n, now() AS t`)
			if err != nil {
				t.Fatalf("prepare a statement without a table: %v", err)
			}
			if len(sd.ParamOIDs) != 1 || sd.ParamOIDs[0] != 23 || len(sd.Fields) != 2 || sd.Fields[0].Name != "n" ||
				sd.Fields[0].DataTypeOID != 23 || sd.Fields[1].DataTypeOID != 1184 {
				t.Fatalf("description: params %v fields %+v", sd.ParamOIDs, sd.Fields)
			}
			took := time.Since(start)
			if took > 2*time.Second {
				t.Fatalf("the session took %v", took)
			}
			t.Logf("connect, insert, read and describe with s0 %s: %v", how, took)
			if !rowOn(t, s1, 150) {
				t.Fatal("row 150 is not on s1")
			}
		})
	}
}

// faultyKVShards starts two shards with table kv and a proxy that routes
// kv by key and probes every 50 ms, readied for takeDown(..., how); it
// returns the cluster, the proxy's configuration, the proxy and a direct
// connection to the second shard.
func faultyKVShards(t *testing.T, how string) (*pgcluster.Cluster, *proxy.Config, *testProxy, *pgx.Conn) {
	t.Helper()
	prepareFault(t, how)
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.HealthInterval = proxy.Duration(50 * time.Millisecond)
	p := startProxy(t, cfg)
	s1 := connect(t, c.Shards[1].SuperDSN("postgres"))
	createKV(t, ctxT(t), c.Shards)
	return c, cfg, p, s1
}

// prepareFault readies a test for takeDown(..., how): a "blackholed"
// server needs netfault and, last of all, waits for pgconn's cancel
// requests towards the dropped port (a timed-out health probe), which end
// once the rules are gone.
func prepareFault(t *testing.T, how string) {
	t.Helper()
	if how == "blackholed" {
		netfault.Require(t)
		t.Cleanup(func() { waitGoroutinesGone(t, "pgconn.(*PgConn).CancelRequest", 30*time.Second) })
	}
}

// takeDown stops srv, the primary of shard, or drops its packets (how:
// "stopped" or "blackholed"), and waits until the proxy's health checks
// see it down.
func takeDown(t *testing.T, ctx context.Context, p *testProxy, shard string, srv *pgcluster.Server, how string) {
	t.Helper()
	if how == "stopped" {
		if err := srv.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	} else {
		netfault.Blackhole(t, srv.Port)
	}
	waitFor(t, func() bool {
		for _, st := range p.srv.Health() {
			if st.Shard == shard && st.Role == "primary" {
				return !st.Up && !st.LastProbe.IsZero()
			}
		}
		return false
	})
}

// waitGoroutinesGone waits until no goroutine's stack mentions fn.
func waitGoroutinesGone(t *testing.T, fn string, limit time.Duration) {
	t.Helper()
	buf := make([]byte, 1<<20)
	if ok, _ := testutil.Poll(limit, func() (bool, string) {
		n := runtime.Stack(buf, true)
		return !bytes.Contains(buf[:n], []byte(fn)), ""
	}); !ok {
		t.Errorf("goroutines in %s still run after %v", fn, limit)
	}
}

// TestTablelessStatementsFollowTransaction: inside a transaction on a
// shard other than the default, statements that name no table of the
// map (SELECT 1, now(), catalog queries, NOTIFY) run on the
// transaction's shard, in both protocols; outside a transaction they
// still go to the default shard.
func TestTablelessStatementsFollowTransaction(t *testing.T) {
	p, direct, ports := kvShardsTr(t)
	for i, mode := range []string{"simple_protocol", "cache_statement"} {
		t.Run(mode, func(t *testing.T) {
			ctx := ctxT(t)
			c := connect(t, p.dsn("default_query_exec_mode="+mode))
			k := 150 + i
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'x')`, k); err != nil {
				t.Fatal(err)
			}
			for _, q := range []string{`SELECT 1`, `SELECT now()`, `SELECT count(*) FROM pg_catalog.pg_class`,
				`SELECT 1; SELECT 2`, `NOTIFY pgshard_test`} {
				if mode != "simple_protocol" && strings.Contains(q, ";") {
					continue // one statement per Parse
				}
				if _, err := tx.Exec(ctx, q); err != nil {
					t.Fatalf("%s in a transaction on s1: %v", q, err)
				}
			}
			var port int
			if err := tx.QueryRow(ctx, `SELECT inet_server_port()`).Scan(&port); err != nil || port != ports[1] {
				t.Fatalf("SELECT inet_server_port() in the transaction: %d %v, want s1's %d", port, err, ports[1])
			}
			// The statement ran in the transaction itself: it sees the
			// uncommitted row.
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM kv WHERE k = $1`, k).Scan(&n); err != nil || n != 1 {
				t.Fatalf("own row: %d %v", n, err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if !rowOn(t, direct[1], k) || rowOn(t, direct[0], k) {
				t.Fatalf("row %d not (only) on s1", k)
			}
			if err := c.QueryRow(ctx, `SELECT inet_server_port()`).Scan(&port); err != nil || port != ports[0] {
				t.Fatalf("SELECT inet_server_port() outside a transaction: %d %v, want the default shard's %d", port, err, ports[0])
			}
			// A statement on a table of the map for another shard is
			// still refused.
			tx, err = c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			if _, err := tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'x')`, k+10); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `SELECT * FROM kv WHERE k = $1`, 5); pgCode(err) != "0A000" {
				t.Fatalf("statement for s0 in a transaction on s1: want 0A000, got %v", err)
			}
		})
	}
}

// TestDescribeOnReplicaWhenPrimaryDown: with the only shard's primary
// down, a statement is still described (Parse, Describe, Sync) by one of
// its replicas, with the server's own descriptions, also inside a
// transaction the proxy has not sent yet; whatever runs still needs the
// primary.
func TestDescribeOnReplicaWhenPrimaryDown(t *testing.T) {
	rs := startReplicaSetup(t, proxy.ReadConfig{ReadFrom: proxy.ReadFromPrimary})
	ctx := ctxT(t)
	warm := connect(t, rs.proxy.dsn(""))
	if p := runPort(t, warm, "SELECT inet_server_port() FROM kv WHERE k = $1", 1); p != rs.primary {
		t.Fatalf("read ran on %d, want the primary %d", p, rs.primary)
	}
	if err := rs.pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		for _, st := range rs.proxy.srv.Health() {
			if st.Role == "primary" {
				return !st.Up && !st.LastProbe.IsZero()
			}
		}
		return false
	})
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c := connect(t, rs.proxy.dsn(""))
	check := func(name string) {
		t.Helper()
		sd, err := c.Prepare(qctx, name, `SELECT v, k FROM kv WHERE k = $1`)
		if err != nil {
			t.Fatalf("describe with the primary down: %v", err)
		}
		if len(sd.ParamOIDs) != 1 || sd.ParamOIDs[0] != 20 || len(sd.Fields) != 2 || sd.Fields[0].Name != "v" ||
			sd.Fields[0].DataTypeOID != 25 || sd.Fields[1].DataTypeOID != 20 {
			t.Fatalf("description: params %v fields %+v", sd.ParamOIDs, sd.Fields)
		}
	}
	check("outside")
	tx, err := c.Begin(qctx)
	if err != nil {
		t.Fatal(err)
	}
	check("inside")
	// The write itself needs the primary: it fails, it is not run on a
	// replica.
	if _, err := tx.Exec(qctx, `UPDATE kv SET v = 'x' WHERE k = $1`, 1); pgCode(err) != "08006" {
		t.Fatalf("write with the primary down: want 08006, got %v", err)
	}
}
