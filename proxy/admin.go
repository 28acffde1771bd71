package proxy

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// AdminHandler returns the admin HTTP API: /metrics, /healthz, /readyz and
// /debug/pprof/.
// When the config sets an admin token, every request must carry it as
// "Authorization: Bearer TOKEN".
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.metrics.handler())
	// Profiles for `go tool pprof` (behind the admin token like the rest).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	// /readyz: ready for reads and writes. A proxy that refuses writes
	// (fail closed: the meta cluster has not confirmed its map) is not
	// ready; it still serves reads, which /healthz reports.
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.shuttingDown() || s.ln == nil {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if why := s.WriteRefusal(); why != "" {
			http.Error(w, "not ready for writes (reads are served): "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := s.runtime().cfg.AdminToken
		if token != "" {
			want := "Bearer " + token
			got := r.Header.Get("Authorization")
			if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="pgshard"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// ServeAdmin serves the admin API on addr until ctx ends.
func (s *Server) ServeAdmin(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s.AdminHandler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("admin http: %w", err)
	}
}
