package failover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/shardmap"
)

// maxConflicts bounds how many times in a row one commit is re-applied to
// a map that changed meanwhile, so that a livelock shows up as an error.
const maxConflicts = 100

// outcome is how a switch ended.
type outcome struct {
	epoch   uint64              // of the final map (or of the map found without a switch)
	primary string              // the shard's primary then
	kind    shardmap.SwitchKind // kind of the switch at its last step seen
}

// progress is what one drive has done already, so that a step tried again
// in the same drive does not repeat what it need not.
type progress struct {
	applied uint64 // every live proxy applied this epoch
	fenced  bool   // Admin.Fence was called on the old primary
}

// drive runs the shard's switch, as committed in the map, to its end: it
// reads the map, does the step it finds, commits the next one and reads
// again, until the map has no switch for the shard. A step that fails is
// tried again every CheckInterval. drive returns when the switch is over,
// ctx ends, this member stops leading (ErrNotLeader) or a permanent error.
func (c *Controller) drive(ctx context.Context, shard string) (outcome, error) {
	var (
		p    progress
		kind shardmap.SwitchKind
	)
	for {
		if err := c.leading(ctx); err != nil {
			return outcome{}, err
		}
		m := c.cfg.Store.Map()
		if m == nil {
			return outcome{}, permanent(errors.New("failover: there is no shard map"))
		}
		sh := m.Shard(shard)
		if sh == nil {
			return outcome{}, permanent(fmt.Errorf("failover: shard %s is not in the map", shard))
		}
		sw := sh.Switch
		if sw == nil {
			return outcome{epoch: m.Epoch, primary: sh.Primary.String(), kind: kind}, nil
		}
		kind = sw.Kind
		var err error
		switch {
		case sw.Kind == shardmap.Failover && sw.Step == StepFence:
			err = c.fenceStep(ctx, m, sh, &p)
		case sw.Kind == shardmap.Switchover && sw.Step == StepDrain:
			err = c.drainStep(ctx, m, sh, &p)
		case sw.Kind.Known() && sw.Step == StepPromote && sw.To != (shardmap.Endpoint{}):
			var epoch uint64
			if epoch, err = c.promoteStep(ctx, sh); err == nil {
				return outcome{epoch: epoch, primary: sw.To.String(), kind: kind}, nil
			}
		default:
			return outcome{}, permanent(fmt.Errorf("failover: shard %s: a %s at step %q (to %q) is not a state this version knows",
				shard, sw.Kind, sw.Step, sw.To))
		}
		var pe *permanentError
		switch {
		case err == nil, errors.Is(err, errMoved):
			continue
		case errors.As(err, &pe), errors.Is(err, ErrNotLeader), ctx.Err() != nil:
			return outcome{}, err
		}
		c.log.Debug("failover: step failed; trying again", "shard", shard, "step", sw.Step, "in", c.cfg.CheckInterval, "err", err)
		if err := sleep(ctx, c.cfg.CheckInterval); err != nil {
			return outcome{}, err
		}
	}
}

// base returns an event of the shard's switch, without a step.
func base(sh *shardmap.Shard) Event {
	e := Event{Shard: sh.Name, Kind: sh.Switch.Kind, From: sh.Switch.From.String()}
	if sh.Switch.To != (shardmap.Endpoint{}) {
		e.To = sh.Switch.To.String()
	}
	return e
}

// with returns e at step, with err.
func (e Event) with(step string, err error) Event {
	e.Step, e.Err = step, err
	return e
}

