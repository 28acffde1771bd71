package reshard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pgshard/pgshard/shardmap"
)

// Run drives every move of the records until ctx ends (the member stops
// leading or closes): one goroutine per move that is not finished, which
// reads the move's record, does its next step and commits the next phase
// with a compare-and-set. It returns once every goroutine has.
func (c *Controller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	running := make(map[string]bool)
	finished := make(chan string)
	bad := make(map[string]uint64) // undecodable records, by version, logged once
	t := time.NewTicker(c.cfg.Tick)
	defer t.Stop()
	for {
		for _, r := range c.cfg.Records.Workflows(WorkflowKind) {
			if running[r.ID] {
				continue
			}
			st, err := decodeState(r.State)
			if err != nil {
				if bad[r.ID] != r.Version {
					bad[r.ID] = r.Version
					c.log.Error("reshard: cannot read a move's record; it is left alone", "move", r.ID, "err", err)
				}
				continue
			}
			if st.Phase.Terminal() {
				continue
			}
			running[r.ID] = true
			id := r.ID
			wg.Go(func() {
				c.drive(ctx, id)
				select {
				case finished <- id:
				case <-ctx.Done():
				}
			})
		}
		select {
		case <-ctx.Done():
			return
		case id := <-finished:
			delete(running, id)
		case <-t.C:
		}
	}
}

// decodeState reads a record's state.
func decodeState(b []byte) (State, error) {
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, fmt.Errorf("reshard: workflow state: %w", err)
	}
	return st, nil
}

// encodeState writes a record's state.
func encodeState(st *State) []byte {
	b, err := json.Marshal(st)
	if err != nil {
		panic(fmt.Sprintf("reshard: encode workflow state: %v", err)) // only plain data
	}
	return b
}

// driver is the state of one move's goroutine.
type driver struct {
	c     *Controller
	id    string
	log   *slog.Logger
	steps Steps // built on first use, from the map
	// backoff is the pause after the last failure.
	backoff time.Duration
}

// drive runs the move id until it ends, its record disappears or ctx
// ends.
func (c *Controller) drive(ctx context.Context, id string) {
	d := &driver{c: c, id: id, log: c.log.With("move", id)}
	for ctx.Err() == nil {
		stop, pause := d.once(ctx)
		if stop {
			return
		}
		if pause > 0 {
			d.sleep(ctx, pause)
		}
	}
}

// once does one step of the move: it reads the record, runs the step of
// its phase and commits the result. It reports whether the move is over
// for this driver (finished, gone, or ctx ended) and how long to pause
// before the next step.
func (d *driver) once(ctx context.Context) (stop bool, pause time.Duration) {
	c, id, log := d.c, d.id, d.log
	rec, ok := c.cfg.Records.Workflow(id)
	if !ok {
		return true, 0
	}
	st, err := decodeState(rec.State)
	if err != nil || st.Phase.Terminal() {
		return true, 0
	}
	before := st.Phase
	next, wait, err := d.step(ctx, st)
	if err != nil {
		if ctx.Err() != nil {
			return true, 0
		}
		d.backoff = min(max(2*d.backoff, c.cfg.Tick), c.cfg.RetryMax)
		d.steps = nil // rebuilt from the current map: a shard's primary may have changed
		log.Warn("reshard: step failed; it is retried", "phase", before, "err", err, "retry_in", d.backoff)
		failed := st
		failed.LastError = err.Error()
		failed.ErrorAt = c.cfg.Now()
		failed.Attempts++
		_, _ = c.cfg.Records.PutWorkflow(ctx, id, WorkflowKind, rec.Version, encodeState(&failed))
		return false, d.backoff
	}
	if next != nil {
		if next.Phase != before {
			next.Attempts = 0
			// Keep why a cutover or rollback aborted until the next one.
			aborts := func(p Phase) bool { return p == PhaseAborting || p == PhaseRollbackAborting }
			if !aborts(next.Phase) && !aborts(before) {
				next.LastError = ""
			}
			next.event(c.cfg.Now(), "")
			log.Info("reshard: move advanced", "from", before, "to", next.Phase)
		}
		if _, err := c.cfg.Records.PutWorkflow(ctx, id, WorkflowKind, rec.Version, encodeState(next)); err != nil {
			if errors.Is(err, ErrStale) {
				return false, 0 // someone (an operator's request) changed it: read it again
			}
			if ctx.Err() != nil {
				return true, 0
			}
			d.backoff = min(max(2*d.backoff, c.cfg.Tick), c.cfg.RetryMax)
			log.Warn("reshard: cannot write the move's record", "err", err)
			return false, d.backoff
		}
		d.backoff = 0
	}
	switch {
	case wait && before == PhaseCopying:
		// The copy's progress is read (two servers) at twice the rate
		// it is written.
		return false, max(c.cfg.Tick, c.cfg.ProgressEvery/2)
	case wait:
		return false, c.cfg.Tick
	}
	return false, 0
}

