package reshard

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/shardmap"
)

// cutoverCalls are the engine calls of a cutover, in order.
var cutoverCalls = []string{"fwd.Fence", "fwd.WaitCaughtUp", "fwd.Verify", "fwd.StopForward", "fwd.AdvanceSequences", "fwd.StartReverse"}

// subsequence reports whether want appears in got in order.
func subsequence(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// checkCutOver asserts the state of a move that is cut over.
func (r *rig) checkCutOver(id string) {
	r.t.Helper()
	st := r.recs.state(r.t, id)
	if st.Phase != PhaseCutOver {
		r.t.Fatalf("phase %s, want cutover (last error %q)", st.Phase, st.LastError)
	}
	if got := r.owner(); got != "s3" {
		r.t.Fatalf("key 450 on %s after the cutover, want s3", got)
	}
	m := r.maps.Map()
	if mv := m.Distribution("users").Moving; len(mv) != 0 {
		r.t.Fatalf("markers left after the cutover: %+v", mv)
	}
	if got := m.Distribution("users").DescribeIntervals(); got != "[-inf, 401) on s1, [401, 501) on s3, [501, +inf) on s2" {
		r.t.Fatalf("intervals %s", got)
	}
	if st.CutoverEpoch != m.Epoch || st.HoldEpoch != st.CutoverEpoch-1 {
		r.t.Fatalf("hold epoch %d, cutover epoch %d, map epoch %d", st.HoldEpoch, st.CutoverEpoch, m.Epoch)
	}
	// Exactly three epochs: the target's stale rows, the hold and the
	// new owner (with the stale rows on the source), whatever was
	// repeated by a resumption.
	if m.Epoch != 8 || len(r.maps.comments) != 3 {
		r.t.Fatalf("epoch %d after %v, want 8 (stale rows, hold, then owner)", m.Epoch, r.maps.comments)
	}
	if s := m.Distribution("users").Stale; len(s) != 1 || s[0] != (shardmap.StaleRows{ID: id, Lo: st.Move.Lo, Hi: st.Move.Hi, Shard: "s1"}) {
		r.t.Fatalf("stale rows after the cutover: %+v, want the source's", s)
	}
	if !slices.Contains(r.maps.waited, 6) {
		r.t.Fatalf("waited for epochs %v, want the stale rows' 6", r.maps.waited)
	}
	s := r.srv
	if !s.fenced["source"] || s.fwdSub || !s.revSub || !s.targetRows || !s.sourceRows {
		r.t.Fatalf("servers after cutover: fenced %v fwd %v rev %v target rows %v source rows %v", s.fenced, s.fwdSub, s.revSub, s.targetRows, s.sourceRows)
	}
	if !slices.Contains(r.maps.waited, st.HoldEpoch) || !slices.Contains(r.maps.waited, st.CutoverEpoch) {
		r.t.Fatalf("waited for epochs %v, want the hold %d and the cutover %d", r.maps.waited, st.HoldEpoch, st.CutoverEpoch)
	}
}

func TestWorkflowAutoCutover(t *testing.T) {
	r := newRig(t)
	c := r.controller()
	id := r.start(c, CutoverAuto)
	if got := r.recs.state(t, id); got.From != "s1" || got.To != "s3" || got.Phase != PhasePrepare || got.Interval() != "[401, 501)" {
		t.Fatalf("created %+v", got)
	}
	// The copy's progress reaches the record while it runs.
	st := r.runUntil(c, id, PhaseCopying)
	if st.Progress.RowsTotal != 1000 {
		t.Fatalf("rows total %d", st.Progress.RowsTotal)
	}
	// The copy started once every proxy left the target's copy out.
	if s, m := r.maps.Map().Distribution("users").Stale, r.maps.Map(); len(s) != 1 || s[0].Shard != "s3" || s[0].ID != id || m.Epoch != 6 || !slices.Equal(r.maps.waited, []uint64{6}) {
		t.Fatalf("copying: stale rows %+v at epoch %d, waited for %v", s, m.Epoch, r.maps.waited)
	}
	r.runUntil(c, id, PhaseCutOver)
	r.checkCutOver(id)
	st = r.recs.state(t, id)
	if st.Progress.RowsCopied == 0 || st.Progress.BytesCopied == 0 || st.Progress.Tables != 1 || st.Progress.TablesCopied != 1 {
		t.Fatalf("progress %+v", st.Progress)
	}
	if !subsequence(r.calls(), append([]string{"fwd.PrepareTarget", "fwd.StartCopy"}, cutoverCalls...)) {
		t.Fatalf("calls %v", r.calls())
	}
	if st.Verify == nil || !st.Verify.Equal || !st.Verify.Fenced {
		t.Fatalf("the cutover's verify is not recorded, or not fenced: %+v", st.Verify)
	}
}

// TestWorkflowVerifyBeforeHold: a cutover compares the rows before its
// hold, then again inside it with the source fenced and the target
// caught up (both sides read at once); an interval with more rows than
// HoldVerifyRows is only counted inside the hold, after an equal
// comparison before it, and compared in full when that one differed.
func TestWorkflowVerifyBeforeHold(t *testing.T) {
	for _, tc := range []struct {
		name      string
		holdRows  int64 // the fakes' interval has 10 rows
		preEqual  bool
		countOnly bool
	}{
		{"small interval", 0, true, false},
		{"large interval", 5, true, true},
		{"large interval, differing before the hold", 5, false, false},
		{"large interval, equal before the hold from re-reads", 5, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.holdVerifyRows = tc.holdRows
			r.srv.verifyEqual = tc.preEqual
			r.srv.verifyReread = strings.Contains(tc.name, "re-reads")
			c := r.controller()
			id := r.start(c, CutoverAuto)
			r.runUntil(c, id, PhaseCopied)
			r.runUntil(c, id, PhaseHold, PhaseHeld)
			r.srv.mu.Lock()
			r.srv.verifyEqual = true
			r.srv.mu.Unlock()
			r.runUntil(c, id, PhaseCutOver)
			r.checkCutOver(id)
			r.srv.mu.Lock()
			opts := slices.Clone(r.srv.verifyOpts)
			r.srv.mu.Unlock()
			want := []VerifyOptions{{}, {CaughtUp: true, CountOnly: tc.countOnly}}
			if !slices.Equal(opts, want) {
				t.Fatalf("verify options %+v, want %+v", opts, want)
			}
			if st := r.recs.state(t, id); st.Verify == nil || !st.Verify.Fenced || st.Verify.CountOnly != tc.countOnly {
				t.Fatalf("recorded verify %+v", st.Verify)
			}
		})
	}
}