// startFailover commits the start of a failover of the shard's primary,
// d.addr, found down. It reports false when nothing is to be driven: the
// shard changed meanwhile (other primary, offline). A switch committed
// by someone else meanwhile is driven (resumed) instead.
func (c *Controller) startFailover(ctx context.Context, shard string, d *detection) (bool, error) {
	var aborted string
	epoch, err := c.commit(ctx, shard, "failover: fence "+d.addr, func(s *shardmap.Shard) error {
		switch {
		case s.Switch != nil:
			return errMoved
		case s.Primary.String() != d.addr:
			aborted = "its primary is now " + s.Primary.String()
		case s.State == shardmap.StateOffline:
			aborted = "it went offline"
		default:
			s.Switch = &shardmap.Switch{Kind: shardmap.Failover, From: s.Primary, Step: StepFence, Reason: d.reason}
			return nil
		}
		return errAborted
	})
	switch {
	case errors.Is(err, errMoved):
		c.log.Info("failover: the shard got a switch meanwhile; resuming it instead", "shard", shard)
		return true, nil
	case errors.Is(err, errAborted):
		c.log.Info("failover: not started: the shard changed meanwhile", "shard", shard, "primary", d.addr, "why", aborted)
		c.forget(shard)
		return false, nil
	case err != nil:
		return false, err
	}
	c.emit(Event{Shard: shard, Kind: shardmap.Failover, Step: StepFence, From: d.addr, Epoch: epoch, Detail: d.reason})
	return true, nil
}

// errAborted says that a failover was not started.
var errAborted = errors.New("failover: not started")

// fenceStep (failover): wait until the proxies stopped using the old
// primary, fence it if it can be reached, choose the most advanced
// replica and commit StepPromote.
func (c *Controller) fenceStep(ctx context.Context, m *shardmap.Map, sh *shardmap.Shard, p *progress) error {
	sw, ev := *sh.Switch, base(sh)
	if err := c.waitApplied(ctx, ev, m.Epoch, p); err != nil {
		return err
	}
	if !p.fenced {
		fctx, cancel := context.WithTimeout(ctx, 2*c.cfg.CheckInterval)
		err := c.cfg.Admin.Fence(fctx, sw.From.String())
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.fenced = true
		if err != nil {
			err = fmt.Errorf("fence %s (expected when it is down; proxies no longer use it): %w", sw.From, err)
		}
		c.emit(ev.with(EventFenceOld, err))
	}
	to, e, err := c.chooseTarget(ctx, ev, sh)
	if err != nil {
		return err
	}
	epoch, err := c.commit(ctx, sh.Name, "failover: promote "+to.String(), func(s *shardmap.Shard) error {
		if s.Switch == nil || *s.Switch != sw || !slices.Contains(s.Replicas, to) {
			return errMoved
		}
		s.Switch.To, s.Switch.Step = to, StepPromote
		return nil
	})
	if err != nil {
		return err
	}
	e = e.with(StepPromote, nil)
	e.Epoch, e.LSN = epoch, 0
	c.emit(e)
	return nil
}

// chooseTarget chooses the replica of sh to promote (choose) and emits
// the choice (or the failure to choose) as an event based on ev, which it
// returns for the steps that follow.
func (c *Controller) chooseTarget(ctx context.Context, ev Event, sh *shardmap.Shard) (shardmap.Endpoint, Event, error) {
	to, lsn, err := c.choose(ctx, sh)
	if err != nil {
		c.emit(ev.with(EventChoose, err))
		return shardmap.Endpoint{}, ev, err
	}
	e := ev.with(EventChoose, nil)
	e.To, e.LSN = to.String(), lsn
	c.emit(e)
	return to, e, nil
}

