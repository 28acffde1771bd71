package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/replication/failover"
	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// The embedded default: `pgshard demo` (and `pgshard proxy` with a shard
// map and no --meta) runs a single-node meta cluster in-process, with its
// API on loopback, so `pgshard map show|apply` and `pgshard meta status`
// work against it with no flags and the proxy follows its map like any
// proxy follows a real meta cluster.

// embeddedMeta is a single-node meta cluster in this process.
type embeddedMeta struct {
	node   *meta.Node
	store  metarpc.Store
	server *metarpc.Server
	served chan error
	addr   string
	// proxy is the proxy that follows the map (set by follow), whose
	// health monitor the server reports.
	proxy atomic.Pointer[proxy.Server]
	// failover runs when the proxy's backend credentials are known.
	failover *failoverRunner
}

// startEmbeddedMeta starts a single-voter meta node with its data in
// dataDir and its API on apiAddr (loopback: clients need no credentials),
// seeded with the shard map of cfg when it holds no map yet. With a
// backend user in cfg it also fails over dead primaries (as that user).
func startEmbeddedMeta(ctx context.Context, apiAddr, dataDir string, cfg *proxy.Config) (*embeddedMeta, error) {
	seed := cfg.ShardMap()
	lis, err := net.Listen("tcp", apiAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded meta: listen on %s: %w", apiAddr, err)
	}
	node, err := meta.Open(ctx, meta.Config{
		ID: "embedded", RaftAddr: "127.0.0.1:0", APIAddr: lis.Addr().String(), DataDir: dataDir,
		Logger: slog.Default().With("component", "meta"),
	})
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("embedded meta: %w", err)
	}
	fail := func(err error) (*embeddedMeta, error) {
		_ = node.Close()
		lis.Close()
		return nil, fmt.Errorf("embedded meta: %w", err)
	}
	if err := node.Bootstrap(ctx); err != nil && !errors.Is(err, meta.ErrAlreadyBootstrapped) {
		return fail(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := node.WaitLeader(wctx); err != nil {
		return fail(err)
	}
	if cur := node.Map(); cur.Map == nil && seed != nil {
		if _, err := node.ApplyMap(wctx, seed, 0, "seeded from the proxy configuration"); err != nil {
			return fail(err)
		}
	}
	m := &embeddedMeta{node: node, store: metarpc.NodeStore(node), served: make(chan error, 1), addr: lis.Addr().String()}
	opts := metarpc.ServerOptions{
		AllowUnauthenticated: true,
		Logger:               slog.Default(),
		// The proxy in this process probes every endpoint: its view is
		// the cluster's (pgshard shards list shows it).
		Health: m.health,
	}
	if cfg.Backend.User != "" {
		fo := metaFailoverOptions{pgUser: cfg.Backend.User, password: cfg.Backend.Password, pgSSLMode: cfg.Backend.SSLMode,
			pgSSLRootCert: cfg.Backend.SSLRootCert, checkInterval: failover.DefaultCheckInterval,
			failAfter: failover.DefaultFailAfter, observers: failover.DefaultObservers, drainGrace: failover.DefaultDrainGrace}
		if m.failover, err = startFailover(node, fo, nil); err != nil {
			return fail(err)
		}
		opts.Switchover = m.failover.switchover
	}
	m.server, err = metarpc.NewServer(m.store, opts)
	if err != nil {
		if m.failover != nil {
			m.failover.stop()
		}
		return fail(err)
	}
	go func() { m.served <- m.server.Serve(lis) }() // ends in close
	return m, nil
}

// health is the Health hook of the embedded server: the endpoint health
// of the proxy that follows the map (nil before it does), and that of the
// fenced servers, which only the failover's monitor probes.
func (m *embeddedMeta) health() []health.Status {
	var out []health.Status
	if p := m.proxy.Load(); p != nil {
		out = p.Health()
	}
	if m.failover != nil {
		for _, st := range m.failover.health() {
			if st.Role == health.RoleFenced {
				out = append(out, st)
			}
		}
	}
	return out
}

// close stops the API and the node.
func (m *embeddedMeta) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.server.Shutdown(ctx); err != nil {
		m.server.Stop()
	}
	<-m.served
	if m.failover != nil {
		m.failover.stop()
	}
	return m.node.Close()
}

// follow keeps srv on the embedded node's map until ctx ends.
func (m *embeddedMeta) follow(ctx context.Context, srv *proxy.Server) {
	m.proxy.Store(srv)
	defer m.proxy.CompareAndSwap(srv, nil)
	srv.FollowMeta(ctx, storeSource{m.store}, "embedded-proxy", metaHeartbeat)
}

// storeSource is a proxy.MetaSource over a Store in this process.
type storeSource struct{ s metarpc.Store }

func (src storeSource) WatchMap(ctx context.Context, after uint64, fn func(metarpc.MapVersion) error) error {
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

func (src storeSource) DeregisterProxy(ctx context.Context, id string) error {
	return src.s.Deregister(ctx, id)
}

func (src storeSource) ProxyHeartbeat(ctx context.Context, id, addr string, applied uint64, unreachable []string) (uint64, error) {
	err := src.s.Heartbeat(ctx, id, addr, applied, unreachable)
	return src.s.Map().Epoch, err
}
