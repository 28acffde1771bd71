package metarpc

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metapb"
)

// switchingMapYAML has a fenced former primary and a switch in progress
// on s1.
const switchingMapYAML = `epoch: 1
shards:
  - name: s1
    primary: "10.0.0.1:5432"
    replicas: ["10.0.0.2:5432"]
    fenced: ["10.0.0.9:5432"]
    switch: {kind: switchover, from: "10.0.0.1:5432", step: hold, reason: "maintenance"}
  - {name: s2, primary: "10.0.0.3:5432"}
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

func switchingMap(t *testing.T) *shardmap.Map {
	t.Helper()
	m, err := shardmap.ParseYAML([]byte(switchingMapYAML))
	if err == nil {
		err = m.Validate()
	}
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestListShardsEndpoints(t *testing.T) {
	store := newFakeStore("n1")
	store.set(switchingMap(t), "")
	opts := insecureOpts
	opts.Health = func() []EndpointHealth {
		return []EndpointHealth{
			{Shard: "s1", Addr: "10.0.0.1:5432", Probed: true,
				LastError: errors.New("dial postgres://pgshard:hunter2@10.0.0.1:5432/postgres: connection refused")},
			{Shard: "s1", Addr: "10.0.0.2:5432", Probed: true, Up: true,
				InRecovery: true, LagKnown: true, LagBytes: 4096, LagSeconds: math.Inf(1)},
			// Another shard's endpoint at the same address does not count.
			{Shard: "s2", Addr: "10.0.0.2:5432", Probed: true},
		}
	}
	ts := startServer(t, store, opts, "")
	ctx := testContext(t, 10*time.Second)
	c := newClient(t, []string{ts.addr}, ClientOptions{})
	if _, err := c.ProxyHeartbeat(ctx, "p1", "", 1, []string{"10.0.0.1:5432"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ProxyHeartbeat(ctx, "p2", "", 1, nil); err != nil {
		t.Fatal(err)
	}

	epoch, shards, err := c.ListShards(ctx)
	if err != nil || epoch != 1 || len(shards) != 2 {
		t.Fatalf("ListShards = %d, %+v, %v", epoch, shards, err)
	}
	s1 := shards[0]
	if len(s1.Fenced) != 1 || s1.Fenced[0].String() != "10.0.0.9:5432" {
		t.Errorf("fenced = %v", s1.Fenced)
	}
	if sw := s1.Switch; sw == nil || sw.Kind != shardmap.Switchover || sw.From.String() != "10.0.0.1:5432" ||
		sw.To != (shardmap.Endpoint{}) || sw.Step != "hold" || sw.Reason != "maintenance" {
		t.Errorf("switch = %+v", sw)
	}
	if len(s1.Endpoints) != 3 {
		t.Fatalf("endpoints of s1 = %+v", s1.Endpoints)
	}
	p, r, f := s1.Endpoints[0], s1.Endpoints[1], s1.Endpoints[2]
	if p.Addr != "10.0.0.1:5432" || p.Role != RolePrimary || p.State != StateDown || p.Up() ||
		p.UnreachableReports != 1 || p.ReportingProxies != 2 || strings.Contains(p.LastError, "hunter2") || !strings.Contains(p.LastError, "connection refused") {
		t.Errorf("primary = %+v", p)
	}
	if r.Role != RoleReplica || !r.Up() || !r.InRecovery || !r.LagKnown || r.LagBytes != 4096 || !math.IsInf(r.LagSeconds, 1) ||
		r.LastError != "" || r.UnreachableReports != 0 || r.ReportingProxies != 2 {
		t.Errorf("replica = %+v", r)
	}
	if f.Role != RoleFenced || f.State != StateUnknown {
		t.Errorf("fenced = %+v", f)
	}
	if s2 := shards[1]; s2.Switch != nil || len(s2.Endpoints) != 1 || s2.Endpoints[0].State != StateUnknown {
		t.Errorf("s2 = %+v", s2)
	}

	// A follower keeps no reports.
	follower := newFakeStore("n2").follow(ts.addr)
	follower.set(switchingMap(t), "")
	fts := startServer(t, follower, insecureOpts, "")
	fc := newClient(t, []string{fts.addr}, ClientOptions{})
	if _, shards, err = fc.ListShards(ctx); err != nil {
		t.Fatal(err)
	}
	if e := shards[0].Endpoints[0]; e.ReportingProxies != 0 || e.State != StateUnknown {
		t.Errorf("endpoint on a follower without Health = %+v", e)
	}
}

func TestProxyHeartbeatUnreachable(t *testing.T) {
	store := newFakeStore("n1")
	ts := startServer(t, store, insecureOpts, "")
	raw := rawClient(t, ts.addr)
	ctx := testContext(t, 5*time.Second)
	for _, bad := range [][]string{{"10.0.0.1:5432", "nowhere"}, {""}, make([]string, maxUnreachable+1)} {
		_, err := raw.ProxyHeartbeat(ctx, &metapb.ProxyHeartbeatRequest{ProxyId: "p1", Unreachable: bad})
		if ia, ok := typedError(err, nil).(*InvalidArgumentError); !ok || ia.Field != "unreachable" || status.Code(err) != codes.InvalidArgument {
			t.Errorf("unreachable %.40q: %v", bad, err)
		}
	}
	if len(store.Proxies()) != 0 {
		t.Errorf("a refused heartbeat was recorded")
	}
	if _, err := raw.ProxyHeartbeat(ctx, &metapb.ProxyHeartbeatRequest{ProxyId: "p1", Unreachable: []string{"10.0.0.1:5432", "[::1]:5432"}}); err != nil {
		t.Fatal(err)
	}
	if un, rep := store.Reports("[::1]:5432"); un != 1 || rep != 1 {
		t.Errorf("Reports = %d of %d", un, rep)
	}
}

func TestRedactSecrets(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"connect host=h user=u password=hunter2 dbname=d", "connect host=h user=u password=REDACTED dbname=d"},
		{"password='hun ter2' next", "password=REDACTED next"},
		{`PASSWORD = "a\"b" x`, `PASSWORD=REDACTED x`},
		{"dial postgres://u:hunter2@h:5432/d failed", "dial postgres://u:REDACTED@h:5432/d failed"},
		{"no secret here: connection refused", "no secret here: connection refused"},
	} {
		if got := redactSecrets(tc.in); got != tc.want {
			t.Errorf("redactSecrets(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := redactSecrets(strings.Repeat("é", 1000))
	if len(long) > maxLastError+3 || !strings.HasSuffix(long, "...") || !strings.HasPrefix(long, "é") {
		t.Errorf("a long error is %d bytes: %.20q...", len(long), long)
	}
}

// TestDeregisterProxy: a proxy that stops is forgotten at once; an unknown
// one is not an error; a bad ID is refused.
func TestDeregisterProxy(t *testing.T) {
	store := newFakeStore("n1")
	ts := startServer(t, store, insecureOpts, "")
	c := newClient(t, []string{ts.addr}, ClientOptions{})
	ctx := testContext(t, 5*time.Second)
	if _, err := c.ProxyHeartbeat(ctx, "p1", "10.0.1.1:6432", 1, []string{"10.0.0.1:5432"}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeregisterProxy(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	if ps := store.Proxies(); len(ps) != 0 {
		t.Errorf("after DeregisterProxy the store lists %+v", ps)
	}
	if un, rep := store.Reports("10.0.0.1:5432"); un != 0 || rep != 0 {
		t.Errorf("the deregistered proxy's report still counts: %d of %d", un, rep)
	}
	if err := c.DeregisterProxy(ctx, "never-seen"); err != nil {
		t.Errorf("deregister an unknown proxy: %v", err)
	}
	raw := rawClient(t, ts.addr)
	if _, err := raw.DeregisterProxy(ctx, &metapb.DeregisterProxyRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty proxy ID: %v", err)
	}
}
