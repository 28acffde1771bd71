package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshard/pgshard/replication/failover"
	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/replication/reshard"
	"github.com/pgshard/pgshard/replication/twophase"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// Config configures a meta member.
type Config struct {
	// Node configures the Raft node: ID, addresses, data directory,
	// Bootstrap, timings. Its Logger defaults to the member's logger and
	// its APIAddr to API's address.
	Node meta.Config
	// API is the listener the gRPC API serves on. The member owns it
	// from New on: Close (or a failed New) closes it.
	API net.Listener
	// Server is the API's authentication and limits (Token, TLS,
	// RequireClientCert, AllowUnauthenticated, MaxMessageSize). Its
	// Switchover and Health hooks must be nil: New sets them. Its Logger
	// defaults to the member's logger.
	Server metarpc.ServerOptions

	// WaitLeader, when positive, makes New wait that long for the node to
	// know a leader before it seeds the map and serves.
	WaitLeader time.Duration
	// Seed, when not nil, is committed as the first map (with
	// SeedComment) when the cluster holds none; it needs WaitLeader (a
	// node that is not the leader cannot commit it).
	Seed        *shardmap.Map
	SeedComment string

	// Failover, when not nil, makes the member fail over dead primaries
	// (the leader-side failover controller), serve the Switchover RPC and
	// probe every endpoint of the map (its health monitor, which
	// ListShards reports).
	Failover *FailoverConfig
	// PG, when not nil, is how the member connects to the PostgreSQL
	// servers of the map to count rows before ApplyMap gives a key
	// interval to another shard (the data check, see metarpc
	// ServerOptions.CountRows). nil takes Failover's role; a member with
	// neither knows no role and does not check data (it logs so).
	PG *PGLogin
	// Reshard tunes resharding (nil: defaults). A member that knows a
	// PostgreSQL role (PG, or Failover's) runs the leader-side
	// resharding controller (replication/reshard) and serves the
	// resharding RPCs; one that knows none answers them UNIMPLEMENTED.
	Reshard *ReshardConfig
	// ProxyHealth, when not nil, is the endpoints' health as a proxy in
	// this process probes them (the embedded meta of pgshard demo and
	// proxy): ListShards reports it instead of the monitor's view, plus
	// the fenced servers, which only the monitor probes.
	ProxyHealth func() []health.Status

	// TwoPhase tunes the recovery of transactions over several shards
	// (two-phase commit), which the leader runs whenever the member knows
	// a PostgreSQL role (PG, or Failover's).
	TwoPhase TwoPhaseConfig

	// Metrics, when not nil, serves the member's Prometheus metrics.
	Metrics *MetricsConfig

	// ShutdownGrace is how long Close lets API calls finish before it
	// closes their connections: 0 means 5 s, negative closes them at
	// once.
	ShutdownGrace time.Duration
	// LeaderPoll is how often the member checks whether it leads, to
	// start or stop its leader-side controllers; 0 means
	// DefaultLeaderPoll.
	LeaderPoll time.Duration
}

// MetricsConfig configures a member's /metrics endpoint.
type MetricsConfig struct {
	// Listener is where /metrics is served (wrap it with TLS for HTTPS).
	// The member owns it from New on.
	Listener net.Listener
	// Token, when not empty, is the bearer token scrapers must present.
	Token string
}

// pgLogin is Config.PG, else Failover's role, else nil.
func (cfg *Config) pgLogin() *PGLogin {
	switch {
	case cfg.PG != nil:
		return cfg.PG
	case cfg.Failover != nil:
		f := cfg.Failover
		return &PGLogin{User: f.PGUser, Password: f.PGPassword, SSLMode: f.PGSSLMode, SSLRootCert: f.PGSSLRootCert}
	}
	return nil
}

// defaultShutdownGrace is Config.ShutdownGrace's default.
const defaultShutdownGrace = 5 * time.Second

