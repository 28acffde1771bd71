package failover

import (
	"context"
	"time"

	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/shardmap"
)

// ServerState is what a server says about itself.
type ServerState struct {
	// InRecovery is pg_is_in_recovery(): true on a replica.
	InRecovery bool
	// CurrentLSN is pg_current_wal_lsn() on a primary, zero on a replica.
	CurrentLSN health.LSN
	// ReplayLSN is pg_last_wal_replay_lsn() on a replica, zero on a
	// primary.
	ReplayLSN health.LSN
	// Upstream is the host:port a replica streams from now, "" when it
	// is not streaming (or is a primary).
	Upstream string
	// ReadOnly is default_transaction_read_only as a new session gets it:
	// true on a server that Fence (or Quiesce) made read-only.
	ReadOnly bool
}

// Admin acts on the PostgreSQL servers of a shard. Every method is
// idempotent: the controller calls them again when it resumes a step, on
// this meta leader or the next one. Addresses are host:port, as
// [shardmap.Endpoint.String] formats them. replication/pgadmin implements
// it (through a small adapter).
type Admin interface {
	// State asks the server at addr about itself. An error means the
	// server could not be reached or did not answer within ctx.
	State(ctx context.Context, addr string) (ServerState, error)
	// Promote makes the replica at addr a primary (pg_promote) and resets
	// any read-only default it has; on a server that is already a primary
	// it does nothing.
	Promote(ctx context.Context, addr string) error
	// Repoint makes the replica at addr stream from primary.
	Repoint(ctx context.Context, addr, primary string) error
	// WaitReplayed returns once the replica at addr has replayed lsn.
	WaitReplayed(ctx context.Context, addr string, lsn health.LSN) error
	// Quiesce stops the primary at addr from accepting writes; open
	// transactions may finish for grace and are then terminated. It
	// returns an LSN that every committed write is at or before.
	Quiesce(ctx context.Context, addr string, grace time.Duration) (health.LSN, error)
	// Fence makes a former primary read-only and terminates its sessions,
	// if it can be reached. The controller treats it as best effort in a
	// failover, and calls it again on every fenced server of the map that
	// it finds writable (Config.FenceCheckInterval).
	Fence(ctx context.Context, addr string) error
}

// Store is the metadata (Raft) cluster as the controller sees it on one
// member: the committed shard map, leadership, and what proxies report.
// shardmap/meta's Node implements it (through a small adapter).
type Store interface {
	// Map returns the current committed map, nil before the first. It is
	// shared and read-only.
	Map() *shardmap.Map
	// IsLeader reports whether this member leads the cluster now.
	IsLeader() bool
	// ApplyMap commits m as epoch expectEpoch+1 if the current map is
	// still at expectEpoch (compare-and-set), and returns the new epoch.
	// m.Epoch is expectEpoch+1.
	ApplyMap(ctx context.Context, m *shardmap.Map, expectEpoch uint64, comment string) (uint64, error)
	// WaitApplied returns once every live proxy has applied epoch or a
	// later one; a proxy whose lease expired does not block it.
	WaitApplied(ctx context.Context, epoch uint64) error
	// Reports counts the live proxies whose latest health report says
	// addr is unreachable, and the live proxies that sent a report.
	Reports(addr string) (unreachable, reporting int)
}
