package main

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// ctlSwitchingMapYAML has a shard with two replicas, a fenced former
// primary and a failover in progress, and a shard with nothing special.
const ctlSwitchingMapYAML = `epoch: 1
shards:
  - name: s1
    primary: "10.0.0.1:5432"
    replicas: ["10.0.0.2:5432", "10.0.0.4:5432"]
    fenced: ["10.0.0.9:5432"]
    switch: {kind: failover, from: "10.0.0.1:5432", to: "10.0.0.2:5432", step: promote, reason: "primary down"}
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

// ctlHealth is what a health monitor might say about ctlSwitchingMapYAML:
// s1's primary is down, one replica lags, the other has replayed nothing
// yet; s2's primary was never probed.
func ctlHealth() []metarpc.EndpointHealth {
	return []metarpc.EndpointHealth{
		{Shard: "s1", Addr: "10.0.0.1:5432", Probed: true,
			LastError: errors.New(`failed to connect to host=10.0.0.1 user=pgshard password=hunter2 database=postgres: connection refused`)},
		{Shard: "s1", Addr: "10.0.0.2:5432", Probed: true, Up: true,
			InRecovery: true, LagKnown: true, LagBytes: 3 << 19, LagSeconds: 2.5},
		{Shard: "s1", Addr: "10.0.0.4:5432", Probed: true, Up: true,
			InRecovery: true, LagKnown: true, LagBytes: 100, LagSeconds: math.Inf(1)},
		{Shard: "s2", Addr: "10.0.0.3:5432"},
		// The meta members' monitor probes fenced servers too.
		{Shard: "s1", Addr: "10.0.0.9:5432", Probed: true, Up: true},
	}
}

func TestShardsListHealth(t *testing.T) {
	opts := ctlTokenOpts
	opts.Health = ctlHealth
	c := startCtlMeta(t, ctlSwitchingMapYAML, opts)
	for _, p := range []struct {
		id          string
		unreachable []string
	}{{"proxy-a", []string{"10.0.0.1:5432"}}, {"proxy-b", []string{"10.0.0.1:5432", "10.0.0.4:5432"}}, {"proxy-c", nil}} {
		if err := c.store.Heartbeat(t.Context(), p.id, "", 1, p.unreachable); err != nil {
			t.Fatal(err)
		}
	}

	r := c.cli(t, "shards", "list").want(t, exitOK)
	if strings.Contains(r.stdout, "hunter2") {
		t.Errorf("a password is printed:\n%s", r.stdout)
	}
	tables := strings.Split(strings.TrimSpace(r.stdout), "\n\n")
	if len(tables) != 3 {
		t.Fatalf("want shards, endpoints and errors:\n%s", r.stdout)
	}
	shards := strings.Split(tables[0], "\n")
	if len(shards) != 3 || !strings.Contains(shards[1], "10.0.0.9:5432") ||
		!strings.Contains(shards[1], "failover 10.0.0.1:5432 -> 10.0.0.2:5432 at step promote") {
		t.Errorf("shards table:\n%s", tables[0])
	}
	endpoints := strings.Split(tables[1], "\n")
	for i, want := range []string{
		"SHARD ENDPOINT ROLE HEALTH LAG PROXIES",
		"s1 10.0.0.1:5432 primary down - 1 of 3 reach it",
		"s1 10.0.0.2:5432 replica up 1.5 MiB, 2.5s 3 of 3 reach it",
		"s1 10.0.0.4:5432 replica up 100 B, no replay yet 2 of 3 reach it",
		"s1 10.0.0.9:5432 fenced up (not in recovery) - 3 of 3 reach it",
		"s2 10.0.0.3:5432 primary unknown - 3 of 3 reach it",
	} {
		if i >= len(endpoints) || strings.Join(strings.Fields(endpoints[i]), " ") != want {
			t.Errorf("endpoints line %d, want %q:\n%s", i, want, tables[1])
		}
	}
	ctlWantContains(t, "errors", tables[2], "Latest probe errors:", "10.0.0.1:5432 (primary of s1): failed to connect", "password=REDACTED")

	r = c.cli(t, "shards", "list", "-o", "json").want(t, exitOK)
	if strings.Contains(r.stdout, "hunter2") {
		t.Errorf("a password is printed:\n%s", r.stdout)
	}
	var got shardsListResult
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	s1 := got.Shards[0]
	if !slices.Equal(s1.Fenced, []string{"10.0.0.9:5432"}) || s1.Switch == nil || s1.Switch.Kind != "failover" ||
		s1.Switch.To != "10.0.0.2:5432" || s1.Switch.Step != "promote" || s1.Switch.Reason != "primary down" {
		t.Errorf("json shard s1: %+v (switch %+v)", s1.shardJSON, s1.Switch)
	}
	if len(s1.Endpoints) != 4 {
		t.Fatalf("json endpoints of s1: %+v", s1.Endpoints)
	}
	if e := s1.Endpoints[0]; e.Role != "primary" || e.State != "down" || !strings.Contains(e.LastError, "REDACTED") || e.UnreachableReports != 2 || e.ReportingProxies != 3 {
		t.Errorf("json primary: %+v", e)
	}
	if e := s1.Endpoints[1]; e.State != "up" || !e.InRecovery || !e.LagKnown || e.LagBytes == nil || *e.LagBytes != 3<<19 || e.LagSeconds == nil || *e.LagSeconds != 2.5 {
		t.Errorf("json replica: %+v", e)
	}
	if e := s1.Endpoints[2]; !e.LagKnown || e.LagBytes == nil || *e.LagBytes != 100 || e.LagSeconds != nil {
		t.Errorf("json replica with an unbounded lag: %+v", e)
	}
	if e := s1.Endpoints[3]; e.Role != "fenced" || e.State != "up" || e.InRecovery {
		t.Errorf("json fenced: %+v", e)
	}
	if s2 := got.Shards[1]; s2.Switch != nil || len(s2.Fenced) != 0 || s2.Fenced == nil || s2.Endpoints[0].State != "unknown" {
		t.Errorf("json shard s2: %+v", s2)
	}
}

// A replica that left recovery, or a primary in it, is flagged.
func TestEndpointHealthCell(t *testing.T) {
	for _, tc := range []struct {
		e    endpointJSON
		want string
	}{
		{endpointJSON{Role: metarpc.RolePrimary, State: "up"}, "up"},
		{endpointJSON{Role: metarpc.RolePrimary, State: "up", InRecovery: true}, "up (in recovery!)"},
		{endpointJSON{Role: metarpc.RoleReplica, State: "up", InRecovery: true}, "up"},
		{endpointJSON{Role: metarpc.RoleReplica, State: "up"}, "up (not in recovery!)"},
		{endpointJSON{Role: metarpc.RoleFenced, State: "up"}, "up (not in recovery)"},
		{endpointJSON{Role: metarpc.RoleFenced, State: "up", InRecovery: true}, "up (in recovery)"},
		{endpointJSON{Role: metarpc.RoleFenced, State: "down"}, "down"},
		{endpointJSON{Role: metarpc.RoleReplica, State: "down"}, "down"},
	} {
		if got := tc.e.health(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.e, got, tc.want)
		}
	}
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 19: "1.5 MiB", 5 << 30: "5.0 GiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// The PROXIES cell says how many live proxies reach the endpoint.
func TestEndpointProxiesCell(t *testing.T) {
	for _, tc := range []struct {
		unreachable, reporting int
		want                   string
	}{
		{0, 0, "-"},
		{0, 1, "1 of 1 reach it"},
		{1, 1, "0 of 1 reach it"},
		{1, 3, "2 of 3 reach it"},
		{0, 2, "2 of 2 reach it"},
	} {
		e := endpointJSON{UnreachableReports: tc.unreachable, ReportingProxies: tc.reporting}
		if got := e.reports(); got != tc.want {
			t.Errorf("%d of %d proxies cannot reach it: %q, want %q", tc.unreachable, tc.reporting, got, tc.want)
		}
	}
}
