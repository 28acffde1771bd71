package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgshard/pgshard/replication/reshard"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// ctlResharder is a Resharder hook whose move goes through scripted
// states, one per ListMoves.
type ctlResharder struct {
	mu     sync.Mutex
	calls  []string
	script []reshard.State
	step   int
	err    error
}

func (r *ctlResharder) record(s string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
	return r.err
}

func (r *ctlResharder) current() metarpc.ReshardMove {
	st := r.script[min(r.step, len(r.script)-1)]
	b, _ := json.Marshal(st)
	return metarpc.ReshardMove{ID: "mv1", Version: uint64(r.step + 1), UpdatedAt: time.Unix(1700000000, 0), State: b}
}

func (r *ctlResharder) AddShard(_ context.Context, s shardmap.Shard) (uint64, error) {
	return 7, r.record("add " + s.Name + " " + s.Primary.String())
}

func (r *ctlResharder) Split(_ context.Context, dist, at string) (uint64, error) {
	return 8, r.record("split " + dist + " " + at)
}

func (r *ctlResharder) StartMove(_ context.Context, req metarpc.MoveRequest) (metarpc.ReshardMove, error) {
	err := r.record(fmt.Sprintf("move %s %s %s %s", req.Distribution, req.Interval, req.To, req.Cutover))
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current(), err
}

func (r *ctlResharder) Act(_ context.Context, ref metarpc.MoveRef, action string, force bool) (metarpc.ReshardMove, error) {
	err := r.record(fmt.Sprintf("act %s%s%s %s %v", ref.ID, ref.Distribution, ref.Interval, action, force))
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current(), err
}

func (r *ctlResharder) List(ref metarpc.MoveRef) ([]metarpc.ReshardMove, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.current()
	r.step++
	return []metarpc.ReshardMove{m}, nil
}

func moveState(phase reshard.Phase, rows, total, lag int64) reshard.State {
	return reshard.State{Distribution: "users", From: "s1", To: "s3", Cutover: reshard.CutoverAuto, Phase: phase,
		Move:     reshard.Move{ID: "mv1", Lo: shardmap.Int64Bound(401), Hi: shardmap.Int64Bound(501)},
		Progress: reshard.CopyProgress{RowsCopied: rows, BytesCopied: rows * 100, RowsTotal: total, LagBytes: lag, Tables: 2}}
}

func startCtlReshard(t *testing.T, script ...reshard.State) (*ctlCluster, *ctlResharder) {
	t.Helper()
	old := reshardPoll
	reshardPoll = time.Millisecond
	t.Cleanup(func() { reshardPoll = old })
	h := &ctlResharder{script: script}
	opts := ctlTokenOpts
	opts.Reshard = h
	return startCtlMeta(t, ctlMapYAML, opts), h
}

func TestReshardMoveFollows(t *testing.T) {
	c, h := startCtlReshard(t,
		moveState(reshard.PhasePrepare, 0, 0, -1),
		moveState(reshard.PhaseCopying, 100, 1000, 2048),
		moveState(reshard.PhaseCopying, 500, 1000, 1024),
		moveState(reshard.PhaseFenced, 1000, 1000, 0),
		moveState(reshard.PhaseCutOver, 1000, 1000, 0),
	)
	r := c.cli(t, "reshard", "move", "--distribution", "users", "--interval", "[401,501)", "--to", "s3", "--cutover", "auto").want(t, exitOK)
	// Not a terminal: plain lines, one per change, then the final state.
	ctlWantContains(t, "stdout", r.stdout,
		"move mv1 copying: 100 of 1000 rows (10%), 9.8 kB, 0 of 2 tables done, lag 2.0 kB",
		"move mv1 copying: 500 of 1000 rows (50%)",
		"move mv1 fenced, lag 0 B",
		"Move mv1: [401, 501) of distribution users, s1 -> s3",
		"phase:    cutover, cutover auto")
	if strings.Contains(r.stdout, "\r") || strings.Contains(r.stdout, "[####") {
		t.Errorf("a progress bar on a pipe:\n%q", r.stdout)
	}
	if strings.Join(h.calls, ";") != "move users [401,501) s3 auto" {
		t.Errorf("calls %q", h.calls)
	}

	// -o json prints only the final state.
	h.step = 0
	r = c.cli(t, "reshard", "move", "--distribution", "users", "--interval", "[401,501)", "--to", "s3", "--cutover", "auto", "-o", "json").want(t, exitOK)
	var v moveView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.State.Phase != reshard.PhaseCutOver || v.Interval != "[401, 501)" {
		t.Fatalf("json %q: %+v %v", r.stdout, v, err)
	}
}

