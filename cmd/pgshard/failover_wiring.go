package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/pflag"

	"github.com/pgshard/pgshard/replication/failover"
	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/replication/pgadmin"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// Failover on a meta member: the controller (replication/failover) acting
// on PostgreSQL through replication/pgadmin and on the map through the
// member's Raft node, plus a health monitor whose view `pgshard shards
// list` shows.

// envMetaPGPassword holds the password of the role meta members use on
// PostgreSQL servers.
const envMetaPGPassword = "PGSHARD_META_PG_PASSWORD"

// metaFailoverOptions configures failover on a meta member.
type metaFailoverOptions struct {
	disabled      bool
	pgUser        string
	pgPasswordEnv string
	pgSSLMode     string
	pgSSLRootCert string
	checkInterval time.Duration
	failAfter     time.Duration
	observers     int
	drainGrace    time.Duration
	// password is read from pgPasswordEnv (flags never carry it).
	password string
}

func (o *metaFailoverOptions) addFlags(f *pflag.FlagSet) {
	f.BoolVar(&o.disabled, "no-failover", false, "do not fail over dead primaries nor serve pgshard failover")
	f.StringVar(&o.pgUser, "pg-user", "postgres", "PostgreSQL role for health checks, promotion and repointing replicas (a superuser)")
	f.StringVar(&o.pgPasswordEnv, "pg-password-env", envMetaPGPassword, "environment variable holding that role's password")
	f.StringVar(&o.pgSSLMode, "pg-sslmode", "prefer", "libpq sslmode towards PostgreSQL servers")
	f.StringVar(&o.pgSSLRootCert, "pg-sslrootcert", "", "CA file for --pg-sslmode verify-ca/verify-full")
	f.DurationVar(&o.checkInterval, "failover-check-interval", failover.DefaultCheckInterval, "how often the leader checks every primary")
	f.DurationVar(&o.failAfter, "failover-after", failover.DefaultFailAfter, "how long a primary must fail every check before failover")
	f.IntVar(&o.observers, "failover-observers", failover.DefaultObservers, "proxies that must also report the primary unreachable (negative: the leader alone decides)")
	f.DurationVar(&o.drainGrace, "switchover-drain", failover.DefaultDrainGrace, "planned switchover: how long open transactions on the old primary may finish")
}

