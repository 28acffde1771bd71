package proxy_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/wire/auth"
)

func superConn(t *testing.T, dsn string) *pgx.Conn { return connect(t, dsn) }

// TestBackendKilledMidTransaction terminates the server process under a
// client's open transaction: the client gets an error, other clients are
// unaffected and the pool recovers.
func TestBackendKilledMidTransaction(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Pool.Size = 2
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	admin := superConn(t, pg.SuperDSN("postgres"))
	a := connect(t, p.dsn(""))
	b := connect(t, p.dsn(""))
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int32
	if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, `SELECT 1`)
	if err == nil {
		t.Fatal("expected an error on a terminated backend")
	}
	if code := pgCode(err); code != "57P01" && code != "08006" && !strings.Contains(err.Error(), "closed") && !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("unexpected error: %v", err)
	}
	// b and new clients still work, also on many transactions.
	for i := 0; i < 10; i++ {
		if _, err := b.Exec(ctx, `SELECT 1`); err != nil {
			t.Fatalf("b: %v", err)
		}
		c := connect(t, p.dsn(""))
		if _, err := c.Exec(ctx, `SELECT 1`); err != nil {
			t.Fatalf("new client: %v", err)
		}
		_ = c.Close(ctx)
	}
	// An idle pooled backend that dies is dropped by its reader as soon
	// as the server's FATAL arrives, and never handed out afterwards.
	// (Between the server closing and the reader running there is a
	// scheduling window, as in any proxy; the test waits for the drop.)
	discards := func() string { return grepLines(scrape(t, p), "pgshard_server_discards_total{") }
	before := discards()
	idlePID := backendPID(t, ctx, b)
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, idlePID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return discards() != before })
	for i := 0; i < 5; i++ {
		if _, err := b.Exec(ctx, `SELECT 1`); err != nil {
			t.Fatalf("after idle backend death: %v", err)
		}
	}
}

// TestClientDisconnectMidQuery closes a client during a long query: the
// backend is not returned to the pool in that state, and the pool keeps
// serving.
func TestClientDisconnectMidQuery(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Pool.Size = 1
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	admin := superConn(t, pg.SuperDSN("postgres"))
	a := connect(t, p.dsn(""))
	go func() { _, _ = a.PgConn().Exec(context.Background(), `SELECT pg_sleep(30)`).ReadAll() }()
	waitFor(t, func() bool { return activeQueries(t, ctx, admin, "SELECT pg_sleep(30)") == 1 })
	_ = a.PgConn().Conn().Close() // vanish without Terminate
	b := connect(t, p.dsn(""))
	var v int
	if err := b.QueryRow(ctx, `SELECT 9`).Scan(&v); err != nil || v != 9 {
		t.Fatalf("next client: %v %v", v, err)
	}
	// The abandoned server session is gone (cancelled and closed).
	waitFor(t, func() bool { return activeQueries(t, ctx, admin, "SELECT pg_sleep(30)") == 0 })
}

