package main

import (
	"testing"

	"github.com/pgshard/pgshard/proxy"
)

// The embedded meta cluster (pgshard demo, a proxy without --meta) refuses
// an unsafe map like a real one: its API is the same server.
func TestEmbeddedMetaRefusesUnsafeMap(t *testing.T) {
	cfg := &proxy.Config{}
	if err := cfg.UseShardMap(ctlParseMap(t, ctlFailedOverMapYAML)); err != nil {
		t.Fatal(err)
	}
	m, err := startEmbeddedMeta(t.Context(), "127.0.0.1:0", t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.close(); err != nil {
			t.Errorf("close the embedded meta: %v", err)
		}
	}()
	file := ctlWriteFile(t, "original.yaml", ctlMapYAML)
	r := runCtl(t, nil, "map", "apply", "-f", file, "--meta", m.addr, "--timeout", "5s").want(t, exitRefused)
	ctlWantContains(t, "stderr", r.stderr, "shard s1: primary 10.0.0.1:5432 is fenced in the current map")
	if e := m.node.Map().Epoch; e != 1 {
		t.Fatalf("epoch %d after a refused apply", e)
	}
	runCtl(t, nil, "map", "apply", "-f", file, "--force", "--meta", m.addr, "--timeout", "5s").want(t, exitOK)
	if p := m.node.Map().Map.Shard("s1").Primary.String(); p != "10.0.0.1:5432" {
		t.Errorf("after --force the primary of s1 is %s", p)
	}
}
