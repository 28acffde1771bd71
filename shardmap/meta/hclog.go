package meta

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"

	"github.com/hashicorp/go-hclog"
)

// hclogger lets raft (which logs through hclog) log to the node's
// slog.Logger. Levels map one to one (Trace is below Debug); whether a
// level is on is the slog handler's decision, so SetLevel does nothing.
type hclogger struct {
	base    *slog.Logger // the node's logger with the implied args
	l       *slog.Logger // base with the name
	name    string
	implied []any
}

var _ hclog.Logger = (*hclogger)(nil)

func newHclogger(base *slog.Logger, name string, implied []any) *hclogger {
	l := base
	if name != "" {
		l = base.With("logger", name)
	}
	return &hclogger{base: base, l: l, name: name, implied: implied}
}

// closedConnError reports whether args hold an error about a connection
// closed by this process.
func closedConnError(args []any) bool {
	for _, a := range args {
		if err, ok := a.(error); ok && errors.Is(err, net.ErrClosed) {
			return true
		}
	}
	return false
}

const levelTrace = slog.LevelDebug - 4

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return levelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Log implements hclog.Logger.
func (h *hclogger) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	if level >= hclog.Warn && closedConnError(args) {
		// Close closes the transport's connections under raft's reading
		// goroutines, which then report "use of closed network
		// connection": expected, not an error.
		level = hclog.Debug
	}
	h.l.Log(context.Background(), slogLevel(level), msg, args...)
}

// Trace implements hclog.Logger.
func (h *hclogger) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }

// Debug implements hclog.Logger.
func (h *hclogger) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }

// Info implements hclog.Logger.
func (h *hclogger) Info(msg string, args ...any) { h.Log(hclog.Info, msg, args...) }

// Warn implements hclog.Logger.
func (h *hclogger) Warn(msg string, args ...any) { h.Log(hclog.Warn, msg, args...) }

// Error implements hclog.Logger.
func (h *hclogger) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogger) enabled(level hclog.Level) bool {
	return h.l.Enabled(context.Background(), slogLevel(level))
}

// IsTrace implements hclog.Logger.
func (h *hclogger) IsTrace() bool { return h.enabled(hclog.Trace) }

// IsDebug implements hclog.Logger.
func (h *hclogger) IsDebug() bool { return h.enabled(hclog.Debug) }

// IsInfo implements hclog.Logger.
func (h *hclogger) IsInfo() bool { return h.enabled(hclog.Info) }

// IsWarn implements hclog.Logger.
func (h *hclogger) IsWarn() bool { return h.enabled(hclog.Warn) }

// IsError implements hclog.Logger.
func (h *hclogger) IsError() bool { return h.enabled(hclog.Error) }

// ImpliedArgs implements hclog.Logger.
func (h *hclogger) ImpliedArgs() []any { return h.implied }

// With implements hclog.Logger.
func (h *hclogger) With(args ...any) hclog.Logger {
	return newHclogger(h.base.With(args...), h.name, append(append([]any(nil), h.implied...), args...))
}

// Name implements hclog.Logger.
func (h *hclogger) Name() string { return h.name }

// Named implements hclog.Logger.
func (h *hclogger) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.ResetNamed(name)
}

// ResetNamed implements hclog.Logger.
func (h *hclogger) ResetNamed(name string) hclog.Logger {
	return newHclogger(h.base, name, h.implied)
}

// SetLevel implements hclog.Logger; the slog handler decides levels.
func (h *hclogger) SetLevel(hclog.Level) {}

// GetLevel implements hclog.Logger.
func (h *hclogger) GetLevel() hclog.Level {
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if h.enabled(l) {
			return l
		}
	}
	return hclog.Off
}

// StandardLogger implements hclog.Logger.
func (h *hclogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	level := slog.LevelInfo
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = slogLevel(opts.ForceLevel)
	}
	return slog.NewLogLogger(h.l.Handler(), level)
}

// StandardWriter implements hclog.Logger.
func (h *hclogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	return h.StandardLogger(opts).Writer()
}
