package metarpc

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/shardmap/metapb"
)

func TestServerNeedsAuthChoice(t *testing.T) {
	store := newFakeStore("n1")
	pki := newPKI(t, "a")
	for _, tc := range []struct {
		name string
		opts ServerOptions
		want string // "" for success
	}{
		{"nothing", ServerOptions{}, "no authentication configured"},
		{"client certs without CAs", ServerOptions{RequireClientCert: true, TLS: &tls.Config{Certificates: []tls.Certificate{pki.server}}}, "ClientCAs"},
		{"unauthenticated and a token", ServerOptions{AllowUnauthenticated: true, Token: "t"}, "contradicts"},
		{"token", ServerOptions{Token: "t"}, ""},
		{"mutual TLS", ServerOptions{RequireClientCert: true, TLS: pki.serverTLS()}, ""},
		{"unauthenticated", ServerOptions{AllowUnauthenticated: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := NewServer(store, tc.opts)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				srv.Stop()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewServer = %v, want an error saying %q", err, tc.want)
			}
		})
	}
	if _, err := NewServer(nil, ServerOptions{Token: "t"}); err == nil {
		t.Error("NewServer accepted a nil Store")
	}
}

func TestIsLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, true},
		{&net.TCPAddr{IP: net.IPv4(127, 9, 9, 9), Port: 1}, true},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 1}, true},
		{&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1}, false},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.1"), Port: 1}, false},
		{&net.UnixAddr{Name: "/tmp/meta.sock", Net: "unix"}, true},
		{nil, false},
	} {
		if got := isLoopback(tc.addr); got != tc.want {
			t.Errorf("isLoopback(%v) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

// withToken adds a bearer token to a raw call.
func withToken(ctx context.Context, v string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", v)
}

func TestBearerToken(t *testing.T) {
	store := newFakeStore("n1")
	ts := startServer(t, store, ServerOptions{Token: "s3cret-token"}, "")
	ctx := testContext(t, 10*time.Second)
	raw := rawClient(t, ts.addr)
	y, _ := testMap(t, 1).YAML()

	for _, tc := range []struct {
		name, header string
	}{
		{"none", ""},
		{"wrong", "Bearer wrong"},
		{"prefix of the token", "Bearer s3cret"},
		{"another scheme", "Basic s3cret-token"},
		{"no scheme", "s3cret-token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cctx := ctx
			if tc.header != "" {
				cctx = withToken(ctx, tc.header)
			}
			_, err := raw.ApplyMap(cctx, &metapb.ApplyMapRequest{MapYaml: y})
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("ApplyMap: %v, want Unauthenticated", err)
			}
			if strings.Contains(err.Error(), "s3cret-token") {
				t.Errorf("the error reveals the token: %v", err)
			}
			_, err = raw.GetMap(cctx, &metapb.GetMapRequest{})
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("GetMap: %v, want Unauthenticated", err)
			}
			_, err = raw.ProxyHeartbeat(cctx, &metapb.ProxyHeartbeatRequest{ProxyId: "p1"})
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("ProxyHeartbeat: %v, want Unauthenticated", err)
			}
			stream, err := raw.WatchMap(cctx, &metapb.WatchMapRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("WatchMap: %v, want Unauthenticated", err)
			}
		})
	}
	if store.appliesCount() != 0 || store.Map().Epoch != 0 {
		t.Fatal("an unauthenticated ApplyMap changed the map")
	}
	if ps := store.Proxies(); len(ps) != 0 {
		t.Fatal("an unauthenticated heartbeat was recorded")
	}

	// The client with a wrong token fails at once, without retrying.
	bad := newClient(t, []string{ts.addr}, ClientOptions{Token: "wrong"})
	start := time.Now()
	_, err := bad.ApplyMap(ctx, testMap(t, 1), 0, "")
	if status.Code(err) != codes.Unauthenticated || time.Since(start) > time.Second {
		t.Fatalf("ApplyMap with a wrong token = %v after %v", err, time.Since(start))
	}
	if err := bad.WatchMap(ctx, 0, func(MapVersion) error { return nil }); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("WatchMap with a wrong token = %v", err)
	}
	if _, err := Dial(ctx, []string{ts.addr}, fastClient(ClientOptions{Token: "wrong"})); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Dial with a wrong token = %v", err)
	}
	if store.appliesCount() != 0 {
		t.Fatal("a wrong token applied a map")
	}

	// The right token works.
	good := newClient(t, []string{ts.addr}, ClientOptions{Token: "s3cret-token"})
	if epoch, err := good.ApplyMap(ctx, testMap(t, 1), 0, ""); err != nil || epoch != 1 {
		t.Fatalf("ApplyMap with the token = %d, %v", epoch, err)
	}
	if _, err := raw.GetMap(withToken(ctx, "bearer s3cret-token"), &metapb.GetMapRequest{}); err != nil {
		t.Fatalf("raw GetMap with the token (lower-case scheme) = %v", err)
	}
}

