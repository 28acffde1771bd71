package proxy

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics holds the proxy's Prometheus metrics. Hot-path counters are
// resolved once so recording costs an atomic add.
type metrics struct {
	reg          *prometheus.Registry
	clients      prometheus.Gauge
	states       [stateClosed + 1]prometheus.Gauge
	queries      prometheus.Counter
	transactions prometheus.Counter
	latency      prometheus.Histogram
	errors       *prometheus.CounterVec
	pins         *prometheus.CounterVec
	mapEpoch     prometheus.Gauge
	buffered     prometheus.Counter
	bufferWait   prometheus.Histogram
	abortedConns prometheus.Counter
	hold         *holdMetrics
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.clients = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pgshard_client_connections", Help: "Client connections currently open.",
	})
	states := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pgshard_client_sessions", Help: "Client sessions by state (idle: no server connection; active: in a transaction; pinned: holding a server connection for the session).",
	}, []string{"state"})
	for st := stateIdle; st < stateClosed; st++ {
		m.states[st] = states.WithLabelValues(st.String())
	}
	m.queries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pgshard_queries_total", Help: "Sync points answered (simple queries and extended-protocol Syncs).",
	})
	m.transactions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pgshard_transactions_total", Help: "Server connections returned to the pool after a transaction.",
	})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "pgshard_query_duration_seconds", Help: "Time from sending a sync point to the server until its ReadyForQuery.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgshard_errors_total", Help: "ErrorResponses sent to clients, by SQLSTATE.",
	}, []string{"sqlstate"})
	m.pins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgshard_pinned_sessions_total", Help: "Sessions pinned to one server connection in transaction mode, by reason.",
	}, []string{"reason"})
	m.mapEpoch = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pgshard_map_epoch", Help: "Epoch of the shard map the proxy routes by (0 without a map).",
	})
	m.buffered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pgshard_buffered_statements_total", Help: "Statements held while their shard switched its primary or could not reach it.",
	})
	m.bufferWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "pgshard_buffer_wait_seconds", Help: "How long held statements waited before they ran.",
		Buckets: []float64{.01, .05, .1, .25, .5, 1, 2, 3, 5, 10, 30},
	})
	m.abortedConns = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pgshard_server_connections_aborted_total", Help: "Server connections reset because the shard map replaced or fenced their server.",
	})
	m.reg.MustRegister(m.clients, states, m.queries, m.transactions, m.latency, m.errors, m.pins, m.mapEpoch, m.buffered, m.bufferWait, m.abortedConns,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.hold = newHoldMetrics(m.reg)
	return m
}

func (m *metrics) clientConnected()    { m.clients.Inc(); m.states[stateIdle].Inc() }
func (m *metrics) clientDisconnected() { m.clients.Dec() }
func (m *metrics) sessionState(from, to state) {
	if from < stateClosed {
		m.states[from].Dec()
	}
	if to < stateClosed {
		m.states[to].Inc()
	}
}
func (m *metrics) query(d time.Duration) { m.queries.Inc(); m.latency.Observe(d.Seconds()) }
func (m *metrics) transaction()          { m.transactions.Inc() }
func (m *metrics) pinned(reason string)  { m.pins.WithLabelValues(reason).Inc() }
func (m *metrics) errorCode(code string) {
	if code == "" {
		code = "unknown"
	}
	m.errors.WithLabelValues(code).Inc()
}

// handler serves the metrics in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// registerMetaState exports whether the proxy refuses writes because the
// meta cluster has not confirmed its shard map (metastate.go).
func (m *metrics) registerMetaState(s *Server) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pgshard_meta_fail_closed",
		Help: "1 while the proxy refuses writes (25006) because the meta cluster has not confirmed its shard map (no map or no answer from the leader yet, or none within meta_lease), else 0.",
	}, func() float64 {
		if s.WriteRefusal() != "" {
			return 1
		}
		return 0
	}))
}

// registerPools exports pool statistics, read at scrape time.
func (m *metrics) registerPools(s *Server) {
	m.reg.MustRegister(&poolCollector{srv: s})
}

var (
	poolLabels      = []string{"server", "user", "database"}
	descServerConns = prometheus.NewDesc("pgshard_server_connections", "Server connections by state (open includes idle).", append([]string{"state"}, poolLabels...), nil)
	descWaiting     = prometheus.NewDesc("pgshard_pool_waiting_clients", "Clients waiting for a server connection now.", poolLabels, nil)
	descWaits       = prometheus.NewDesc("pgshard_pool_waits_total", "Acquisitions that had to wait for a server connection.", poolLabels, nil)
	descWaitSecs    = prometheus.NewDesc("pgshard_pool_wait_seconds_total", "Time spent waiting for server connections.", poolLabels, nil)
	descTimeouts    = prometheus.NewDesc("pgshard_pool_timeouts_total", "Acquisitions that gave up after the wait timeout (53300).", poolLabels, nil)
	descDials       = prometheus.NewDesc("pgshard_server_connects_total", "Server connections opened.", poolLabels, nil)
	descDialFails   = prometheus.NewDesc("pgshard_server_connect_failures_total", "Failed attempts to open a server connection.", poolLabels, nil)
	descDiscarded   = prometheus.NewDesc("pgshard_server_discards_total", "Server connections closed as broken, idle or old.", poolLabels, nil)
	descStalls      = prometheus.NewDesc("pgshard_server_stalls_total", "Server connections reset because their server acknowledged nothing for backend.ack_timeout.", poolLabels, nil)
)

type poolCollector struct{ srv *Server }

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descServerConns, descWaiting, descWaits, descWaitSecs, descTimeouts, descDials, descDialFails, descDiscarded, descStalls} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	c.srv.mu.Lock()
	defer c.srv.mu.Unlock()
	for k, p := range c.srv.pools {
		st := p.Stats()
		l := []string{p.Config().Addr, k.user, k.db}
		ch <- prometheus.MustNewConstMetric(descServerConns, prometheus.GaugeValue, float64(st.Open), append([]string{"open"}, l...)...)
		ch <- prometheus.MustNewConstMetric(descServerConns, prometheus.GaugeValue, float64(st.Idle), append([]string{"idle"}, l...)...)
		ch <- prometheus.MustNewConstMetric(descWaiting, prometheus.GaugeValue, float64(st.Waiting), l...)
		ch <- prometheus.MustNewConstMetric(descWaits, prometheus.CounterValue, float64(st.Waits), l...)
		ch <- prometheus.MustNewConstMetric(descWaitSecs, prometheus.CounterValue, st.WaitTime.Seconds(), l...)
		ch <- prometheus.MustNewConstMetric(descTimeouts, prometheus.CounterValue, float64(st.Timeouts), l...)
		ch <- prometheus.MustNewConstMetric(descDials, prometheus.CounterValue, float64(st.Dials), l...)
		ch <- prometheus.MustNewConstMetric(descDialFails, prometheus.CounterValue, float64(st.DialFails), l...)
		ch <- prometheus.MustNewConstMetric(descDiscarded, prometheus.CounterValue, float64(st.Discarded), l...)
		ch <- prometheus.MustNewConstMetric(descStalls, prometheus.CounterValue, float64(st.Stalled), l...)
	}
}
