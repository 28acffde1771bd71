package proxy

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
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
// then routing follows it) and acknowledged at once with a heartbeat.
// The first map the cluster sends replaces the map in use whatever its
// epoch when it differs (the proxy may have started from a saved map or
// shard_map_file); until then, and until the leader answers a heartbeat,
// the proxy refuses writes (metastate.go);
// heartbeats also go out every interval so the meta leader knows the proxy
// is alive and which epoch it applies. While the meta cluster is
// unreachable the proxy keeps serving with the map it has; WatchMap
// reconnects by itself. When ctx ends after the proxy has shut down, a
// source that can (DeregisterProxy) is told the proxy is gone.
func (s *Server) FollowMeta(ctx context.Context, src MetaSource, id string, interval time.Duration) {
	s.tpc.setProxyID(id) // two-phase commit names the proxy as meta knows it
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
	// rewatch asks the watch to reconnect: the leader has a newer epoch
	// than the watch delivered (it may be served by a member cut off from
	// the leader); reconnecting goes to the leader first.
	rewatch := make(chan struct{}, 1)
	// The first map from meta counts (metaMap: writes may go) once the
	// leader has answered a heartbeat and the map is not older than the
	// leader's epoch then (a watch served by a member behind the leader
	// may deliver an older one first).
	var (
		heard       atomic.Bool   // the leader answered a heartbeat
		leaderEpoch atomic.Uint64 // the epoch it said it has
		gotEpoch    atomic.Uint64 // the epoch of the last map the watch delivered
	)
	confirm := func() {
		if got := gotEpoch.Load(); got != 0 && heard.Load() && got >= leaderEpoch.Load() {
			s.metaMap.Store(true)
		}
	}
	// No contact yet: writes wait for the first map from meta and the
	// first heartbeat the leader answers (a proxy started from its saved
	// map while meta is down may route by a map that fenced a primary
	// since; it serves reads only).
	s.metaContact.Store(0)
	s.metaMap.Store(false)
	s.followsMeta.Store(true)
	// A proxy configured to follow meta keeps failing closed after.
	defer func() { s.followsMeta.Store(s.runtime().cfg.FollowsMeta) }()
	var wg sync.WaitGroup
	wg.Go(func() { s.watchWriteState(ctx, min(interval, 100*time.Millisecond)) })
	wg.Go(func() {
		for ctx.Err() == nil {
			wctx, cancel := context.WithCancel(ctx)
			stopped := make(chan struct{})
			go func() { // ends with this round of the watch
				defer close(stopped)
				select {
				case <-rewatch:
					cancel()
				case <-wctx.Done():
				}
			}()
			after := s.MapEpoch()
			if !s.metaMap.Load() {
				after = 0 // the current map, whatever the one in use
			}
			err := src.WatchMap(wctx, after, func(v metarpc.MapVersion) error {
				if v.Map == nil {
					return nil
				}
				m := v.Map.Clone()
				m.Epoch = v.Epoch
				first := !s.metaMap.Load()
				if _, err := s.applyMap(m, first); err != nil {
					// An invalid map from meta is a bug there; keep the
					// current one and say so.
					s.log.Error("meta: cannot apply shard map", "epoch", v.Epoch, "err", err)
					return nil
				}
				if first {
					gotEpoch.Store(v.Epoch)
					confirm()
					if le := leaderEpoch.Load(); heard.Load() && v.Epoch < le {
						s.log.Warn("meta: the map watch is behind the leader; writes wait for the leader's map", "epoch", v.Epoch, "leader", le)
					}
				}
				kick()
				return nil
			})
			restarted := wctx.Err() != nil && ctx.Err() == nil
			cancel()
			<-stopped
			if restarted {
				continue
			}
			if err != nil && ctx.Err() == nil {
				s.log.Warn("meta: watch ended; retrying", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}
	})
	wg.Go(func() {
		// The unreachable endpoints are checked often, so that a primary
		// going down is reported (for failover) within a probe or two.
		check := time.NewTicker(min(interval, 100*time.Millisecond))
		defer check.Stop()
		var reported []string
		last := time.Time{}
		behind := 0 // heartbeats in a row that found the leader ahead
		for {
			down := s.unreachableEndpoints()
			if time.Since(last) >= interval || !slices.Equal(down, reported) {
				sent := time.Now()
				applied := s.ackedEpoch()
				if !s.metaMap.Load() {
					applied = 0 // not a map from meta (yet)
				}
				hctx, cancel := context.WithTimeout(ctx, interval)
				current, err := src.ProxyHeartbeat(hctx, id, addr, applied, down)
				cancel()
				if err == nil {
					leaderEpoch.Store(current)
					heard.Store(true)
					confirm()
					s.metaContact.Store(sent.UnixNano())
					reported = down
					if current > applied {
						behind++
					} else {
						behind = 0
					}
					if behind >= 2 {
						// Two heartbeats in a row the leader was ahead.
						s.log.Warn("meta: the map watch lags the leader; reconnecting it", "applied", applied, "leader", current)
						behind = 0
						select {
						case rewatch <- struct{}{}:
						default:
						}
					}
				} else if ctx.Err() == nil {
					s.log.Debug("meta: heartbeat failed", "err", err)
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
			s.log.Warn("meta: could not deregister; the meta cluster forgets this proxy when its lease runs out", "err", err)
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
