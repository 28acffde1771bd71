package proxy

import (
	"context"
	"fmt"

	"github.com/pgshard/pgshard/replication/health"
)

// Endpoint health: with a shard map, the proxy probes every primary and
// replica of it (replication/health) for as long as it serves, and exports
// their state and the replicas' lag as metrics. Read splitting and
// failover will decide by it.

// startHealth starts the monitor when the proxy routes by a shard map.
// It runs until stopHealth (Shutdown).
func (s *Server) startHealth() {
	rt := s.runtime()
	if rt.cfg.shardMap == nil || rt.cfg.HealthInterval.D() < 0 {
		return
	}
	user, password := rt.cfg.Backend.User, rt.cfg.Backend.Password
	if user == "" {
		for _, u := range rt.users {
			user, password = u.beUser, u.bePassword
			break
		}
	}
	mon, err := health.New(health.Config{
		Targets: func() []health.Target {
			return health.TargetsFromMap(s.runtime().cfg.shardMap)
		},
		User: user, Password: password, Database: "postgres", SSLMode: rt.cfg.Backend.SSLMode,
		SSLRootCert: rt.cfg.Backend.SSLRootCert, SSLCert: rt.cfg.Backend.SSLCert, SSLKey: rt.cfg.Backend.SSLKey,
		Interval: rt.cfg.HealthInterval.D(),
	})
	if err != nil {
		s.log.Error("endpoint health checks disabled", "err", err)
		return
	}
	if err := s.metrics.reg.Register(health.NewCollector(mon)); err != nil {
		s.log.Error("endpoint health metrics disabled", "err", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.health, s.stopHealthFn = mon, cancel
	s.mu.Unlock()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		mon.Run(ctx)
	}()
}

// stopHealth stops the monitor, if any.
func (s *Server) stopHealth() {
	s.mu.Lock()
	stop := s.stopHealthFn
	s.stopHealthFn = nil
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Health returns the state of every endpoint of the shard map (nil
// without a map, or before Serve).
func (s *Server) Health() []health.Status {
	s.mu.Lock()
	mon := s.health
	s.mu.Unlock()
	if mon == nil {
		return nil
	}
	return mon.Snapshot()
}

// endpointState describes the server at addr for SHOW SHARDS: "up" or
// "down" (with the last error), a replica's lag, "unknown" before its
// first probe or without health checks.
func (s *Server) endpointState(addr string) string {
	for _, st := range s.Health() {
		if st.Addr != addr {
			continue
		}
		switch {
		case st.LastProbe.IsZero():
			return "unknown"
		case !st.Up:
			msg := "down"
			if st.LastError != nil {
				msg += ": " + st.LastError.Error()
			}
			return msg
		case st.LagKnown:
			return fmt.Sprintf("up, lag %d B / %.1f s", st.LagBytes, st.LagSeconds)
		case st.InRecovery:
			return "up, in recovery"
		}
		return "up"
	}
	return "unknown"
}
