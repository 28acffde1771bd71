package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// The CLI's commands for the meta cluster run here through run() against
// a real metarpc server on 127.0.0.1 over ctlStore, an in-memory Store.

const ctlToken = "s3cret-meta-token"

// ctlMapYAML is the map the cluster starts with in most tests.
const ctlMapYAML = `epoch: 1
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

// ctlChangedMapYAML changes ctlMapYAML: s2 gets a new primary, s3 is added,
// [500, 1000) moves from s1 to s2 and [2000, +inf) from s2 to s3, and a
// table is added. Its epoch is ignored by apply and diff.
const ctlChangedMapYAML = `epoch: 1
shards:
  - {name: s1, primary: "10.0.0.1:5432", replicas: ["10.0.0.2:5432"]}
  - {name: s2, primary: "10.0.0.9:5432", state: readonly}
  - {name: s3, primary: "10.0.0.5:5432"}
distributions:
  - name: users
    key_type: bigint
    strategy: range
    default_shard: s1
    intervals:
      - {lo: -inf, hi: 500, shard: s1}
      - {lo: 500, hi: 2000, shard: s2}
      - {lo: 2000, hi: +inf, shard: s3}
tables:
  - {name: public.users, distribution: users, key: id}
  - {name: public.orders, distribution: users, key: user_id}
`

// ctlInvalidMapYAML parses but does not validate: an interval names a shard
// that does not exist.
const ctlInvalidMapYAML = `epoch: 1
shards:
  - {name: s1, primary: "10.0.0.1:5432"}
distributions:
  - name: users
    key_type: bigint
    strategy: range
    intervals:
      - {lo: -inf, hi: 1000, shard: s1}
      - {lo: 1000, hi: +inf, shard: s9}
tables:
  - {name: public.users, distribution: users, key: id}
