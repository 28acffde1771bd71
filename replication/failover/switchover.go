package failover

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/pgshard/pgshard/shardmap"
)

// Switchover moves the shard's primary to its replica to (host:port; ""
// means the most advanced healthy replica) without losing a write: the
// proxies hold the shard's writes, the old primary is quiesced (its open
// transactions get DrainGrace), the new one replays everything the old
// one committed and is promoted, the other replicas are repointed to it,
// and the final map is committed. The old primary is fenced; a DBA
// re-joins it as a replica.
//
// It runs to completion and returns the final epoch and the new primary.
// It refuses, committing nothing, when this member is not the leader
// (ErrNotLeader), the shard is unknown (ErrUnknownShard), a switch of it
// is running (ErrSwitching), it has no healthy replica (ErrNoReplica), to
// is not one of its replicas (ErrNotReplica), or to or the primary does
// not answer (ErrUnreachable). Once started, a failed step is tried again
// every CheckInterval; when ctx ends or leadership is lost first it
// returns an error and the switch stays in the map, where Run (on this
// leader or the next) resumes it. If the old primary goes down while it
// drains, the switchover becomes a failover: Switchover then returns its
// result with ErrBecameFailover.
func (c *Controller) Switchover(ctx context.Context, shard, to string) (epoch uint64, newPrimary string, err error) {
	fail := func(err error) (uint64, string, error) {
		return 0, "", fmt.Errorf("failover: switchover of shard %s: %w", shard, err)
	}
	if err := c.leading(ctx); err != nil {
		return fail(err)
	}
	if !c.claimWait(ctx, shard) {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		return fail(ErrSwitching)
	}
	defer c.release(shard)
	parent := ctx
	ctx, stop := c.whileLeader(ctx)
	defer stop()

	m := c.cfg.Store.Map()
	var sh *shardmap.Shard
	if m != nil {
		sh = m.Shard(shard)
	}
	switch {
	case sh == nil:
		return fail(ErrUnknownShard)
	case sh.Switch != nil:
		return fail(fmt.Errorf("%w (a %s at step %s)", ErrSwitching, sh.Switch.Kind, sh.Switch.Step))
	case len(sh.Replicas) == 0:
		return fail(fmt.Errorf("%w: the shard has no replica", ErrNoReplica))
	}
	var target shardmap.Endpoint
	if to == "" {
		t, _, err := c.choose(ctx, sh)
		if err != nil {
			return fail(err)
		}
		target = t
	} else {
		t, err := shardmap.ParseEndpoint(to)
		if err != nil || !slices.Contains(sh.Replicas, t) {
			return fail(fmt.Errorf("%w: %s (replicas: %v)", ErrNotReplica, to, sh.Replicas))
		}
		st, err := c.probe(ctx, t.String())
		if err != nil {
			return fail(fmt.Errorf("%w: %v", ErrUnreachable, err))
		}
		if !st.InRecovery {
			return fail(fmt.Errorf("%w: %s is not in recovery", ErrNoReplica, t))
		}
		target = t
	}
	from := sh.Primary
	if st, err := c.probe(ctx, from.String()); err != nil {
		return fail(fmt.Errorf("%w: the primary does not answer (if it is down, a failover takes over): %v", ErrUnreachable, err))
	} else if st.InRecovery {
		return fail(fmt.Errorf("the primary %s says it is in recovery; the map is out of date", from))
	}

	reason := fmt.Sprintf("switchover to %s asked for", target)
	epoch, err = c.commit(ctx, shard, "switchover: drain to "+target.String(), func(s *shardmap.Shard) error {
		switch {
		case s.Switch != nil:
			return fmt.Errorf("%w (a %s at step %s)", ErrSwitching, s.Switch.Kind, s.Switch.Step)
		case s.Primary != from:
			return fmt.Errorf("%w: the primary changed meanwhile to %s", ErrSwitching, s.Primary)
		case !slices.Contains(s.Replicas, target):
			return fmt.Errorf("%w: %s was removed meanwhile", ErrNotReplica, target)
		}
		s.Switch = &shardmap.Switch{Kind: shardmap.Switchover, From: from, To: target, Step: StepDrain, Reason: reason}
		return nil
	})
	if err != nil {
		return fail(c.leaderErr(parent, err))
	}
	c.emit(Event{Shard: shard, Kind: shardmap.Switchover, Step: StepDrain, From: from.String(), To: target.String(), Epoch: epoch, Detail: reason})

	out, err := c.drive(ctx, shard)
	c.forget(shard)
	if err != nil {
		return fail(fmt.Errorf("%w (the switch stays in the map; the meta leader resumes it)", c.leaderErr(parent, err)))
	}
	if out.kind == shardmap.Failover {
		return out.epoch, out.primary, fmt.Errorf("failover: switchover of shard %s: %w", shard, ErrBecameFailover)
	}
	return out.epoch, out.primary, nil
}

// leaderErr turns an error caused by the cancellation of whileLeader's
// context into ErrNotLeader.
func (c *Controller) leaderErr(parent context.Context, err error) error {
	if errors.Is(err, context.Canceled) && parent.Err() == nil {
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	return err
}