func TestWorkflowManualWaitsForCutover(t *testing.T) {
	r := newRig(t)
	c := r.controller()
	id := r.start(c, CutoverManual)
	r.runUntil(c, id, PhaseCopied)
	d := &driver{c: c, id: id, log: c.log}
	for range 5 {
		r.advance(10 * time.Second)
		d.once(context.Background())
	}
	if st := r.recs.state(t, id); st.Phase != PhaseCopied || r.maps.Map().Epoch != 6 {
		t.Fatalf("manual move went on by itself: %s, epoch %d", st.Phase, r.maps.Map().Epoch)
	}
	if st := r.recs.state(t, id); st.Progress.LagBytes != 0 || st.Progress.At != r.clock() {
		t.Fatalf("the lag is not kept fresh while waiting: %+v", st.Progress)
	}
	if _, err := c.Act(context.Background(), id, ActionVerify, false); err != nil {
		t.Fatal(err)
	}
	d.once(context.Background())
	if st := r.recs.state(t, id); st.Verify == nil || st.Request != "" {
		t.Fatalf("verify not done: %+v", st)
	}
	if _, err := c.Act(context.Background(), id, ActionCutover, false); err != nil {
		t.Fatal(err)
	}
	r.runUntil(c, id, PhaseCutOver)
	r.checkCutOver(id)
}

// TestWorkflowResume stops the leader after each phase and lets a new
// controller (fresh engine, fresh driver) finish the cutover: nothing is
// committed twice and the end state is the same.
func TestWorkflowResume(t *testing.T) {
	for _, p := range []Phase{PhasePrepare, PhaseCopy, PhaseCopying, PhaseCopied, PhaseHold, PhaseHeld, PhaseFenced,
		PhaseCaughtUp, PhaseVerified, PhaseStopped, PhaseAdvanced, PhaseReversed, PhaseSwitched} {
		t.Run(string(p), func(t *testing.T) {
			r := newRig(t)
			id := r.start(r.controller(), CutoverAuto)
			if st := r.runUntil(r.controller(), id, p); st.Phase != p {
				t.Fatalf("reached %s, want %s", st.Phase, p)
			}
			r.runUntil(r.controller(), id, PhaseCutOver)
			r.checkCutOver(id)
		})
	}
}

