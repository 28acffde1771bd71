package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/replication/failover"
	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/replication/pgadmin"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
	"github.com/pgshard/pgshard/wire"
)

// Failover on a meta member: the controller (replication/failover) acting
// on PostgreSQL through replication/pgadmin and on the map through the
// member's Raft node, plus a health monitor whose view `pgshard shards
// list` shows.

// FailoverConfig configures failover on a meta member. Zero durations and
// Observers take replication/failover's defaults.
type FailoverConfig struct {
	// PGUser and PGPassword are the role the member uses on the
	// PostgreSQL servers (a superuser: it promotes, repoints and fences);
	// PGSSLMode and PGSSLRootCert are libpq's sslmode and sslrootcert.
	PGUser, PGPassword       string
	PGSSLMode, PGSSLRootCert string

	CheckInterval time.Duration // failover.Config.CheckInterval
	FailAfter     time.Duration // failover.Config.FailAfter
	Observers     int           // failover.Config.Observers
	DrainGrace    time.Duration // failover.Config.DrainGrace
}

// healthInterval is how often the member's health monitor probes every
// endpoint of the map.
const healthInterval = time.Second

// newFailover builds the failover controller and the health monitor of
// the member whose node is node: maps come from it and changes go through
// it. The controller's steps and the monitor's view go to metrics, when
// not nil. Neither runs yet.
func newFailover(node *meta.Node, o FailoverConfig, metrics *metrics, log *slog.Logger) (*failover.Controller, *health.Monitor, error) {
	admin := pgadmin.New(pgadmin.Config{
		User: o.PGUser, Password: o.PGPassword, SSLMode: o.PGSSLMode, SSLRootCert: o.PGSSLRootCert,
	})
	var onEvent func(failover.Event)
	if metrics != nil {
		onEvent = metrics.event
	}
	ctl, err := failover.New(failover.Config{
		Store:         nodeStore{node},
		Admin:         adminPort{a: admin, warned: new(sync.Map), log: log},
		CheckInterval: o.CheckInterval,
		FailAfter:     o.FailAfter,
		Observers:     o.Observers,
		DrainGrace:    o.DrainGrace,
		Logger:        log.With("component", "failover"),
		OnEvent:       onEvent,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("failover: %w", err)
	}
	mon, err := health.New(health.Config{
		Targets: func() []health.Target {
			if m := node.Map().Map; m != nil {
				return health.TargetsWithFenced(m)
			}
			return nil
		},
		User: o.PGUser, Password: o.PGPassword, Database: "postgres", SSLMode: o.PGSSLMode,
		Interval: healthInterval,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("failover: health monitor: %w", err)
	}
	if metrics != nil {
		if err := metrics.watchHealth(mon); err != nil {
			return nil, nil, err
		}
	}
	return ctl, mon, nil
}

// failoverController runs ctl as a leader-side controller.
func failoverController(ctl *failover.Controller, log *slog.Logger) Controller {
	return ControllerFunc(func(ctx context.Context) {
		if err := ctl.Run(ctx); err != nil {
			log.Error("failover controller stopped", "err", err)
		}
	})
}

// switchoverHook is the metarpc Switchover hook: the controller's
// switchover, its errors mapped to the API's.
func switchoverHook(ctl *failover.Controller, log *slog.Logger) func(ctx context.Context, shard, to string) (uint64, string, error) {
	return func(ctx context.Context, shard, to string) (uint64, string, error) {
		epoch, primary, err := ctl.Switchover(ctx, shard, to)
		switch {
		case err == nil:
			return epoch, primary, nil
		case errors.Is(err, failover.ErrBecameFailover):
			// The old primary died while draining: a failover replaced it.
			log.Warn("switchover turned into a failover", "shard", shard, "primary", primary)
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
}

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
	log    *slog.Logger
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
	if errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "28") || pe.Code == wire.SQLStateInvalidCatalogName) {
		if last, ok := p.warned.Load(addr); !ok || time.Since(last.(time.Time)) > time.Minute {
			p.warned.Store(addr, time.Now())
			p.log.Error("failover: the meta member cannot log in to a server; it counts as up, but cannot be failed over or promoted",
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
