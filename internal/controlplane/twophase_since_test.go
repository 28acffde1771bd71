package controlplane

import (
	"testing"
	"time"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/meta"
)

func TestPrimarySince(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	a := shardmap.Endpoint{Host: "10.0.0.1", Port: 5432}
	b := shardmap.Endpoint{Host: "10.0.0.2", Port: 5432}
	version := func(min int, primary shardmap.Endpoint) meta.MapVersion {
		return meta.MapVersion{AppliedAt: t0.Add(time.Duration(min) * time.Minute),
			Map: &shardmap.Map{Shards: []shardmap.Shard{{Name: "s0", Primary: primary}}}}
	}
	// Newest first: a failover to b at minute 2, another change at 3.
	hist := []meta.MapVersion{version(3, b), version(2, b), version(1, a), version(0, a)}
	if got, want := primarySince(hist, "s0", b), t0.Add(2*time.Minute); !got.Equal(want) {
		t.Errorf("since %v, want %v", got, want)
	}
	// Every version kept has the primary: not known.
	if got := primarySince(hist[2:], "s0", a); !got.IsZero() {
		t.Errorf("since %v, want zero", got)
	}
	// A shard added at minute 3.
	if got, want := primarySince(hist, "s9", shardmap.Endpoint{}), t0.Add(3*time.Minute); !got.Equal(want) {
		t.Errorf("new shard: since %v, want %v", got, want)
	}
}