func (d *driver) sleep(ctx context.Context, dur time.Duration) {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// engine returns the move's steps, built from the current map.
func (d *driver) engine(st *State) (Steps, error) {
	if d.steps != nil {
		return d.steps, nil
	}
	m := d.c.cfg.Maps.Map()
	if m == nil {
		return nil, errors.New("reshard: no shard map")
	}
	from, to := m.Shard(st.From), m.Shard(st.To)
	if from == nil || to == nil {
		return nil, fmt.Errorf("reshard: shard %s or %s is no longer in the map", st.From, st.To)
	}
	s, err := d.c.cfg.Engines(st.Move, *from, *to)
	if err != nil {
		return nil, err
	}
	d.steps = s
	return s, nil
}

// step does the next step of st and returns the state to commit (nil:
// none) and whether to wait a tick before the next step. An error is
// retried (the state records it).
func (d *driver) step(ctx context.Context, st State) (*State, bool, error) {
	c := d.c
	now := c.cfg.Now()
	// The deadlines first: an abort needs no server.
	switch {
	case cutoverPhases[st.Phase] && st.Request == ActionCancel:
		st.Request, st.CancelAfterAbort = "", true
		return d.abort(st, "cancelled by the operator during the cutover")
	case cutoverPhases[st.Phase] && !now.Before(st.StepStarted.Add(c.cfg.CutoverTimeout)):
		return d.abort(st, fmt.Sprintf("the cutover did not finish within %s (at step %s)", c.cfg.CutoverTimeout, st.Phase))
	case rollbackPhases[st.Phase] && !now.Before(st.StepStarted.Add(c.cfg.CutoverTimeout)):
		return d.abortRollback(st, fmt.Sprintf("the rollback did not finish within %s (at step %s)", c.cfg.CutoverTimeout, st.Phase))
	}
	e, err := d.engine(&st)
	if err != nil {
		return nil, false, err
	}
	switch {
	case cutoverPhases[st.Phase]:
		return d.cutoverStep(ctx, e, st)
	case rollbackPhases[st.Phase]:
		return d.rollbackStep(ctx, e, st)
	}

	switch st.Phase {
	case PhasePrepare, PhaseCopy, PhaseCopying:
		if st.Request == ActionCancel {
			st.Request, st.Phase = "", PhaseCancelling
			return &st, false, nil
		}
	}
	switch st.Phase {
	case PhasePrepare:
		if err := e.PrepareTarget(ctx); err != nil {
			return nil, false, err
		}
		st.Phase = PhaseCopy
		return &st, false, nil

	case PhaseCopy:
		// Reads without a key must not count the copy's rows on the
		// target twice: every live proxy leaves them out before the
		// first one arrives.
		if err := d.markStale(ctx, st, st.To); err != nil {
			return nil, false, err
		}
		if err := e.StartCopy(ctx); err != nil {
			return nil, false, err
		}
		if n, err := e.SourceRows(ctx); err == nil {
			st.Progress.RowsTotal = n
		} else {
			c.log.Warn("reshard: cannot count the interval's rows; no ETA", "move", d.id, "err", err)
		}
		st.Phase = PhaseCopying
		return &st, false, nil

	case PhaseCopying:
		p, err := e.Progress(ctx)
		if err != nil {
			return nil, false, err
		}
		if !p.Subscription {
			return nil, false, fmt.Errorf("the subscription of move %s is missing on shard %s", d.id, st.To)
		}
		prev := st.Progress.At
		st.Progress = progressOf(p, st.Progress, now)
		if p.Copied {
			st.Phase = PhaseCopied
			return &st, false, nil
		}
		if now.Sub(prev) >= c.cfg.ProgressEvery {
			return &st, true, nil
		}
		return nil, true, nil

	case PhaseCopied:
		return d.copied(ctx, e, st, now)

	case PhaseSwitched:
		if err := c.cfg.Maps.WaitApplied(ctx, st.CutoverEpoch); err != nil {
			return nil, false, fmt.Errorf("wait for the proxies to apply epoch %d: %w", st.CutoverEpoch, err)
		}
		st.Phase, st.StepStarted, st.Force = PhaseCutOver, time.Time{}, false
		return &st, false, nil

	case PhaseAborting:
		return d.aborting(ctx, e, st)

	case PhaseCutOver:
		switch st.Request {
		case ActionRollback:
			// Before the hold: the reverse replication is caught up with
			// its apply worker running, so the held rollback-caughtup
			// step only waits for the last writes. The worker of the
			// reverse subscription made at the cutover can start up to
			// wal_retrieve_retry_interval later (see
			// Engine.wakeLauncher), a wait the writers would otherwise
			// spend held. Bounded; a failure leaves it to the held step,
			// which has the cutover's deadline and aborts cleanly.
			wctx, cancel := context.WithTimeout(ctx, rollbackPrewait)
			_, err := e.Reverse().WaitCaughtUp(wctx)
			cancel()
			if ctx.Err() != nil {
				return nil, false, ctx.Err()
			}
			if err != nil {
				c.log.Warn("reshard: the reverse replication did not catch up before the rollback's hold; the held step waits for it", "move", d.id, "err", err)
			}
			epoch, err := d.editMap(ctx, fmt.Sprintf("reshard %s: hold %s of %s for the rollback", d.id, st.Interval(), st.Distribution), func(m *shardmap.Map) (*shardmap.Map, error) {
				if m.MovingByID(st.Distribution, d.id) != nil {
					return nil, nil
				}
				return m.WithMoving(st.Distribution, shardmap.Moving{ID: d.id, Lo: st.Move.Lo, Hi: st.Move.Hi, From: st.To, To: st.From, Step: shardmap.MoveHold}, false)
			})
			if err != nil {
				return nil, false, err
			}
			st.Request, st.HoldEpoch, st.StepStarted, st.Phase = "", epoch, now, PhaseRollbackHold
			return &st, false, nil
		case ActionCleanup:
			st.Request, st.Phase = "", PhaseCleaning
			return &st, false, nil
		case ActionVerify:
			r, err := e.Reverse().Verify(ctx, VerifyOptions{})
			if err != nil {
				return nil, false, err
			}
			st.Request, st.Verify, st.VerifyFailed = "", &r, !r.Equal
			return &st, false, nil
		}
		return nil, true, nil

	case PhaseRollbackSwitched:
		if err := c.cfg.Maps.WaitApplied(ctx, st.RollbackEpoch); err != nil {
			return nil, false, fmt.Errorf("wait for the proxies to apply epoch %d: %w", st.RollbackEpoch, err)
		}
		if err := e.Unfence(ctx); err != nil {
			return nil, false, err
		}
		if err := e.Reverse().DropReplication(ctx); err != nil {
			return nil, false, err
		}
		st.Phase, st.StepStarted, st.Force = PhaseRollbackDropped, time.Time{}, false
		return &st, false, nil

	case PhaseRollbackDropped:
		// The target stays fenced while its copy of the interval goes.
		n, err := e.Reverse().DeleteMoved(ctx, d.deleteOptions(ctx, st))
		if err != nil {
			return nil, false, err
		}
		st.Progress.Deleted += n
		st.Phase = PhaseRollbackDeleted
		return &st, false, nil

	case PhaseRollbackDeleted:
		if err := e.Reverse().WaitReplicas(ctx); err != nil {
			return nil, false, err
		}
		if err := d.dropStale(ctx, st); err != nil {
			return nil, false, err
		}
		if err := e.Reverse().Unfence(ctx); err != nil {
			return nil, false, err
		}
		st.Phase = PhaseRolledBack
		return &st, false, nil

	case PhaseRollbackAborting:
		// The target keeps the interval: the source is fenced again (the
		// rollback unfences it just before its epoch).
		if err := e.Fence(ctx); err != nil {
			return nil, false, err
		}
		if err := e.Reverse().Unfence(ctx); err != nil {
			return nil, false, err
		}
		if err := d.releaseHold(ctx, st); err != nil {
			return nil, false, err
		}
		st.Phase, st.StepStarted, st.Force = PhaseCutOver, time.Time{}, false
		return &st, false, nil

	case PhaseCleaning:
		n, err := e.Cleanup(ctx, d.deleteOptions(ctx, st))
		if err != nil {
			return nil, false, err
		}
		// The source's replicas lose the rows too before the map stops
		// saying the source holds them (reads may go to a replica).
		if err := e.WaitReplicas(ctx); err != nil {
			return nil, false, err
		}
		if err := d.dropStale(ctx, st); err != nil {
			return nil, false, err
		}
		st.Progress.Deleted += n
		st.Phase = PhaseDone
		return &st, false, nil

	case PhaseCancelling:
		if err := d.releaseHold(ctx, st); err != nil {
			return nil, false, err
		}
		if err := e.Cancel(ctx, d.deleteOptions(ctx, st)); err != nil {
			return nil, false, err
		}
		if err := e.Reverse().WaitReplicas(ctx); err != nil {
			return nil, false, err
		}
		if err := d.dropStale(ctx, st); err != nil {
			return nil, false, err
		}
		st.Phase, st.Request = PhaseCancelled, ""
		return &st, false, nil
	}
	return nil, false, fmt.Errorf("reshard: move %s is in unknown phase %q", d.id, st.Phase)
}

// deleteOptions are the configured delete options, whose progress is
// written to the move's record every ProgressEvery of a long deletion
// (Deleted: the record's count when the step started plus the rows
// deleted since). Such a write makes the step's own commit stale, so the
// step runs again and finds nothing left to delete.
func (d *driver) deleteOptions(ctx context.Context, st State) DeleteOptions {
	opts := d.c.cfg.Delete
	base := st.Progress.Deleted
	last := d.c.cfg.Now()
	opts.Progress = func(p DeleteProgress) {
		now := d.c.cfg.Now()
		if p.Total == 0 || now.Sub(last) < d.c.cfg.ProgressEvery {
			return
		}
		last = now
		rec, ok := d.c.cfg.Records.Workflow(d.id)
		if !ok {
			return
		}
		cur, err := decodeState(rec.State)
		if err != nil || cur.Phase != st.Phase {
			return
		}
		cur.Progress.Deleted, cur.Progress.At = base+p.Total, now
		// A lost race only loses this report.
		_, _ = d.c.cfg.Records.PutWorkflow(ctx, d.id, WorkflowKind, rec.Version, encodeState(&cur))
	}
	return opts
}

// progressOf turns the engine's progress into the record's.
func progressOf(p Progress, prev CopyProgress, now time.Time) CopyProgress {
	out := CopyProgress{RowsTotal: prev.RowsTotal, Deleted: prev.Deleted, LagBytes: p.LagBytes,
		ApplyErrors: p.ApplyErrors, SyncErrors: p.SyncErrors, Tables: len(p.Tables), At: now}
	for _, t := range p.Tables {
		out.RowsCopied += t.RowsCopied
		out.BytesCopied += t.BytesCopied
		if t.State == SyncReady {
			out.TablesCopied++
		}
	}
	// Counters of an earlier leader's engine are not known to this one.
	out.RowsCopied, out.BytesCopied = max(out.RowsCopied, prev.RowsCopied), max(out.BytesCopied, prev.BytesCopied)
	return out
}

// copied handles a copied move: verify, cancel, or start the cutover.
func (d *driver) copied(ctx context.Context, e Steps, st State, now time.Time) (*State, bool, error) {
	c := d.c
	switch st.Request {
	case ActionCancel:
		st.Request, st.Phase = "", PhaseCancelling
		return &st, false, nil
	case ActionVerify:
		r, err := e.Verify(ctx, VerifyOptions{})
		if err != nil {
			return nil, false, err
		}
		st.Request, st.Verify, st.VerifyFailed = "", &r, !r.Equal
		return &st, false, nil
	}
	if st.Request != ActionCutover && st.Cutover != CutoverAuto {
		// Waiting for the operator: keep the lag shown fresh.
		if now.Sub(st.Progress.At) < 5*c.cfg.ProgressEvery {
			return nil, true, nil
		}
		p, err := e.Progress(ctx)
		if err != nil {
			return nil, false, err
		}
		st.Progress = progressOf(p, st.Progress, now)
		return &st, true, nil
	}
	refuse := func(why string) (*State, bool, error) {
		st.Request, st.Cutover, st.Force = "", CutoverManual, false
		st.LastError, st.ErrorAt = "cutover refused: "+why, now
		return &st, false, nil
	}
	if st.VerifyFailed && !st.Force {
		return refuse("the last verify found differences; run verify again, or cutover --force")
	}
	p, err := e.Progress(ctx)
	if err != nil {
		return nil, false, err
	}
	prev := st.Progress.At
	st.Progress = progressOf(p, st.Progress, now)
	switch {
	case !p.Subscription || p.LagBytes < 0:
		return nil, false, fmt.Errorf("the replication of move %s is not running", d.id)
	case p.LagBytes > c.cfg.MaxLagBytes && st.Request == ActionCutover:
		return refuse(fmt.Sprintf("replication lag %d bytes is above the bound of %d bytes; wait for the target to catch up", p.LagBytes, c.cfg.MaxLagBytes))
	case p.LagBytes > c.cfg.MaxLagBytes && now.Sub(prev) >= c.cfg.ProgressEvery:
		return &st, true, nil // auto: wait for the lag to drop, showing it
	case p.LagBytes > c.cfg.MaxLagBytes:
		return nil, true, nil
	}
	if !st.Force {
		// A full comparison runs here, before the hold, while the
		// interval's traffic flows. When it finds the sides equal, the
		// comparison inside the hold (the pause the interval's clients
		// see) only counts the rows of a large interval (see
		// ControllerConfig.HoldVerifyRows); when it does not (a key
		// written again while it was re-read looks different), the
		// comparison in the hold, with the source fenced, decides.
		r, err := e.Verify(ctx, VerifyOptions{})
		if err != nil {
			return nil, false, err
		}
		st.Verify = &r
	}
	epoch, err := d.editMap(ctx, fmt.Sprintf("reshard %s: hold %s of %s for the cutover", d.id, st.Interval(), st.Distribution), func(m *shardmap.Map) (*shardmap.Map, error) {
		if m.MovingByID(st.Distribution, d.id) != nil {
			return nil, nil
		}
		return m.WithMoving(st.Distribution, shardmap.Moving{ID: d.id, Lo: st.Move.Lo, Hi: st.Move.Hi, From: st.From, To: st.To, Step: shardmap.MoveHold}, false)
	})
	if err != nil {
		return nil, false, err
	}
	st.Request, st.HoldEpoch, st.StepStarted, st.Phase = "", epoch, now, PhaseHold
	return &st, false, nil
}

// stepContext bounds a cutover or rollback step by its deadline.
func (d *driver) stepContext(ctx context.Context, st *State) (context.Context, context.CancelFunc) {
	// The deadline is on the controller's clock (Now); the context's
	// timer counts on the real one.
	return context.WithTimeout(ctx, st.StepStarted.Add(d.c.cfg.CutoverTimeout).Sub(d.c.cfg.Now()))
}