// Member is one running member of the meta cluster: its Raft node, its
// gRPC API, its health monitor and metrics, and the leader-side
// controllers it runs while it leads. Create it with [New], stop it with
// [Member.Close].
type Member struct {
	node    *meta.Node
	store   metarpc.Store
	server  *metarpc.Server
	addr    string
	log     *slog.Logger
	grace   time.Duration
	metrics *metrics // nil without Config.Metrics

	monitor     *health.Monitor // nil without Config.Failover
	proxyHealth func() []health.Status
	leader      leaderSide

	cancel context.CancelFunc // ends the goroutines below
	wg     sync.WaitGroup     // the monitor, the leader loop, /metrics

	served   chan struct{} // closed when the API stopped serving
	serveErr error         // why, set before served is closed

	closeOnce sync.Once
	closeErr  error
}

// New opens the Raft node of cfg (bootstrapping it if asked), seeds the
// map, builds the failover controller, health monitor and metrics asked
// for, registers the leader-side controllers and serves the API. It
// returns once the member serves; errors are returned as the parts report
// them, with nothing left running.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Member, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.API == nil {
		return nil, errors.New("controlplane: Config.API is required")
	}
	if cfg.Server.Switchover != nil || cfg.Server.Health != nil || cfg.Server.CountRows != nil || cfg.Server.Transactions != nil || cfg.Server.Reshard != nil {
		cfg.API.Close()
		return nil, errors.New("controlplane: Config.Server's Switchover, Health, CountRows, Transactions and Reshard hooks are set by New")
	}
	var closers []func() // undo on error, in reverse
	fail := func(err error) (*Member, error) {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		return nil, err
	}
	closers = append(closers, func() { cfg.API.Close() })
	if cfg.Metrics != nil {
		closers = append(closers, func() { cfg.Metrics.Listener.Close() })
	}

	ncfg := cfg.Node
	if ncfg.Logger == nil {
		ncfg.Logger = log
	}
	if ncfg.APIAddr == "" {
		ncfg.APIAddr = cfg.API.Addr().String()
	}
	node, err := meta.Open(ctx, ncfg)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { _ = node.Close() })
	if cfg.WaitLeader > 0 {
		wctx, cancel := context.WithTimeout(ctx, cfg.WaitLeader)
		defer cancel()
		if err := node.WaitLeader(wctx); err != nil {
			return fail(err)
		}
		if cur := node.Map(); cur.Map == nil && cfg.Seed != nil {
			if _, err := node.ApplyMap(wctx, cfg.Seed, 0, cfg.SeedComment); err != nil {
				return fail(err)
			}
		}
	}

	grace := cfg.ShutdownGrace
	if grace == 0 {
		grace = defaultShutdownGrace
	}
	poll := cfg.LeaderPoll
	if poll <= 0 {
		poll = DefaultLeaderPoll
	}
	m := &Member{
		node: node, store: metarpc.NodeStore(node), addr: cfg.API.Addr().String(), log: log, grace: grace,
		proxyHealth: cfg.ProxyHealth, served: make(chan struct{}),
		leader: leaderSide{isLeader: node.IsLeader, poll: poll, log: log},
	}
	if cfg.Metrics != nil {
		m.metrics = newMetrics(node)
	}
	opts := cfg.Server
	if opts.Logger == nil {
		opts.Logger = log
	}
	var fo *failover.Controller
	if cfg.Failover != nil {
		if fo, m.monitor, err = newFailover(node, *cfg.Failover, m.metrics, log); err != nil {
			return fail(err)
		}
		opts.Switchover = switchoverHook(fo, log)
	}
	if m.proxyHealth != nil || m.monitor != nil {
		opts.Health = m.health
	}
	var recovery *twophase.Recoverer
	var rs *reshard.Controller
	if login := cfg.pgLogin(); login != nil {
		opts.CountRows = rowCounter{*login}.count
		if recovery, err = newTwoPhase(node, *login, cfg.TwoPhase, m.metrics, log); err != nil {
			return fail(err)
		}
		opts.Transactions = transactionsHook(recovery)
		rcfg := ReshardConfig{}
		if cfg.Reshard != nil {
			rcfg = *cfg.Reshard
		}
		if rs, err = newResharding(node, *login, rcfg, log); err != nil {
			return fail(err)
		}
		opts.Reshard = resharder{rs}
	} else {
		log.Warn("this meta member knows no PostgreSQL role: map changes that give key intervals to other shards are applied without counting their rows, and prepared transactions left by dead proxies are not resolved")
	}

	// The leader-side controllers: each runs while this member leads
	// (see Controller). A new one is registered here, and nowhere else.
	if fo != nil {
		m.leader.register("failover", failoverController(fo, log))
	}
	if recovery != nil {
		m.leader.register("twophase-recovery", twoPhaseController(recovery))
	}
	if rs != nil {
		m.leader.register("reshard", reshardController(rs))
	}
	if m.metrics != nil {
		// Every member reports the moves, from the replicated records.
		if err := m.metrics.reg.Register(newReshardCollector(workflowRecords{node})); err != nil {
			return fail(fmt.Errorf("meta metrics: %w", err))
		}
	}

	if m.server, err = metarpc.NewServer(m.store, opts); err != nil {
		return fail(err)
	}
	bg, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	if m.metrics != nil {
		ln, token := cfg.Metrics.Listener, cfg.Metrics.Token
		m.wg.Go(func() {
			if err := m.metrics.serve(bg, ln, token); err != nil {
				log.Warn("meta metrics", "err", err)
			}
		})
	}
	if m.monitor != nil {
		m.wg.Go(func() { m.monitor.Run(bg) })
	}
	m.wg.Go(func() { m.leader.run(bg) })
	lis := cfg.API
	go func() { // ends in Close, which waits for served
		m.serveErr = m.server.Serve(lis)
		close(m.served)
	}()
	return m, nil
}

