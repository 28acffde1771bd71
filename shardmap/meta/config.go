package meta

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config configures a Node. ID, RaftAddr and DataDir are required; zero
// durations and counts take the defaults written on each field.
type Config struct {
	// ID names this node in the raft configuration. It must be unique in
	// the cluster and stay the same for the life of DataDir.
	ID string
	// RaftAddr is the host:port the node listens on for raft traffic from
	// its peers. Port 0 picks a free port (see Node.Addr).
	RaftAddr string
	// AdvertiseAddr is the raft address peers dial, when it differs from
	// RaftAddr as bound (e.g. RaftAddr "0.0.0.0:7100"). Default: the bound
	// address, which must then be a specific IP.
	AdvertiseAddr string
	// APIAddr is this node's client (gRPC) address. While the node leads
	// it records it in the replicated state, so that followers can tell
	// clients where the leader is (NotLeaderError.LeaderAPIAddr). Optional.
	APIAddr string
	// DataDir holds the raft log and stable store (raft.db) and the
	// snapshots (snapshots/). Created if missing (mode 0700).
	DataDir string

	// Bootstrap makes Open start a new cluster when DataDir holds no raft
	// state yet, with this node and Peers as its voters. A DataDir with
	// state is opened as it is, so the flag is safe on every start of a
	// cluster's first node.
	Bootstrap bool
	// Peers are the other voters of a cluster bootstrapped with several
	// voters at once; every one of them must be bootstrapped with the same
	// list. Usually empty: bootstrap one node, then Join the others.
	Peers []Peer

	// Logger receives the node's and raft's logs. Default slog.Default().
	Logger *slog.Logger

	// Raft timing. Defaults are raft's: HeartbeatTimeout and
	// ElectionTimeout 1s, LeaderLeaseTimeout 500ms, CommitTimeout 50ms.
	// LeaderLeaseTimeout must not exceed HeartbeatTimeout.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// TransportTimeout bounds one raft RPC on the network. Default 10s.
	TransportTimeout time.Duration
	// Snapshots: raft checks every SnapshotInterval (default 120s) whether
	// more than SnapshotThreshold entries (default 8192) were written since
	// the last snapshot, and keeps TrailingLogs entries (default 10240)
	// after one, so that slightly lagging followers catch up from the log.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64

	// ProxyLease is how long a proxy counts as alive after a heartbeat.
	// Default 10s; proxies should heartbeat at least every ProxyLease/3.
	// The leader writes it into every heartbeat entry, so replicas need not
	// agree on it.
	ProxyLease time.Duration
	// ProxyForget is how long a proxy whose lease ran out is still listed
	// before it is forgotten. Default 24h.
	ProxyForget time.Duration

	// For tests.
	noSync bool             // skip fsync of the log
	now    func() time.Time // the clock stamped into commands
}

// Peer is a raft member given by ID and raft address.
type Peer struct {
	ID   string
	Addr string
}

// Defaults.
const (
	DefaultProxyLease       = 10 * time.Second
	DefaultProxyForget      = 24 * time.Hour
	DefaultTransportTimeout = 10 * time.Second
)

// withDefaults returns c with defaults filled in, or an error naming what
// is missing.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("a node ID is required"))
	}
	if c.RaftAddr == "" {
		errs = append(errs, errors.New("a raft address (host:port) is required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("a data directory is required"))
	}
	for _, p := range c.Peers {
		if p.ID == "" || p.Addr == "" {
			errs = append(errs, fmt.Errorf("peer %q at %q: a peer needs an ID and a raft address", p.ID, p.Addr))
		}
		if p.ID == c.ID {
			errs = append(errs, fmt.Errorf("peer %q is this node; list only the other voters", p.ID))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("meta: config: %w", err)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.TransportTimeout == 0 {
		c.TransportTimeout = DefaultTransportTimeout
	}
	if c.ProxyLease == 0 {
		c.ProxyLease = DefaultProxyLease
	}
	if c.ProxyForget == 0 {
		c.ProxyForget = DefaultProxyForget
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}
