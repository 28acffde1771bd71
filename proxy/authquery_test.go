package proxy_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/proxy"
)

// authLookupSQL is the README's SQL for auth_query's default query.
const authLookupSQL = `
CREATE ROLE pgshard_auth LOGIN PASSWORD 'auth-secret-7Q';
CREATE SCHEMA pgshard;
CREATE FUNCTION pgshard.user_lookup(IN i_username text, OUT usename name, OUT passwd text)
RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT rolname, rolpassword::text FROM pg_catalog.pg_authid WHERE rolname = i_username AND rolcanlogin
$$;
REVOKE ALL ON FUNCTION pgshard.user_lookup(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA pgshard TO pgshard_auth;
GRANT EXECUTE ON FUNCTION pgshard.user_lookup(text) TO pgshard_auth;
`

// syncBuffer is a log sink tests read while the proxy writes.
type syncBuffer = testutil.Buffer

// pgErr returns err's PostgreSQL error.
func pgErr(t *testing.T, err error) *pgconn.PgError {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("want a PostgreSQL error, got %v", err)
	}
	return pe
}

// userDSN is a DSN for user with password at addr (a proxy or a server).
func userDSN(addr, user, password string) string {
	return "postgres://" + user + ":" + password + "@" + addr + "/postgres?sslmode=disable"
}

