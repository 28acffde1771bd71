package proxy

import (
	"bytes"
	"log/slog"
	"testing"
)

// TestSessionLoggerOutput checks that the session logger writes what
// Logger.With("user", ...) wrote, attributes and groups in the same order.
func TestSessionLoggerOutput(t *testing.T) {
	for _, tc := range []struct {
		name string
		log  func(l *slog.Logger)
	}{
		{"plain", func(l *slog.Logger) {
			l.Info("client authentication failed", "remote", "10.0.0.1:5000", "code", "28P01")
		}},
		{"no attrs", func(l *slog.Logger) { l.Warn("session panic") }},
		{"with", func(l *slog.Logger) { l.With("shard", "s1").Error("lost", "err", "EOF") }},
		{"group", func(l *slog.Logger) { l.WithGroup("g").Info("m", "a", 1) }},
		{"debug off", func(l *slog.Logger) { l.Debug("hidden", "a", 1) }},
	} {
		for _, json := range []bool{false, true} {
			var want, got bytes.Buffer
			mk := func(b *bytes.Buffer) *slog.Logger {
				opts := &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
					if a.Key == slog.TimeKey {
						return slog.Attr{}
					}
					return a
				}}
				if json {
					return slog.New(slog.NewJSONHandler(b, opts)).With("component", "proxy")
				}
				return slog.New(slog.NewTextHandler(b, opts)).With("component", "proxy")
			}
			tc.log(mk(&want).With("user", "alice"))
			tc.log(newSessionLogger(mk(&got), "alice"))
			if got.String() != want.String() {
				t.Errorf("%s (json %v): got %q, want %q", tc.name, json, got.String(), want.String())
			}
			if tc.name != "debug off" && !bytes.Contains(got.Bytes(), []byte("alice")) {
				t.Errorf("%s (json %v): no user in %q", tc.name, json, got.String())
			}
		}
	}
}
