package controlplane

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgshard/pgshard/replication/failover"
	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/shardmap/meta"
)

// Metrics of a meta member (Config.Metrics; `pgshard meta run
// --metrics-listen`): its role and map, the failover workflow's steps and
// durations, and the health of every endpoint as its monitor sees it.

// metrics is a meta member's Prometheus registry.
type metrics struct {
	reg      *prometheus.Registry
	steps    *prometheus.CounterVec
	switches *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// twoPhaseActions counts two-phase recovery's actions (twophase.go).
	twoPhaseActions *prometheus.CounterVec

	mu     sync.Mutex
	starts map[string]time.Time // shard → start of its switch in progress
}

func newMetrics(node *meta.Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), starts: make(map[string]time.Time)}
	m.steps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgshard_failover_steps_total",
		Help: "Steps of failovers and switchovers this member ran as leader, by kind, step and result (ok or error).",
	}, []string{"kind", "step", "result"})
	m.switches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgshard_failover_switches_total",
		Help: "Failovers and switchovers this member finished as leader (a new primary committed), by kind.",
	}, []string{"kind"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pgshard_failover_duration_seconds",
		Help:    "From detection (failover) or request (switchover) to the commit of the new primary, on the member that finished it.",
		Buckets: []float64{.1, .25, .5, 1, 2, 3, 5, 10, 30, 60},
	}, []string{"kind"})
	leader := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pgshard_meta_leader", Help: "1 while this member leads the meta cluster.",
	}, func() float64 {
		if node.IsLeader() {
			return 1
		}
		return 0
	})
	epoch := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pgshard_meta_map_epoch", Help: "Epoch of the shard map this member has applied.",
	}, func() float64 { return float64(node.Map().Epoch) })
	m.reg.MustRegister(m.steps, m.switches, m.duration, leader, epoch,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// watchHealth exports the monitor's endpoint metrics.
func (m *metrics) watchHealth(mon *health.Monitor) error {
	if err := m.reg.Register(health.NewCollector(mon)); err != nil {
		return fmt.Errorf("meta metrics: %w", err)
	}
	return nil
}

// event is the controller's OnEvent hook.
func (m *metrics) event(e failover.Event) {
	result := "ok"
	if e.Err != nil {
		result = "error"
	}
	kind := string(e.Kind)
	m.steps.WithLabelValues(kind, e.Step, result).Inc()
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case e.Err != nil:
	case e.Step == failover.EventDetect, e.Step == failover.StepDrain && m.starts[e.Shard].IsZero():
		m.starts[e.Shard] = e.At
	case e.Step == failover.EventDone:
		m.switches.WithLabelValues(kind).Inc()
		if start, ok := m.starts[e.Shard]; ok {
			m.duration.WithLabelValues(kind).Observe(e.At.Sub(start).Seconds())
		}
		delete(m.starts, e.Shard)
	}
}

// serve serves /metrics on ln until ctx ends; with a token, requests
// need "Authorization: Bearer TOKEN".
func (m *metrics) serve(ctx context.Context, ln net.Listener, token string) error {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="pgshard meta"`)
			http.Error(w, "a bearer token is required", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("meta metrics: %w", err)
	}
}
