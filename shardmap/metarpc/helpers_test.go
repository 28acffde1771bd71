package metarpc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgshard/pgshard/shardmap"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testMapYAML is a valid map; epoch 1 is replaced on apply.
const testMapYAML = `epoch: 1
shards:
  - {name: s1, primary: "10.0.0.1:5432", replicas: ["10.0.0.2:5432"]}
  - {name: s2, primary: "10.0.0.3:5432", state: readonly}
distributions:
  - name: users
    key_type: bigint
    strategy: range
    default_shard: s1
    intervals:
      - {lo: -inf, hi: 1000, shard: s1}
      - {lo: 1000, hi: +inf, shard: s2}
tables:
  - {name: public.users, distribution: users, key: id}
`

// testMap returns the test map at epoch, its first interval ending at
// split (so that maps of different epochs differ).
func testMap(t testing.TB, epoch uint64) *shardmap.Map {
	t.Helper()
	m, err := shardmap.ParseYAML([]byte(testMapYAML))
	if err != nil {
		t.Fatal(err)
	}
	m.Epoch = epoch
	split := shardmap.Int64Bound(int64(1000 + epoch))
	m.Distributions[0].Intervals[0].Hi = split
	m.Distributions[0].Intervals[1].Lo = split
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return m
}

// testServer is a Server on a free 127.0.0.1 port.
type testServer struct {
	srv   *Server
	addr  string
	store *fakeStore
	done  chan error
}

// startServer serves store on addr ("" for a free port) until the test
// ends.
func startServer(t testing.TB, store interface {
	Store
	fake() *fakeStore
}, opts ServerOptions, addr string) *testServer {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	var err error
	// A restarted server takes its old port back; retry briefly in case
	// the kernel has not released it yet.
	for i := 0; i < 50; i++ {
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(store, opts)
	if err != nil {
		_ = lis.Close()
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, addr: lis.Addr().String(), store: store.fake(), done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(lis) }()
	t.Cleanup(ts.stop)
	return ts
}

// stop stops the server and waits for Serve to return (once).
func (ts *testServer) stop() {
	if ts.srv == nil {
		return
	}
	ts.srv.Stop()
	<-ts.done
	ts.srv = nil
}

// insecureOpts is a server that needs no credentials (loopback only).
var insecureOpts = ServerOptions{AllowUnauthenticated: true}

// fastClient are client options with short pauses for tests.
func fastClient(o ClientOptions) ClientOptions {
	o.MinBackoff = 20 * time.Millisecond
	o.MaxBackoff = 200 * time.Millisecond
	o.AttemptTimeout = 2 * time.Second
	if o.TLS == nil {
		o.Insecure = true
	}
	return o
}

func newClient(t testing.TB, addrs []string, o ClientOptions) *Client {
	t.Helper()
	c, err := NewClient(addrs, fastClient(o))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// deadAddr returns a 127.0.0.1 address nothing listens on.
func deadAddr(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate.
type testPKI struct {
	pool   *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

func newPKI(t testing.TB, name string) *testPKI {
	t.Helper()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name + " CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) tls.Certificate {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	p.server = leaf(2, "meta", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	p.client = leaf(3, name+" client", x509.ExtKeyUsageClientAuth, nil)
	return p
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// serverTLS is the server side of mutual TLS with p.
func (p *testPKI) serverTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.pool, MinVersion: tls.VersionTLS12}
}

// clientTLS trusts p's servers and, with cert, presents cert.
func (p *testPKI) clientTLS(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// as is errors.As returning the target.
func as[T error](err error) (T, bool) {
	var target T
	ok := errors.As(err, &target)
	return target, ok
}
