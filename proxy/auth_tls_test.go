package proxy_test

import (
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/wire/auth"
)

func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func tryConnect(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var v int
	return c.QueryRow(ctx, "SELECT 1").Scan(&v)
}

// TestClientAuthMethods checks SCRAM, md5 and trust users, wrong
// passwords and unknown users (28P01, identical messages).
func TestClientAuthMethods(t *testing.T) {
	pg := integration.StartPostgres(t, integration.HostAuth("md5"))
	cfg := baseConfig(t, pg)
	cfg.Users = append(cfg.Users,
		proxy.UserConfig{Name: "m", Auth: "md5", Password: auth.MD5Verifier("m", "m-pass")},
		proxy.UserConfig{Name: "tr", Auth: "trust"},
	)
	p := startProxy(t, cfg)
	url := func(user, pw, extra string) string {
		return fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable%s", user, pw, p.addr, extra)
	}
	cases := []struct {
		name, dsn, code string
	}{
		{"scram ok", url(appUser, appPassword, "&require_auth=scram-sha-256"), ""},
		{"scram wrong", url(appUser, "nope", ""), "28P01"},
		{"md5 ok", url("m", "m-pass", "&require_auth=md5"), ""},
		{"md5 wrong", url("m", "nope", ""), "28P01"},
		{"trust", url("tr", "", ""), ""},
		{"unknown user", url("ghost", "x", ""), "28P01"},
	}
	msgs := map[string]string{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tryConnect(tc.dsn)
			if got := pgCode(err); got != tc.code {
				t.Fatalf("want code %q, got %v", tc.code, err)
			}
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				msgs[tc.name] = pgErr.Message
			}
		})
	}
	if msgs["unknown user"] != `password authentication failed for user "ghost"` || msgs["scram wrong"] != `password authentication failed for user "app"` {
		t.Errorf("messages: %v", msgs)
	}
	body := scrape(t, p)
	if want := `pgshard_errors_total{sqlstate="28P01"} 3`; !strings.Contains(body, want) {
		t.Errorf("metrics lack %q:\n%s", want, grepLines(body, "errors_total"))
	}
}

// TestPasswordPipelinedWithQuery: a client that sends its md5 password
// and its first query in one write (as a pipelining client may) gets the
// query answered: the bytes after the password stay for the session.
func TestPasswordPipelinedWithQuery(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Users = append(cfg.Users, proxy.UserConfig{Name: "m", Auth: "md5", Password: auth.MD5Verifier("m", "m-pass")})
	p := startProxy(t, cfg)
	c := rawConn(t, p.addr)
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "m", "database": "postgres"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	req, ok := m.(*pgproto3.AuthenticationMD5Password)
	if !ok {
		t.Fatalf("got %T, want AuthenticationMD5Password", m)
	}
	// The client's answer: md5 of the stored verifier's hex and the salt.
	inner := strings.TrimPrefix(auth.MD5Verifier("m", "m-pass"), "md5")
	outer := md5.Sum(append([]byte(inner), req.Salt[:]...))
	fe.Send(&pgproto3.PasswordMessage{Password: "md5" + hex.EncodeToString(outer[:])})
	fe.Send(&pgproto3.Query{String: "SELECT 40 + 2"})
	if err := fe.Flush(); err != nil { // one write: both messages
		t.Fatal(err)
	}
	var row string
	for readies := 0; readies < 2; {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("after %d ReadyForQuery: %v (row %q)", readies, err, row)
		}
		switch m := m.(type) {
		case *pgproto3.ReadyForQuery:
			readies++
		case *pgproto3.DataRow:
			row = string(m.Values[0])
		case *pgproto3.ErrorResponse:
			t.Fatalf("error %s: %s", m.Code, m.Message)
		}
	}
	if row != "42" {
		t.Fatalf("row %q, want 42", row)
	}
}

// TestTLSBothSides runs TLS between client and proxy (verify-full,
// channel binding) and between proxy and server (verify-full).
func TestTLSBothSides(t *testing.T) {
	pg := integration.StartPostgres(t, integration.TLS())
	cfg := baseConfig(t, pg)
	cfg.Backend.SSLMode = "verify-full"
	cfg.Backend.SSLRootCert = pg.CACertPath()
	// The proxy reuses the test CA's server certificate for 127.0.0.1.
	cfg.TLS = proxy.TLSConfig{CertFile: filepath.Join(pg.DataDir, "server.crt"), KeyFile: filepath.Join(pg.DataDir, "server.key"), Mode: "require"}
	p := startProxy(t, cfg)
	base := fmt.Sprintf("postgres://%s:%s@%s/postgres", appUser, appPassword, p.addr)
	dsn := base + "?sslmode=verify-full&sslrootcert=" + pg.CACertPath() + "&channel_binding=require"
	c := connect(t, dsn)
	ctx := ctxT(t)
	var serverSSL bool
	if err := c.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&serverSSL); err != nil {
		t.Fatal(err)
	}
	if !serverSSL {
		t.Fatal("proxy-to-server connection is not TLS")
	}
	if _, ok := c.PgConn().Conn().(*tls.Conn); !ok {
		t.Fatal("client-to-proxy connection is not TLS")
	}
	if err := tryConnect(base + "?sslmode=disable"); pgCode(err) != "28000" {
		t.Fatalf("plain connection to a TLS-only proxy: want 28000, got %v", err)
	}
}

// TestBackendClientCertificate: the proxy logs in to a server that
// authenticates it by certificate (pg_hba cert) with backend.sslcert and
// backend.sslkey; without them that login is refused.
func TestBackendClientCertificate(t *testing.T) {
	const certUser = "pgshard_cert"
	pg := integration.StartPostgres(t, integration.Users(pgcluster.User{Name: certUser, Password: "unused"}),
		integration.CertUsers(certUser))
	certFile, keyFile, err := pg.ClientCert(t.TempDir(), certUser)
	if err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, pg)
	cfg.Backend = proxy.BackendConfig{User: certUser, SSLMode: "verify-full", SSLRootCert: pg.CACertPath(),
		SSLCert: certFile, SSLKey: keyFile, PasswordEnv: "PGSHARD_TEST_UNSET_ENV"}
	p := startProxy(t, cfg)
	c := connect(t, p.dsn(""))
	var user string
	var ssl bool
	if err := c.QueryRow(ctxT(t), `SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&user, &ssl); err != nil {
		t.Fatal(err)
	}
	if user != certUser || !ssl {
		t.Fatalf("server session as %q, ssl %v; want %s over TLS", user, ssl, certUser)
	}

	noCert := baseConfig(t, pg)
	noCert.Backend = proxy.BackendConfig{User: certUser, SSLMode: "verify-full", SSLRootCert: pg.CACertPath(), PasswordEnv: "PGSHARD_TEST_UNSET_ENV"}
	p2 := startProxy(t, noCert)
	if err := tryConnect(p2.dsn("")); pgCode(err) != "28000" {
		t.Fatalf("without a client certificate: %v, want the server's refusal 28000", err)
	}
}