// TestGracefulShutdown lets a transaction in flight finish, tells idle
// clients 57P01, and refuses new clients.
func TestGracefulShutdown(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	if err := cfg.Complete(); err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	p := &testProxy{srv: srv, addr: srv.Addr().String(), cfg: cfg}
	ctx := ctxT(t)
	busy := connect(t, p.dsn(""))
	idle := connect(t, p.dsn(""))
	if _, err := busy.Exec(ctx, `CREATE TABLE g (v int)`); err != nil {
		t.Fatal(err)
	}
	tx, err := busy.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO g VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	shutdownDone := make(chan error, 1)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { shutdownDone <- srv.Shutdown(sctx) }()
	// The idle client is told to go.
	waitFor(t, func() bool { return idle.PgConn().IsClosed() || idle.Ping(ctx) != nil })
	// New clients are refused.
	if err := tryConnect(p.dsn("connect_timeout=2")); err == nil {
		t.Fatal("new client accepted during shutdown")
	}
	// The transaction in flight can finish.
	if _, err := tx.Exec(ctx, `INSERT INTO g VALUES (2)`); err != nil {
		t.Fatalf("in-flight transaction: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit during shutdown: %v", err)
	}
	if err := <-shutdownDone; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	admin := superConn(t, pg.SuperDSN("postgres"))
	var n int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM g`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows after shutdown: %d %v", n, err)
	}
}

// TestReload adds a user and resizes pools without dropping clients.
func TestReload(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	a := connect(t, p.dsn(""))
	newURL := "postgres://late:late-pw@" + p.addr + "/postgres?sslmode=disable"
	if err := tryConnect(newURL); pgCode(err) != "28P01" {
		t.Fatalf("before reload: %v", err)
	}
	cfg2 := baseConfig(t, pg)
	v, _ := auth.NewSCRAMVerifier("late-pw", nil, 4096)
	cfg2.Users = append(cfg2.Users, proxy.UserConfig{Name: "late", Password: v.String()})
	cfg2.Pool.Size = 3
	cfg2.Listen = cfg.Listen
	if err := cfg2.Complete(); err != nil {
		t.Fatal(err)
	}
	if err := p.srv.Reload(cfg2); err != nil {
		t.Fatal(err)
	}
	if err := tryConnect(newURL); err != nil {
		t.Fatalf("after reload: %v", err)
	}
	if _, err := a.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatalf("existing client after reload: %v", err)
	}
	bad := baseConfig(t, pg)
	bad.Listen = cfg.Listen
	bad.Users[0].Password = "plaintext"
	if err := bad.Complete(); err == nil {
		t.Fatal("a plain-text password must be rejected")
	}
}

// rawStartup connects and sends a StartupMessage, returning the conn after
// reading the authentication request.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// readError reads backend messages until an ErrorResponse and returns it.
func readError(t *testing.T, c net.Conn) *pgproto3.ErrorResponse {
	t.Helper()
	fe := pgproto3.NewFrontend(c, c)
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("no ErrorResponse: %v", err)
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			return e
		}
	}
}

// trustedSession opens a raw authenticated session as a trust user.
func trustedSession(t *testing.T, addr string) (net.Conn, *pgproto3.Frontend) {
	c := rawConn(t, addr)
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "tr", "database": "postgres"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			return c, fe
		}
	}
}

// TestBadInput sends malformed traffic: each offender gets a fitting
// ErrorResponse and is disconnected; a bystander keeps working.
func TestBadInput(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Users = append(cfg.Users, proxy.UserConfig{Name: "tr", Auth: "trust"})
	cfg.Limits.StartupTimeout = proxy.Duration(500 * time.Millisecond)
	cfg.Limits.MaxMessageSize = 1 << 20
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	bystander := connect(t, p.dsn(""))
	startupWith := func(length uint32, code uint32) []byte {
		b := binary.BigEndian.AppendUint32(nil, length)
		return binary.BigEndian.AppendUint32(b, code)
	}
	t.Run("startup length 2^31", func(t *testing.T) {
		c := rawConn(t, p.addr)
		_, _ = c.Write(startupWith(1<<31, 196608))
		if e := readError(t, c); e.Code != "08P01" {
			t.Fatalf("code %s", e.Code)
		}
	})
	t.Run("protocol 2.0", func(t *testing.T) {
		c := rawConn(t, p.addr)
		const params = "user\x00tr\x00\x00"
		_, _ = c.Write(append(startupWith(8+uint32(len(params)), 2<<16), params...))
		if e := readError(t, c); e.Code != "0A000" {
			t.Fatalf("code %s", e.Code)
		}
	})
	t.Run("slow loris", func(t *testing.T) {
		c := rawConn(t, p.addr)
		_, _ = c.Write([]byte{0, 0})
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("connection not closed by the proxy: %v", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("closed after %v", d)
		}
	})
	t.Run("unknown message type", func(t *testing.T) {
		c, _ := trustedSession(t, p.addr)
		_, _ = c.Write([]byte{'!', 0, 0, 0, 4})
		if e := readError(t, c); e.Code != "08P01" || e.Severity != "FATAL" {
			t.Fatalf("got %s %s", e.Severity, e.Code)
		}
	})
	t.Run("message over the limit", func(t *testing.T) {
		c, _ := trustedSession(t, p.addr)
		_, _ = c.Write([]byte{'Q', 0x40, 0, 0, 0})
		if e := readError(t, c); e.Code != "54000" {
			t.Fatalf("got %s", e.Code)
		}
	})
	t.Run("length below 4", func(t *testing.T) {
		c, _ := trustedSession(t, p.addr)
		_, _ = c.Write([]byte{'Q', 0, 0, 0, 2})
		if e := readError(t, c); e.Code != "08P01" {
			t.Fatalf("got %s", e.Code)
		}
	})
	t.Run("truncated Parse", func(t *testing.T) {
		c, _ := trustedSession(t, p.addr)
		_, _ = c.Write([]byte{'P', 0, 0, 0, 7, 's', '1', 'x'})
		if e := readError(t, c); e.Code != "08P01" {
			t.Fatalf("got %s", e.Code)
		}
	})
	t.Run("malformed Bind keeps the session", func(t *testing.T) {
		// A Bind whose statement name is not terminated: PostgreSQL answers
		// ERROR 08P01, skips to the Sync and serves the next query.
		c, fe := trustedSession(t, p.addr)
		_, _ = c.Write([]byte{'B', 0, 0, 0, 7, 0, 's', '1', 'S', 0, 0, 0, 4})
		var got []string
		for len(got) == 0 || got[len(got)-1] != "Z" {
			m, err := fe.Receive()
			if err != nil {
				t.Fatalf("after %v: %v", got, err)
			}
			switch m := m.(type) {
			case *pgproto3.ErrorResponse:
				if m.Code != "08P01" || m.Severity != "ERROR" {
					t.Fatalf("got %s %s", m.Severity, m.Code)
				}
				got = append(got, "E")
			case *pgproto3.ReadyForQuery:
				got = append(got, "Z")
			}
		}
		if len(got) != 2 {
			t.Fatalf("messages %v, want [E Z]", got)
		}
		fe.Send(&pgproto3.Query{String: "SELECT 1"})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatalf("session not kept: %v", err)
			}
			if e, ok := m.(*pgproto3.ErrorResponse); ok {
				t.Fatalf("SELECT 1: %s %s", e.Code, e.Message)
			}
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
	})
	t.Run("disconnect mid-message", func(t *testing.T) {
		c, _ := trustedSession(t, p.addr)
		_, _ = c.Write([]byte{'Q', 0, 0, 0, 100, 'S', 'E'})
		_ = c.Close()
	})
	var v int
	if err := bystander.QueryRow(ctx, `SELECT 11`).Scan(&v); err != nil || v != 11 {
		t.Fatalf("bystander: %v %v", v, err)
	}
}

// TestAdminHTTP checks health endpoints and token authentication.
func TestAdminHTTP(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.AdminToken = "s3cret"
	p := startProxy(t, cfg)
	_ = connect(t, p.dsn(""))
	h := p.srv.AdminHandler()
	get := func(path, token string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if c := get("/metrics", ""); c != 401 {
		t.Fatalf("metrics without token: %d", c)
	}
	if c := get("/metrics", "wrong"); c != 401 {
		t.Fatalf("metrics with a wrong token: %d", c)
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		if c := get(path, "s3cret"); c != 200 {
			t.Fatalf("%s: %d", path, c)
		}
	}
	body := scrape(t, p)
	for _, want := range []string{"pgshard_client_connections 1", `pgshard_server_connections{database="postgres",server=`, "pgshard_query_duration_seconds_bucket"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestSessionPoolMode keeps one backend per client and resets it after.
func TestSessionPoolMode(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.PoolMode = proxy.PoolSession
	cfg.Pool.Size = 1
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	a := connect(t, p.dsn(""))
	if _, err := a.Exec(ctx, `SET work_mem = '9MB'`); err != nil {
		t.Fatal(err)
	}
	pid := backendPID(t, ctx, a)
	for i := 0; i < 3; i++ {
		if got := backendPID(t, ctx, a); got != pid {
			t.Fatal("session mode moved the client")
		}
	}
	_ = a.Close(ctx)
	b := connect(t, p.dsn(""))
	var wm string
	if err := b.QueryRow(ctx, `SHOW work_mem`).Scan(&wm); err != nil || wm != "4MB" {
		t.Fatalf("work_mem after reset: %q %v", wm, err)
	}
	if got := backendPID(t, ctx, b); got != pid {
		t.Fatalf("expected the reset backend %d to be reused, got %d", pid, got)
	}
}

// TestUnknownDatabase reports the server's 3D000 at connect time and
// leaves no pool behind for the bad name.
func TestUnknownDatabase(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, baseConfig(t, pg))
	for i := 0; i < 3; i++ {
		err := tryConnect("postgres://app:" + appPassword + "@" + p.addr + "/nosuchdb?sslmode=disable")
		if pgCode(err) != "3D000" {
			t.Fatalf("want 3D000, got %v", err)
		}
	}
	if body := scrape(t, p); strings.Contains(body, `database="nosuchdb"`) {
		t.Fatalf("a pool for the unknown database remains:\n%s", grepLines(body, "nosuchdb"))
	}
	_ = connect(t, p.dsn(""))
}
