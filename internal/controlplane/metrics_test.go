package controlplane

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgshard/pgshard/replication/failover"
	"github.com/pgshard/pgshard/replication/twophase"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/meta"
)

// TestMetaMetrics: a meta member's /metrics counts the workflow's steps
// and switches, times a failover from detection to the new primary, says
// whether it leads, and wants the token.
func TestMetaMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	node, err := meta.Open(ctx, meta.Config{ID: "m1", RaftAddr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	if err := node.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if err := node.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	m := newMetrics(node)
	t0 := time.Now()
	for _, e := range []failover.Event{
		{Shard: "s1", Kind: shardmap.Failover, Step: failover.EventDetect, At: t0},
		{Shard: "s1", Kind: shardmap.Failover, Step: failover.StepFence, At: t0.Add(10 * time.Millisecond)},
		{Shard: "s1", Kind: shardmap.Failover, Step: failover.EventFenceOld, At: t0.Add(20 * time.Millisecond), Err: errors.New("dead")},
		{Shard: "s1", Kind: shardmap.Failover, Step: failover.EventDone, At: t0.Add(1500 * time.Millisecond)},
	} {
		m.event(e)
	}
	if got := testutil.ToFloat64(m.switches.WithLabelValues("failover")); got != 1 {
		t.Errorf("switches = %v", got)
	}
	if got := testutil.ToFloat64(m.steps.WithLabelValues("failover", failover.EventFenceOld, "error")); got != 1 {
		t.Errorf("failed fence-old steps = %v", got)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.serve(sctx, ln, "tok") }()
	defer func() { stop(); <-done }()
	get := func(auth string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ln.Addr().String()+"/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d", code)
	}
	code, body := get("Bearer tok")
	if code != http.StatusOK {
		t.Fatalf("with the token: %d %s", code, body)
	}
	for _, want := range []string{"pgshard_meta_leader 1", `pgshard_failover_duration_seconds_count{kind="failover"} 1`,
		`pgshard_failover_duration_seconds_bucket{kind="failover",le="2"} 1`, `pgshard_failover_duration_seconds_bucket{kind="failover",le="1"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestTwoPhaseRoundMetrics: a recovery round sets the number of
// unresolved in-doubt transactions and the age of the oldest of them;
// those it resolved count for neither.
func TestTwoPhaseRoundMetrics(t *testing.T) {
	m := &metrics{reg: prometheus.NewRegistry()}
	_, onRound := m.twoPhase()
	onRound(twophase.Report{InDoubt: []twophase.InDoubt{
		{GID: "a", Shard: "s1", Age: 3 * time.Second, State: "in progress"},
		{GID: "a", Shard: "s2", Age: 4 * time.Second, State: "in progress"},
		{GID: "b", Shard: "s1", Age: 42 * time.Second, State: "blocked: decision shard not scanned"},
		{GID: "c", Shard: "s1", Age: 90 * time.Second, State: "rollback"},
	}})
	gauge := func(name string) float64 {
		t.Helper()
		mfs, err := m.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatalf("%s not registered", name)
		return 0
	}
	if got := gauge("pgshard_twophase_in_doubt"); got != 2 {
		t.Errorf("in doubt %v, want 2", got)
	}
	if got := gauge("pgshard_twophase_oldest_in_doubt_seconds"); got != 42 {
		t.Errorf("oldest in doubt %v s, want 42", got)
	}
	onRound(twophase.Report{})
	if got := gauge("pgshard_twophase_oldest_in_doubt_seconds"); got != 0 {
		t.Errorf("oldest in doubt with none left %v s, want 0", got)
	}
}