func TestReshardFollowBar(t *testing.T) {
	var b bytes.Buffer
	f := &reshardFollow{out: &b, tty: true, start: time.Now().Add(-10 * time.Second), rows0: 0}
	st := moveState(reshard.PhaseCopying, 250, 1000, 0)
	f.show(&moveView{ID: "mv1", State: st})
	f.show(&moveView{ID: "mv1", State: st}) // unchanged: not redrawn
	f.endLine()
	got := b.String()
	if strings.Count(got, "\r") != 1 || !strings.Contains(got, "[######..................] move mv1 copying: 250 of 1000 rows (25%)") ||
		!strings.Contains(got, "ETA 30s") || !strings.HasSuffix(got, "\n") {
		t.Fatalf("bar %q", got)
	}
}

func TestReshardActions(t *testing.T) {
	c, h := startCtlReshard(t,
		moveState(reshard.PhaseCopied, 1000, 1000, 0),
		moveState(reshard.PhaseHold, 1000, 1000, 0),
		moveState(reshard.PhaseCutOver, 1000, 1000, 0),
	)
	c.cli(t, "reshard", "cutover", "--distribution", "users", "--interval", "[401,501)", "--force").want(t, exitOK)
	h.step = 0
	aborted := moveState(reshard.PhaseCopied, 1000, 1000, 0)
	aborted.LastError = "cutover aborted: the cutover did not finish within 30s (at step hold)"
	h.script = []reshard.State{moveState(reshard.PhaseCopied, 1000, 1000, 0), moveState(reshard.PhaseHold, 1000, 1000, 0), aborted}
	r := c.cli(t, "reshard", "cutover", "mv1").want(t, exitError)
	ctlWantContains(t, "stderr", r.stderr, "did not finish within 30s", "the interval stays on s1")

	h.err = &apiKindError{metarpc.ErrFailedPrecondition, "move mv1: the move is copying; rollback is for a move that is cut over"}
	r = c.cli(t, "reshard", "rollback", "mv1").want(t, exitError)
	ctlWantContains(t, "stderr", r.stderr, "reshard rollback: refused, nothing was changed: move mv1: the move is copying")
	h.err = nil

	c.cli(t, "shards", "add", "s9", "--primary", "10.0.0.9:5432").want(t, exitOK)
	c.cli(t, "reshard", "split", "--distribution", "users", "--at", "401", "-o", "json").want(t, exitOK)
	r = c.cli(t, "reshard", "status")
	ctlWantContains(t, "status", r.stdout, "ID", "INTERVAL", "mv1", "[401, 501)")
	want := "act users[401,501) cutover true;act mv1 cutover false;act mv1 rollback false;add s9 10.0.0.9:5432;split users 401"
	if got := strings.Join(h.calls, ";"); got != want {
		t.Errorf("calls\n%s\nwant\n%s", got, want)
	}
}

func TestReshardUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"reshard", "move", "--distribution", "users"}, "--distribution, --interval and --to are required"},
		{[]string{"reshard", "move", "--distribution", "users", "--interval", "[1,2)", "--to", "s2", "--cutover", "soon"}, "want auto or manual"},
		{[]string{"reshard", "cutover"}, "name the move"},
		{[]string{"reshard", "cancel", "--distribution", "users"}, "go together"},
		{[]string{"reshard", "cleanup", "mv1", "--interval", "[1,2)"}, "not both"},
		{[]string{"reshard", "split", "--distribution", "users"}, "--at are required"},
		{[]string{"shards", "add", "s3", "--primary", "nowhere"}, "not host:port"},
		{[]string{"shards", "add"}, "accepts 1 arg"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCtl(t, nil, tc.args...).want(t, exitUsage)
			ctlWantContains(t, "stderr", r.stderr, tc.want)
		})
	}
}

// apiKindError matches an API sentinel with a message of its own, as
// internal/controlplane answers.
type apiKindError struct {
	kind error
	msg  string
}

func (e *apiKindError) Error() string { return e.msg }
func (e *apiKindError) Unwrap() error { return e.kind }
