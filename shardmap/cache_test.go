package shardmap_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/shardmap"
)

func TestTableCacheYAMLValidateDiff(t *testing.T) {
	m := validMap()
	m.Tables[0].Cache = shardmap.TableCache{Enabled: true, TTL: 90 * time.Second, MaxEntryBytes: 4096}
	m.Tables[1].Cache = shardmap.TableCache{Enabled: true}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	out := roundTrip(t, m)
	for _, want := range []string{
		"cache: {enabled: true, ttl: 1m30s, max_entry_bytes: 4096}",
		"cache: {enabled: true}",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("marshaled map has no %s:\n%s", want, out)
		}
	}
	// Clone copies the settings; changing the clone leaves m alone.
	c := m.Clone()
	c.Tables[0].Cache.Enabled = false
	if !m.Tables[0].Cache.Enabled {
		t.Fatal("Clone shares the cache settings")
	}
	d := shardmap.Diff(m, c)
	if len(d.Tables) != 1 || !slices.Equal(d.Tables[0].Details, []string{"cache on ttl=1m30s max_entry_bytes=4096 -> off ttl=1m30s max_entry_bytes=4096"}) {
		t.Errorf("diff = %+v", d.Tables)
	}

	// An unsharded table cannot be cached.
	bad := validMap()
	bad.Tables[2].Cache.Enabled = true
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "public.settings is unsharded, so it cannot be cached") {
		t.Errorf("unsharded cacheable table: %v", err)
	}
	bad = validMap()
	bad.Tables[0].Cache.TTL = -time.Second
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "negative cache ttl") {
		t.Errorf("negative ttl: %v", err)
	}

	// Parse errors name the field.
	for in, want := range map[string]string{
		"cache: {enabled: maybe}":      `cache enabled must be true or false, not "maybe"`,
		"cache: {ttl: soon}":           `cache ttl must be a duration such as 30s or 5m, not "soon"`,
		"cache: {max_entry_bytes: -1}": `cache max_entry_bytes must be a number of bytes, not "-1"`,
		"cache: {size: 1}":             `has no field "size"`,
	} {
		y := "epoch: 1\nshards: [{name: s1, primary: '10.0.0.1:5432'}]\ndistributions:\n  - {name: d, key_type: bigint, strategy: hash, shards_even: [s1]}\ntables:\n  - {name: public.t, distribution: d, key: id, " + in + "}\n"
		if _, err := shardmap.ParseYAML([]byte(y)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", in, err, want)
		}
	}
}