// drainStep (switchover): wait until the proxies hold the shard's writes,
// quiesce the old primary, wait until the new one replayed everything and
// commit StepPromote. An old primary found down turns the switchover into
// a failover; a new one found down is replaced by another replica.
func (c *Controller) drainStep(ctx context.Context, m *shardmap.Map, sh *shardmap.Shard, p *progress) error {
	sw, ev := *sh.Switch, base(sh)
	if err := c.waitApplied(ctx, ev, m.Epoch, p); err != nil {
		return err
	}
	same := func(s *shardmap.Shard) bool { return s.Switch != nil && *s.Switch == sw }
	if sw.To == (shardmap.Endpoint{}) {
		to, e, err := c.chooseTarget(ctx, ev, sh)
		if err != nil {
			return err
		}
		epoch, err := c.commit(ctx, sh.Name, "switchover: drain to "+to.String(), func(s *shardmap.Shard) error {
			if !same(s) || !slices.Contains(s.Replicas, to) {
				return errMoved
			}
			s.Switch.To = to
			return nil
		})
		if err != nil {
			return err
		}
		e = e.with(StepDrain, nil)
		e.Epoch, e.LSN = epoch, 0
		c.emit(e)
		return nil
	}

	from, to := sw.From.String(), sw.To.String()
	qctx, cancel := context.WithTimeout(ctx, c.cfg.DrainGrace+c.cfg.ActionTimeout)
	lsn, err := c.cfg.Admin.Quiesce(qctx, from, c.cfg.DrainGrace)
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		err = fmt.Errorf("quiesce %s: %w", from, err)
		c.emit(ev.with(EventQuiesce, err))
		if down, reason := c.confirmDown(ctx, sh.Name, from); down {
			return c.recommit(ctx, sh.Name, sw, func(s *shardmap.Switch) {
				s.Kind, s.Step, s.To = shardmap.Failover, StepFence, shardmap.Endpoint{}
				s.Reason = sw.Reason + "; the old primary went down while it drained: " + reason
			})
		}
		return err
	}
	e := ev.with(EventQuiesce, nil)
	e.LSN = lsn
	c.emit(e)

	rctx, cancel := context.WithTimeout(ctx, c.cfg.ActionTimeout)
	err = c.cfg.Admin.WaitReplayed(rctx, to, lsn)
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		err = fmt.Errorf("wait until %s replayed %s: %w", to, lsn, err)
		c.emit(e.with(EventReplayed, err))
		if down, reason := c.confirmDown(ctx, sh.Name, to); down {
			return c.recommit(ctx, sh.Name, sw, func(s *shardmap.Switch) {
				s.To = shardmap.Endpoint{}
				s.Reason = sw.Reason + "; the chosen replica went down before it caught up: " + reason
			})
		}
		return err
	}
	c.emit(e.with(EventReplayed, nil))

	epoch, err := c.commit(ctx, sh.Name, "switchover: promote "+to, func(s *shardmap.Shard) error {
		if !same(s) {
			return errMoved
		}
		s.Switch.Step = StepPromote
		return nil
	})
	if err != nil {
		return err
	}
	e = ev.with(StepPromote, nil)
	e.Epoch = epoch
	c.emit(e)
	return nil
}

// recommit commits a change of the shard's switch sw, made by change on a
// copy, and emits the commit of the step it leads to.
func (c *Controller) recommit(ctx context.Context, shard string, sw shardmap.Switch, change func(*shardmap.Switch)) error {
	next := sw
	change(&next)
	epoch, err := c.commit(ctx, shard, fmt.Sprintf("%s: back to %s", sw.Kind, next.Step), func(s *shardmap.Shard) error {
		if s.Switch == nil || *s.Switch != sw {
			return errMoved
		}
		*s.Switch = next
		return nil
	})
	if err != nil {
		return err
	}
	e := Event{Shard: shard, Kind: next.Kind, Step: next.Step, From: next.From.String(), Epoch: epoch, Detail: next.Reason}
	if next.To != (shardmap.Endpoint{}) {
		e.To = next.To.String()
	}
	c.emit(e)
	return nil
}

