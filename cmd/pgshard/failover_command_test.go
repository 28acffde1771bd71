package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// ctlSwitch is a Switchover hook for the ctl server.
type ctlSwitch struct {
	mu     sync.Mutex
	calls  []string // "shard to"
	answer func(ctx context.Context, shard, to string) (uint64, string, error)
}

func (s *ctlSwitch) hook(ctx context.Context, shard, to string) (uint64, string, error) {
	s.mu.Lock()
	s.calls = append(s.calls, shard+" "+to)
	s.mu.Unlock()
	return s.answer(ctx, shard, to)
}

func (s *ctlSwitch) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// startCtlSwitch serves ctlMapYAML with answer as the Switchover hook.
func startCtlSwitch(t *testing.T, answer func(ctx context.Context, shard, to string) (uint64, string, error)) (*ctlCluster, *ctlSwitch) {
	t.Helper()
	sw := &ctlSwitch{answer: answer}
	opts := ctlTokenOpts
	opts.Switchover = sw.hook
	return startCtlMeta(t, ctlMapYAML, opts), sw
}

func TestFailover(t *testing.T) {
	c, sw := startCtlSwitch(t, func(_ context.Context, shard, to string) (uint64, string, error) {
		if to == "" {
			to = "10.0.0.2:5432"
		}
		return 2, to, nil
	})
	r := c.cli(t, "failover", "--shard", "s1").want(t, exitOK)
	if r.stdout != "Shard s1: the primary is now 10.0.0.2:5432 (map epoch 2).\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	r = c.cli(t, "failover", "--shard", "s1", "--to", "10.0.0.7:5432", "-o", "json").want(t, exitOK)
	var got failoverResult
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got != (failoverResult{Shard: "s1", NewPrimary: "10.0.0.7:5432", Epoch: 2}) {
		t.Errorf("json %q: %+v, %v", r.stdout, got, err)
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if strings.Join(sw.calls, ",") != "s1 ,s1 10.0.0.7:5432" {
		t.Errorf("hook calls %q", sw.calls)
	}
}

func TestFailoverRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		wants []string
	}{
		{"unknown shard", fmt.Errorf("shard %q: %w", "s1", metarpc.ErrNotFound), []string{`failover of shard s1: shard "s1": not found`, "pgshard shards list"}},
		{"already switching", fmt.Errorf("shard s1 is switching already: %w", metarpc.ErrFailedPrecondition),
			[]string{"refused, nothing was changed: shard s1 is switching already"}},
		{"rolled back", fmt.Errorf("the replica did not catch up: %w", metarpc.ErrAborted),
			[]string{"aborted and rolled back, the primary is unchanged: the replica did not catch up"}},
		{"not a replica", fmt.Errorf("10.0.0.7:5432 is not a replica of s1: %w", metarpc.ErrInvalidArgument),
			[]string{"refused --to: 10.0.0.7:5432 is not a replica of s1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, sw := startCtlSwitch(t, func(context.Context, string, string) (uint64, string, error) { return 0, "", tc.err })
			r := c.cli(t, "failover", "--shard", "s1").want(t, exitError)
			ctlWantContains(t, "stderr", r.stderr, tc.wants...)
			if r.stdout != "" || sw.count() != 1 {
				t.Errorf("stdout %q, %d calls", r.stdout, sw.count())
			}
		})
	}
}

func TestFailoverUnimplemented(t *testing.T) {
	c := startCtlMeta(t, ctlMapYAML, ctlTokenOpts)
	r := c.cli(t, "failover", "--shard", "s1").want(t, exitError)
	ctlWantContains(t, "stderr", r.stderr, "the meta cluster cannot switch primaries", "no failover controller")
}

// A switchover that does not answer within --timeout may have started:
// exit 3, and it is not sent again.
func TestFailoverUncertain(t *testing.T) {
	c, sw := startCtlSwitch(t, func(ctx context.Context, _, _ string) (uint64, string, error) {
		<-ctx.Done()
		return 0, "", ctx.Err()
	})
	start := time.Now()
	r := runCtl(t, nil, "failover", "--shard", "s1", "--meta", c.addr, "--token", ctlToken, "--timeout", "1s").want(t, exitUncertain)
	ctlWantContains(t, "stderr", r.stderr, "the outcome is unknown (it did not finish within --timeout 1s)", "pgshard shards list")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v with --timeout 1s", d)
	}
	if n := sw.count(); n != 1 {
		t.Errorf("the switchover was sent %d times", n)
	}
}

func TestFailoverUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"failover"}, "--shard is required"},
		{[]string{"failover", "--shard", " "}, "--shard is required"},
		{[]string{"failover", "--shard", "s1", "--to", "nowhere"}, "--to"},
		{[]string{"failover", "--shard", "s1", "extra"}, "unknown command"},
		{[]string{"failover", "--shard", "s1", "--timeout", "0s"}, "--timeout"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCtl(t, nil, tc.args...).want(t, exitUsage)
			ctlWantContains(t, "stderr", r.stderr, tc.want)
		})
	}
	r := runCtl(t, nil, "failover", "--help").want(t, exitOK)
	ctlWantContains(t, "help", r.stdout, `--timeout duration`, `(default 1m0s)`, "--to string", "Exit status")
}

func TestFailoverCompletion(t *testing.T) {
	c := startCtlMeta(t, ctlMapYAML, ctlTokenOpts)
	r := runCtl(t, nil, "__complete", "failover", "--meta", c.addr, "--token", ctlToken, "--shard", "").want(t, exitOK)
	ctlWantContains(t, "--shard completions", r.stdout, "s1\tprimary 10.0.0.1:5432", "s2\tprimary 10.0.0.3:5432")
	r = runCtl(t, nil, "__complete", "failover", "--meta", c.addr, "--token", ctlToken, "--shard", "s1", "--to", "").want(t, exitOK)
	ctlWantContains(t, "--to completions", r.stdout, "10.0.0.2:5432\treplica of s1")
}
