package reshard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgshard/pgshard/shardmap"
)

// cutoverStep does one step of a cutover. A step that fails is retried
// until the cutover's deadline, which aborts it; a verify that finds
// differences aborts at once, unless forced.
func (d *driver) cutoverStep(ctx context.Context, e Steps, st State) (*State, bool, error) {
	sctx, cancel := d.stepContext(ctx, &st)
	defer cancel()
	var err error
	switch st.Phase {
	case PhaseHold:
		if err = d.c.cfg.Maps.WaitApplied(sctx, st.HoldEpoch); err == nil {
			st.Phase = PhaseHeld
		}
	case PhaseHeld:
		if err = e.Fence(sctx); err == nil {
			st.Phase = PhaseFenced
		}
	case PhaseFenced:
		if _, err = e.WaitCaughtUp(sctx); err == nil {
			st.Phase = PhaseCaughtUp
		}
	case PhaseCaughtUp:
		var r VerifyResult
		// After a full comparison found the sides equal just before the
		// hold, a large interval's rows are only counted here.
		pre := st.Verify
		opts := VerifyOptions{CaughtUp: true, CountOnly: pre != nil && pre.Equal && !pre.CountOnly && pre.Rows() > d.c.cfg.HoldVerifyRows}
		if r, err = e.Verify(sctx, opts); err == nil {
			st.Verify, st.VerifyFailed = &r, !r.Equal
			if !r.Equal && !st.Force {
				return d.abort(st, "verify found differences between the source and the target ("+diffSummary(r)+"); cutover --force goes on anyway")
			}
			st.Phase = PhaseVerified
		}
	case PhaseVerified:
		if err = e.StopForward(sctx); err == nil {
			st.Phase = PhaseStopped
		}
	case PhaseStopped:
		if _, err = e.AdvanceSequences(sctx); err == nil {
			st.Phase = PhaseAdvanced
		}
	case PhaseAdvanced:
		if err = e.StartReverse(sctx); err == nil {
			st.Phase = PhaseReversed
		}
	case PhaseReversed:
		var epoch uint64
		epoch, err = d.editMap(sctx, fmt.Sprintf("reshard %s: %s of %s moves from %s to %s", d.id, st.Interval(), st.Distribution, st.From, st.To), func(m *shardmap.Map) (*shardmap.Map, error) {
			return release(m, st.Distribution, d.id, st.Move.Lo, st.Move.Hi, st.To, st.From)
		})
		if err == nil {
			st.CutoverEpoch, st.Phase = epoch, PhaseSwitched
		}
	}
	if err != nil {
		if ctx.Err() == nil && sctx.Err() != nil {
			return d.abort(st, fmt.Sprintf("the cutover did not finish within %s (at step %s): %v", d.c.cfg.CutoverTimeout, st.Phase, err))
		}
		return nil, false, fmt.Errorf("cutover step after %s: %w", st.Phase, err)
	}
	return &st, false, nil
}

// diffSummary names the tables that differ.
func diffSummary(r VerifyResult) string {
	s := ""
	for _, t := range r.Tables {
		if t.Equal {
			continue
		}
		if s != "" {
			s += "; "
		}
		s += fmt.Sprintf("%s: %d rows on the source, %d on the target", t.Table, t.SourceRows, t.TargetRows)
	}
	return s
}

// abort turns a failed cutover into PhaseAborting.
func (d *driver) abort(st State, why string) (*State, bool, error) {
	d.c.log.Warn("reshard: cutover aborted; the interval goes back to the source", "move", d.id, "phase", st.Phase, "why", why)
	st.event(d.c.cfg.Now(), "abort: "+why)
	st.Phase, st.LastError, st.ErrorAt = PhaseAborting, "cutover aborted: "+why, d.c.cfg.Now()
	return &st, false, nil
}

