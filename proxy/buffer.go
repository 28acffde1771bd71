package proxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgshard/pgshard/proxy/pool"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// Buffering and failing closed.
//
// While the shard map says a shard is switching its primary (Switch set:
// a failover or switchover in progress), statements that need its primary
// wait — up to buffer.window, at most buffer.max_queued of them at once —
// for a map without the switch, and then run on the new primary. Reads a
// replica can serve do not wait. When the proxy follows a meta cluster,
// a statement whose primary cannot be reached also waits for the next
// map (the failover that replaces it) instead of failing at once.
//
// A proxy that follows a meta cluster and has not reached its leader for
// longer than its lease (meta_lease) — or not at all since it started —
// may be cut off from a failover that fenced a primary it still reaches:
// it keeps serving reads but refuses writes (SQLSTATE 25006) until the
// leader answers its heartbeat.

// mapChange returns a channel closed when the next shard map is applied.
func (s *Server) mapChange() <-chan struct{} {
	s.mapMu.Lock()
	defer s.mapMu.Unlock()
	if s.mapChanged == nil {
		s.mapChanged = make(chan struct{})
	}
	return s.mapChanged
}

// noteMapChange wakes statements waiting for a new map. Callers hold
// s.mapMu.
func (s *Server) noteMapChange() {
	if s.mapChanged != nil {
		close(s.mapChanged)
		s.mapChanged = nil
	}
}

// switching returns the switch in progress on shard, or nil.
func (s *Server) switching(shard string) bool {
	m := s.runtime().cfg.shardMap
	if m == nil {
		return false
	}
	sh := m.Shard(shard)
	return sh != nil && sh.Switch != nil
}

// waitSwitch holds a statement for shard's primary while the shard
// switches, until a map without the switch arrives (nil), the buffer
// window ends or is full, or ctx ends (an error for the client).
func (s *Server) waitSwitch(ctx context.Context, shard string) error {
	if !s.switching(shard) {
		return nil
	}
	return s.buffer(ctx, shard, "is switching its primary", func() bool { return !s.switching(shard) })
}

// buffer waits until done() holds, checking at every map change, within
// the buffer's window and queue bound. why says what the shard is doing.
func (s *Server) buffer(ctx context.Context, shard, why string, done func() bool) error {
	bc := s.runtime().cfg.Buffer
	if bc.Window < 0 {
		return shardUnavailable(shard, why, 0)
	}
	if n := s.buffered.Add(1); n > int64(bc.MaxQueued) {
		s.buffered.Add(-1)
		return &wire.Error{Code: wire.SQLStateTooManyConnections,
			Message: fmt.Sprintf("shard %q %s and %d statements already wait for it", shard, why, bc.MaxQueued),
			Hint:    "Retry shortly, or raise buffer.max_queued."}
	}
	defer s.buffered.Add(-1)
	s.metrics.buffered.Inc()
	start := time.Now()
	timer := time.NewTimer(bc.Window.D())
	defer timer.Stop()
	for {
		ch := s.mapChange()
		if done() {
			s.metrics.bufferWait.Observe(time.Since(start).Seconds())
			return nil
		}
		select {
		case <-ch:
		case <-timer.C:
			return shardUnavailable(shard, why, bc.Window.D())
		case <-ctx.Done():
			return wire.Errorf(wire.SQLStateQueryCanceled, "canceling statement: it waited for shard %q, which %s", shard, why)
		}
	}
}

// shardUnavailable is the error of a statement that waited for shard in
// vain. 08006 says "retry": the statement did not run.
func shardUnavailable(shard, why string, waited time.Duration) *wire.Error {
	return &wire.Error{Code: wire.SQLStateConnectionFailure,
		Message: fmt.Sprintf("shard %q %s; the statement did not run", shard, why),
		Detail:  fmt.Sprintf("pgshard held the statement for %s (buffer.window).", waited),
		Hint:    "Retry the statement (or the transaction)."}
}

// acquirePrimary lends a connection to shard's primary for a statement,
// waiting while the shard switches, and — when the proxy follows a meta
// cluster — waiting for a new map when the primary cannot be reached.
func (s *Server) acquirePrimary(ctx context.Context, shard string, u *userState, db string) (*pool.Conn, error) {
	if err := s.waitSwitch(ctx, shard); err != nil {
		return nil, err
	}
	for closed := 0; ; {
		p, err := s.poolAt(ctx, shard, "", u, db)
		if err != nil {
			return nil, err
		}
		epoch := s.MapEpoch()
		be, err := s.acquire(ctx, p)
		if errors.Is(err, pool.ErrClosed) && !s.shuttingDown() && closed < 3 {
			// A new map retired the pool (its server is no longer the
			// primary) after poolAt found it: nothing was sent, so ask
			// the pool of the current primary.
			closed++
			continue
		}
		if err == nil || !s.followsMeta.Load() || !unreachable(err) {
			return be, err
		}
		// The primary is down: a failover will bring a new map.
		werr := s.buffer(ctx, shard, "cannot reach its primary", func() bool {
			return s.MapEpoch() != epoch && !s.switching(shard)
		})
		if werr != nil {
			var we *wire.Error
			if errors.As(err, &we) {
				return nil, we // the original connection error says more
			}
			return nil, werr
		}
	}
}

// unreachable reports whether err from acquire says the server could not
// be reached (as opposed to a refusal such as a bad password).
func unreachable(err error) bool {
	var we *wire.Error
	return errors.As(err, &we) && we.Code == wire.SQLStateConnectionFailure
}

// MetaContact returns when the meta leader last answered a heartbeat of
// the proxy (zero before the first, or without FollowMeta).
func (s *Server) MetaContact() time.Time {
	if last := s.metaContact.Load(); last != 0 {
		return time.Unix(0, last)
	}
	return time.Time{}
}

// mayWrite reports whether a statement planned as plan may write.
func mayWrite(plan rplan.Plan) bool {
	switch plan.Kind {
	case rplan.Any, rplan.CopyOut:
		return false
	case rplan.Scatter:
		return !plan.ReadOnly
	case rplan.Single:
		return !plan.ReplicaSafe
	}
	return true
}

// failClosed refuses a statement that may write while the proxy has lost
// the meta cluster for longer than its lease.
func (s *Server) failClosed(plan rplan.Plan) error {
	if !mayWrite(plan) {
		return nil
	}
	why := s.WriteRefusal()
	if why == "" {
		return nil
	}
	return &wire.Error{Code: wire.SQLStateReadOnlyTransaction,
		Message: "pgshard refuses writes: the metadata cluster has not confirmed its shard map",
		Detail:  fmt.Sprintf("A primary may have been replaced without this proxy knowing: %s.", why),
		Hint:    "Reads still work. Retry the write through another pgshard proxy, or once this one reaches the metadata cluster again."}
}