func TestWorkflowRollback(t *testing.T) {
	for _, p := range []Phase{PhaseRollbackHold, PhaseRollbackHeld, PhaseRollbackFenced, PhaseRollbackCaughtUp,
		PhaseRollbackVerified, PhaseRollbackAdvanced, PhaseRollbackSwitched, PhaseRollbackDropped, PhaseRollbackDeleted, PhaseRolledBack} {
		t.Run("resume after "+string(p), func(t *testing.T) {
			r := newRig(t)
			c := r.controller()
			id := r.start(c, CutoverAuto)
			r.runUntil(c, id, PhaseCutOver)
			if _, err := c.Act(context.Background(), id, ActionRollback, false); err != nil {
				t.Fatal(err)
			}
			r.resetCalls()
			r.runUntil(r.controller(), id, p)
			st := r.runUntil(r.controller(), id, PhaseRolledBack)
			if st.Phase != PhaseRolledBack {
				t.Fatalf("phase %s (%s)", st.Phase, st.LastError)
			}
			if got := r.owner(); got != "s1" {
				t.Fatalf("key 450 on %s after the rollback", got)
			}
			m := r.maps.Map()
			if len(m.Distribution("users").Moving) != 0 || len(m.Distribution("users").Stale) != 0 || m.Epoch != 11 || st.RollbackEpoch != 10 {
				t.Fatalf("map after rollback: epoch %d (rollback epoch %d), markers %+v %+v", m.Epoch, st.RollbackEpoch, m.Distribution("users").Moving, m.Distribution("users").Stale)
			}
			// The rollback's release gave the stale rows back to the target.
			if !slices.ContainsFunc(r.maps.comments, func(c string) bool { return strings.Contains(c, "deleted") }) {
				t.Fatalf("no epoch dropped the stale rows: %v", r.maps.comments)
			}
			s := r.srv
			if s.fenced["source"] || s.fenced["target"] || s.fwdSub || s.revSub || s.targetRows || !s.sourceRows {
				t.Fatalf("servers after rollback: fenced %v fwd %v rev %v target rows %v source rows %v", s.fenced, s.fwdSub, s.revSub, s.targetRows, s.sourceRows)
			}
			want := []string{"rev.Fence", "rev.WaitCaughtUp", "rev.Verify", "rev.AdvanceSequences", "fwd.Unfence", "rev.DropReplication", "rev.DeleteMoved", "rev.Unfence"}
			if p == PhaseRollbackHold && (!subsequence(r.calls(), want) || st.Progress.Deleted != 10) {
				t.Fatalf("calls %v, want %v in order; %d rows deleted, want 10", r.calls(), want, st.Progress.Deleted)
			}
			if _, err := c.Act(context.Background(), id, ActionCleanup, false); !errors.Is(err, ErrConflict) {
				t.Fatalf("cleanup of a rolled back move: %v", err)
			}
		})
	}
}

// TestWorkflowRollbackUnfencesBeforeSwitch: the epoch that gives the
// interval back to the source finds the source unfenced (the proxies send
// the interval's writes there at once), and a rollback that aborts after
// that fences the source again.
func TestWorkflowRollbackUnfencesBeforeSwitch(t *testing.T) {
	// switchesBack reports whether m gives key 450 back to the source.
	switchesBack := func(m *shardmap.Map) bool {
		s, err := m.Distribution("users").ShardForInt64(450)
		return err == nil && s == "s1"
	}
	r := newRig(t)
	c := r.controller()
	id := r.start(c, CutoverAuto)
	r.runUntil(c, id, PhaseCutOver)
	var sawSwitch, fencedAtSwitch bool
	r.maps.onApply = func(m *shardmap.Map) error { // from the driver, which holds r.srv.mu in no step
		if switchesBack(m) {
			r.srv.mu.Lock()
			sawSwitch, fencedAtSwitch = true, r.srv.fenced["source"]
			r.srv.mu.Unlock()
		}
		return nil
	}
	if _, err := c.Act(context.Background(), id, ActionRollback, false); err != nil {
		t.Fatal(err)
	}
	if st := r.runUntil(c, id, PhaseRolledBack); st.Phase != PhaseRolledBack {
		t.Fatalf("phase %s (%s)", st.Phase, st.LastError)
	}
	if !sawSwitch || fencedAtSwitch {
		t.Fatalf("rollback epoch seen: %t; source fenced when it was committed: %t", sawSwitch, fencedAtSwitch)
	}

	// A rollback whose epoch cannot be committed (after the source was
	// unfenced) aborts past the timeout: the target keeps the interval and
	// the source is fenced again.
	r = newRig(t)
	c = r.controller()
	id = r.start(c, CutoverAuto)
	r.runUntil(c, id, PhaseCutOver)
	r.maps.onApply = func(m *shardmap.Map) error {
		if switchesBack(m) {
			r.advance(time.Hour) // past the cutover timeout
			return errors.New("meta unavailable")
		}
		return nil
	}
	if _, err := c.Act(context.Background(), id, ActionRollback, false); err != nil {
		t.Fatal(err)
	}
	st := r.runUntil(c, id, PhaseRollbackAborting)
	if st.Phase != PhaseRollbackAborting {
		t.Fatalf("phase %s, want %s", st.Phase, PhaseRollbackAborting)
	}
	r.srv.mu.Lock()
	unfenced := !r.srv.fenced["source"]
	r.srv.mu.Unlock()
	if !unfenced {
		t.Fatal("the source is fenced when the rollback's epoch failed; want it unfenced by then")
	}
	st = r.runUntil(c, id, PhaseCutOver)
	if st.Phase != PhaseCutOver || r.owner() != "s3" {
		t.Fatalf("after an aborted rollback: phase %s, key 450 on %s (%s)", st.Phase, r.owner(), st.LastError)
	}
	if s := r.srv; !s.fenced["source"] || s.fenced["target"] {
		t.Fatalf("after an aborted rollback: fenced %v, want the source only", s.fenced)
	}
}