// promoteStep (both kinds): promote the new primary, repoint the other
// replicas to it and commit the final map. A new primary found down is
// fenced and the switch goes back to choosing another one.
func (c *Controller) promoteStep(ctx context.Context, sh *shardmap.Shard) (uint64, error) {
	sw, ev := *sh.Switch, base(sh)
	if !slices.Contains(sh.Replicas, sw.To) {
		// Validate refuses such a map; never promote a server the map
		// does not list as a replica.
		return 0, permanent(fmt.Errorf("failover: shard %s: the switch would promote %s, which is not one of its replicas", sh.Name, sw.To))
	}
	to := sw.To.String()
	pctx, cancel := context.WithTimeout(ctx, c.cfg.ActionTimeout)
	err := c.cfg.Admin.Promote(pctx, to)
	cancel()
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if err != nil {
		err = fmt.Errorf("promote %s: %w", to, err)
		c.emit(ev.with(EventPromoted, err))
		if down, reason := c.confirmDown(ctx, sh.Name, to); down {
			// It may have been promoted before it went down: fence it
			// rather than let it come back as a replica.
			return 0, c.abandon(ctx, sh.Name, sw, reason)
		}
		return 0, err
	}
	c.emit(ev.with(EventPromoted, nil))

	var others []shardmap.Endpoint
	for _, r := range sh.Replicas {
		if r != sw.To {
			others = append(others, r)
		}
	}
	errs := make([]error, len(others))
	var wg sync.WaitGroup
	for i, r := range others {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, c.cfg.ActionTimeout)
			defer cancel()
			if err := c.cfg.Admin.Repoint(rctx, r.String(), to); err != nil {
				errs[i] = fmt.Errorf("repoint %s to %s (it stays a replica in the map; repoint it by hand): %w", r, to, err)
			}
		})
	}
	wg.Wait()
	for i, r := range others {
		e := ev.with(EventRepoint, errs[i])
		e.Addr = r.String()
		c.emit(e)
	}
	if err := c.leading(ctx); err != nil {
		return 0, err
	}

	epoch, err := c.commit(ctx, sh.Name, fmt.Sprintf("%s: %s is the primary", sw.Kind, to), func(s *shardmap.Shard) error {
		if s.Switch == nil || *s.Switch != sw || !slices.Contains(s.Replicas, sw.To) {
			return errMoved
		}
		s.Primary = sw.To
		s.Replicas = slices.DeleteFunc(s.Replicas, func(e shardmap.Endpoint) bool { return e == sw.To })
		if !slices.Contains(s.Fenced, sw.From) {
			s.Fenced = append(s.Fenced, sw.From)
		}
		s.Switch = nil
		return nil
	})
	if err != nil {
		return 0, err
	}
	e := ev.with(EventDone, nil)
	e.Epoch = epoch
	c.emit(e)
	return epoch, nil
}

// abandon fences the chosen new primary, found down while it was being
// promoted, and sends the switch back to choosing another one: a failover
// to StepFence, a switchover to StepDrain (the old primary is still
// quiesced, so the next one catches up with it and nothing is lost).
func (c *Controller) abandon(ctx context.Context, shard string, sw shardmap.Switch, reason string) error {
	next := sw
	next.To = shardmap.Endpoint{}
	next.Step = StepFence
	if sw.Kind == shardmap.Switchover {
		next.Step = StepDrain
	}
	next.Reason = sw.Reason + "; " + sw.To.String() + " went down while it was promoted, so it is fenced: " + reason
	epoch, err := c.commit(ctx, shard, fmt.Sprintf("%s: fence %s, back to %s", sw.Kind, sw.To, next.Step), func(s *shardmap.Shard) error {
		if s.Switch == nil || *s.Switch != sw {
			return errMoved
		}
		s.Replicas = slices.DeleteFunc(s.Replicas, func(e shardmap.Endpoint) bool { return e == sw.To })
		if !slices.Contains(s.Fenced, sw.To) {
			s.Fenced = append(s.Fenced, sw.To)
		}
		*s.Switch = next
		return nil
	})
	if err != nil {
		return err
	}
	c.emit(Event{Shard: shard, Kind: next.Kind, Step: next.Step, From: next.From.String(), Addr: sw.To.String(), Epoch: epoch, Detail: next.Reason})
	return nil
}