func TestClientNeedsTransportChoice(t *testing.T) {
	if _, err := NewClient([]string{"127.0.0.1:1"}, ClientOptions{Token: "t"}); err == nil || !strings.Contains(err.Error(), "Insecure") {
		t.Fatalf("NewClient without TLS or Insecure = %v", err)
	}
	if _, err := NewClient(nil, ClientOptions{Insecure: true}); err == nil {
		t.Fatal("NewClient without addresses succeeded")
	}
	if _, err := NewClient([]string{"no-port"}, ClientOptions{Insecure: true}); err == nil {
		t.Fatal("NewClient with an address without a port succeeded")
	}
}

func TestMutualTLS(t *testing.T) {
	pki := newPKI(t, "good")
	rogue := newPKI(t, "rogue")
	store := newFakeStore("n1")
	ts := startServer(t, store, ServerOptions{TLS: pki.serverTLS(), RequireClientCert: true}, "")
	ctx := testContext(t, 20*time.Second)

	// A client with a certificate of the CA.
	c := newClient(t, []string{ts.addr}, ClientOptions{TLS: pki.clientTLS(&pki.client)})
	if epoch, err := c.ApplyMap(ctx, testMap(t, 1), 0, "mtls"); err != nil || epoch != 1 {
		t.Fatalf("ApplyMap with a client certificate = %d, %v", epoch, err)
	}

	// Without a client certificate: Unauthenticated, at once.
	noCert := newClient(t, []string{ts.addr}, ClientOptions{TLS: pki.clientTLS(nil)})
	_, err := noCert.ApplyMap(ctx, testMap(t, 2), 1, "")
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "client certificate") {
		t.Fatalf("ApplyMap without a client certificate = %v", err)
	}
	raw := rawClient(t, ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.clientTLS(nil))))
	stream, err := raw.WatchMap(ctx, &metapb.WatchMapRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("WatchMap without a client certificate = %v", err)
	}

	// A certificate of another CA fails the handshake; plaintext fails
	// too. Both are retried until the deadline and change nothing.
	for name, o := range map[string]ClientOptions{
		"rogue certificate": {TLS: pki.clientTLS(&rogue.client)},
		"plaintext":         {},
		"untrusted server":  {TLS: rogue.clientTLS(&rogue.client)},
	} {
		cl := newClient(t, []string{ts.addr}, o)
		sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := cl.ApplyMap(sctx, testMap(t, 2), 1, "")
		cancel()
		if err == nil {
			t.Fatalf("%s: ApplyMap succeeded", name)
		}
		t.Logf("%s: %v", name, err)
	}
	if store.appliesCount() != 1 || store.Map().Epoch != 1 {
		t.Fatalf("refused clients changed the map: %d applies", store.appliesCount())
	}

	// Token and client certificate together: both are needed.
	both := startServer(t, newFakeStore("n2"), ServerOptions{TLS: pki.serverTLS(), RequireClientCert: true, Token: "tok"}, "")
	onlyCert := newClient(t, []string{both.addr}, ClientOptions{TLS: pki.clientTLS(&pki.client)})
	if _, err := onlyCert.GetMap(ctx); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("certificate without token = %v", err)
	}
	full := newClient(t, []string{both.addr}, ClientOptions{TLS: pki.clientTLS(&pki.client), Token: "tok"})
	if _, err := full.GetMap(ctx); err != nil {
		t.Fatalf("certificate and token = %v", err)
	}
}

// The unauthenticated server answers loopback clients (the test's); the
// refusal of others is TestIsLoopback's.
func TestUnauthenticatedLoopback(t *testing.T) {
	ts := startServer(t, newFakeStore("n1"), insecureOpts, "")
	raw := rawClient(t, ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if _, err := raw.GetMap(testContext(t, 5*time.Second), &metapb.GetMapRequest{}); err != nil {
		t.Fatal(err)
	}
}
