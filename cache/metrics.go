package cache

import "github.com/prometheus/client_golang/prometheus"

// invalidation sources and scopes (label values).
const (
	srcProxy = iota
	srcStream
	srcFlush
	srcEpoch
	numSrc
)

const (
	scopeKey = iota
	scopeTable
	scopeShard
	scopeAll
	numScope
)

var (
	srcNames   = [numSrc]string{"proxy", "stream", "flush", "epoch"}
	scopeNames = [numScope]string{"key", "table", "shard", "all"}
)

// fill outcomes (label values).
const (
	fillStored = iota
	fillStale
	fillBypassed
	fillTableOff
	fillTooLarge
	fillDropped
	numFill
)

var fillNames = [numFill]string{"stored", "stale", "bypassed", "table_off", "too_large", "dropped"}

type metrics struct {
	hits, misses  prometheus.Counter
	bypasses      [numStatus]prometheus.Counter // indexed by Status; Hit and Miss unused
	fills         [numFill]prometheus.Counter
	evictions     prometheus.Counter
	invalidations [numSrc][numScope]prometheus.Counter
	staleness     prometheus.Histogram
	streamUp      *prometheus.GaugeVec
	streamApplied *prometheus.GaugeVec
	streamDelay   *prometheus.GaugeVec
	bytesFunc     func() float64
	collectors    []prometheus.Collector
}

func newMetrics() *metrics {
	m := &metrics{}
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgshard_cache_lookups_total",
		Help: "Cache lookups by result: hit, miss, or bypass with its reason (table_off, epoch, stream_down, stream_behind, read_your_writes, closed, not_streamed).",
	}, []string{"result", "reason"})
	m.hits = lookups.WithLabelValues("hit", "")
	m.misses = lookups.WithLabelValues("miss", "")
	for s := BypassTable; s < numStatus; s++ {
		m.bypasses[s] = lookups.WithLabelValues("bypass", s.String())
	}
	fills := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgshard_cache_fills_total",
		Help: "Results offered to the cache by outcome: stored, stale (an invalidation raced the read), bypassed, table_off, too_large, dropped (ristretto's buffer was full).",
	}, []string{"result"})
	for i, n := range fillNames {
		m.fills[i] = fills.WithLabelValues(n)
	}
	m.evictions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pgshard_cache_evictions_total",
		Help: "Entries evicted by the byte budget or expired by their TTL (and dropped by a flush).",
	})
	inv := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgshard_cache_invalidations_total",
		Help: "Invalidations by source (proxy: own writes; stream: a shard's logical decoding stream; flush; epoch) and scope (key, table, shard, all).",
	}, []string{"source", "scope"})
	for s := range numSrc {
		for sc := range numScope {
			m.invalidations[s][sc] = inv.WithLabelValues(srcNames[s], scopeNames[sc])
		}
	}
	m.staleness = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pgshard_cache_staleness_seconds",
		Help:    "Delay from a change's commit (its commit timestamp in the stream) to its invalidation in this proxy's cache.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	m.streamUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pgshard_cache_stream_up",
		Help: "1 while the shard's invalidation stream runs, else 0 (its entries are bypassed).",
	}, []string{"shard"})
	m.streamApplied = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pgshard_cache_stream_applied_lsn",
		Help: "LSN up to which the shard's invalidation stream applied every commit.",
	}, []string{"shard"})
	m.streamDelay = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pgshard_cache_stream_delay_seconds",
		Help: "Delay from commit to invalidation of the last transaction the shard's stream applied (0 once an idle keepalive confirms it caught up); over the staleness bound the shard is bypassed.",
	}, []string{"shard"})
	bytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pgshard_cache_bytes",
		Help: "Bytes the cache holds (sum of entry costs), within its budget.",
	}, func() float64 {
		if m.bytesFunc == nil {
			return 0
		}
		return m.bytesFunc()
	})
	m.collectors = []prometheus.Collector{lookups, fills, m.evictions, inv, m.staleness, m.streamUp, m.streamApplied, m.streamDelay, bytes}
	return m
}

func (m *metrics) count(s Status) {
	switch s {
	case Hit:
		m.hits.Inc()
	case Miss:
		m.misses.Inc()
	default:
		m.bypasses[s].Inc()
	}
}

// Collectors returns the cache's Prometheus collectors, for the proxy's
// registry. The hit ratio is
// rate(pgshard_cache_lookups_total{result="hit"}) / rate(pgshard_cache_lookups_total).
func (c *Cache) Collectors() []prometheus.Collector { return c.m.collectors }