// aborting undoes a cutover that did not reach its new epoch: the
// reverse replication (if started) is dropped, the forward one restarted
// without a copy (if stopped), the source unfenced and the hold
// released, and the move is copied again (or cancelled).
func (d *driver) aborting(ctx context.Context, e Steps, st State) (*State, bool, error) {
	if st.Request == ActionCancel {
		st.CancelAfterAbort = true
	}
	if err := e.Reverse().DropReplication(ctx); err != nil {
		return nil, false, err
	}
	p, err := e.Progress(ctx)
	if err != nil {
		return nil, false, err
	}
	if !p.Subscription && !st.CancelAfterAbort {
		// The reverse engine's StartReverse starts this direction
		// without a copy: the target has every row up to the fence.
		if err := e.Reverse().StartReverse(ctx); err != nil {
			return nil, false, err
		}
	}
	if err := e.Unfence(ctx); err != nil {
		return nil, false, err
	}
	if err := d.releaseHold(ctx, st); err != nil {
		return nil, false, err
	}
	st.StepStarted, st.Request, st.Force = time.Time{}, "", false
	st.Cutover = CutoverManual
	st.Phase = PhaseCopied
	if st.CancelAfterAbort {
		st.Phase, st.CancelAfterAbort = PhaseCancelling, false
	}
	return &st, false, nil
}

// rollbackStep does one step of a rollback, like cutoverStep.
func (d *driver) rollbackStep(ctx context.Context, e Steps, st State) (*State, bool, error) {
	sctx, cancel := d.stepContext(ctx, &st)
	defer cancel()
	r := e.Reverse()
	var err error
	switch st.Phase {
	case PhaseRollbackHold:
		if err = d.c.cfg.Maps.WaitApplied(sctx, st.HoldEpoch); err == nil {
			st.Phase = PhaseRollbackHeld
		}
	case PhaseRollbackHeld:
		if err = r.Fence(sctx); err == nil {
			st.Phase = PhaseRollbackFenced
		}
	case PhaseRollbackFenced:
		if _, err = r.WaitCaughtUp(sctx); err == nil {
			st.Phase = PhaseRollbackCaughtUp
		}
	case PhaseRollbackCaughtUp:
		var res VerifyResult
		if res, err = r.Verify(sctx, VerifyOptions{CaughtUp: true}); err == nil {
			st.Verify, st.VerifyFailed = &res, !res.Equal
			if !res.Equal && !st.Force {
				return d.abortRollback(st, "verify found differences between the target and the source ("+diffSummary(res)+"); rollback --force goes on anyway")
			}
			st.Phase = PhaseRollbackVerified
		}
	case PhaseRollbackVerified:
		if _, err = r.AdvanceSequences(sctx); err == nil {
			st.Phase = PhaseRollbackAdvanced
		}
	case PhaseRollbackAdvanced:
		// The source takes writes again before the epoch sends them
		// there: until it, every live proxy holds the interval and the
		// target is fenced. (Unfenced after the epoch, the source would
		// refuse with PS001 the first writes the proxies route to it.)
		if err = e.Unfence(sctx); err != nil {
			break
		}
		var epoch uint64
		epoch, err = d.editMap(sctx, fmt.Sprintf("reshard %s: rollback: %s of %s goes back from %s to %s", d.id, st.Interval(), st.Distribution, st.To, st.From), func(m *shardmap.Map) (*shardmap.Map, error) {
			return release(m, st.Distribution, d.id, st.Move.Lo, st.Move.Hi, st.From, st.To)
		})
		if err == nil {
			st.RollbackEpoch, st.Phase = epoch, PhaseRollbackSwitched
		}
	}
	if err != nil {
		if ctx.Err() == nil && sctx.Err() != nil {
			return d.abortRollback(st, fmt.Sprintf("the rollback did not finish within %s (at step %s): %v", d.c.cfg.CutoverTimeout, st.Phase, err))
		}
		return nil, false, fmt.Errorf("rollback step after %s: %w", st.Phase, err)
	}
	return &st, false, nil
}

// abortRollback turns a failed rollback into PhaseRollbackAborting: the
// target stays the owner.
func (d *driver) abortRollback(st State, why string) (*State, bool, error) {
	d.c.log.Warn("reshard: rollback aborted; the interval stays on the target", "move", d.id, "phase", st.Phase, "why", why)
	st.event(d.c.cfg.Now(), "abort: "+why)
	st.Phase, st.LastError, st.ErrorAt = PhaseRollbackAborting, "rollback aborted: "+why, d.c.cfg.Now()
	return &st, false, nil
}

