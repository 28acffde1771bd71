package metarpc

import (
	"context"
	"time"

	"github.com/pgshard/pgshard/shardmap"
)

// MapVersion is one epoch of the shard map.
type MapVersion struct {
	// Epoch is the map's epoch, equal to Map.Epoch; 0 (with a nil Map)
	// means no map has been applied yet.
	Epoch uint64
	// Map is the map, shared read-only. It is nil in MapHistory results
	// fetched without maps.
	Map *shardmap.Map
	// YAML is the map's YAML form (Map.YAML) as committed. A Store may
	// leave it nil: the server then encodes Map. The client fills it with
	// the bytes it received.
	YAML []byte
	// AppliedAt is the leader's clock when the epoch was committed.
	AppliedAt time.Time
	// Comment is what the author of the change said about it.
	Comment string
}

// ProxyStatus is a proxy as the cluster knows it from its heartbeats.
type ProxyStatus struct {
	ID string
	// Address is where the proxy says it listens, for people to read.
	Address string
	// AppliedEpoch is the epoch of the map the proxy routes with.
	AppliedEpoch uint64
	// LastSeen is the leader's clock at its last heartbeat.
	LastSeen time.Time
	// Lease is how long after LastSeen the proxy counts as live.
	Lease time.Duration
	// Live is whether the lease still runs: only live proxies count in
	// WaitApplied.
	Live bool
}

// Member is a member of the Raft group.
type Member struct {
	ID string
	// RaftAddress is where the member's Raft transport listens.
	RaftAddress string
	// APIAddress is where its MetaService listens ("" if unknown).
	APIAddress string
	// Suffrage is "voter", "nonvoter" or "staging".
	Suffrage string
	// Leader is whether it is the leader, as the answering member knows.
	Leader bool
}

// NodeStatus describes the Raft group as one member sees it.
type NodeStatus struct {
	// ID, RaftAddress and APIAddress are the answering member's.
	ID, RaftAddress, APIAddress string
	// State is its Raft state: "leader", "follower", "candidate" or
	// "shutdown".
	State string
	// LeaderID, LeaderRaftAddress and LeaderAPIAddress name the leader it
	// knows of; "" while none is known.
	LeaderID, LeaderRaftAddress, LeaderAPIAddress string
	Term                                          uint64
	LastIndex                                     uint64 // last Raft log index stored
	CommitIndex                                   uint64 // last index known committed
	AppliedIndex                                  uint64 // last index applied to the state
	// LastContact is when a follower last heard from the leader; zero on
	// the leader.
	LastContact time.Time
	// MapEpoch is the epoch of the map the member has applied. A Store may
	// leave it zero: the server fills it from Store.Map.
	MapEpoch uint64
	Members  []Member
}

// Store is what the server serves: the local member of the meta cluster.
// Package shardmap/meta's Raft node provides it (through a thin adapter
// that converts its value types); tests use a fake. Its methods are safe
// for concurrent use.
//
// Errors: a method only the leader can serve (marked "Leader only")
// returns, on another member, an error implementing [LeaderRedirect];
// ApplyMap returns one implementing [EpochConflict] when expectEpoch is
// not the current epoch, and one implementing [InvalidInput] for a map it
// refuses. The interfaces are matched with errors.As, through wrapping.
// An error with a GRPCStatus method keeps its status code (a change whose
// outcome is unknown, or a stopped member, should be codes.Unavailable:
// the client then retries, and ApplyMap's compare-and-set keeps that
// safe). Context errors are passed through. Anything else reaches the
// client as codes.Unknown with the error's text.
type Store interface {
	// Map returns the map version this member has applied (the zero
	// MapVersion before the first map).
	Map() MapVersion
	// Watch returns a channel that receives the map versions with an
	// epoch above after: at once if the current one is, then as new
	// epochs are applied. A slow receiver gets the newest version when it
	// is ready (epochs may be skipped, never reordered). The channel is
	// closed when ctx ends or the Store stops.
	Watch(ctx context.Context, after uint64) (<-chan MapVersion, error)
	// ApplyMap makes m (validated by the server, with Epoch expectEpoch+1)
	// the next epoch if the current epoch is expectEpoch, and returns the
	// new epoch once it is committed and applied on this member. Leader
	// only.
	ApplyMap(ctx context.Context, m *shardmap.Map, expectEpoch uint64, comment string) (uint64, error)
	// History returns up to limit (> 0) map versions, newest first.
	History(limit int) []MapVersion
	// Status describes the Raft group as this member sees it.
	Status(ctx context.Context) NodeStatus
	// Join adds a voter whose Raft transport listens at raftAddr (a no-op
	// when it is already a member with that address). Leader only.
	Join(ctx context.Context, id, raftAddr string) error
	// Remove removes a member. Leader only.
	Remove(ctx context.Context, id string) error
	// Heartbeat records that proxy id, listening at addr, is alive and
	// applies epoch applied, and that its own probes fail to reach the
	// endpoints (host:port) in unreachable (nil: none). The report
	// replaces the proxy's previous one; it need not be replicated (see
	// Reports). Leader only.
	Heartbeat(ctx context.Context, id, addr string, applied uint64, unreachable []string) error
	// Deregister forgets proxy id (it stops cleanly): it no longer counts
	// in WaitApplied. An unknown id is not an error. Leader only.
	Deregister(ctx context.Context, id string) error
	// Reports counts, among the live proxies whose latest report is
	// younger than their lease, how many report the endpoint addr
	// (host:port) unreachable and how many reported at all. A member
	// that keeps no reports (a follower) returns 0, 0.
	Reports(addr string) (unreachable, reporting int)
	// Proxies lists the proxies known from heartbeats, by ID.
	Proxies() []ProxyStatus
	// WaitApplied returns nil once every live proxy reports epoch or a
	// newer one, or an error wrapping ctx's when ctx ends first.
	WaitApplied(ctx context.Context, epoch uint64) error
}

// MemberAPIRecorder is implemented by a [Store] that can record a
// member's API address given when it joins (JoinMemberRequest.api_address),
// so that MemberStatus names it before the member ever leads. Leader
// only. A Store without it ignores the address.
type MemberAPIRecorder interface {
	SetMemberAPIAddr(ctx context.Context, id, apiAddr string) error
}
