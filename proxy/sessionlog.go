package proxy

import (
	"context"
	"log/slog"
)

// userLogHandler adds a session's "user" attribute to the records of the
// server's logger when they are written. It costs a session two small
// objects instead of the handler clone with preformatted attributes that
// Logger.With builds for every client (most sessions never log); the
// output is the same as with Logger.With("user", user).
type userLogHandler struct {
	inner slog.Handler
	user  string
}

// newSessionLogger returns base's logger with the session's user.
func newSessionLogger(base *slog.Logger, user string) *slog.Logger {
	return slog.New(&userLogHandler{inner: base.Handler(), user: user})
}

// sessionLogger returns the session logger of us's sessions, built once
// per user rather than per session (an idle client keeps no logger of its
// own).
func (us *userState) sessionLogger(base *slog.Logger, user string) *slog.Logger {
	if us.cfg.Name != user {
		return newSessionLogger(base, user)
	}
	if l := us.log.Load(); l != nil {
		return l
	}
	l := newSessionLogger(base, user)
	if us.log.CompareAndSwap(nil, l) {
		return l
	}
	return us.log.Load()
}

func (h *userLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

// Handle writes r with the user attribute ahead of r's own, where
// Logger.With would have put it.
func (h *userLogHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(slog.String("user", h.user))
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(a)
		return true
	})
	return h.inner.Handle(ctx, out)
}

// WithAttrs and WithGroup build the clone Logger.With would have built,
// for the rare session logger that gets more attributes.
func (h *userLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return h.inner.WithAttrs(append([]slog.Attr{slog.String("user", h.user)}, attrs...))
}

func (h *userLogHandler) WithGroup(name string) slog.Handler {
	return h.inner.WithAttrs([]slog.Attr{slog.String("user", h.user)}).WithGroup(name)
}
