package auth

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgshard/pgshard/wire"
)

// testServer is a minimal PostgreSQL front door: it reads the startup
// message (answering SSLRequest), calls Authenticate and, on success,
// finishes the startup as the router would. Each connection's
// Authenticate result is sent on results.
type testServer struct {
	addr    string
	method  Method
	users   map[string]Credential
	tlsCfg  *tls.Config // nil: refuse SSL
	opts    Options     // TLSServerEndPoint is set per TLS connection
	results chan error
}

func startServer(t *testing.T, method Method, users map[string]Credential, tlsCert *tls.Certificate, tweaks ...func(*testServer)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	s := &testServer{addr: ln.Addr().String(), method: method, users: users, results: make(chan error, 16)}
	if tlsCert != nil {
		s.tlsCfg = &tls.Config{Certificates: []tls.Certificate{*tlsCert}}
		s.opts.TLSServerEndPoint = mustEndPoint(t, tlsCert)
	}
	for _, f := range tweaks {
		f(s)
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = conn.Close() }()
				s.results <- s.serve(conn)
			}()
		}
	}()
	return s
}

func (s *testServer) serve(conn net.Conn) error {
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	be := pgproto3.NewBackend(conn, conn)
	opts := s.opts
	opts.TLSServerEndPoint = nil
	var startup *pgproto3.StartupMessage
	var tlsConn *tls.Conn
	for startup == nil {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return fmt.Errorf("test server: startup: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest:
			if s.tlsCfg == nil {
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return err
				}
				continue
			}
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return err
			}
			tc := tls.Server(conn, s.tlsCfg)
			tlsConn = tc
			if err := tc.Handshake(); err != nil {
				return fmt.Errorf("test server: TLS handshake: %w", err)
			}
			be = pgproto3.NewBackend(tc, tc)
			opts.TLSServerEndPoint = s.opts.TLSServerEndPoint
		case *pgproto3.GSSEncRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return err
			}
		case *pgproto3.StartupMessage:
			startup = m
		default:
			return fmt.Errorf("test server: unexpected %T", msg)
		}
	}
	user := startup.Parameters["user"]
	// The exchange runs over the proxy's Conn (frames from its own
	// buffered reader); the rest of the test server over pgproto3.
	rw := net.Conn(conn)
	if opts.TLSServerEndPoint != nil {
		rw = tlsConn
	}
	fc := NewFrameConn(wire.NewFrameReader(bufio.NewReader(rw), 65535), rw)
	err := Authenticate(context.Background(), fc, s.method, user, s.users[user], opts)
	var ae *Error
	if errors.As(err, &ae) {
		be.Send(ae.ErrorResponse())
		_ = be.Flush()
		return err
	}
	if err != nil {
		return err
	}
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 2}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := be.Flush(); err != nil {
		return err
	}
	for { // until Terminate or EOF
		if _, err := be.Receive(); err != nil {
			return nil
		}
	}
}

// connect connects with pgconn and returns the client error and the
// server's Authenticate result.
func (s *testServer) connect(t *testing.T, user, password, params string) (clientErr, serverErr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dsn := fmt.Sprintf("postgres://%s:%s@%s/db?%s", user, password, s.addr, params)
	conn, err := pgconn.Connect(ctx, dsn)
	if err == nil {
		_ = conn.Close(ctx)
	}
	select {
	case serverErr = <-s.results:
	case <-ctx.Done():
		t.Fatal("server did not finish")
	}
	return err, serverErr
}

func mustSCRAM(t *testing.T, password string) *SCRAMVerifier {
	t.Helper()
	v, err := NewSCRAMVerifier(password, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &v
}

// wantAuthFailed checks the client saw exactly PostgreSQL's failure and the
// server returned the matching *Error.
func wantAuthFailed(t *testing.T, user string, clientErr, serverErr error) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(clientErr, &pgErr) {
		t.Fatalf("client error = %v, want *pgconn.PgError", clientErr)
	}
	want := fmt.Sprintf("password authentication failed for user %q", user)
	if pgErr.Code != wire.SQLStateInvalidPassword || pgErr.Message != want || pgErr.Severity != "FATAL" || pgErr.Detail != "" || pgErr.Hint != "" {
		t.Errorf("client got %s %s %q (detail %q hint %q), want FATAL %s %q", pgErr.Severity, pgErr.Code, pgErr.Message, pgErr.Detail, pgErr.Hint, wire.SQLStateInvalidPassword, want)
	}
	var ae *Error
	if !errors.As(serverErr, &ae) || ae.Code != wire.SQLStateInvalidPassword {
		t.Errorf("server error = %v, want *Error %s", serverErr, wire.SQLStateInvalidPassword)
	}
}

func TestAuthenticateSCRAM(t *testing.T) {
	md5Only := MD5Verifier("md5user", "pw")
	bad := SCRAMVerifier{Iterations: 1} // malformed: no salt or keys
	s := startServer(t, SCRAMSHA256, map[string]Credential{
		"alice":   {SCRAM: mustSCRAM(t, "correct horse")},
		"unicode": {SCRAM: mustSCRAM(t, "I\u00adX pässwörd")},
		"md5user": {MD5: md5Only},
		"broken":  {SCRAM: &bad},
	}, nil)

	t.Run("right password", func(t *testing.T) {
		if c, srv := s.connect(t, "alice", "correct%20horse", "sslmode=disable"); c != nil || srv != nil {
			t.Fatalf("client %v, server %v", c, srv)
		}
	})
	t.Run("SASLprep on both sides", func(t *testing.T) {
		// pgconn prepares "IX pässwörd" the same way: the soft hyphen goes.
		if c, srv := s.connect(t, "unicode", "IX%20p%C3%A4ssw%C3%B6rd", "sslmode=disable"); c != nil || srv != nil {
			t.Fatalf("client %v, server %v", c, srv)
		}
	})
	t.Run("require_auth scram", func(t *testing.T) {
		if c, srv := s.connect(t, "alice", "correct%20horse", "sslmode=disable&require_auth=scram-sha-256"); c != nil || srv != nil {
			t.Fatalf("client %v, server %v", c, srv)
		}
	})
	for _, tc := range []struct{ name, user, password string }{
		{"wrong password", "alice", "wrong"},
		{"empty password", "alice", ""},
		{"unknown user", "mallory", "wrong"},
		{"md5-only user", "md5user", "pw"},
		{"malformed stored verifier", "broken", "pw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := s.connect(t, tc.user, tc.password, "sslmode=disable")
			wantAuthFailed(t, tc.user, c, srv)
		})
	}
}

