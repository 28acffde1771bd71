package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pgshard/pgshard/internal/controlplane"
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
	member *controlplane.Member
	node   *meta.Node
	addr   string
	// proxy is the proxy that follows the map (set by follow), whose
	// health the member reports.
	proxy atomic.Pointer[proxy.Server]
}

// startEmbeddedMeta starts a single-voter meta member with its data in
// dataDir and its API on apiAddr (loopback: clients need no credentials),
// seeded with the shard map of cfg when it holds no map yet. With a
// backend user in cfg it also fails over dead primaries (as that user).
func startEmbeddedMeta(ctx context.Context, apiAddr, dataDir string, cfg *proxy.Config) (*embeddedMeta, error) {
	lis, err := net.Listen("tcp", apiAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded meta: listen on %s: %w", apiAddr, err)
	}
	m := &embeddedMeta{}
	ccfg := controlplane.Config{
		Node: meta.Config{
			ID: "embedded", RaftAddr: "127.0.0.1:0", DataDir: dataDir, Bootstrap: true,
			// Raft's own chatter (the election every start holds, at warn)
			// is debug here: one voter in this process, nothing to act on.
			Logger: slog.New(quietRaft{slog.Default().Handler()}).With("component", "meta"),
		},
		API:         lis,
		Server:      metarpc.ServerOptions{AllowUnauthenticated: true},
		WaitLeader:  10 * time.Second,
		Seed:        cfg.ShardMap(),
		SeedComment: "seeded from the proxy configuration",
		// The proxy in this process probes every endpoint: its view is
		// the cluster's (pgshard shards list shows it).
		ProxyHealth: m.health,
	}
	if cfg.Backend.User != "" {
		ccfg.Failover = &controlplane.FailoverConfig{
			PGUser: cfg.Backend.User, PGPassword: cfg.Backend.Password, PGSSLMode: cfg.Backend.SSLMode,
			PGSSLRootCert: cfg.Backend.SSLRootCert, CheckInterval: failover.DefaultCheckInterval,
			FailAfter: failover.DefaultFailAfter, Observers: failover.DefaultObservers, DrainGrace: failover.DefaultDrainGrace,
		}
	}
	if m.member, err = controlplane.New(ctx, ccfg, slog.Default()); err != nil {
		return nil, fmt.Errorf("embedded meta: %w", err)
	}
	m.node, m.addr = m.member.Node(), m.member.Addr()
	return m, nil
}

// health is the endpoint health of the proxy that follows the map (nil
// before it does).
func (m *embeddedMeta) health() []health.Status {
	if p := m.proxy.Load(); p != nil {
		return p.Health()
	}
	return nil
}

// close stops the API and the node.
func (m *embeddedMeta) close() error { return m.member.Close() }

// follow keeps srv on the embedded node's map until ctx ends.
func (m *embeddedMeta) follow(ctx context.Context, srv *proxy.Server) {
	m.proxy.Store(srv)
	defer m.proxy.CompareAndSwap(srv, nil)
	srv.FollowMeta(ctx, m.member.Source(), "embedded-proxy", metaHeartbeat)
}

// quietRaft is a slog.Handler that logs hashicorp/raft's records (those
// whose "logger" attribute names raft, raft-net or raft-snapshot) at debug
// unless they are errors, and everything else as h does: a single-voter
// cluster in this process wins an election at every start, which raft
// logs at warn, and its leadership is no news to the user of pgshard demo
// or a proxy. --log-level debug shows them.
type quietRaft struct{ h slog.Handler }

// quietRaftRecords is quietRaft once a record is known to be raft's.
type quietRaftRecords struct{ h slog.Handler }

func (q quietRaft) Enabled(ctx context.Context, l slog.Level) bool  { return q.h.Enabled(ctx, l) }
func (q quietRaft) Handle(ctx context.Context, r slog.Record) error { return q.h.Handle(ctx, r) }
func (q quietRaft) WithGroup(name string) slog.Handler              { return quietRaft{q.h.WithGroup(name)} }
func (q quietRaft) WithAttrs(attrs []slog.Attr) slog.Handler {
	h := q.h.WithAttrs(attrs)
	for _, a := range attrs {
		if a.Key == "logger" && strings.HasPrefix(a.Value.String(), "raft") {
			return quietRaftRecords{h}
		}
	}
	return quietRaft{h}
}

// demote is the level a raft record of level l is logged at.
func demote(l slog.Level) slog.Level {
	if l >= slog.LevelError {
		return l
	}
	return min(l, slog.LevelDebug)
}

func (q quietRaftRecords) Enabled(ctx context.Context, l slog.Level) bool {
	return q.h.Enabled(ctx, demote(l))
}

func (q quietRaftRecords) Handle(ctx context.Context, r slog.Record) error {
	r.Level = demote(r.Level)
	if !q.h.Enabled(ctx, r.Level) {
		return nil
	}
	return q.h.Handle(ctx, r)
}

func (q quietRaftRecords) WithAttrs(attrs []slog.Attr) slog.Handler {
	return quietRaftRecords{q.h.WithAttrs(attrs)}
}

func (q quietRaftRecords) WithGroup(name string) slog.Handler {
	return quietRaftRecords{q.h.WithGroup(name)}
}