func TestWorkflowCleanup(t *testing.T) {
	r := newRig(t)
	c := r.controller()
	id := r.start(c, CutoverAuto)
	r.runUntil(c, id, PhaseCutOver)
	if _, err := c.Act(context.Background(), id, ActionCancel, false); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "roll it back first") {
		t.Fatalf("cancel after cutover: %v", err)
	}
	if _, err := c.Act(context.Background(), id, ActionCleanup, false); err != nil {
		t.Fatal(err)
	}
	st := r.runUntil(c, id, PhaseDone)
	if st.Phase != PhaseDone || st.Progress.Deleted != 10 {
		t.Fatalf("after cleanup: %s, deleted %d", st.Phase, st.Progress.Deleted)
	}
	if m := r.maps.Map(); len(m.Distribution("users").Stale) != 0 || m.Epoch != 9 {
		t.Fatalf("after cleanup: stale rows %+v at epoch %d", m.Distribution("users").Stale, m.Epoch)
	}
	s := r.srv
	if s.sourceRows || s.fwdSub || s.revSub || !s.fenced["source"] || r.owner() != "s3" {
		t.Fatalf("servers after cleanup: fenced %v fwd %v rev %v source rows %v", s.fenced, s.fwdSub, s.revSub, s.sourceRows)
	}
	if _, err := c.Act(context.Background(), id, ActionRollback, false); !errors.Is(err, ErrConflict) {
		t.Fatalf("rollback after cleanup: %v", err)
	}
}

func TestWorkflowCancel(t *testing.T) {
	for _, p := range []Phase{PhasePrepare, PhaseCopy, PhaseCopying, PhaseCopied} {
		t.Run(string(p), func(t *testing.T) {
			r := newRig(t)
			c := r.controller()
			id := r.start(c, CutoverManual)
			r.runUntil(c, id, p)
			if _, err := c.Act(context.Background(), id, ActionCancel, false); err != nil {
				t.Fatal(err)
			}
			st := r.runUntil(r.controller(), id, PhaseCancelled)
			if st.Phase != PhaseCancelled {
				t.Fatalf("phase %s", st.Phase)
			}
			s := r.srv
			// Before the copy no marker was set; after it, one was set
			// and dropped.
			epoch := map[Phase]uint64{PhasePrepare: 5, PhaseCopy: 5, PhaseCopying: 7, PhaseCopied: 7}[p]
			if s.fwdSub || s.revSub || s.targetRows || s.fenced["source"] || r.maps.Map().Epoch != epoch || len(r.maps.Map().Distribution("users").Stale) != 0 {
				t.Fatalf("after cancel: fwd %v rev %v target rows %v fenced %v epoch %d stale rows %+v", s.fwdSub, s.revSub, s.targetRows, s.fenced, r.maps.Map().Epoch, r.maps.Map().Distribution("users").Stale)
			}
			if !slices.Contains(r.calls(), "fwd.Cancel") {
				t.Fatalf("calls %v", r.calls())
			}
		})
	}
	t.Run("during the cutover", func(t *testing.T) {
		r := newRig(t)
		r.maps.blockWait = false
		c := r.controller()
		id := r.start(c, CutoverAuto)
		r.runUntil(c, id, PhaseFenced)
		if _, err := c.Act(context.Background(), id, ActionCancel, false); err != nil {
			t.Fatal(err)
		}
		st := r.runUntil(c, id, PhaseCancelled)
		if st.Phase != PhaseCancelled || r.owner() != "s1" || len(r.maps.Map().Distribution("users").Moving) != 0 || len(r.maps.Map().Distribution("users").Stale) != 0 {
			t.Fatalf("phase %s, owner %s, markers %+v", st.Phase, r.owner(), r.maps.Map().Distribution("users").Moving)
		}
		if s := r.srv; s.fenced["source"] || s.fwdSub || s.targetRows {
			t.Fatalf("after cancel: %+v", s)
		}
	})
}