// Node returns the member's Raft node.
func (m *Member) Node() *meta.Node { return m.node }

// Store returns the member's node as the API serves it.
func (m *Member) Store() metarpc.Store { return m.store }

// Addr returns the address the API serves on.
func (m *Member) Addr() string { return m.addr }

// Gatherer returns the member's metrics, nil without Config.Metrics.
func (m *Member) Gatherer() prometheus.Gatherer {
	if m.metrics == nil {
		return nil
	}
	return m.metrics.reg
}

// Wait returns nil when ctx ends or the member is closed, or the error
// that stopped the API before.
func (m *Member) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-m.served:
		if m.serveErr != nil {
			return fmt.Errorf("meta API: %w", m.serveErr)
		}
		return nil
	}
}

// Close stops the API (letting calls finish for Config.ShutdownGrace),
// the leader-side controllers, the health monitor, the metrics endpoint
// and the node, and waits for all of them. It may be called more than
// once.
func (m *Member) Close() error {
	m.closeOnce.Do(func() {
		if m.grace < 0 {
			m.server.Stop()
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), m.grace)
			if err := m.server.Shutdown(ctx); err != nil {
				m.server.Stop()
			}
			cancel()
		}
		<-m.served
		m.cancel()
		m.wg.Wait()
		m.closeErr = m.node.Close()
	})
	return m.closeErr
}

// health is the API's Health hook: the monitor's view of every endpoint
// or, with a proxy in this process, the proxy's view plus the fenced
// servers, which only the monitor probes.
func (m *Member) health() []metarpc.EndpointHealth {
	var sts []health.Status
	switch {
	case m.proxyHealth != nil:
		sts = m.proxyHealth()
		if m.monitor != nil {
			for _, st := range m.monitor.Snapshot() {
				if st.Role == health.RoleFenced {
					sts = append(sts, st)
				}
			}
		}
	case m.monitor != nil:
		sts = m.monitor.Snapshot()
	}
	return endpointHealth(sts)
}

// endpointHealth converts a health monitor's statuses to the API's.
func endpointHealth(sts []health.Status) []metarpc.EndpointHealth {
	out := make([]metarpc.EndpointHealth, 0, len(sts))
	for _, st := range sts {
		out = append(out, metarpc.EndpointHealth{
			Shard: st.Shard, Addr: st.Addr, Probed: !st.LastProbe.IsZero(), Up: st.Up, InRecovery: st.InRecovery,
			LagKnown: st.LagKnown, LagBytes: st.LagBytes, LagSeconds: st.LagSeconds, LastError: st.LastError,
		})
	}
	return out
}
