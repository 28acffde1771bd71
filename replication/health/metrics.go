package health

import "github.com/prometheus/client_golang/prometheus"

// Collector exports a [Monitor]'s statuses as Prometheus metrics, read
// from [Monitor.Snapshot] at every scrape:
//
//	pgshard_endpoint_up{shard,addr,role}                     1 if the latest probe succeeded
//	pgshard_endpoint_in_recovery{shard,addr,role}            pg_is_in_recovery() at the latest successful probe
//	pgshard_endpoint_probe_failures_total{shard,addr,role}   failed probes
//	pgshard_replica_lag_bytes{shard,addr}                    replicas with a known lag only
//	pgshard_replica_lag_seconds{shard,addr}                  replicas with a known lag only
//
// Register it with a prometheus.Registerer; it is safe for concurrent use.
type Collector struct {
	m                                       *Monitor
	up, inRecovery, failures, lagB, lagSecs *prometheus.Desc
}

// NewCollector returns a Collector for m.
func NewCollector(m *Monitor) *Collector {
	endpoint := []string{"shard", "addr", "role"}
	replica := []string{"shard", "addr"}
	return &Collector{
		m: m,
		up: prometheus.NewDesc("pgshard_endpoint_up",
			"Whether the latest health probe of the endpoint succeeded (1) or not (0).", endpoint, nil),
		inRecovery: prometheus.NewDesc("pgshard_endpoint_in_recovery",
			"Whether the endpoint was in recovery (a replica) at its latest successful probe.", endpoint, nil),
		failures: prometheus.NewDesc("pgshard_endpoint_probe_failures_total",
			"Failed health probes of the endpoint.", endpoint, nil),
		lagB: prometheus.NewDesc("pgshard_replica_lag_bytes",
			"Bytes of WAL the replica has yet to replay to reach its primary's position.", replica, nil),
		lagSecs: prometheus.NewDesc("pgshard_replica_lag_seconds",
			"Seconds since the last transaction the replica replayed committed; 0 when it is caught up.", replica, nil),
	}
}

// Describe sends the descriptors of the metrics; see prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.inRecovery, c.failures, c.lagB, c.lagSecs} {
		ch <- d
	}
}

// Collect sends the current metrics; see prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.m.Snapshot() {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, boolValue(s.Up), s.Shard, s.Addr, s.Role)
		if s.Observed {
			ch <- prometheus.MustNewConstMetric(c.inRecovery, prometheus.GaugeValue, boolValue(s.InRecovery), s.Shard, s.Addr, s.Role)
		}
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(s.ProbeFailures), s.Shard, s.Addr, s.Role)
		if s.LagKnown {
			ch <- prometheus.MustNewConstMetric(c.lagB, prometheus.GaugeValue, float64(s.LagBytes), s.Shard, s.Addr)
			ch <- prometheus.MustNewConstMetric(c.lagSecs, prometheus.GaugeValue, s.LagSeconds, s.Shard, s.Addr)
		}
	}
}

// boolValue is 1 for true, 0 for false.
func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
