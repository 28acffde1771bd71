package controlplane

import (
	"context"

	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// Source is a proxy's view of a member in the same process (proxy's
// MetaSource): the embedded meta cluster of pgshard demo and proxy.
type Source struct{ s metarpc.Store }

// Source returns the member as a proxy in this process follows it.
func (m *Member) Source() Source { return Source{m.store} }

// WatchMap calls fn with every map version after after, until ctx ends
// or fn fails.
func (src Source) WatchMap(ctx context.Context, after uint64, fn func(metarpc.MapVersion) error) error {
	ch, err := src.s.Watch(ctx, after)
	if err != nil {
		return err
	}
	for v := range ch {
		if err := fn(v); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// DeregisterProxy forgets the proxy id.
func (src Source) DeregisterProxy(ctx context.Context, id string) error {
	return src.s.Deregister(ctx, id)
}

// ProxyHeartbeat records a proxy's heartbeat and returns the current
// epoch.
func (src Source) ProxyHeartbeat(ctx context.Context, id, addr string, applied uint64, unreachable []string) (uint64, error) {
	err := src.s.Heartbeat(ctx, id, addr, applied, unreachable)
	return src.s.Map().Epoch, err
}