// TestAuthQuery: with auth_query, a role created on the server after the
// proxy started logs in with its own password (SCRAM, and md5 for a role
// with an md5 verifier); a wrong password and an unknown role fail as on
// PostgreSQL (28P01, same message); a changed password counts once the
// cache expires; a listed user wins over the server's role; the auth
// user's password is never logged, not even when the lookup fails.
func TestAuthQuery(t *testing.T) {
	// The servers admit the proxy for alice and bob without a password,
	// as a deployment of auth_query must (the proxy authenticates them
	// and logs in to the servers as them).
	pg := integration.StartPostgres(t, integration.TrustUsers("alice", "bob"))
	ctx := ctxT(t)
	if err := pg.Exec(ctx, authLookupSQL); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cfg := withOps(t, baseConfig(t, pg))
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	const ttl = 2 * time.Second
	cfg.AuthQuery = proxy.AuthQueryConfig{User: "pgshard_auth", Password: "auth-secret-7Q", CacheTTL: proxy.Duration(ttl),
		PasswordEnv: "PGSHARD_TEST_UNSET_ENV"}
	p := startProxy(t, cfg)

	// Roles made after the proxy started.
	if err := pg.Exec(ctx, `CREATE ROLE alice LOGIN PASSWORD 'alice-pw'`); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, `SET password_encryption = 'md5'; CREATE ROLE bob LOGIN PASSWORD 'bob-pw'`); err != nil {
		t.Fatal(err)
	}
	if v, err := pg.QueryValue(ctx, `SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'bob'`); err != nil || v != "md5" {
		t.Fatalf("bob's verifier: %q %v", v, err)
	}
	for _, u := range [][2]string{{"alice", "alice-pw"}, {"bob", "bob-pw"}} {
		c, err := pgx.Connect(ctx, userDSN(p.addr, u[0], u[1]))
		if err != nil {
			t.Fatalf("%s through the proxy: %v", u[0], err)
		}
		// The role keeps its identity (and privileges) on the server.
		var who string
		if err := c.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != u[0] {
			t.Errorf("%s: current_user on the server = %q, %v", u[0], who, err)
		}
		_ = c.Close(ctx)
	}
	// Which method the proxy offered: SCRAM for alice, md5 for bob.
	console := consoleConn(t, p)
	users := map[string][]string{}
	for _, r := range consoleRows(t, ctx, console, "SHOW USERS") {
		users[r[0]] = r
	}
	if r := users["alice"]; r == nil || r[1] != "auth_query" || r[2] != "scram-sha-256" {
		t.Errorf("SHOW USERS alice: %q", r)
	}
	if r := users["bob"]; r == nil || r[1] != "auth_query" || r[2] != "md5" {
		t.Errorf("SHOW USERS bob: %q", r)
	}

	// Failures look like PostgreSQL's own.
	for _, c := range []struct{ user, password string }{{"alice", "wrong"}, {"bob", "wrong"}, {"nobody", "whatever"}} {
		perr := pgErr(t, tryConnect(userDSN(p.addr, c.user, c.password)))
		// PostgreSQL's own answer (the server trusts alice and bob, so
		// for them it is the one it gives any other role).
		serr := pgErr(t, tryConnect(userDSN(pg.Addr(), "nobody", "whatever")))
		serr.Message = strings.ReplaceAll(serr.Message, `"nobody"`, `"`+c.user+`"`)
		if perr.Code != "28P01" || perr.Code != serr.Code || perr.Message != serr.Message || perr.Severity != serr.Severity {
			t.Errorf("%s with a wrong password: proxy %s %s %q, server %s %s %q", c.user, perr.Severity, perr.Code, perr.Message, serr.Severity, serr.Code, serr.Message)
		}
	}

	// A listed user wins over the server's role of the same name.
	if err := pg.Exec(ctx, `CREATE ROLE `+appUser+` LOGIN PASSWORD 'server-side'`); err != nil {
		t.Fatal(err)
	}
	if err := tryConnect(userDSN(p.addr, appUser, "server-side")); pgCode(err) != "28P01" {
		t.Errorf("a listed user with the server's password: %v, want 28P01", err)
	}
	if err := tryConnect(p.dsn("")); err != nil {
		t.Errorf("a listed user with its configured password: %v", err)
	}

	// A changed password counts once the cache expires.
	if err := pg.Exec(ctx, `ALTER ROLE alice PASSWORD 'alice-pw2'`); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	eventually(t, ctx, "alice's new password works", func() bool {
		return tryConnect(userDSN(p.addr, "alice", "alice-pw2")) == nil
	})
	if waited := time.Since(changed); waited > ttl+5*time.Second {
		t.Errorf("the new password took %s, cache_ttl is %s", waited, ttl)
	}
	if err := tryConnect(userDSN(p.addr, "alice", "alice-pw")); pgCode(err) != "28P01" {
		t.Errorf("alice's old password after the change: %v, want 28P01", err)
	}

	// The auth user's password is in no log line, also when the lookup
	// fails (a wrong auth password: the login fails with 08006).
	if err := pg.Exec(ctx, `ALTER ROLE pgshard_auth PASSWORD 'rotated-8Z'`); err != nil {
		t.Fatal(err)
	}
	var failed error
	eventually(t, ctx, "the lookup fails with the old auth password", func() bool {
		failed = tryConnect(userDSN(p.addr, "carol", "x"))
		return pgCode(failed) == "08006"
	})
	if !strings.Contains(pgErr(t, failed).Message, "auth_query") {
		t.Errorf("the failed lookup's error: %v", failed)
	}
	if !strings.Contains(logs.String(), "auth_query failed") {
		t.Errorf("the failed lookup is not logged:\n%s", logs.String())
	}
	for _, secret := range []string{"auth-secret-7Q", "rotated-8Z", "alice-pw", "bob-pw"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a password (%s) is in the log:\n%s", secret, logs.String())
		}
	}
	conf := map[string]string{}
	for _, r := range consoleRows(t, ctx, console, "SHOW CONFIG") {
		if strings.Contains(r[1], "auth-secret-7Q") {
			t.Errorf("SHOW CONFIG shows the auth password: %q", r)
		}
		conf[r[0]] = r[1]
	}
	if conf["auth_query.user"] != "pgshard_auth" || conf["auth_query.cache_ttl"] != "2s" || conf["auth_query.query"] != proxy.DefaultAuthQuery {
		t.Errorf("SHOW CONFIG auth_query: %q", conf)
	}
}

// TestAuthQueryOff: without auth_query a role the server knows but users
// does not list cannot log in (28P01), as before.
func TestAuthQueryOff(t *testing.T) {
	pg := integration.StartPostgres(t, integration.Users(pgcluster.User{Name: "dave", Password: "dave-pw"}))
	p := startProxy(t, baseConfig(t, pg))
	if err := tryConnect(userDSN(p.addr, "dave", "dave-pw")); pgCode(err) != "28P01" {
		t.Errorf("a server role without auth_query: %v, want 28P01", err)
	}
	if err := tryConnect(userDSN(pg.Addr(), "dave", "dave-pw")); err != nil {
		t.Errorf("dave on the server itself: %v", err)
	}
}