// waitApplied waits until every live proxy has applied epoch, logging the
// laggards now and then; proxies whose lease expires stop blocking.
func (c *Controller) waitApplied(ctx context.Context, ev Event, epoch uint64, p *progress) error {
	if p.applied >= epoch {
		return nil
	}
	every := 10 * c.cfg.CheckInterval
	for waited := every; ; waited += every {
		wctx, cancel := context.WithTimeout(ctx, every)
		err := c.cfg.Store.WaitApplied(wctx, epoch)
		cancel()
		if err == nil {
			p.applied = epoch
			e := ev.with(EventApplied, nil)
			e.Epoch = epoch
			c.emit(e)
			return nil
		}
		if err := c.leading(ctx); err != nil {
			return err
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("wait until the proxies applied epoch %d: %w", epoch, err)
			c.emit(ev.with(EventApplied, err))
			return err
		}
		c.log.Warn("failover: still waiting for proxies to apply the switch; a proxy whose lease expires stops blocking",
			"shard", ev.Shard, "epoch", epoch, "waited", waited, "err", err)
	}
}

// choose probes the shard's replicas and returns the most advanced one
// that answers and is in recovery (highest replay LSN; the first in map
// order on a tie), with its replay LSN.
func (c *Controller) choose(ctx context.Context, sh *shardmap.Shard) (shardmap.Endpoint, health.LSN, error) {
	if len(sh.Replicas) == 0 {
		return shardmap.Endpoint{}, 0, fmt.Errorf("%w: shard %s has no replica", ErrNoReplica, sh.Name)
	}
	checks := make([]check, len(sh.Replicas))
	for i, r := range sh.Replicas {
		checks[i] = check{shard: sh.Name, addr: r.String()}
	}
	c.probeAll(ctx, checks)
	best := -1
	var problems []string
	for i, ch := range checks {
		switch {
		case ch.err != nil:
			problems = append(problems, ch.err.Error())
		case !ch.state.InRecovery:
			problems = append(problems, ch.addr+" is not in recovery (promoted outside pgshard?)")
		case best < 0 || ch.state.ReplayLSN > checks[best].state.ReplayLSN:
			best = i
		}
	}
	if best < 0 {
		return shardmap.Endpoint{}, 0, fmt.Errorf("%w: shard %s: %s", ErrNoReplica, sh.Name, strings.Join(problems, "; "))
	}
	return sh.Replicas[best], checks[best].state.ReplayLSN, nil
}

// commit applies edit to the shard in a copy of the current map and
// commits it by compare-and-set. When the map changed meanwhile it reads
// the new one and applies edit again: edit checks that the shard is still
// in the state it expects (else it returns errMoved).
func (c *Controller) commit(ctx context.Context, shard, comment string, edit func(*shardmap.Shard) error) (uint64, error) {
	for conflicts := 0; ; conflicts++ {
		if err := c.leading(ctx); err != nil {
			return 0, err
		}
		m := c.cfg.Store.Map()
		if m == nil {
			return 0, permanent(errors.New("failover: there is no shard map"))
		}
		next := m.Clone()
		sh := next.Shard(shard)
		if sh == nil {
			return 0, permanent(fmt.Errorf("failover: shard %s is not in the map", shard))
		}
		if err := edit(sh); err != nil {
			return 0, err
		}
		next.Epoch = m.Epoch + 1
		if err := next.Validate(); err != nil {
			return 0, permanent(fmt.Errorf("failover: shard %s: %q would make the map invalid: %w", shard, comment, err))
		}
		epoch, err := c.cfg.Store.ApplyMap(ctx, next, m.Epoch, comment)
		if err == nil {
			return epoch, nil
		}
		if ctx.Err() == nil && conflicts < maxConflicts {
			if cur := c.cfg.Store.Map(); cur != nil && cur.Epoch != m.Epoch {
				c.log.Debug("failover: the map changed meanwhile; applying the step to the new one", "shard", shard, "step", comment, "epoch", cur.Epoch, "err", err)
				continue
			}
		}
		err = fmt.Errorf("failover: shard %s: commit %q as epoch %d: %w", shard, comment, m.Epoch+1, err)
		e := Event{Shard: shard, Step: EventCommit, Err: err, Detail: comment}
		if sw := m.Shard(shard).Switch; sw != nil {
			e.Kind, e.From = sw.Kind, sw.From.String()
		}
		c.emit(e)
		return 0, err
	}
}