// TestWorkflowCancelWhileAborting: a cancel asked while a cutover
// aborts ends the move once the abort is done.
func TestWorkflowCancelWhileAborting(t *testing.T) {
	r := newRig(t)
	c := r.controller()
	id := r.start(c, CutoverAuto)
	r.runUntil(c, id, PhaseFenced)
	r.advance(time.Minute)
	if st := r.runUntil(c, id, PhaseAborting); st.Phase != PhaseAborting {
		t.Fatalf("phase %s", st.Phase)
	}
	if _, err := c.Act(context.Background(), id, ActionCancel, false); err != nil {
		t.Fatal(err)
	}
	st := r.runUntil(c, id, PhaseCancelled)
	if st.Phase != PhaseCancelled || r.owner() != "s1" || r.srv.fwdSub || r.srv.targetRows || r.srv.fenced["source"] {
		t.Fatalf("phase %s owner %s servers %+v", st.Phase, r.owner(), r.srv)
	}
}

// TestWorkflowCutoverAborts: a cutover that does not finish in time, at
// any step before its new epoch, goes back to the source with the
// replication running and nothing held or fenced.
func TestWorkflowCutoverAborts(t *testing.T) {
	for _, p := range []Phase{PhaseHold, PhaseHeld, PhaseFenced, PhaseCaughtUp, PhaseVerified, PhaseStopped, PhaseAdvanced, PhaseReversed} {
		t.Run(string(p), func(t *testing.T) {
			r := newRig(t)
			c := r.controller()
			id := r.start(c, CutoverManual)
			r.runUntil(c, id, PhaseCopied)
			if _, err := c.Act(context.Background(), id, ActionCutover, false); err != nil {
				t.Fatal(err)
			}
			r.runUntil(c, id, p)
			r.advance(31 * time.Second) // past the cutover's deadline
			st := r.runUntil(r.controller(), id, PhaseCopied)
			if st.Phase != PhaseCopied || !strings.Contains(st.LastError, "did not finish within 30s") {
				t.Fatalf("phase %s, error %q", st.Phase, st.LastError)
			}
			if r.owner() != "s1" || len(r.maps.Map().Distribution("users").Moving) != 0 {
				t.Fatalf("owner %s, markers %+v", r.owner(), r.maps.Map().Distribution("users").Moving)
			}
			if s := r.maps.Map().Distribution("users").Stale; len(s) != 1 || s[0].Shard != "s3" {
				t.Fatalf("after the abort the target's copy is still marked: %+v", s)
			}
			if s := r.srv; s.fenced["source"] || !s.fwdSub || s.revSub || !s.targetRows {
				t.Fatalf("after the abort: fenced %v fwd %v rev %v target rows %v", s.fenced, s.fwdSub, s.revSub, s.targetRows)
			}
			if st.Cutover != CutoverManual || st.Request != "" {
				t.Fatalf("after the abort the move waits for the operator: %+v", st)
			}
			// A second cutover then succeeds.
			if _, err := c.Act(context.Background(), id, ActionCutover, false); err != nil {
				t.Fatal(err)
			}
			st = r.runUntil(c, id, PhaseCutOver)
			if st.Phase != PhaseCutOver || r.owner() != "s3" {
				t.Fatalf("second cutover: %s, owner %s", st.Phase, r.owner())
			}
		})
	}
	t.Run("lagging proxy", func(t *testing.T) {
		r := newRig(t)
		c, _ := NewController(ControllerConfig{Records: r.recs, Maps: r.maps, Now: time.Now, Tick: time.Millisecond, RetryMax: time.Millisecond,
			CutoverTimeout: 200 * time.Millisecond, Logger: r.controller().log,
			Engines: func(Move, shardmap.Shard, shardmap.Shard) (Steps, error) { return fakeSteps{s: r.srv}, nil }})
		id := r.start(c, CutoverAuto)
		r.runUntil(c, id, PhaseCopying)
		r.maps.mu.Lock()
		r.maps.blockWait = true
		r.maps.mu.Unlock()
		start := time.Now()
		st := r.runUntil(c, id, PhaseAborting)
		if st.Phase != PhaseAborting || time.Since(start) > 5*time.Second {
			t.Fatalf("phase %s after %s", st.Phase, time.Since(start))
		}
		r.maps.blockWait = false
		st = r.runUntil(c, id, PhaseCopied)
		if st.Phase != PhaseCopied || r.owner() != "s1" || slices.Contains(r.calls(), "fwd.Fence") {
			t.Fatalf("phase %s owner %s calls %v", st.Phase, r.owner(), r.calls())
		}
	})
}