func TestAuthenticateMD5(t *testing.T) {
	s := startServer(t, MD5, map[string]Credential{
		"bob":       {MD5: MD5Verifier("bob", "hunter2")},
		"scramonly": {SCRAM: mustSCRAM(t, "pw")},
		"both":      {MD5: MD5Verifier("both", "pw"), SCRAM: mustSCRAM(t, "pw")},
	}, nil)
	for _, tc := range []struct{ name, user, password string }{
		{"right password", "bob", "hunter2"},
		{"SCRAM-only user falls back to SCRAM", "scramonly", "pw"},
		{"md5 preferred when both", "both", "pw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c, srv := s.connect(t, tc.user, tc.password, "sslmode=disable"); c != nil || srv != nil {
				t.Fatalf("client %v, server %v", c, srv)
			}
		})
	}
	t.Run("md5 really used", func(t *testing.T) {
		c, _ := s.connect(t, "both", "pw", "sslmode=disable&require_auth=md5")
		if c != nil {
			t.Fatalf("require_auth=md5: %v", c)
		}
		// And the client does enforce require_auth: SCRAM is refused.
		if c, _ := s.connect(t, "scramonly", "pw", "sslmode=disable&require_auth=md5"); c == nil {
			t.Fatal("require_auth=md5 accepted a SCRAM exchange")
		}
	})
	for _, tc := range []struct{ name, user, password string }{
		{"wrong password", "bob", "hunter3"},
		{"password of another user", "bob", "pw"},
		{"unknown user", "nobody", "hunter2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := s.connect(t, tc.user, tc.password, "sslmode=disable")
			wantAuthFailed(t, tc.user, c, srv)
		})
	}
}

func TestAuthenticateTrust(t *testing.T) {
	s := startServer(t, Trust, nil, nil)
	if c, srv := s.connect(t, "anyone", "", "sslmode=disable"); c != nil || srv != nil {
		t.Fatalf("client %v, server %v", c, srv)
	}
}

// pgx v5.13 supports channel_binding=require with tls-server-end-point, so
// SCRAM-SHA-256-PLUS is tested end to end.
func TestAuthenticateSCRAMPlus(t *testing.T) {
	cert := selfSignedCert(t)
	users := map[string]Credential{"alice": {SCRAM: mustSCRAM(t, "pw")}}
	s := startServer(t, SCRAMSHA256, users, &cert)

	t.Run("channel binding required by client", func(t *testing.T) {
		if c, srv := s.connect(t, "alice", "pw", "sslmode=require&channel_binding=require"); c != nil || srv != nil {
			t.Fatalf("client %v, server %v", c, srv)
		}
	})
	t.Run("client disables channel binding", func(t *testing.T) {
		if c, srv := s.connect(t, "alice", "pw", "sslmode=require&channel_binding=disable"); c != nil || srv != nil {
			t.Fatalf("client %v, server %v", c, srv)
		}
	})
	t.Run("wrong password over PLUS", func(t *testing.T) {
		c, srv := s.connect(t, "alice", "nope", "sslmode=require&channel_binding=require")
		wantAuthFailed(t, "alice", c, srv)
	})
	t.Run("unknown user over PLUS", func(t *testing.T) {
		c, srv := s.connect(t, "ghost", "nope", "sslmode=require&channel_binding=require")
		wantAuthFailed(t, "ghost", c, srv)
	})
	t.Run("binding mismatch", func(t *testing.T) {
		// The proxy believes in another certificate, as a
		// man in the middle would present: the binding check fails.
		mitm := startServer(t, SCRAMSHA256, users, &cert, func(s *testServer) {
			s.opts.TLSServerEndPoint = make([]byte, 32)
		})
		c, srv := mitm.connect(t, "alice", "pw", "sslmode=require&channel_binding=require")
		var pgErr *pgconn.PgError
		if !errors.As(c, &pgErr) || pgErr.Code != wire.SQLStateProtocolViolation {
			t.Errorf("client error = %v, want %s", c, wire.SQLStateProtocolViolation)
		}
		var ae *Error
		if !errors.As(srv, &ae) || ae.Code != wire.SQLStateProtocolViolation || ae.Message != "SCRAM channel binding check failed" {
			t.Errorf("server error = %v", srv)
		}
	})
	t.Run("plain connection offers no PLUS", func(t *testing.T) {
		plain := startServer(t, SCRAMSHA256, users, nil)
		c, _ := plain.connect(t, "alice", "pw", "sslmode=disable&channel_binding=require")
		if c == nil {
			t.Fatal("channel_binding=require succeeded without TLS")
		}
	})
}

func mustEndPoint(t *testing.T, cert *tls.Certificate) []byte {
	t.Helper()
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	cb, err := TLSServerEndPoint(leaf)
	if err != nil {
		t.Fatal(err)
	}
	return cb
}

func selfSignedCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pgshard-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
