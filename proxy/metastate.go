package proxy

import (
	"fmt"
	"time"
)

// Fail closed. A proxy that follows a meta cluster refuses
// writes (25006) until the cluster has confirmed the map it routes by —
// a map from meta applied in this process (FollowMeta) and a heartbeat
// the leader answered — and again whenever the leader has not answered
// for longer than meta_lease: meanwhile a failover may have fenced a
// primary it routes to.

// writeRefusal says why the proxy refuses writes now, "" when it does not.
func (s *Server) writeRefusal() string {
	if !s.followsMeta.Load() {
		return ""
	}
	if !s.metaMap.Load() {
		return "no shard map from the meta cluster yet"
	}
	last := s.metaContact.Load()
	if last == 0 {
		return "the meta leader has not answered a heartbeat yet"
	}
	lease := s.runtime().cfg.MetaLease.D()
	if since := time.Since(time.Unix(0, last)); since > lease {
		return fmt.Sprintf("no answer from the meta leader for %s (meta_lease %s)", since.Round(time.Millisecond), lease)
	}
	return ""
}

// WriteRefusal says why the proxy refuses writes now (it follows a meta
// cluster that has not confirmed its shard map, or not within
// meta_lease), "" when it accepts them.
func (s *Server) WriteRefusal() string { return s.writeRefusal() }
