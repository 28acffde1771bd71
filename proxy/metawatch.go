package proxy

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// MetaSource is what a proxy needs of the meta cluster: the stream of
// shard maps and a heartbeat that reports the epoch it applies.
// *metarpc.Client implements it.
type MetaSource interface {
	WatchMap(ctx context.Context, after uint64, fn func(metarpc.MapVersion) error) error
	ProxyHeartbeat(ctx context.Context, id, addr string, applied uint64, unreachable []string) (uint64, error)
}

// FollowMeta keeps the proxy on the meta cluster's shard map until ctx
// ends: every new epoch is applied (ApplyMap: saved to map_state_file,
// then routing follows it) and acknowledged at once with a heartbeat;
// heartbeats also go out every interval so the meta leader knows the proxy
// is alive and which epoch it applies. While the meta cluster is
// unreachable the proxy keeps serving with the map it has; WatchMap
// reconnects by itself. When ctx ends after the proxy has shut down, a
// source that can (DeregisterProxy) is told the proxy is gone.
func (s *Server) FollowMeta(ctx context.Context, src MetaSource, id string, interval time.Duration) {
	addr := ""
	if s.ln != nil {
		addr = s.Addr().String()
	}
	beat := make(chan struct{}, 1)
	kick := func() {
		select {
		case beat <- struct{}{}:
		default:
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			err := src.WatchMap(ctx, s.MapEpoch(), func(v metarpc.MapVersion) error {
				if v.Map == nil {
					return nil
				}
				m := v.Map.Clone()
				m.Epoch = v.Epoch
				if _, err := s.ApplyMap(m); err != nil {
					// An invalid map from meta is a bug there; keep the
					// current one and say so.
					slog.Error("meta: cannot apply shard map", "epoch", v.Epoch, "err", err)
					return nil
				}
				kick()
				return nil
			})
			if err != nil && ctx.Err() == nil {
				slog.Warn("meta: watch ended; retrying", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}
	})
	// No contact yet: writes wait for the first heartbeat the leader
	// answers (a proxy started from its saved map while meta is down may
	// route by a map that fenced a primary since; it serves reads only).
	s.metaContact.Store(0)
	s.followsMeta.Store(true)
	defer s.followsMeta.Store(false)
	wg.Go(func() {
		// The unreachable endpoints are checked often, so that a primary
		// going down is reported (for failover) within a probe or two.
		check := time.NewTicker(min(interval, 100*time.Millisecond))
		defer check.Stop()
		var reported []string
		last := time.Time{}
		for {
			down := s.unreachableEndpoints()
			if time.Since(last) >= interval || !slices.Equal(down, reported) {
				sent := time.Now()
				hctx, cancel := context.WithTimeout(ctx, interval)
				_, err := src.ProxyHeartbeat(hctx, id, addr, s.MapEpoch(), down)
				cancel()
				if err == nil {
					s.metaContact.Store(sent.UnixNano())
					reported = down
				} else if ctx.Err() == nil {
					slog.Debug("meta: heartbeat failed", "err", err)
				}
				last = sent
			}
			select {
			case <-ctx.Done():
				return
			case <-check.C:
			case <-beat:
				last = time.Time{}
			}
		}
	})
	wg.Wait()
	// A proxy that stopped serving says so, so that a failover does not
	// wait for its lease to run out.
	if d, ok := src.(metaDeregisterer); ok && s.shuttingDown() {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := d.DeregisterProxy(dctx, id); err != nil {
			slog.Warn("meta: could not deregister; the meta cluster forgets this proxy when its lease runs out", "err", err)
		}
	}
}

// metaDeregisterer is a MetaSource that can forget a proxy that stops
// (*metarpc.Client is one).
type metaDeregisterer interface {
	DeregisterProxy(ctx context.Context, id string) error
}

// unreachableEndpoints lists, sorted, the endpoints of the shard map whose
// latest probe failed (the proxy's report to the meta leader, a second
// opinion before a failover).
func (s *Server) unreachableEndpoints() []string {
	var out []string
	for _, st := range s.Health() {
		if !st.Up && st.ConsecutiveFailures > 0 {
			out = append(out, st.Addr)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