// failoverRunner runs a controller and a health monitor until stop.
type failoverRunner struct {
	ctl     *failover.Controller
	monitor *health.Monitor
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// startFailover starts failover for the member whose node is node; maps
// come from it and changes go through it. Its steps and its monitor's
// view go to metrics, when not nil.
func startFailover(node *meta.Node, o metaFailoverOptions, metrics *metaMetrics) (*failoverRunner, error) {
	if o.password == "" && o.pgPasswordEnv != "" {
		o.password = os.Getenv(o.pgPasswordEnv)
	}
	admin := pgadmin.New(pgadmin.Config{
		User: o.pgUser, Password: o.password, SSLMode: o.pgSSLMode, SSLRootCert: o.pgSSLRootCert,
	})
	var onEvent func(failover.Event)
	if metrics != nil {
		onEvent = metrics.event
	}
	ctl, err := failover.New(failover.Config{
		Store:         nodeStore{node},
		Admin:         adminPort{a: admin, warned: new(sync.Map)},
		CheckInterval: o.checkInterval,
		FailAfter:     o.failAfter,
		Observers:     o.observers,
		DrainGrace:    o.drainGrace,
		Logger:        slog.Default().With("component", "failover"),
		OnEvent:       onEvent,
	})
	if err != nil {
		return nil, fmt.Errorf("failover: %w", err)
	}
	mon, err := health.New(health.Config{
		Targets: func() []health.Target {
			if m := node.Map().Map; m != nil {
				return health.TargetsWithFenced(m)
			}
			return nil
		},
		User: o.pgUser, Password: o.password, Database: "postgres", SSLMode: o.pgSSLMode,
		Interval: time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("failover: health monitor: %w", err)
	}
	if metrics != nil {
		if err := metrics.watchHealth(mon); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &failoverRunner{ctl: ctl, monitor: mon, cancel: cancel}
	r.wg.Go(func() {
		if err := ctl.Run(ctx); err != nil {
			slog.Error("failover controller stopped", "err", err)
		}
	})
	r.wg.Go(func() { mon.Run(ctx) })
	return r, nil
}

// stop stops the controller and the monitor and waits for them.
func (r *failoverRunner) stop() {
	r.cancel()
	r.wg.Wait()
}

// switchover is the metarpc Switchover hook: the controller's switchover,
// its errors mapped to the API's.
func (r *failoverRunner) switchover(ctx context.Context, shard, to string) (uint64, string, error) {
	epoch, primary, err := r.ctl.Switchover(ctx, shard, to)
	switch {
	case err == nil:
		return epoch, primary, nil
	case errors.Is(err, failover.ErrBecameFailover):
		// The old primary died while draining: a failover replaced it.
		slog.Warn("switchover turned into a failover", "shard", shard, "primary", primary)
		return epoch, primary, nil
	case errors.Is(err, failover.ErrUnknownShard):
		return 0, "", fmt.Errorf("%w: %w", metarpc.ErrNotFound, err)
	case errors.Is(err, failover.ErrNotReplica):
		return 0, "", fmt.Errorf("%w: %w", metarpc.ErrInvalidArgument, err)
	case errors.Is(err, failover.ErrSwitching), errors.Is(err, failover.ErrNoReplica), errors.Is(err, failover.ErrUnreachable), errors.Is(err, failover.ErrNotLeader):
		return 0, "", fmt.Errorf("%w: %w", metarpc.ErrFailedPrecondition, err)
	}
	return 0, "", err
}

// health is the metarpc Health hook.
func (r *failoverRunner) health() []health.Status { return r.monitor.Snapshot() }

// nodeStore is failover.Store over a meta node.
type nodeStore struct{ n *meta.Node }

func (s nodeStore) Map() *shardmap.Map { return s.n.Map().Map }
func (s nodeStore) IsLeader() bool     { return s.n.IsLeader() }
func (s nodeStore) ApplyMap(ctx context.Context, m *shardmap.Map, expectEpoch uint64, comment string) (uint64, error) {
	return s.n.ApplyMap(ctx, m, expectEpoch, comment)
}
func (s nodeStore) WaitApplied(ctx context.Context, epoch uint64) error {
	return s.n.WaitApplied(ctx, epoch)
}
func (s nodeStore) Reports(addr string) (int, int) { return s.n.Reports(addr) }

// adminPort is failover.Admin over pgadmin.
type adminPort struct {
	a      *pgadmin.Admin
	warned *sync.Map // addr → time.Time of the last refused-login warning
}

// State reports a replica's progress as the WAL it has received, not only
// replayed: after its primary died a promoted replica replays everything
// it received, so that is what it would keep.
//
// A server that refuses the login (wrong password, no such role or
// database) answered, so it is alive: that is reported as a reachable
// primary — it never starts a failover, and such a replica is never
// chosen — and logged, at most once a minute per server.
func (p adminPort) State(ctx context.Context, addr string) (failover.ServerState, error) {
	st, err := p.a.State(ctx, addr)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "28") || pe.Code == "3D000") {
		if last, ok := p.warned.Load(addr); !ok || time.Since(last.(time.Time)) > time.Minute {
			p.warned.Store(addr, time.Now())
			slog.Error("failover: the meta member cannot log in to a server; it counts as up, but cannot be failed over or promoted",
				"addr", addr, "sqlstate", pe.Code, "err", err)
		}
		return failover.ServerState{}, nil
	}
	if err != nil {
		return failover.ServerState{}, err
	}
	return failover.ServerState{InRecovery: st.InRecovery, CurrentLSN: st.CurrentLSN, ReplayLSN: max(st.ReplayLSN, st.ReceiveLSN),
		Upstream: st.UpstreamAddr, ReadOnly: st.ReadOnly}, nil
}
func (p adminPort) Promote(ctx context.Context, addr string) error { return p.a.Promote(ctx, addr) }
func (p adminPort) Repoint(ctx context.Context, addr, primary string) error {
	return p.a.Repoint(ctx, addr, primary)
}
func (p adminPort) WaitReplayed(ctx context.Context, addr string, lsn health.LSN) error {
	return p.a.WaitReplayed(ctx, addr, lsn)
}
func (p adminPort) Quiesce(ctx context.Context, addr string, grace time.Duration) (health.LSN, error) {
	return p.a.Quiesce(ctx, addr, grace)
}
func (p adminPort) Fence(ctx context.Context, addr string) error { return p.a.Fence(ctx, addr) }
