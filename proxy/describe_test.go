package proxy_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/netfault"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
)

// serverConns reads pgshard_server_connections{state} of the pool of the
// server at addr (-1 when there is no such pool).
func serverConns(t *testing.T, p *testProxy, state, addr string) int {
	t.Helper()
	v := poolMetric(t, p, "pgshard_server_connections", addr, `state="`+state+`"`)
	if v == "" {
		return -1
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("pgshard_server_connections{state=%q, server=%q} = %q: %v", state, addr, v, err)
	}
	return n
}

// waitServersUp waits until the proxy's health checks report n servers up.
func waitServersUp(t *testing.T, p *testProxy, n int) {
	t.Helper()
	waitFor(t, func() bool {
		up := 0
		for _, st := range p.srv.Health() {
			if st.Up {
				up++
			}
		}
		return up == n
	})
}

// freshInsert connects a new pgx session (its first statement is Parse,
// Describe and Sync, then Bind) and inserts row k, within limit; it
// returns how long that took.
func freshInsert(t *testing.T, p *testProxy, k int, limit time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctxT(t), limit+5*time.Second)
	defer cancel()
	start := time.Now()
	conn, err := pgx.Connect(ctx, p.dsn(""))
	if err != nil {
		t.Fatalf("connect: %v (after %s)", err, time.Since(start).Round(time.Millisecond))
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'fresh')`, k); err != nil {
		t.Fatalf("insert k=%d: %v (after %s)", k, err, time.Since(start).Round(time.Millisecond))
	}
	took := time.Since(start)
	if took > limit {
		t.Fatalf("a new session took %s to connect and insert k=%d, want under %s", took.Round(time.Millisecond), k, limit)
	}
	return took
}

// TestNewSessionAfterDefaultPrimaryRetired: the default shard's primary
// is down (stopped, or its packets dropped) and a failover's fence step
// has retired its pool, taking the ParameterStatus values new clients
// were greeted with. A new client is greeted at once all the same (from
// a healthy server) and writes to the other shard; a bad database still
// gets the server's own error.
func TestNewSessionAfterDefaultPrimaryRetired(t *testing.T) {
	for _, how := range []string{"stopped", "blackholed"} {
		t.Run(how, func(t *testing.T) {
			c, cfg, p, s1 := faultyKVShards(t, how)
			ctx := ctxT(t)
			freshInsert(t, p, 1, 5*time.Second) // greeted by s0, whose pool keeps its parameters
			takeDown(t, ctx, p, "s0", c.Shards[0], how)
			m := readMap(t, cfg.ShardMapFile)
			m.Epoch = 2
			m.Shards[0].Switch = &shardmap.Switch{Kind: shardmap.Failover, From: m.Shards[0].Primary, Step: "fence"}
			if ok, err := p.srv.ApplyMap(m); !ok || err != nil {
				t.Fatalf("apply the fence map: %v %v", ok, err)
			}
			if n := serverConns(t, p, "open", c.Shards[0].Addr()); n > 0 {
				t.Fatalf("%d connections to s0's primary after the fence step", n)
			}
			took := freshInsert(t, p, 150, time.Second)
			t.Logf("with s0's primary %s and its pool retired, a new session connected and wrote to s1 in %s", how, took.Round(time.Millisecond))
			if !rowOn(t, s1, 150) {
				t.Fatal("row 150 is not on s1")
			}
			_, err := pgx.Connect(ctx, strings.Replace(p.dsn(""), "/postgres?", "/nosuchdb?", 1))
			if code := pgCode(err); code != "3D000" {
				t.Fatalf("connect to a database that does not exist: %v, want 3D000", err)
			}
		})
	}
}

// TestDescribeResentWhenServerSilent: a new session's describe (Parse,
// Describe, Sync before any Bind) goes to the default shard's primary,
// which has just been cut off (its packets dropped; the health monitor
// has not probed it since). Without an answer within a short time the
// describe is sent to the other shard, and the session writes there at
// once; the silent connection stays out of the pool until the
// acknowledgement watchdog resets it.
func TestDescribeResentWhenServerSilent(t *testing.T) {
	netfault.Require(t)
	t.Cleanup(func() { waitGoroutinesGone(t, "pgconn.(*PgConn).CancelRequest", 30*time.Second) })
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.HealthInterval = proxy.Duration(time.Minute) // one probe each, at the start
	cfg.Backend.AckTimeout = proxy.Duration(time.Second)
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	s1 := connect(t, c.Shards[1].SuperDSN("postgres"))
	createKV(t, ctx, c.Shards)
	waitServersUp(t, p, 2)
	freshInsert(t, p, 1, 5*time.Second) // leaves an idle connection to s0
	s0 := c.Shards[0].Addr()
	testutil.WaitFor(t, 5*time.Second, "one idle connection to s0", func() (bool, string) {
		n := serverConns(t, p, "idle", s0)
		return n == 1, fmt.Sprintf("%d idle connections to s0, want 1", n)
	})
	netfault.Blackhole(t, c.Shards[0].Port)
	took := freshInsert(t, p, 150, time.Second)
	t.Logf("s0 silent: a new session wrote to s1 in %s", took.Round(time.Millisecond))
	if !rowOn(t, s1, 150) {
		t.Fatal("row 150 is not on s1")
	}
	if n := serverConns(t, p, "idle", s0); n != 0 {
		t.Fatalf("%d idle connections to s0: the silent one went back to the pool", n)
	}
	pollFor(t, 10*time.Second, "the silent connection is reset", func() bool {
		return poolMetric(t, p, "pgshard_server_stalls_total", s0) == "1" && serverConns(t, p, "open", s0) == 0
	})
}

// TestDescribeWaitingOnLockResent: a describe that waits on a lock (DDL
// holds the table on the default shard) is answered by the other shard
// after a short time, and the session writes there at once; the first
// connection goes back to the pool when its answer comes — whether the
// statement was prepared there or failed (the DDL dropped the table) —
// and the next session on that shard uses it.
func TestDescribeWaitingOnLockResent(t *testing.T) {
	for _, ddl := range []string{`LOCK TABLE kv IN ACCESS EXCLUSIVE MODE`, `DROP TABLE kv`} {
		t.Run(strings.Fields(ddl)[0], func(t *testing.T) {
			p, direct, _ := kvShardsTr(t)
			ctx := ctxT(t)
			freshInsert(t, p, 1, 5*time.Second)
			s0 := direct[0].PgConn().Conn().RemoteAddr().String()
			// The connection goes back to the pool just after the client
			// has the insert's answer: wait for it.
			testutil.WaitFor(t, 5*time.Second, "one idle connection to s0", func() (bool, string) {
				n := serverConns(t, p, "idle", s0)
				return n == 1, fmt.Sprintf("%d idle connections to s0 (%s), want 1", n, s0)
			})
			tx, err := direct[0].Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, ddl); err != nil {
				t.Fatal(err)
			}
			took := freshInsert(t, p, 150, 1500*time.Millisecond)
			t.Logf("%s on s0: a new session wrote to s1 in %s", ddl, took.Round(time.Millisecond))
			if !rowOn(t, direct[1], 150) {
				t.Fatal("row 150 is not on s1")
			}
			if n := serverConns(t, p, "open", s0); n != 1 || serverConns(t, p, "idle", s0) != 0 {
				t.Fatalf("s0's pool: %d open, %d idle; want the waiting connection open and not idle", n, serverConns(t, p, "idle", s0))
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			pollFor(t, 10*time.Second, "the connection that waited goes back to the pool", func() bool {
				return serverConns(t, p, "idle", s0) == 1
			})
			if strings.HasPrefix(ddl, "DROP") {
				if _, err := direct[0].Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text)`); err != nil {
					t.Fatal(err)
				}
			}
			freshInsert(t, p, 2, 5*time.Second)
			if !rowOn(t, direct[0], 2) {
				t.Fatal("row 2 is not on s0")
			}
			// (More than one connection may be open: on a loaded machine
			// this describe too may be sent elsewhere after 300 ms.)
			if v := poolMetric(t, p, "pgshard_server_discards_total", s0); v != "0" {
				t.Fatalf("%s connections to s0 discarded, want none", v)
			}
		})
	}
}

