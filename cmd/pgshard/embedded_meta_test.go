package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
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

// The embedded meta's Raft records are debug unless they are errors;
// the member's own records keep their level.
func TestQuietRaft(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelWarn, slog.LevelDebug} {
		var buf bytes.Buffer
		l := slog.New(quietRaft{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level})}).With("component", "meta")
		raft := l.With("logger", "raft")
		raft.Warn("heartbeat timeout reached, starting election")
		raft.Info("entering leader state")
		l.With("logger", "raft-net").Warn("failed to accept connection")
		raft.Error("failed to take snapshot")
		l.Warn("member warning")
		if got := raft.Enabled(context.Background(), slog.LevelWarn); got != (level == slog.LevelDebug) {
			t.Errorf("level %v: raft's warn enabled %v", level, got)
		}
		out := buf.String()
		want := []string{`level=ERROR msg="failed to take snapshot"`, `level=WARN msg="member warning"`}
		if level == slog.LevelDebug {
			want = append(want, `level=DEBUG msg="heartbeat timeout reached, starting election" component=meta logger=raft`,
				`level=DEBUG msg="entering leader state"`, `level=DEBUG msg="failed to accept connection" component=meta logger=raft-net`)
		} else if strings.Contains(out, "election") || strings.Contains(out, "leader state") || strings.Contains(out, "accept connection") {
			t.Errorf("level %v: raft's warn and info are logged:\n%s", level, out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("level %v: the log lacks %q:\n%s", level, w, out)
			}
		}
	}
}
