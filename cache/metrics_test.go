package cache

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics(t *testing.T) {
	c := newTestCache(t, nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c.Collectors()...)
	var b KeyBuilder
	k := userKey(&b, 1, "s1", "1", "app").clone()
	c.Get(k, 0)                                // miss
	fill(t, c, k, "value")                     // stored, then a hit
	c.Get(k, 0)                                // hit
	c.Get(k, 1000)                             // read_your_writes
	c.Get(userKey(&b, 1, "s9", "1", "app"), 0) // stream_down
	c.Invalidate("s1", "public.users", []byte("1"), 0)
	c.Stream("s1").Invalidate("public.users", []byte("2"), 0, time.Now().Add(-30*time.Millisecond))
	c.Fill(c.BeginFill(k, 0), make([]byte, DefaultMaxEntryBytes+1)) // too_large

	want := `
# HELP pgshard_cache_lookups_total Cache lookups by result: hit, miss, or bypass with its reason (table_off, epoch, stream_down, stream_behind, read_your_writes, closed, not_streamed).
# TYPE pgshard_cache_lookups_total counter
pgshard_cache_lookups_total{reason="",result="hit"} 1
pgshard_cache_lookups_total{reason="",result="miss"} 1
pgshard_cache_lookups_total{reason="closed",result="bypass"} 0
pgshard_cache_lookups_total{reason="epoch",result="bypass"} 0
pgshard_cache_lookups_total{reason="not_streamed",result="bypass"} 0
pgshard_cache_lookups_total{reason="read_your_writes",result="bypass"} 1
pgshard_cache_lookups_total{reason="stream_behind",result="bypass"} 0
pgshard_cache_lookups_total{reason="stream_down",result="bypass"} 1
pgshard_cache_lookups_total{reason="table_off",result="bypass"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pgshard_cache_lookups_total"); err != nil {
		t.Error(err)
	}
	checks := map[string]float64{
		`pgshard_cache_fills_total{result="stored"}`:                       1,
		`pgshard_cache_fills_total{result="too_large"}`:                    1,
		`pgshard_cache_invalidations_total{scope="key",source="proxy"}`:    1,
		`pgshard_cache_invalidations_total{scope="key",source="stream"}`:   1,
		`pgshard_cache_invalidations_total{scope="shard",source="stream"}`: 2, // s1 and s2 came up
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	var staleness *float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			name := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			if m.GetCounter() != nil {
				got[name] = m.GetCounter().GetValue()
			}
			if h := m.GetHistogram(); h != nil && mf.GetName() == "pgshard_cache_staleness_seconds" {
				v := h.GetSampleSum()
				staleness = &v
				if h.GetSampleCount() != 1 {
					t.Errorf("staleness samples %d, want 1", h.GetSampleCount())
				}
			}
			if mf.GetName() == "pgshard_cache_bytes" && m.GetGauge().GetValue() <= 0 {
				t.Errorf("pgshard_cache_bytes = %v with an entry stored", m.GetGauge().GetValue())
			}
		}
	}
	for name, want := range checks {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	if staleness == nil || *staleness < 0.03 || *staleness > 5 {
		t.Errorf("staleness sum %v, want the 30 ms the change waited", staleness)
	}
}