// releaseHold commits a map without the move's marker, owners unchanged,
// unless there is none.
func (d *driver) releaseHold(ctx context.Context, st State) error {
	_, err := d.editMap(ctx, fmt.Sprintf("reshard %s: release the hold of %s of %s", d.id, st.Interval(), st.Distribution), func(m *shardmap.Map) (*shardmap.Map, error) {
		if m.MovingByID(st.Distribution, d.id) == nil {
			return nil, nil
		}
		return m.WithMoving(st.Distribution, shardmap.Moving{ID: d.id}, true)
	})
	return err
}

// release returns m with [lo, hi) of dist owned by owner, without the
// hold marker of move id and with its stale-rows marker on stale (the
// former owner, which keeps the interval's rows until they are deleted):
// one epoch, so that no map has the rows read twice or not at all. It
// returns nil when m is so already.
func release(m *shardmap.Map, dist, id string, lo, hi shardmap.Bound, owner, stale string) (*shardmap.Map, error) {
	d := m.Distribution(dist)
	if d == nil {
		return nil, fmt.Errorf("no distribution %q in the shard map", dist)
	}
	if s := m.StaleByID(dist, id); m.MovingByID(dist, id) == nil && m.Owns(dist, lo, hi, owner) && s != nil && s.Shard == stale {
		return nil, nil
	}
	n, err := m.WithMoving(dist, shardmap.Moving{ID: id}, true)
	if err != nil {
		return nil, err
	}
	if n, err = n.SetOwner(dist, lo, hi, owner); err != nil {
		return nil, err
	}
	return n.WithStale(dist, shardmap.StaleRows{ID: id, Lo: lo, Hi: hi, Shard: stale}, false)
}

// markStale commits a map with the move's stale-rows marker on shard
// (unless it is there already) and waits until every live proxy has
// applied it (or its lease ran out), as the hold does: from then on no
// proxy counts the interval's rows on shard.
func (d *driver) markStale(ctx context.Context, st State, shard string) error {
	epoch, err := d.editMap(ctx, fmt.Sprintf("reshard %s: rows of %s of %s on %s are not %s's", d.id, st.Interval(), st.Distribution, shard, shard), func(m *shardmap.Map) (*shardmap.Map, error) {
		if s := m.StaleByID(st.Distribution, d.id); s != nil && s.Shard == shard {
			return nil, nil
		}
		return m.WithStale(st.Distribution, shardmap.StaleRows{ID: d.id, Lo: st.Move.Lo, Hi: st.Move.Hi, Shard: shard}, false)
	})
	if err != nil {
		return err
	}
	if err := d.c.cfg.Maps.WaitApplied(ctx, epoch); err != nil {
		return fmt.Errorf("wait for the proxies to apply epoch %d: %w", epoch, err)
	}
	return nil
}

// dropStale commits a map without the move's stale-rows marker, unless
// there is none: the rows it named are deleted.
func (d *driver) dropStale(ctx context.Context, st State) error {
	_, err := d.editMap(ctx, fmt.Sprintf("reshard %s: the rows of %s of %s left on a shard that does not own them are deleted", d.id, st.Interval(), st.Distribution), func(m *shardmap.Map) (*shardmap.Map, error) {
		if m.StaleByID(st.Distribution, d.id) == nil {
			return nil, nil
		}
		return m.WithStale(st.Distribution, shardmap.StaleRows{ID: d.id}, true)
	})
	return err
}

// editMap commits f(current map) as the next epoch, retrying when the map
// changed meanwhile, and returns its epoch; when f returns nil the map is
// as wanted already and its epoch is returned.
func (d *driver) editMap(ctx context.Context, comment string, f func(*shardmap.Map) (*shardmap.Map, error)) (uint64, error) {
	return d.c.editMap(ctx, comment, f)
}

func (c *Controller) editMap(ctx context.Context, comment string, f func(*shardmap.Map) (*shardmap.Map, error)) (uint64, error) {
	for {
		cur := c.cfg.Maps.Map()
		if cur == nil {
			return 0, errors.New("reshard: no shard map")
		}
		next, err := f(cur)
		if err != nil {
			return 0, err
		}
		if next == nil {
			return cur.Epoch, nil
		}
		epoch, err := c.cfg.Maps.ApplyMap(ctx, next, cur.Epoch, comment)
		if errors.Is(err, ErrStaleMap) && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("commit the map (%s): %w", comment, err)
		}
		return epoch, nil
	}
}
