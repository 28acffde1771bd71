package twophase

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a coordinator's Prometheus metrics: the proxy registers them
// and sets Coordinator.OnOutcome to Metrics.Observe.
type Metrics struct {
	commits  *prometheus.CounterVec
	decision prometheus.Histogram
	duration *prometheus.HistogramVec
}

// NewMetrics registers the coordinator metrics with reg:
// pgshard_twophase_commits_total{outcome} (outcome: committed, pending —
// committed, some participant left to recovery —, aborted, in_doubt),
// pgshard_twophase_decision_seconds and
// pgshard_twophase_commit_seconds{phase} (prepare, decide, finish).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		commits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgshard_twophase_commits_total",
			Help: "Transactions over several shards committed with two-phase commit, by outcome: committed, pending (committed; a participant left to recovery), aborted, in_doubt (left to recovery).",
		}, []string{"outcome"}),
		decision: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pgshard_twophase_decision_seconds",
			Help:    "Time to make a two-phase commit's decision durable (COMMIT PREPARED on the decision shard), of the commits decided.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, 1},
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pgshard_twophase_commit_seconds",
			Help:    "Duration of the phases of two-phase commits: prepare, decide, finish (commit or roll back everywhere).",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, 1},
		}, []string{"phase"}),
	}
	for _, c := range []prometheus.Collector{m.commits, m.decision, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("twophase metrics: %w", err)
		}
	}
	return m, nil
}

// Observe records a Commit's outcome; one-phase commits (no GID) are not
// counted.
func (m *Metrics) Observe(o Outcome) {
	if o.GID == "" {
		return
	}
	outcome := "aborted"
	switch {
	case o.InDoubt:
		outcome = "in_doubt"
	case o.Committed && len(o.Pending) > 0:
		outcome = "pending"
	case o.Committed:
		outcome = "committed"
	}
	m.commits.WithLabelValues(outcome).Inc()
	if o.Decide > 0 {
		if o.Committed {
			m.decision.Observe(o.Decide.Seconds())
		}
		m.duration.WithLabelValues("decide").Observe(o.Decide.Seconds())
	}
	if o.Prepare > 0 {
		m.duration.WithLabelValues("prepare").Observe(o.Prepare.Seconds())
	}
	if o.Finish > 0 {
		m.duration.WithLabelValues("finish").Observe(o.Finish.Seconds())
	}
}