func TestWorkflowVerifyMismatch(t *testing.T) {
	r := newRig(t)
	r.srv.verifyEqual = false
	c := r.controller()
	id := r.start(c, CutoverAuto)
	st := r.runUntil(c, id, PhaseCopied, PhaseAborting)
	st = r.runUntil(c, id, PhaseCutOver, PhaseAborting)
	if st.Phase != PhaseAborting || !strings.Contains(st.LastError, "verify found differences") || !strings.Contains(st.LastError, "10 rows on the source, 9 on the target") {
		t.Fatalf("phase %s, error %q", st.Phase, st.LastError)
	}
	st = r.runUntil(c, id, PhaseCopied)
	if !st.VerifyFailed || r.owner() != "s1" {
		t.Fatalf("after the failed verify: %+v", st)
	}
	// Without force, the cutover is refused by the driver.
	if _, err := c.Act(context.Background(), id, ActionCutover, false); err != nil {
		t.Fatal(err)
	}
	d := &driver{c: c, id: id, log: c.log}
	d.once(context.Background())
	st = r.recs.state(t, id)
	if st.Phase != PhaseCopied || st.Request != "" || !strings.Contains(st.LastError, "cutover refused: the last verify found differences") {
		t.Fatalf("unforced cutover: %s, request %q, error %q", st.Phase, st.Request, st.LastError)
	}
	if _, err := c.Act(context.Background(), id, ActionCutover, true); err != nil {
		t.Fatal(err)
	}
	st = r.runUntil(c, id, PhaseCutOver)
	if st.Phase != PhaseCutOver || r.owner() != "s3" || st.Force {
		t.Fatalf("forced cutover: %s, owner %s, force kept %v", st.Phase, r.owner(), st.Force)
	}
}

func TestWorkflowLagRefusesCutover(t *testing.T) {
	r := newRig(t)
	r.srv.lag = 1 << 30
	c := r.controller()
	id := r.start(c, CutoverManual)
	r.runUntil(c, id, PhaseCopied)
	if _, err := c.Act(context.Background(), id, ActionCutover, false); err != nil {
		t.Fatal(err)
	}
	d := &driver{c: c, id: id, log: c.log}
	d.once(context.Background())
	st := r.recs.state(t, id)
	if st.Phase != PhaseCopied || !strings.Contains(st.LastError, "replication lag 1073741824 bytes is above the bound") || r.maps.Map().Epoch != 6 {
		t.Fatalf("phase %s error %q epoch %d", st.Phase, st.LastError, r.maps.Map().Epoch)
	}
	// auto waits instead, and goes once the lag drops.
	if _, err := c.Act(context.Background(), id, ActionCutover, false); err != nil {
		t.Fatal(err)
	}
	st2 := r.recs.state(t, id)
	st2.Request, st2.Cutover = "", CutoverAuto
	rec, _ := r.recs.Workflow(id)
	if _, err := r.recs.PutWorkflow(context.Background(), id, WorkflowKind, rec.Version, encodeState(&st2)); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		d.once(context.Background())
	}
	if st := r.recs.state(t, id); st.Phase != PhaseCopied {
		t.Fatalf("auto cut over with lag: %s", st.Phase)
	}
	r.srv.mu.Lock()
	r.srv.lag = 100
	r.srv.mu.Unlock()
	if st := r.runUntil(c, id, PhaseCutOver); st.Phase != PhaseCutOver {
		t.Fatalf("phase %s", st.Phase)
	}
}

func TestWorkflowStepErrorRetried(t *testing.T) {
	r := newRig(t)
	r.srv.fail["fwd.StartCopy"] = errors.New("connection refused")
	c := r.controller()
	id := r.start(c, CutoverManual)
	d := &driver{c: c, id: id, log: c.log}
	for range 4 {
		d.once(context.Background())
	}
	st := r.recs.state(t, id)
	if st.Phase != PhaseCopy || st.Attempts != 3 || !strings.Contains(st.LastError, "connection refused") {
		t.Fatalf("phase %s attempts %d error %q", st.Phase, st.Attempts, st.LastError)
	}
	delete(r.srv.fail, "fwd.StartCopy")
	st = r.runUntil(c, id, PhaseCopied)
	if st.LastError != "" || st.Attempts != 0 {
		t.Fatalf("error kept after success: %+v", st)
	}
}

