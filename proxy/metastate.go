package proxy

import (
	"context"
	"fmt"
	"time"
)

// Fail closed, visibly. A proxy that follows a meta cluster refuses
// writes (25006) until the cluster has confirmed the map it routes by —
// a map from meta applied in this process (FollowMeta) and a heartbeat
// the leader answered — and again whenever the leader has not answered
// for longer than meta_lease: meanwhile a failover may have fenced a
// primary it routes to. Entering and leaving that state is logged (warn —
// at the start only once the wait outlasts meta_lease —, info), /readyz
// answers 503 and pgshard_meta_fail_closed is 1.

// WriteRefusal says why the proxy refuses writes now (it follows a meta
// cluster that has not confirmed its shard map, or not within
// meta_lease), "" when it accepts them.
func (s *Server) WriteRefusal() string {
	if !s.followsMeta.Load() {
		return ""
	}
	last := s.metaContact.Load()
	switch {
	case last == 0:
		return "the meta leader has not answered a heartbeat yet"
	case !s.metaMap.Load():
		return "no shard map from the meta cluster yet (at the leader's epoch)"
	}
	lease := s.runtime().cfg.MetaLease.D()
	if since := time.Since(time.Unix(0, last)); since > lease {
		return fmt.Sprintf("no answer from the meta leader for %s (meta_lease %s)", since.Round(time.Millisecond), lease)
	}
	return ""
}

// watchWriteState logs when the proxy starts and stops refusing writes,
// checking every tick until ctx ends. Waiting for meta right after the
// start is normal: it is logged at info, and at warn only once it lasts
// longer than meta_lease; a later refusal is a warning at once.
func (s *Server) watchWriteState(ctx context.Context, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	refusing, warned, starting := false, false, true
	var since time.Time
	warn := func(why string) {
		warned = true
		s.log.Warn("meta: refusing writes (25006) until the meta cluster confirms the shard map; reads go on",
			"reason", why, "meta_lease", s.runtime().cfg.MetaLease.D(), "epoch", s.MapEpoch())
	}
	for {
		why := s.WriteRefusal()
		switch {
		case why != "" && !refusing:
			refusing, warned, since = true, false, time.Now()
			if starting {
				s.log.Info("meta: writes wait until the meta cluster confirms the shard map; reads go on",
					"reason", why, "meta_lease", s.runtime().cfg.MetaLease.D(), "epoch", s.MapEpoch())
			} else {
				warn(why)
			}
		case why != "" && !warned && time.Since(since) > s.runtime().cfg.MetaLease.D():
			warn(why)
		case why == "" && refusing:
			refusing = false
			s.log.Info("meta: writes allowed again: the meta cluster confirmed the shard map",
				"epoch", s.MapEpoch(), "refused_for", time.Since(since).Round(time.Millisecond))
		}
		if why == "" {
			starting = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