// TestDescribeInFlightAtAbort: a new session's describe waits on the
// default shard's primary (a lock) when a failover's fence step aborts
// the connections to that server: nothing ran, so the session does not
// get 08006 — the describe is answered by the other shard, where the
// session writes.
func TestDescribeInFlightAtAbort(t *testing.T) {
	var cfg *proxy.Config
	p, direct, _ := kvShardsTr(t, func(c *proxy.Config) {
		c.HealthInterval = proxy.Duration(50 * time.Millisecond)
		cfg = c
	})
	ctx := ctxT(t)
	waitServersUp(t, p, 2)
	freshInsert(t, p, 1, 5*time.Second)
	tx, err := direct[0].Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, `LOCK TABLE kv IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	done := make(chan result, 1)
	go func() {
		ictx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		start := time.Now()
		conn, err := pgx.Connect(ictx, p.dsn(""))
		if err == nil {
			_, err = conn.Exec(ictx, `INSERT INTO kv (k, v) VALUES ($1, 'fresh')`, 150)
			_ = conn.Close(context.Background())
		}
		done <- result{err, time.Since(start)}
	}()
	// The describe is on s0 when a session there waits for the lock (the
	// pool may hold more than one idle connection to s0: counting them
	// says nothing on a loaded machine).
	pollFor(t, 10*time.Second, "the describe is on s0", func() bool {
		c, err := pgx.Connect(ctx, direct[0].Config().ConnString())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		var n int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO kv%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	m := readMap(t, cfg.ShardMapFile)
	m.Epoch = 2
	m.Shards[0].Switch = &shardmap.Switch{Kind: shardmap.Failover, From: m.Shards[0].Primary, Step: "fence"}
	if ok, err := p.srv.ApplyMap(m); !ok || err != nil {
		t.Fatalf("apply the fence map: %v %v", ok, err)
	}
	r := await(t, done, 10*time.Second, "the new session")
	if r.err != nil {
		t.Fatalf("a new session whose describe was in flight at the abort: %v", r.err)
	}
	t.Logf("describe in flight at the abort: the session wrote to s1 in %s", r.took.Round(time.Millisecond))
	if !rowOn(t, direct[1], 150) {
		t.Fatal("row 150 is not on s1")
	}
}