func TestStartAndActRefusals(t *testing.T) {
	r := newRig(t)
	c := r.controller()
	ctx := context.Background()
	r.start(c, CutoverManual)
	for _, tc := range []struct {
		req  MoveRequest
		want error
		msg  string
	}{
		{MoveRequest{Distribution: "users", Interval: "[450,460)", To: "s2"}, ErrConflict, "holds keys of this interval"},
		{MoveRequest{Distribution: "users", Interval: "[400,600)", To: "s3"}, ErrInvalid, "spans several intervals"},
		{MoveRequest{Distribution: "users", Interval: "[600,700)", To: "s2"}, ErrInvalid, "is on shard s2 already"},
		{MoveRequest{Distribution: "users", Interval: "[600,700)", To: "s9"}, ErrNotFound, "no shard \"s9\""},
		{MoveRequest{Distribution: "nope", Interval: "[600,700)", To: "s3"}, ErrNotFound, "no distribution"},
		{MoveRequest{Distribution: "users", Interval: "600,700", To: "s3"}, ErrInvalid, "want [LO,HI)"},
		{MoveRequest{ID: "m1", Distribution: "users", Interval: "[600,700)", To: "s3"}, ErrConflict, "is taken"},
		{MoveRequest{Distribution: "users", Interval: "[600,700)", To: "s3", Cutover: "soon"}, ErrInvalid, "want auto or manual"},
	} {
		_, err := c.Start(ctx, tc.req)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Start(%+v) = %v, want %v %q", tc.req, err, tc.want, tc.msg)
		}
	}
	if _, err := c.Act(ctx, "m1", ActionRollback, false); !errors.Is(err, ErrConflict) {
		t.Errorf("rollback before cutover: %v", err)
	}
	if _, err := c.Act(ctx, "m1", ActionVerify, false); !errors.Is(err, ErrConflict) {
		t.Errorf("verify before the copy: %v", err)
	}
	if _, err := c.Act(ctx, "m1", "frobnicate", false); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown action: %v", err)
	}
	if _, err := c.Act(ctx, "zz", ActionCancel, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown move: %v", err)
	}
	// A split inside the running move is refused; outside it is a plain
	// map edit.
	if _, err := c.Split(ctx, "users", "450"); !errors.Is(err, ErrConflict) {
		t.Errorf("split inside a move: %v", err)
	}
	epoch, err := c.Split(ctx, "users", "1000")
	if err != nil || epoch != 6 {
		t.Fatalf("split: %d %v", epoch, err)
	}
	if got := r.maps.Map().Distribution("users").DescribeIntervals(); got != "[-inf, 501) on s1, [501, 1000) on s2, [1000, +inf) on s2" {
		t.Fatalf("after split: %s", got)
	}
	if _, err := c.Split(ctx, "users", "1000"); !errors.Is(err, ErrInvalid) {
		t.Errorf("split at a bound: %v", err)
	}
	// A second move of another interval runs beside the first.
	if _, err := c.Start(ctx, MoveRequest{ID: "m2", Distribution: "users", Interval: "[1000,+inf)", To: "s3"}); err != nil {
		t.Fatal(err)
	}
	st, err := c.Find("users", "[1000, +inf)")
	if err != nil || st.ID != "m2" {
		t.Fatalf("Find: %+v %v", st, err)
	}
	all, err := c.List("")
	if err != nil || len(all) != 2 {
		t.Fatalf("List: %d %v", len(all), err)
	}
}

func TestAddShard(t *testing.T) {
	r := newRig(t)
	c := r.controller()
	ctx := context.Background()
	s4 := shardmap.Shard{Name: "s4", Primary: shardmap.Endpoint{Host: "10.0.0.4", Port: 5432}}
	epoch, err := c.AddShard(ctx, s4)
	if err != nil || epoch != 6 {
		t.Fatalf("AddShard: %d %v", epoch, err)
	}
	m := r.maps.Map()
	if s := m.Shard("s4"); s == nil || s.State != shardmap.StateActive {
		t.Fatalf("shard s4: %+v", s)
	}
	if moves := shardmap.DataMoves(testMap(), m); len(moves) != 0 {
		t.Fatalf("adding a shard moved data: %+v", moves)
	}
	if !slices.Equal(r.calls(), []string{"fwd.PrepareTarget"}) {
		t.Fatalf("calls %v", r.calls())
	}
	if _, err := c.AddShard(ctx, s4); !errors.Is(err, ErrConflict) {
		t.Fatalf("adding it twice: %v", err)
	}
	dup := shardmap.Shard{Name: "s5", Primary: shardmap.Endpoint{Host: "10.0.0.4", Port: 5432}}
	if _, err := c.AddShard(ctx, dup); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "same primary") {
		t.Fatalf("a shard on another's server: %v", err)
	}
}

