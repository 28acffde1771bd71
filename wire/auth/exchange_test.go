package auth

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgshard/pgshard/wire"
)

// pipeAuth runs Authenticate on one end of a net.Pipe and returns a
// frontend on the other end and the channel Authenticate's result comes on.
func pipeAuth(t *testing.T, ctx context.Context, method Method, user string, cred Credential, opts Options) (*pgproto3.Frontend, <-chan error) {
	t.Helper()
	client, server := net.Pipe()
	deadline := time.Now().Add(5 * time.Second)
	_ = client.SetDeadline(deadline)
	_ = server.SetDeadline(deadline)
	done := make(chan error, 1)
	go func() {
		defer func() { _ = server.Close() }()
		// The proxy's Conn: frames from its own buffered reader.
		be := NewFrameConn(wire.NewFrameReader(bufio.NewReader(server), 65535), server)
		done <- Authenticate(ctx, be, method, user, cred, opts)
	}()
	t.Cleanup(func() { _ = client.Close() })
	return pgproto3.NewFrontend(client, client), done
}

func send(t *testing.T, fe *pgproto3.Frontend, msgs ...pgproto3.FrontendMessage) {
	t.Helper()
	for _, m := range msgs {
		fe.Send(m)
	}
	if err := fe.Flush(); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func recv[T pgproto3.BackendMessage](t *testing.T, fe *pgproto3.Frontend) T {
	t.Helper()
	msg, err := fe.Receive()
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	m, ok := msg.(T)
	if !ok {
		t.Fatalf("got %T, want %T", msg, *new(T))
	}
	return m
}

func wantCode(t *testing.T, done <-chan error, code, msgPart string) {
	t.Helper()
	err := <-done
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("Authenticate = %v, want *Error %s", err, code)
	}
	if ae.Code != code || !strings.Contains(ae.Message, msgPart) {
		t.Errorf("Authenticate = %s %q, want %s containing %q", ae.Code, ae.Message, code, msgPart)
	}
}

