package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/shardmap/metarpc"
)

func TestShardsList(t *testing.T) {
	c := startCtlMeta(t, "", ctlTokenOpts)
	r := c.cli(t, "shards", "list").want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout, "No shard map has been applied yet.")

	c.store.set(ctlParseMap(t, ctlMapYAML), "")
	r = c.cli(t, "shards", "list").want(t, exitOK)
	tables := strings.Split(strings.TrimSpace(r.stdout), "\n\n")
	lines := strings.Split(tables[0], "\n")
	if len(lines) != 3 || len(tables) != 2 {
		t.Fatalf("want a header and 2 shards, then a note:\n%s", r.stdout)
	}
	// Without a health monitor or proxy reports, health is unknown.
	ctlWantContains(t, "stdout", tables[1], "Endpoint health: unknown")
	for i, want := range [][]string{
		{"NAME", "PRIMARY", "REPLICAS", "STATE", "FENCED", "SWITCH"},
		{"s1", "10.0.0.1:5432", "10.0.0.2:5432", "active", "-", "-"},
		{"s2", "10.0.0.3:5432", "-", "readonly", "-", "-"},
	} {
		if got := strings.Fields(lines[i]); !slices.Equal(got, want) {
			t.Errorf("line %d: %q, want %q", i, got, want)
		}
	}

	r = c.cli(t, "shards", "list", "-o", "json").want(t, exitOK)
	var got shardsListResult
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if got.Epoch != 1 || len(got.Shards) != 2 || got.Shards[0].Replicas[0] != "10.0.0.2:5432" || len(got.Shards[1].Replicas) != 0 || got.Shards[1].State != "readonly" {
		t.Errorf("json: %+v", got)
	}
	if e := got.Shards[0].Endpoints; len(e) != 2 || e[0].Role != "primary" || e[1].Role != "replica" || e[1].State != "unknown" || e[1].LagBytes != nil {
		t.Errorf("json endpoints: %+v", e)
	}
}

func TestProxiesList(t *testing.T) {
	c := startCtlMeta(t, ctlMapYAML, ctlTokenOpts)
	r := c.cli(t, "proxies", "list").want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout, "No proxy has reported")

	c.store.mu.Lock()
	c.store.proxies = []metarpc.ProxyStatus{
		{ID: "proxy-a", Address: "10.0.1.1:6432", AppliedEpoch: 1, LastSeen: time.Now().Add(-3 * time.Second), Lease: 10 * time.Second, Live: true},
		{ID: "proxy-b", Address: "10.0.1.2:6432", AppliedEpoch: 0, LastSeen: time.Now().Add(-5 * time.Minute), Lease: 10 * time.Second},
	}
	c.store.mu.Unlock()
	r = c.cli(t, "proxies", "list").want(t, exitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and 2 proxies:\n%s", r.stdout)
	}
	for i, want := range [][]string{
		{"ID", "ADDRESS", "EPOCH", "LAST", "SEEN", "ALIVE"},
		{"proxy-a", "10.0.1.1:6432", "1", "3s", "ago", "yes"},
		{"proxy-b", "10.0.1.2:6432", "0", "5m", "ago", "no"},
	} {
		if got := strings.Fields(lines[i]); !slices.Equal(got, want) {
			t.Errorf("line %d: %q, want %q", i, got, want)
		}
	}

	r = c.cli(t, "proxies", "list", "-o", "json").want(t, exitOK)
	var got proxiesListResult
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if len(got.Proxies) != 2 || !got.Proxies[0].Alive || got.Proxies[1].Alive || got.Proxies[0].LeaseSeconds != 10 || got.Proxies[0].LastSeen.IsZero() {
		t.Errorf("json: %+v", got)
	}
}

func TestMetaStatus(t *testing.T) {
	c := startCtlMeta(t, ctlMapYAML, ctlTokenOpts)
	r := c.cli(t, "meta", "status").want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout,
		"Member:        m1 (leader)",
		"Leader:        m1 (raft 127.0.0.1:7001, api 127.0.0.1:7000)",
		"Term:          3",
		"Log index:     last 42, commit 41, applied 40",
		"Map epoch:     1",
	)
	var members []string
	for _, line := range strings.Split(r.stdout, "\n") {
		if f := strings.Fields(line); len(f) == 5 {
			members = append(members, strings.Join(f, " "))
		}
	}
	// The header has 7 fields, the key-value lines fewer.
	want := []string{"m1 127.0.0.1:7001 127.0.0.1:7000 voter yes", "m2 127.0.0.1:7011 127.0.0.1:7010 nonvoter no"}
	if !slices.Equal(members, want) {
		t.Errorf("members %q, want %q\n%s", members, want, r.stdout)
	}

	r = c.cli(t, "meta", "status", "-o", "json").want(t, exitOK)
	var got metaStatusResult
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if got.ID != "m1" || got.State != "leader" || got.Leader.ID != "m1" || got.Term != 3 || got.CommitIndex != 41 || got.MapEpoch != 1 || len(got.Members) != 2 || got.Members[1].Suffrage != "nonvoter" {
		t.Errorf("json: %+v", got)
	}
}

func TestMetaJoinRemove(t *testing.T) {
	c := startCtlMeta(t, "", ctlTokenOpts)
	r := c.cli(t, "meta", "join", "m3", "10.0.0.3:7001").want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout, "Member m3 (raft 10.0.0.3:7001) is a voter of the meta cluster.")
	ids := func() []string {
		var out []string
		for _, m := range c.store.Status(t.Context()).Members {
			out = append(out, m.ID+"@"+m.RaftAddress)
		}
		return out
	}
	if got := ids(); !slices.Contains(got, "m3@10.0.0.3:7001") {
		t.Fatalf("members after join: %v", got)
	}
	r = c.cli(t, "meta", "remove", "m2", "-o", "json").want(t, exitOK)
	var got memberChangeResult
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Action != "removed" || got.ID != "m2" {
		t.Errorf("json %q: %v", r.stdout, err)
	}
	if got := ids(); !slices.Equal(got, []string{"m1@127.0.0.1:7001", "m3@10.0.0.3:7001"}) {
		t.Errorf("members after remove: %v", got)
	}
	// The server's checks come back naming the argument.
	r = c.cli(t, "meta", "join", "bad id", "10.0.0.4:7001").want(t, exitError)
	ctlWantContains(t, "stderr", r.stderr, "refused the member ID", "spaces")
}

// TestMetaSubcommandsHook checks that constructors in metaSubcommands end
// up under `pgshard meta`.
func TestMetaSubcommandsHook(t *testing.T) {
	cmd := newMetaCommand(nil)
	for _, name := range []string{"status", "join", "remove"} {
		if c, _, err := cmd.Find([]string{name}); err != nil || c.Name() != name {
			t.Errorf("meta %s: %v", name, err)
		}
	}
	if got, want := len(cmd.Commands()), 3+len(metaSubcommands); got != want {
		t.Errorf("meta has %d subcommands, want %d", got, want)
	}
}