// TestControllerRun: the controller's loop drives a move to its cutover
// by itself and returns when its context ends.
func TestControllerRun(t *testing.T) {
	r := newRig(t)
	c := r.controller()
	id := r.start(c, CutoverAuto)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for r.recs.state(t, id).Phase != PhaseCutOver {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("stuck in %s", r.recs.state(t, id).Phase)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	r.checkCutOver(id)
}

// TestWorkflowRacedPuts: when a step's commit loses to a concurrent
// change of the record (every other put here), the step runs again from
// the record and the move still ends as it should: each step is
// idempotent, including the rollback's delete and unfence.
func TestWorkflowRacedPuts(t *testing.T) {
	r := newRig(t)
	c := r.controller()
	id := r.start(c, CutoverAuto)
	r.recs.raceEvery = 2
	r.runUntil(c, id, PhaseCutOver)
	r.checkCutOver(id)
	r.recs.raceEvery = 0
	if _, err := c.Act(context.Background(), id, ActionRollback, false); err != nil {
		t.Fatal(err)
	}
	r.recs.raceEvery = 2
	st := r.runUntil(c, id, PhaseRolledBack)
	if st.Phase != PhaseRolledBack || r.owner() != "s1" || r.recs.races < 10 {
		t.Fatalf("phase %s (%s), owner %s, %d races", st.Phase, st.LastError, r.owner(), r.recs.races)
	}
	if s := r.srv; s.fenced["source"] || s.fenced["target"] || s.targetRows || !s.sourceRows {
		t.Fatalf("servers: %+v", s)
	}
}

// TestWorkflowHashGrows: a hash distribution over two shards gives the
// upper half of s2's hash interval to a third shard.
func TestWorkflowHashGrows(t *testing.T) {
	r := newRig(t)
	m := testMap()
	m.Distributions[0].Strategy = shardmap.Hash
	m.Distributions[0].Intervals = shardmap.EvenHashIntervals([]string{"s1", "s2"})
	r.maps.m = m
	c := r.controller()
	st, err := c.Start(context.Background(), MoveRequest{ID: "h1", Distribution: "users", Interval: "[4611686018427387904,+inf)", To: "s3", Cutover: CutoverAuto})
	if err != nil {
		t.Fatal(err)
	}
	if st.State.From != "s2" || st.State.Interval() != "hash [4611686018427387904, +inf)" {
		t.Fatalf("move %+v", st.State)
	}
	if got := r.runUntil(c, "h1", PhaseCutOver); got.Phase != PhaseCutOver {
		t.Fatalf("phase %s", got.Phase)
	}
	d := r.maps.Map().Distribution("users")
	for h, want := range map[int64]string{-5: "s1", 1: "s2", 4611686018427387903: "s2", 4611686018427387904: "s3", 9e18: "s3"} {
		if got, err := d.ShardForHash(h); err != nil || got != want {
			t.Errorf("hash %d on %s (%v), want %s", h, got, err, want)
		}
	}
}

// TestWorkflowRollbackCatchesUpBeforeHold: a rollback first waits, before
// its hold epoch, for the reverse replication to catch up (so that the
// held step does not wait for a new subscription's worker), and a failing
// wait does not stop the rollback: the held step waits again.
func TestWorkflowRollbackCatchesUpBeforeHold(t *testing.T) {
	for _, fail := range []bool{false, true} {
		r := newRig(t)
		c := r.controller()
		id := r.start(c, CutoverAuto)
		r.runUntil(c, id, PhaseCutOver)
		if fail {
			r.srv.mu.Lock()
			r.srv.fail["rev.WaitCaughtUp"] = errors.New("the reverse worker has not started")
			r.srv.mu.Unlock()
		}
		if _, err := c.Act(context.Background(), id, ActionRollback, false); err != nil {
			t.Fatal(err)
		}
		r.resetCalls()
		if st := r.runUntil(c, id, PhaseRollbackHold); st.Phase != PhaseRollbackHold {
			t.Fatalf("fail %t: phase %s, want %s (%s)", fail, st.Phase, PhaseRollbackHold, st.LastError)
		}
		if calls := r.calls(); !slices.Equal(calls, []string{"rev.WaitCaughtUp"}) {
			t.Fatalf("fail %t: calls before the rollback's hold %v, want [rev.WaitCaughtUp]", fail, calls)
		}
		r.srv.mu.Lock()
		delete(r.srv.fail, "rev.WaitCaughtUp")
		r.srv.mu.Unlock()
		if st := r.runUntil(c, id, PhaseRolledBack); st.Phase != PhaseRolledBack {
			t.Fatalf("fail %t: phase %s (%s)", fail, st.Phase, st.LastError)
		}
	}
}