// serverFirst runs the exchange up to the server-first-message for user
// and returns its salt and iteration count part ("s=...,i=...").
func serverFirst(t *testing.T, user string, cred Credential, opts Options) string {
	t.Helper()
	fe, done := pipeAuth(t, context.Background(), SCRAMSHA256, user, cred, opts)
	sasl := recv[*pgproto3.AuthenticationSASL](t, fe)
	if len(sasl.AuthMechanisms) != 1 || sasl.AuthMechanisms[0] != "SCRAM-SHA-256" {
		t.Fatalf("mechanisms %q", sasl.AuthMechanisms)
	}
	send(t, fe, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=clientnonce")})
	cont := recv[*pgproto3.AuthenticationSASLContinue](t, fe)
	fields := strings.SplitN(string(cont.Data), ",", 2)
	if !strings.HasPrefix(fields[0], "r=clientnonce") || len(fields[0]) <= len("r=clientnonce") {
		t.Fatalf("server nonce %q does not extend the client's", fields[0])
	}
	send(t, fe, &pgproto3.SASLResponse{Data: []byte(fields[0][:2] + "x,p=AAAA")})
	<-done
	return fields[1]
}

func TestUnknownUserLooksKnown(t *testing.T) {
	secret := []byte("mock secret shared by all proxies")
	opts := Options{MockSecret: secret}
	a1 := serverFirst(t, "ghost", Credential{}, opts)
	a2 := serverFirst(t, "ghost", Credential{}, opts)
	b := serverFirst(t, "phantom", Credential{}, opts)
	if a1 != a2 {
		t.Errorf("fake salt for one user changed between connections: %q vs %q", a1, a2)
	}
	if a1 == b {
		t.Errorf("two unknown users share a salt: %q", a1)
	}
	other := serverFirst(t, "ghost", Credential{}, Options{MockSecret: []byte("another secret")})
	if other == a1 {
		t.Error("fake salt does not depend on the secret")
	}
	// The fake looks like a real verifier: 16-byte salt, default iterations.
	real := serverFirst(t, "alice", Credential{SCRAM: mustSCRAM(t, "pw")}, opts)
	shape := func(s string) (int, string) {
		salt, iter, _ := strings.Cut(strings.TrimPrefix(s, "s="), ",")
		raw, err := base64.StdEncoding.DecodeString(salt)
		if err != nil {
			t.Fatalf("salt %q: %v", salt, err)
		}
		return len(raw), iter
	}
	fl, fi := shape(a1)
	rl, ri := shape(real)
	if fl != rl || fi != ri {
		t.Errorf("fake %d-byte salt %s differs in shape from real %d-byte salt %s", fl, fi, rl, ri)
	}
	// Without MockSecret the per-process secret keeps salts stable too.
	p1 := serverFirst(t, "ghost", Credential{}, Options{})
	p2 := serverFirst(t, "ghost", Credential{}, Options{})
	if p1 != p2 {
		t.Error("process mock secret is not stable")
	}
}

func TestSCRAMProtocolViolations(t *testing.T) {
	cred := Credential{SCRAM: mustSCRAM(t, "pw")}
	tls := Options{TLSServerEndPoint: bytes.Repeat([]byte{7}, 32)}
	tests := []struct {
		name    string
		opts    Options
		first   pgproto3.FrontendMessage
		msgPart string
	}{
		{"query instead of SASL", Options{}, &pgproto3.Query{String: "select 1"}, "expected SASL response, got message type 81"},
		{"unknown mechanism", Options{}, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-1", Data: []byte("n,,n=,r=x")}, "invalid SASL authentication mechanism"},
		{"PLUS not offered without TLS", Options{}, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256-PLUS", Data: []byte("p=tls-server-end-point,,n=,r=x")}, "invalid SASL authentication mechanism"},
		{"no client-first message", Options{}, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256"}, "malformed SCRAM message"},
		{"garbage client-first", Options{}, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("hello")}, "malformed SCRAM message"},
		{"bad gs2 flag", Options{}, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("q,,n=,r=x")}, "malformed SCRAM message"},
		{"extension", Options{}, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,m=ext,n=,r=x")}, "malformed SCRAM message"},
		{"authzid", Options{}, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,a=admin,n=,r=x")}, "authorization identity"},
		{"binding data with plain mechanism", tls, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("p=tls-server-end-point,,n=,r=x")}, "includes channel binding data"},
		{"PLUS mechanism without binding", tls, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256-PLUS", Data: []byte("n,,n=,r=x")}, "does not include channel binding data"},
		{"downgrade: y when PLUS offered", tls, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("y,,n=,r=x")}, "channel binding negotiation error"},
		{"unsupported binding type", tls, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256-PLUS", Data: []byte("p=tls-exporter,,n=,r=x")}, "channel binding negotiation error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fe, done := pipeAuth(t, context.Background(), SCRAMSHA256, "alice", cred, tc.opts)
			recv[*pgproto3.AuthenticationSASL](t, fe)
			send(t, fe, tc.first)
			wantCode(t, done, wire.SQLStateProtocolViolation, tc.msgPart)
		})
	}
}

func TestSCRAMFinalMessageViolations(t *testing.T) {
	cred := Credential{SCRAM: mustSCRAM(t, "pw")}
	tests := []struct {
		name  string
		final func(nonce string) []byte
		msg   string
	}{
		{"garbage", func(string) []byte { return []byte("garbage") }, "malformed SCRAM message"},
		{"wrong nonce", func(string) []byte {
			return []byte("c=biws,r=othernonce,p=" + base64.StdEncoding.EncodeToString(make([]byte, 32)))
		}, "malformed SCRAM message"},
		{"binding mismatch", func(n string) []byte {
			return []byte("c=eSws,r=" + n + ",p=" + base64.StdEncoding.EncodeToString(make([]byte, 32)))
		}, "channel binding check failed"},
		{"short proof", func(n string) []byte { return []byte("c=biws,r=" + n + ",p=AAAA") }, "malformed SCRAM message"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fe, done := pipeAuth(t, context.Background(), SCRAMSHA256, "alice", cred, Options{})
			recv[*pgproto3.AuthenticationSASL](t, fe)
			send(t, fe, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=cnonce")})
			cont := recv[*pgproto3.AuthenticationSASLContinue](t, fe)
			nonce, _, _ := strings.Cut(strings.TrimPrefix(string(cont.Data), "r="), ",")
			send(t, fe, &pgproto3.SASLResponse{Data: tc.final(nonce)})
			wantCode(t, done, wire.SQLStateProtocolViolation, tc.msg)
		})
	}
	t.Run("wrong proof is an auth failure", func(t *testing.T) {
		fe, done := pipeAuth(t, context.Background(), SCRAMSHA256, "alice", cred, Options{})
		recv[*pgproto3.AuthenticationSASL](t, fe)
		send(t, fe, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=cnonce")})
		cont := recv[*pgproto3.AuthenticationSASLContinue](t, fe)
		nonce, _, _ := strings.Cut(strings.TrimPrefix(string(cont.Data), "r="), ",")
		send(t, fe, &pgproto3.SASLResponse{Data: []byte("c=biws,r=" + nonce + ",p=" + base64.StdEncoding.EncodeToString(make([]byte, 32)))})
		wantCode(t, done, wire.SQLStateInvalidPassword, `password authentication failed for user "alice"`)
	})
}

func TestMD5ProtocolViolation(t *testing.T) {
	fe, done := pipeAuth(t, context.Background(), MD5, "bob", Credential{MD5: MD5Verifier("bob", "pw")}, Options{})
	recv[*pgproto3.AuthenticationMD5Password](t, fe)
	send(t, fe, &pgproto3.Sync{})
	wantCode(t, done, wire.SQLStateProtocolViolation, "expected password response")
}

func TestMD5DeterministicRand(t *testing.T) {
	opts := Options{Rand: bytes.NewReader([]byte{1, 2, 3, 4})}
	fe, done := pipeAuth(t, context.Background(), MD5, "bob", Credential{MD5: MD5Verifier("bob", "pw")}, opts)
	req := recv[*pgproto3.AuthenticationMD5Password](t, fe)
	if req.Salt != [4]byte{1, 2, 3, 4} {
		t.Fatalf("salt %v not from Options.Rand", req.Salt)
	}
	send(t, fe, &pgproto3.PasswordMessage{Password: md5Response(MD5Verifier("bob", "pw"), req.Salt)})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestAuthenticateClientGone(t *testing.T) {
	for _, method := range []Method{SCRAMSHA256, MD5} {
		t.Run(string(method), func(t *testing.T) {
			client, server := net.Pipe()
			done := make(chan error, 1)
			go func() {
				done <- Authenticate(context.Background(), pgproto3.NewBackend(server, server), method, "bob", Credential{MD5: MD5Verifier("bob", "pw")}, Options{})
			}()
			_, _ = client.Read(make([]byte, 512)) // the auth request
			_ = client.Close()
			err := <-done
			var ae *Error
			if err == nil || errors.As(err, &ae) {
				t.Fatalf("Authenticate = %v, want a plain I/O error", err)
			}
		})
	}
	t.Run("Terminate", func(t *testing.T) {
		fe, done := pipeAuth(t, context.Background(), MD5, "bob", Credential{MD5: MD5Verifier("bob", "pw")}, Options{})
		recv[*pgproto3.AuthenticationMD5Password](t, fe)
		send(t, fe, &pgproto3.Terminate{})
		if err := <-done; !errors.Is(err, io.EOF) {
			t.Fatalf("Authenticate = %v, want io.EOF", err)
		}
	})
}

func TestAuthenticateContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var buf bytes.Buffer
	err := Authenticate(ctx, pgproto3.NewBackend(&buf, &buf), SCRAMSHA256, "alice", Credential{}, Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Authenticate = %v, want context.Canceled", err)
	}
	if buf.Len() != 0 {
		t.Errorf("sent %d bytes with a cancelled context", buf.Len())
	}

	// Cancelled mid-exchange: noticed after the next receive.
	ctx, cancel = context.WithCancel(context.Background())
	fe, done := pipeAuth(t, ctx, MD5, "bob", Credential{MD5: MD5Verifier("bob", "pw")}, Options{})
	recv[*pgproto3.AuthenticationMD5Password](t, fe)
	cancel()
	send(t, fe, &pgproto3.PasswordMessage{Password: "md5whatever"})
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Authenticate = %v, want context.Canceled", err)
	}
}

func TestAuthenticateUnknownMethod(t *testing.T) {
	var buf bytes.Buffer
	if err := Authenticate(context.Background(), pgproto3.NewBackend(&buf, &buf), Method("password"), "u", Credential{}, Options{}); err == nil {
		t.Fatal("unknown method accepted")
	}
}

func TestErrorResponseHidesCause(t *testing.T) {
	e := authFailed("alice", errors.New("internal detail"))
	r := e.ErrorResponse()
	if r.Severity != "FATAL" || r.Code != wire.SQLStateInvalidPassword || r.Message != `password authentication failed for user "alice"` || r.Detail != "" {
		t.Errorf("ErrorResponse = %+v", r)
	}
	if !strings.Contains(e.Error(), "internal detail") {
		t.Errorf("Error() lacks the cause for logs: %s", e)
	}
}
