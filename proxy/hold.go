package proxy

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshard/pgshard/router"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
)

// Holding a moving interval.
//
// While the shard map carries a moving-interval marker (shardmap.Moving)
// with step hold, a statement the router marks as touching the interval
// (rplan.Plan.Moving: a key in [Lo, Hi) of the distribution, or a write
// without a key that reaches the marker's From shard) is held before it
// is sent, on the same mechanism and within the same bounds as
// statements for a switching shard (buffer.window, buffer.max_queued):
// it waits for a map without that marker and is then routed again by
// that map (to To after a cutover, to From after an abort). Statements
// for other keys, intervals and distributions, and reads without a key,
// flow. A statement inside a transaction already open on a server (or
// in a pipeline not yet synced, an implicit transaction) is not held:
// it runs on From, where a write after the fence fails with PS001
// (interval fenced), which aborts the transaction; the client retries
// the transaction. A held statement that waits longer than
// buffer.window fails with 08006 and did not run (retry it).
//
// The hold is in place for every new statement as soon as the map with
// the marker is the proxy's runtime (every statement is routed by the
// runtime's router, or, in a transaction not yet open on a server, routed
// again here): ApplyMap stores it under mapMu, and ackedEpoch, which the
// heartbeat reports, reads the epoch under mapMu, so the proxy never
// acknowledges the marker's epoch before it holds.

// holdMetrics count held statements.
type holdMetrics struct {
	statements prometheus.Counter
	held       prometheus.Gauge
	wait       prometheus.Histogram
	timeouts   prometheus.Counter
	retries    prometheus.Counter
}

func newHoldMetrics(reg *prometheus.Registry) *holdMetrics {
	m := &holdMetrics{
		statements: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgshard_interval_hold_statements_total", Help: "Statements held while the key interval they touch moved to another shard (cutover).",
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgshard_interval_held", Help: "Statements held now for a moving key interval.",
		}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pgshard_interval_hold_seconds", Help: "How long statements were held for a moving key interval.",
			Buckets: []float64{.005, .01, .05, .1, .25, .5, 1, 2, 5, 10, 30},
		}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgshard_interval_hold_timeouts_total", Help: "Held statements that failed (08006) because the interval's cutover outlasted buffer.window.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgshard_interval_fenced_retries_total", Help: "Statements outside a transaction that met a fenced moving interval (PS001) on its source, kept to be sent again by a newer map.",
		}),
	}
	reg.MustRegister(m.statements, m.held, m.wait, m.timeouts, m.retries)
	return m
}

// moving returns the marker id of distribution dist in the map in use
// when its step is hold, or nil.
func (s *Server) moving(dist, id string) *shardmap.Moving {
	m := s.runtime().cfg.shardMap
	if m == nil {
		return nil
	}
	mv := m.MovingByID(dist, id)
	if mv == nil || mv.Step != shardmap.MoveHold {
		return nil
	}
	return mv
}

// anyMoving reports whether the map in use has a moving-interval marker.
func (s *Server) anyMoving() bool {
	m := s.runtime().cfg.shardMap
	if m == nil {
		return false
	}
	for i := range m.Distributions {
		if len(m.Distributions[i].Moving) > 0 {
			return true
		}
	}
	return false
}

// holdInterval waits while the map in use holds marker id of
// distribution dist, until a map without it arrives (nil), the buffer's
// window ends or its queue is full, or ctx ends.
func (s *Server) holdInterval(ctx context.Context, dist, id string) error {
	mv := s.moving(dist, id)
	if mv == nil {
		return nil
	}
	what := fmt.Sprintf("keys [%s, %s) of distribution %s are moving from shard %s to shard %s", mv.Lo, mv.Hi, dist, mv.From, mv.To)
	bc := s.runtime().cfg.Buffer
	if bc.Window < 0 {
		return intervalUnavailable(what, 0)
	}
	if n := s.buffered.Add(1); n > int64(bc.MaxQueued) {
		s.buffered.Add(-1)
		return &wire.Error{Code: wire.SQLStateTooManyConnections,
			Message: fmt.Sprintf("%s and %d statements already wait", what, bc.MaxQueued),
			Hint:    "Retry shortly, or raise buffer.max_queued."}
	}
	defer s.buffered.Add(-1)
	hm := s.metrics.hold
	hm.statements.Inc()
	hm.held.Inc()
	defer hm.held.Dec()
	start := time.Now()
	defer func() { hm.wait.Observe(time.Since(start).Seconds()) }()
	timer := time.NewTimer(bc.Window.D())
	defer timer.Stop()
	for {
		ch := s.mapChange()
		if s.moving(dist, id) == nil {
			return nil
		}
		select {
		case <-ch:
		case <-timer.C:
			hm.timeouts.Inc()
			return intervalUnavailable(what, bc.Window.D())
		case <-ctx.Done():
			return wire.Errorf(wire.SQLStateQueryCanceled, "canceling statement: it was held while %s", what)
		}
	}
}

// intervalUnavailable is the error of a statement held in vain: 08006,
// the statement did not run.
func intervalUnavailable(what string, waited time.Duration) *wire.Error {
	return &wire.Error{Code: wire.SQLStateConnectionFailure,
		Message: what + "; the statement did not run",
		Detail:  fmt.Sprintf("pgshard held the statement for %s (buffer.window) while the interval's cutover ran.", waited),
		Hint:    "Retry the statement (or the transaction)."}
}

// openOnServer reports whether the session's next statement belongs to
// a transaction already open on a server, or to a pipeline not synced
// yet (an implicit transaction): it is not held. Callers hold s.mu.
func (s *session) openOnServer() bool {
	a := s.st.cur()
	return a != nil && !a.outsideTx && (a.inTx() || s.pipe().unsynced)
}

// holdMoving holds a statement planned as plan while the interval it
// touches moves (plan.Moving), then routes q again by the new map. A
// statement of a transaction open on a server is not held. It also
// routes again the first statement of a transaction that began (BEGIN,
// not yet sent) under an older map, so that it meets the marker.
func (s *session) holdMoving(ctx context.Context, q router.Query, plan rplan.Plan) (rplan.Plan, error) {
	s.mu.Lock()
	open := s.openOnServer()
	s.mu.Unlock()
	if open {
		return plan, nil
	}
	if plan.Moving == "" && s.txRouter != nil {
		// A transaction whose BEGIN is not sent yet routes by the map it
		// began under; nothing of it ran, so it may take the map in use,
		// whose marker may hold this statement.
		if p, err := s.srv.router().Route(q); err == nil && p.Moving != "" {
			s.txRouter = nil
			plan = p
		}
	}
	for plan.Moving != "" {
		if err := s.srv.holdInterval(ctx, plan.MovingDist, plan.Moving); err != nil {
			return plan, err
		}
		s.txRouter = nil
		p, err := s.routerFor().Route(q)
		if err != nil {
			return plan, err
		}
		plan = p
	}
	return plan, nil
}