`

// ctlStaleError is ctlStore's lost compare-and-set (metarpc.EpochConflict).
type ctlStaleError struct{ cur, exp uint64 }

func (e ctlStaleError) Error() string                          { return "epoch moved" }
func (e ctlStaleError) StaleEpoch() (current, expected uint64) { return e.cur, e.exp }

// ctlStore is an in-memory metarpc.Store: a one-member cluster that is
// its own leader.
type ctlStore struct {
	mu      sync.Mutex
	cur     metarpc.MapVersion
	history []metarpc.MapVersion // oldest first
	proxies []metarpc.ProxyStatus
	reports map[string][]string // by proxy ID: the endpoints it cannot reach
	members []metarpc.Member
	applies int // successful ApplyMap calls
}

func newCtlStore() *ctlStore {
	return &ctlStore{members: []metarpc.Member{
		{ID: "m1", RaftAddress: "127.0.0.1:7001", APIAddress: "127.0.0.1:7000", Suffrage: "voter", Leader: true},
		{ID: "m2", RaftAddress: "127.0.0.1:7011", APIAddress: "127.0.0.1:7010", Suffrage: "nonvoter"},
	}}
}

// set makes m the current map, as a committed change would.
func (s *ctlStore) set(m *shardmap.Map, comment string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = metarpc.MapVersion{Epoch: m.Epoch, Map: m, AppliedAt: time.Now().UTC(), Comment: comment}
	s.history = append(s.history, s.cur)
}

func (s *ctlStore) Map() metarpc.MapVersion {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *ctlStore) Watch(context.Context, uint64) (<-chan metarpc.MapVersion, error) {
	return nil, errors.New("ctlStore: no Watch")
}

func (s *ctlStore) ApplyMap(_ context.Context, m *shardmap.Map, expectEpoch uint64, comment string) (uint64, error) {
	s.mu.Lock()
	if s.cur.Epoch != expectEpoch {
		defer s.mu.Unlock()
		return 0, fmt.Errorf("apply: %w", ctlStaleError{s.cur.Epoch, expectEpoch})
	}
	s.applies++
	s.mu.Unlock()
	s.set(m, comment)
	return m.Epoch, nil
}

func (s *ctlStore) History(limit int) []metarpc.MapVersion {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.history)
	slices.Reverse(out)
	return out[:min(limit, len(out))]
}

func (s *ctlStore) Status(context.Context) metarpc.NodeStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return metarpc.NodeStatus{
		ID: "m1", RaftAddress: "127.0.0.1:7001", APIAddress: "127.0.0.1:7000", State: "leader",
		LeaderID: "m1", LeaderRaftAddress: "127.0.0.1:7001", LeaderAPIAddress: "127.0.0.1:7000",
		Term: 3, LastIndex: 42, CommitIndex: 41, AppliedIndex: 40,
		Members: slices.Clone(s.members),
	}
}

func (s *ctlStore) Join(_ context.Context, id, raftAddr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.ContainsFunc(s.members, func(m metarpc.Member) bool { return m.ID == id }) {
		s.members = append(s.members, metarpc.Member{ID: id, RaftAddress: raftAddr, Suffrage: "voter"})
	}
	return nil
}

func (s *ctlStore) Remove(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.members = slices.DeleteFunc(s.members, func(m metarpc.Member) bool { return m.ID == id })
	return nil
}

func (s *ctlStore) Deregister(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.proxies = slices.DeleteFunc(s.proxies, func(p metarpc.ProxyStatus) bool { return p.ID == id })
	delete(s.reports, id)
	return nil
}

func (s *ctlStore) Heartbeat(_ context.Context, id, addr string, applied uint64, unreachable []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.proxies = slices.DeleteFunc(s.proxies, func(p metarpc.ProxyStatus) bool { return p.ID == id })
	s.proxies = append(s.proxies, metarpc.ProxyStatus{ID: id, Address: addr, AppliedEpoch: applied, LastSeen: time.Now(), Lease: 10 * time.Second, Live: true})
	if s.reports == nil {
		s.reports = make(map[string][]string)
	}
	s.reports[id] = slices.Clone(unreachable)
	return nil
}

// Reports counts the reports of the live proxies.
func (s *ctlStore) Reports(addr string) (unreachable, reporting int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.proxies {
		r, ok := s.reports[p.ID]
		if !ok || !p.Live {
			continue
		}
		reporting++
		if slices.Contains(r, addr) {
			unreachable++
		}
	}
	return unreachable, reporting
}

func (s *ctlStore) Proxies() []metarpc.ProxyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.proxies)
}

func (s *ctlStore) WaitApplied(ctx context.Context, epoch uint64) error {
	for {
		if !slices.ContainsFunc(s.Proxies(), func(p metarpc.ProxyStatus) bool { return p.Live && p.AppliedEpoch < epoch }) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for epoch %d: %w", epoch, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (s *ctlStore) appliesCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applies
}

// ctlCluster is a metarpc server over a ctlStore on 127.0.0.1.
type ctlCluster struct {
	addr  string
	store *ctlStore
}

// startCtlMeta serves a new ctlStore, with the map of mapYAML unless it is
// "", until the test ends, and checks that the test leaves no goroutine
// behind.
func startCtlMeta(t *testing.T, mapYAML string, opts metarpc.ServerOptions) *ctlCluster {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	store := newCtlStore()
	if mapYAML != "" {
		store.set(ctlParseMap(t, mapYAML), "initial")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := metarpc.NewServer(store, opts)
	if err != nil {
		_ = lis.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &ctlCluster{addr: lis.Addr().String(), store: store}
}

// ctlTokenOpts is a server that wants ctlToken.
var ctlTokenOpts = metarpc.ServerOptions{Token: ctlToken}

func ctlParseMap(t *testing.T, y string) *shardmap.Map {
	t.Helper()
	m, err := shardmap.ParseYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return m
}

// ctlResult is what a run of the CLI did.
type ctlResult struct {
	code           int
	stdout, stderr string
}

// runCtl runs the CLI with args and stdin.
func runCtl(t *testing.T, stdin io.Reader, args ...string) ctlResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, stdin, &stdout, &stderr)
	return ctlResult{code, stdout.String(), stderr.String()}
}

// cli runs a command against the cluster, with its address and token.
func (c *ctlCluster) cli(t *testing.T, args ...string) ctlResult {
	t.Helper()
	return c.cliIn(t, nil, args...)
}

func (c *ctlCluster) cliIn(t *testing.T, stdin io.Reader, args ...string) ctlResult {
	t.Helper()
	return runCtl(t, stdin, append(args, "--meta", c.addr, "--token", ctlToken, "--timeout", "5s")...)
}

// want checks the exit code, reporting the output when it is not.
func (r ctlResult) want(t *testing.T, code int) ctlResult {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	return r
}

// ctlWriteFile writes a file in the test's directory and returns its path.
func ctlWriteFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func ctlWantContains(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, got)
		}
	}
}

func TestMetaTokenFromEnvironment(t *testing.T) {
	c := startCtlMeta(t, ctlMapYAML, ctlTokenOpts)
	t.Setenv(envMeta, c.addr)
	t.Setenv(envMetaToken, ctlToken)
	r := runCtl(t, nil, "shards", "list").want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout, "s1", "s2")
	// The token never shows in help.
	r = runCtl(t, nil, "map", "show", "--help").want(t, exitOK)
	if strings.Contains(r.stdout, ctlToken) {
		t.Errorf("help shows the token:\n%s", r.stdout)
	}
}

func TestMetaWrongToken(t *testing.T) {
	c := startCtlMeta(t, ctlMapYAML, ctlTokenOpts)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"wrong", []string{"--token", "not-the-token"}},
		{"missing", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(envMetaToken, "")
			args := append([]string{"map", "show", "--meta", c.addr, "--timeout", "5s"}, tc.args...)
			r := runCtl(t, nil, args...).want(t, exitError)
			ctlWantContains(t, "stderr", r.stderr, "credentials", "--token", envMetaToken)
			if strings.Contains(r.stderr, "not-the-token") {
				t.Errorf("the token is printed: %s", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("output despite the error: %s", r.stdout)
			}
		})
	}
}

func TestMetaUnreachable(t *testing.T) {
	dead := freeAddr(t)
	start := time.Now()
	r := runCtl(t, nil, "map", "show", "--meta", dead, "--timeout", "300ms").want(t, exitError)
	ctlWantContains(t, "stderr", r.stderr, "no member of the meta cluster answered within 300ms", "tried "+dead)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s with --timeout 300ms", d)
	}
}

func TestMetaConnectionUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"map", "show", "--insecure", "--tls-ca", "ca.pem"}, "--insecure"},
		{[]string{"map", "show", "-o", "yaml"}, "-o"},
		{[]string{"map", "show", "--meta", "no-port"}, "--meta"},
		{[]string{"map", "show", "--meta", " , "}, "--meta"},
		{[]string{"map", "show", "--timeout", "0s"}, "--timeout"},
		{[]string{"map", "show", "--tls-cert", "c.pem"}, "--tls-key"},
		{[]string{"map", "show", "extra"}, "unknown command"},
		{[]string{"map", "nope"}, "unknown command"},
		{[]string{"map", "apply"}, "-f FILE"},
		{[]string{"map", "diff"}, "-f FILE"},
		{[]string{"map", "history", "--limit", "0"}, "--limit"},
		{[]string{"meta", "join", "m3"}, "accepts 2 arg"},
		{[]string{"meta", "join", "m3", "no-port"}, "RAFT_ADDR"},
		{[]string{"meta", "remove"}, "accepts 1 arg"},
		{[]string{"proxies", "list", "--bogus"}, "--bogus"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCtl(t, nil, tc.args...).want(t, exitUsage)
			ctlWantContains(t, "stderr", r.stderr, tc.want)
		})
	}
}

func TestMetaTransportChoice(t *testing.T) {
	for _, tc := range []struct {
		meta      string
		flags     func(o *metaConnOptions)
		plaintext bool
	}{
		{"127.0.0.1:6440", nil, true},
		{"localhost:6440,[::1]:6440", nil, true},
		{"127.0.0.1:6440,10.0.0.1:6440", nil, false},
		{"meta.example.com:6440", nil, false},
		{"127.0.0.1:6440", func(o *metaConnOptions) { o.tlsCA = "ca.pem" }, false},
		{"127.0.0.1:6440", func(o *metaConnOptions) { o.tlsServerName = "meta" }, false},
		{"10.0.0.1:6440", func(o *metaConnOptions) { o.insecure = true }, true},
	} {
		o := &metaConnOptions{meta: tc.meta, timeout: time.Second, output: formatTable}
		if tc.flags != nil {
			tc.flags(o)
		}
		if err := o.Validate(); err != nil {
			t.Fatalf("%s: %v", tc.meta, err)
		}
		if o.plaintext != tc.plaintext {
			t.Errorf("%s %+v: plaintext %v, want %v", tc.meta, o, o.plaintext, tc.plaintext)
		}
	}
}

// TestMetaTLS connects with --tls-ca and --tls-server-name to a server
// whose self-signed certificate names "meta.test".
func TestMetaTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "meta.test"},
		DNSNames:              []string{"meta.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := ctlWriteFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	opts := ctlTokenOpts
	opts.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	c := startCtlMeta(t, ctlMapYAML, opts)
	r := c.cli(t, "shards", "list", "--tls-ca", ca, "--tls-server-name", "meta.test").want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout, "10.0.0.1:5432")
	// Plaintext (implied on loopback) against a TLS server fails.
	r = runCtl(t, nil, "shards", "list", "--meta", c.addr, "--token", ctlToken, "--timeout", "300ms").want(t, exitError)
	ctlWantContains(t, "stderr", r.stderr, "tried "+c.addr)
}

func TestMetaCompletion(t *testing.T) {
	r := runCtl(t, nil, "completion", "bash").want(t, exitOK)
	ctlWantContains(t, "completion script", r.stdout, "bash completion")
	r = runCtl(t, nil, "__complete", "map", "show", "-o", "").want(t, exitOK)
	ctlWantContains(t, "-o completions", r.stdout, "table\t", "json\t")
	r = runCtl(t, nil, "__complete", "map", "apply", "-f", "").want(t, exitOK)
	ctlWantContains(t, "-f completions", r.stdout, "yaml\nyml\n")
	r = runCtl(t, nil, "__complete", "map", "").want(t, exitOK)
	ctlWantContains(t, "map subcommands", r.stdout, "apply\t", "diff\t", "history\t", "show\t")
}

func TestMetaRemoveCompletesMemberIDs(t *testing.T) {
	c := startCtlMeta(t, "", ctlTokenOpts)
	r := runCtl(t, nil, "__complete", "meta", "remove", "--meta", c.addr, "--token", ctlToken, "").want(t, exitOK)
	ctlWantContains(t, "completions", r.stdout, "m1\tvoter at 127.0.0.1:7001", "m2\tnonvoter")
}
