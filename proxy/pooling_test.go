package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/proxy"
)

func backendPID(t *testing.T, ctx context.Context, c *pgx.Conn) int32 {
	t.Helper()
	var pid int32
	if err := c.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// holdBackend makes c hold one backend in an open transaction and returns
// a function that ends it.
func holdBackend(t *testing.T, ctx context.Context, c *pgx.Conn) (pid int32, release func()) {
	t.Helper()
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid, func() { _ = tx.Rollback(ctx) }
}

// TestPreparedStatementsAcrossBackends checks that statements a client
// prepared on one backend work when it is lent another (pgx's statement
// cache, named and unnamed statements).
func TestPreparedStatementsAcrossBackends(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Pool.Size = 2
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	for _, mode := range []string{"cache_statement", "cache_describe", "describe_exec"} {
		t.Run(mode, func(t *testing.T) {
			a := connect(t, p.dsn("default_query_exec_mode="+mode))
			b := connect(t, p.dsn(""))
			const q = `SELECT $1::int + 1, pg_backend_pid()`
			var v, pid1, pid2 int32
			if err := a.QueryRow(ctx, q, 1).Scan(&v, &pid1); err != nil || v != 2 {
				t.Fatalf("first run: %v %v", v, err)
			}
			// b holds pid1's backend, so a must get the other one.
			held, release := holdBackendPID(t, ctx, b, pid1)
			if held != pid1 {
				t.Skipf("b got backend %d, not %d; cannot force a switch", held, pid1)
			}
			for i := 0; i < 3; i++ {
				if err := a.QueryRow(ctx, q, 10+i).Scan(&v, &pid2); err != nil {
					t.Fatalf("after switch: %v", err)
				}
				if v != int32(11+i) {
					t.Fatalf("got %d", v)
				}
			}
			if pid2 == pid1 {
				t.Fatalf("expected a different backend than %d", pid1)
			}
			release()
			// And back again to the first backend, which has it already.
			held2, release2 := holdBackendPID(t, ctx, b, pid2)
			defer release2()
			if held2 != pid2 {
				t.Skip("could not hold the second backend")
			}
			if err := a.QueryRow(ctx, q, 100).Scan(&v, &pid1); err != nil || v != 101 {
				t.Fatalf("back on the first backend: %v %v", v, err)
			}
		})
	}
}

// holdBackendPID starts transactions on c until it holds backend want
// (the pool is LIFO, so the first try usually gets it).
func holdBackendPID(t *testing.T, ctx context.Context, c *pgx.Conn, want int32) (int32, func()) {
	t.Helper()
	for i := 0; i < 10; i++ {
		pid, release := holdBackend(t, ctx, c)
		if pid == want {
			return pid, release
		}
		release()
	}
	return 0, func() {}
}

// TestExplicitPrepareCloseReuse prepares, deallocates and re-prepares
// named statements through pgconn, across backends.
func TestExplicitPrepareCloseReuse(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Pool.Size = 3
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	a := connect(t, p.dsn(""))
	pc := a.PgConn()
	if _, err := pc.Prepare(ctx, "s1", `SELECT $1::text || 'x'`, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Prepare(ctx, "s2", `SELECT $1::text || 'x'`, nil); err != nil {
		t.Fatal(err) // same text under a second name
	}
	run := func(name, arg, want string) {
		t.Helper()
		res := pc.ExecPrepared(ctx, name, [][]byte{[]byte(arg)}, nil, nil).Read()
		if res.Err != nil {
			t.Fatalf("exec %s: %v", name, res.Err)
		}
		if got := string(res.Rows[0][0]); got != want {
			t.Fatalf("exec %s: got %q want %q", name, got, want)
		}
	}
	run("s1", "a", "ax")
	run("s2", "b", "bx")
	if err := pc.Deallocate(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	run("s2", "c", "cx") // s2 survives s1's deallocation
	res := pc.ExecPrepared(ctx, "s1", [][]byte{[]byte("z")}, nil, nil).Read()
	var pgErr *pgconn.PgError
	if !errors.As(res.Err, &pgErr) || pgErr.Code != "26000" {
		t.Fatalf("deallocated statement: want 26000, got %v", res.Err)
	}
	if _, err := pc.Prepare(ctx, "s1", `SELECT $1::text || 'y'`, nil); err != nil {
		t.Fatal(err)
	}
	run("s1", "d", "dy")
	// Many clients with the same statement text share backend statements.
	for i := 0; i < 5; i++ {
		c := connect(t, p.dsn(""))
		var s string
		if err := c.QueryRow(ctx, `SELECT $1::text || 'x'`, "q").Scan(&s); err != nil || s != "qx" {
			t.Fatalf("client %d: %q %v", i, s, err)
		}
	}
	// A failing Parse does not leave a phantom statement behind.
	if _, err := pc.Prepare(ctx, "bad", `SELEC 1`, nil); err == nil {
		t.Fatal("expected a syntax error")
	}
	if _, err := pc.Prepare(ctx, "bad", `SELECT 1`, nil); err != nil {
		t.Fatalf("re-prepare after failure: %v", err)
	}
	if res := pc.ExecPrepared(ctx, "bad", nil, nil, nil).Read(); res.Err != nil || string(res.Rows[0][0]) != "1" {
		t.Fatalf("exec after failed parse: %v", res.Err)
	}
}

// TestSessionParametersFollowClient checks SET values are replayed when a
// client is lent another backend, and never leak to other clients.
func TestSessionParametersFollowClient(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Pool.Size = 2
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	a := connect(t, p.dsn("application_name=client-a"))
	b := connect(t, p.dsn(""))
	if _, err := a.Exec(ctx, `SET statement_timeout = '4321ms'`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, `SET search_path TO pg_catalog, public`); err != nil {
		t.Fatal(err)
	}
	// Rolled-back SET inside a transaction does not count.
	tx, _ := a.Begin(ctx)
	if _, err := tx.Exec(ctx, `SET work_mem = '7MB'`); err != nil {
		t.Fatal(err)
	}
	_ = tx.Rollback(ctx)
	pidA := backendPID(t, ctx, a)
	_, release := holdBackendPID(t, ctx, b, pidA)
	check := func(c *pgx.Conn, want map[string]string) {
		t.Helper()
		for k, v := range want {
			var got string
			if err := c.QueryRow(ctx, "SELECT current_setting('"+k+"')").Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
	}
	if pid := backendPID(t, ctx, a); pid == pidA {
		t.Fatal("a should be on another backend now")
	}
	check(a, map[string]string{"statement_timeout": "4321ms", "search_path": "pg_catalog, public", "application_name": "client-a", "work_mem": "4MB"})
	release()
	// b takes a's first backend: it must see server defaults.
	c := connect(t, p.dsn(""))
	for i := 0; i < 3; i++ {
		check(b, map[string]string{"statement_timeout": "0", "search_path": `"$user", public`, "application_name": ""})
		check(c, map[string]string{"statement_timeout": "0", "application_name": ""})
	}
	// RESET brings a back to its startup values.
	if _, err := a.Exec(ctx, `RESET statement_timeout`); err != nil {
		t.Fatal(err)
	}
	check(a, map[string]string{"statement_timeout": "0", "application_name": "client-a"})
	// The server's ParameterStatus reaches the client.
	if _, err := a.Exec(ctx, `SET application_name = 'renamed'`); err != nil {
		t.Fatal(err)
	}
	if got := a.PgConn().ParameterStatus("application_name"); got != "renamed" {
		t.Fatalf("ParameterStatus application_name = %q", got)
	}
}

// TestPinnedSessionState checks that state which cannot be replayed keeps
// the client on its backend in transaction mode.
func TestPinnedSessionState(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Pool.Size = 3
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	a := connect(t, p.dsn(""))
	b := connect(t, p.dsn(""))
	if _, err := a.Exec(ctx, `CREATE TEMP TABLE scratch (v int)`); err != nil {
		t.Fatal(err)
	}
	pid := backendPID(t, ctx, a)
	for i := 0; i < 5; i++ {
		// b keeps running; a must stay on its backend regardless.
		_ = backendPID(t, ctx, b)
		if _, err := a.Exec(ctx, `INSERT INTO scratch VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
		if got := backendPID(t, ctx, a); got != pid {
			t.Fatalf("pinned session moved from %d to %d", pid, got)
		}
	}
	var n int
	if err := a.QueryRow(ctx, `SELECT count(*) FROM scratch`).Scan(&n); err != nil || n != 5 {
		t.Fatalf("count %d %v", n, err)
	}
	// Session advisory locks and SQL PREPARE pin as well.
	if _, err := b.Exec(ctx, `PREPARE q AS SELECT 42`); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		var v int
		if err := b.QueryRow(ctx, `EXECUTE q`, pgx.QueryExecModeSimpleProtocol).Scan(&v); err != nil || v != 42 {
			t.Fatalf("EXECUTE q: %v %v", v, err)
		}
	}
	// After a pinned client leaves, its backend is reset before reuse.
	_ = a.Close(ctx)
	for i := 0; i < 3; i++ {
		c := connect(t, p.dsn(""))
		var exists bool
		if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'scratch' AND relpersistence = 't' AND pg_table_is_visible(oid))`).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists {
			t.Fatal("temporary table leaked to another client")
		}
	}
	body := scrape(t, p)
	if !strings.Contains(body, `pgshard_pinned_sessions_total{reason="temporary table"} 1`) {
		t.Errorf("pin metric missing:\n%s", grepLines(body, "pinned"))
	}
}

// TestPoolExhaustion checks 53300 after the wait timeout and recovery.
func TestPoolExhaustion(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Pool.Size = 1
	cfg.Pool.WaitTimeout = proxy.Duration(300 * time.Millisecond)
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	a := connect(t, p.dsn(""))
	b := connect(t, p.dsn(""))
	_, release := holdBackend(t, ctx, a)
	start := time.Now()
	_, err := b.Exec(ctx, `SELECT 1`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "53300" {
		t.Fatalf("want 53300, got %v", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Fatalf("waited %v, want about 300ms", d)
	}
	release()
	// b's session is still usable.
	var v int
	if err := b.QueryRow(ctx, `SELECT 7`).Scan(&v); err != nil || v != 7 {
		t.Fatalf("after release: %v %v", v, err)
	}
	// A waiter gets the backend as soon as it is released.
	_, release = holdBackend(t, ctx, a)
	done := make(chan error, 1)
	go func() { _, err := b.Exec(ctx, `SELECT 1`); done <- err }()
	pollFor(t, 10*time.Second, "b to wait for the server connection", func() bool {
		return poolMetric(t, p, "pgshard_pool_waiting_clients", pg.Addr()) == "1"
	})
	release()
	if err := <-done; err != nil {
		t.Fatalf("queued client: %v", err)
	}
}

// TestManyClientsFewServers runs 400 concurrent clients through a pool of
// 8 server connections and checks every result and the server side's
// connection count.
func TestManyClientsFewServers(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Pool.Size = 8
	cfg.Pool.WaitTimeout = proxy.Duration(30 * time.Second)
	// A trust user: 400 SCRAM handshakes (both sides, under the race
	// detector, on a busy machine) would measure PBKDF2, not pooling.
	cfg.Users = append(cfg.Users, proxy.UserConfig{Name: "tr", Auth: "trust"})
	p := startProxy(t, cfg)
	const clients, queries = 400, 5
	conns := make([]*pgx.Conn, clients)
	for i := range conns {
		conns[i] = connect(t, "postgres://tr@"+p.addr+"/postgres?sslmode=disable")
	}
	ctx := ctxT(t)
	errs := make(chan error, clients)
	for i, c := range conns {
		go func() {
			for q := 0; q < queries; q++ {
				var v int
				if err := c.QueryRow(ctx, `SELECT $1::int * 2`, i*100+q).Scan(&v); err != nil {
					errs <- err
					return
				}
				if v != (i*100+q)*2 {
					errs <- fmt.Errorf("client %d got %d", i, v)
					return
				}
			}
			errs <- nil
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	admin := connect(t, pg.SuperDSN("postgres"))
	if n := clientBackends(t, ctx, admin); n > 8 {
		t.Fatalf("%d server connections for a pool of 8", n)
	}
	body := scrape(t, p)
	if !strings.Contains(body, fmt.Sprintf("pgshard_client_connections %d", clients)) {
		t.Errorf("client gauge:\n%s", grepLines(body, "client_connections"))
	}
}

// TestClientLimits refuses clients beyond limits.max_client_conn and a
// user's max_client_conn with 53300.
func TestClientLimits(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Limits.MaxClientConn = 3
	cfg.Users[0].MaxClientConn = 2
	cfg.Users = append(cfg.Users, proxy.UserConfig{Name: "tr", Auth: "trust"})
	p := startProxy(t, cfg)
	_ = connect(t, p.dsn(""))
	_ = connect(t, p.dsn(""))
	if err := tryConnect(p.dsn("")); pgCode(err) != "53300" {
		t.Fatalf("third client of a user limited to 2: %v", err)
	}
	trURL := "postgres://tr@" + p.addr + "/postgres?sslmode=disable"
	c3 := connect(t, trURL)
	if err := tryConnect(trURL); pgCode(err) != "53300" {
		t.Fatalf("fourth client with max_client_conn 3: %v", err)
	}
	_ = c3.Close(context.Background())
	waitFor(t, func() bool { return tryConnect(trURL) == nil })
}

// TestIdleServerConnectionsClosed checks pool.idle_timeout.
func TestIdleServerConnectionsClosed(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Pool.IdleTimeout = proxy.Duration(500 * time.Millisecond)
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	c := connect(t, p.dsn(""))
	_ = backendPID(t, ctx, c)
	admin := connect(t, pg.SuperDSN("postgres"))
	if clientBackends(t, ctx, admin) == 0 {
		t.Fatal("expected a pooled server connection")
	}
	waitFor(t, func() bool { return clientBackends(t, ctx, admin) == 0 })
	var v int
	if err := c.QueryRow(ctx, `SELECT 3`).Scan(&v); err != nil || v != 3 {
		t.Fatalf("after idle close: %v %v", v, err)
	}
}

// TestExtendedSetFollowsClient: a SET sent through the extended protocol
// (JDBC's way) is replayed on other backends like a simple-protocol one,
// instead of pinning the session; a SET that fails does not count.
func TestExtendedSetFollowsClient(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Pool.Size = 2
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	a := connect(t, p.dsn(""))
	b := connect(t, p.dsn(""))
	ext := func(sql string) error {
		return a.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read().Err
	}
	if err := ext(`SET statement_timeout = '4321ms'`); err != nil {
		t.Fatal(err)
	}
	if err := ext(`SET statement_timeout = 'not a duration'`); err == nil {
		t.Fatal("an invalid SET succeeded")
	}
	pidA := backendPID(t, ctx, a)
	_, release := holdBackendPID(t, ctx, b, pidA)
	defer release()
	if pid := backendPID(t, ctx, a); pid == pidA {
		t.Fatal("the session stayed on its backend: the extended SET pinned it")
	}
	var got string
	if err := a.QueryRow(ctx, "SELECT current_setting('statement_timeout')").Scan(&got); err != nil || got != "4321ms" {
		t.Fatalf("statement_timeout on the new backend: %q %v", got, err)
	}
	if err := ext(`RESET statement_timeout`); err != nil {
		t.Fatal(err)
	}
	if err := a.QueryRow(ctx, "SELECT current_setting('statement_timeout')").Scan(&got); err != nil || got != "0" {
		t.Fatalf("after RESET: %q %v", got, err)
	}
}

// TestDeallocateProtocolStatement: DEALLOCATE of a statement the client
// prepared through the protocol (psycopg's way of evicting its cache)
// succeeds, frees the name for a new statement, and does not pin.
func TestDeallocateProtocolStatement(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, baseConfig(t, pg))
	ctx := ctxT(t)
	c := connect(t, p.dsn(""))
	pc := c.PgConn()
	if _, err := pc.Prepare(ctx, "Foo", "SELECT 1::int", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Exec(ctx, `DEALLOCATE "Foo"`).ReadAll(); err != nil {
		t.Fatalf("DEALLOCATE of a protocol-level statement: %v", err)
	}
	if _, err := pc.Prepare(ctx, "Foo", "SELECT 2::int", nil); err != nil {
		t.Fatalf("prepare the freed name again: %v", err)
	}
	res := pc.ExecPrepared(ctx, "Foo", nil, nil, nil).Read()
	if res.Err != nil || len(res.Rows) != 1 || string(res.Rows[0][0]) != "2" {
		t.Fatalf("the new statement: %v %q", res.Err, res.Rows)
	}
	// An unknown name is the server's business, as without pgshard.
	if _, err := pc.Exec(ctx, `DEALLOCATE nosuch`).ReadAll(); pgCode(err) != "26000" {
		t.Fatalf("DEALLOCATE of an unknown statement: %v, want 26000", err)
	}
}
