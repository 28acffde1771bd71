package meta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// Node is one member of the meta raft group. Its methods are safe for
// concurrent use. Changes (ApplyMap, Heartbeat, Join, Remove, ...) work on
// the leader only; reads come from this node's applied state.
type Node struct {
	cfg   Config
	log   *slog.Logger
	raft  *raft.Raft
	fsm   *fsm
	trans *raft.NetworkTransport
	tcp   *tcpStream
	store *raftboltdb.BoltStore

	// reports are the proxies' health reports, in memory on the leader
	// (reports.go).
	reports reportBook

	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu     sync.Mutex // guards closed and wg.Add
	closed bool
	wg     sync.WaitGroup // every goroutine the node started

	closeOnce sync.Once
	closeErr  error
}

// Open starts a node from cfg.DataDir: it opens the stores, binds the raft
// address, restores the latest snapshot and joins the raft group recorded
// there. A fresh data directory gives a node with no cluster: Bootstrap it,
// or Join it from the leader. With cfg.Bootstrap, Open bootstraps a fresh
// directory itself (ctx bounds that). Close the node to release
// everything.
func Open(ctx context.Context, cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.ID)}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if err := n.open(); err != nil {
		n.cancel()
		return nil, errors.Join(err, n.closeParts())
	}
	if cfg.Bootstrap {
		if err := n.Bootstrap(ctx); err != nil && !errors.Is(err, ErrAlreadyBootstrapped) {
			return nil, errors.Join(err, n.Close())
		}
	}
	n.spawn(n.maintain)
	n.log.Info("meta node open", "raft_addr", n.Addr(), "api_addr", cfg.APIAddr, "data_dir", cfg.DataDir)
	return n, nil
}

// open builds the parts of n; on error, closeParts releases those built.
func (n *Node) open() error {
	cfg := n.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("meta: data directory: %w", err)
	}
	dbPath := filepath.Join(cfg.DataDir, "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{
		Path:        dbPath,
		BoltOptions: &bbolt.Options{Timeout: 500 * time.Millisecond},
		NoSync:      cfg.noSync,
	})
	if errors.Is(err, bbolt.ErrTimeout) {
		return fmt.Errorf("meta: %s is locked: another pgshard meta uses data directory %s", dbPath, cfg.DataDir)
	}
	if err != nil {
		return fmt.Errorf("meta: open raft log %s: %w", dbPath, err)
	}
	n.store = store
	logs, err := raft.NewLogCache(512, store)
	if err != nil {
		return fmt.Errorf("meta: raft log cache: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, newHclogger(n.log, "raft-snapshot", nil))
	if err != nil {
		return fmt.Errorf("meta: snapshot store in %s: %w", cfg.DataDir, err)
	}
	if n.tcp, err = listenTCP(cfg.RaftAddr, cfg.AdvertiseAddr); err != nil {
		return err
	}
	n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  n.tcp,
		MaxPool: 3,
		Timeout: cfg.TransportTimeout,
		Logger:  newHclogger(n.log, "raft-net", nil),
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = newHclogger(n.log, "raft", nil)
	rc.NoLegacyTelemetry = true
	setIf(&rc.HeartbeatTimeout, cfg.HeartbeatTimeout)
	setIf(&rc.ElectionTimeout, cfg.ElectionTimeout)
	setIf(&rc.LeaderLeaseTimeout, cfg.LeaderLeaseTimeout)
	setIf(&rc.CommitTimeout, cfg.CommitTimeout)
	setIf(&rc.SnapshotInterval, cfg.SnapshotInterval)
	setIf(&rc.SnapshotThreshold, cfg.SnapshotThreshold)
	setIf(&rc.TrailingLogs, cfg.TrailingLogs)
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("meta: raft config: %w", err)
	}
	n.fsm = newFSM(n.log)
	if n.raft, err = raft.NewRaft(rc, n.fsm, logs, store, snaps, n.trans); err != nil {
		return fmt.Errorf("meta: start raft: %w", err)
	}
	return nil
}

func setIf[T comparable](dst *T, v T) {
	var zero T
	if v != zero {
		*dst = v
	}
}

// Close stops the node: raft, the transport and its connections, the
// node's goroutines (watches end, waits return ErrClosed), and closes the
// stores. Nothing of the node runs after Close returns. A leader that
// closes stops leading; the others elect a new one if they have a quorum.
// Close may be called more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		n.mu.Unlock()
		n.cancel()
		n.closeErr = n.closeParts()
		n.wg.Wait()
		if n.closeErr != nil {
			n.log.Warn("meta node closed with errors", "error", n.closeErr)
		}
	})
	return n.closeErr
}

// closeParts stops what open built, in reverse order.
func (n *Node) closeParts() error {
	var errs []error
	if n.raft != nil {
		// Shutdown waits for raft's goroutines, then closes the transport
		// (and with it the stream layer and every connection).
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("meta: stop raft: %w", err))
		}
	}
	if n.trans != nil {
		n.trans.CloseStreams()
		_ = n.trans.Close()
	}
	if n.tcp != nil {
		_ = n.tcp.Close()
	}
	if n.store != nil {
		if err := n.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("meta: close raft log: %w", err))
		}
	}
	return errors.Join(errs...)
}

// spawn runs f in a goroutine that Close waits for; false when closed.
func (n *Node) spawn(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

func (n *Node) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}

// ID returns the node's ID.
func (n *Node) ID() string { return n.cfg.ID }

// Addr returns the node's advertised raft address (with the real port when
// Config.RaftAddr had port 0): the address to Join it with.
func (n *Node) Addr() string { return n.tcp.Addr().String() }

// Bootstrap starts a new cluster whose voters are this node and
// Config.Peers (usually none: a single voter that then Joins the others).
// It fails with ErrAlreadyBootstrapped if the node has raft state already.
// It returns once the configuration is stored; the node becomes leader an
// election timeout later (see WaitLeader).
func (n *Node) Bootstrap(ctx context.Context) error {
	servers := []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(n.cfg.ID), Address: raft.ServerAddress(n.Addr())}}
	for _, p := range n.cfg.Peers {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
	}
	err := n.wait(ctx, n.raft.BootstrapCluster(raft.Configuration{Servers: servers}))
	if errors.Is(err, raft.ErrCantBootstrap) {
		return ErrAlreadyBootstrapped
	}
	if err != nil {
		return fmt.Errorf("meta: bootstrap: %w", n.raftErr(err))
	}
	n.log.Info("bootstrapped a new meta cluster", "voters", len(servers))
	return nil
}

// Join adds the node id, listening for raft on raftAddr, as a voter. Only
// the leader can; elsewhere it returns a *NotLeaderError. The new node
// must be running (Open, not bootstrapped) with that ID and address; it
// catches up from the leader (log or snapshot). Joining a member again
// with the same address does nothing; with a new address it updates it.
// It returns when the new configuration is committed.
func (n *Node) Join(ctx context.Context, id, raftAddr string) error {
	if id == "" || raftAddr == "" {
		return errors.New("meta: join: a node ID and a raft address are required")
	}
	if err := n.requireLeader(); err != nil {
		return err
	}
	servers, err := n.servers(ctx)
	if err != nil {
		return fmt.Errorf("meta: join %s: %w", id, err)
	}
	for _, s := range servers {
		switch {
		case string(s.ID) == id && string(s.Address) == raftAddr && s.Suffrage == raft.Voter:
			return nil
		case string(s.ID) != id && string(s.Address) == raftAddr:
			return fmt.Errorf("meta: join %s: raft address %s is already used by member %s; remove it first", id, raftAddr, s.ID)
		}
	}
	f := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, enqueueTimeout(ctx))
	if err := n.wait(ctx, f); err != nil {
		return fmt.Errorf("meta: join %s at %s: %w", id, raftAddr, n.raftErr(err))
	}
	n.log.Info("member joined", "member", id, "raft_addr", raftAddr)
	return nil
}

// SetMemberAPIAddr records apiAddr as the client (API) address of member
// id in the replicated state, so that Members and NotLeaderError name it
// (a member records its own while it leads). Only the leader can;
// elsewhere it returns a *NotLeaderError. Recording the address already
// recorded does nothing.
func (n *Node) SetMemberAPIAddr(ctx context.Context, id, apiAddr string) error {
	if id == "" || apiAddr == "" {
		return errors.New("meta: set member API address: a node ID and an address are required")
	}
	if err := n.requireLeader(); err != nil {
		return err
	}
	if n.fsm.state().apiAddrs[id] == apiAddr {
		return nil
	}
	if _, err := n.propose(ctx, cmdMemberAPIAddr, &memberCmd{ID: id, APIAddr: apiAddr}); err != nil {
		return fmt.Errorf("meta: record the API address of %s: %w", id, err)
	}
	return nil
}

// Remove takes the member id out of the cluster. Only the leader can;
// elsewhere it returns a *NotLeaderError. Removing the leader itself is
// allowed (it steps down once the change commits); removing the only
// voter is refused. A removed node stops its raft: Close it. It returns
// when the new configuration is committed.
func (n *Node) Remove(ctx context.Context, id string) error {
	if err := n.requireLeader(); err != nil {
		return err
	}
	servers, err := n.servers(ctx)
	if err != nil {
		return fmt.Errorf("meta: remove %s: %w", id, err)
	}
	found, voters := false, 0
	for _, s := range servers {
		if string(s.ID) == id {
			found = true
		}
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	if !found {
		return fmt.Errorf("meta: remove %q: %w", id, ErrNotMember)
	}
	if voters == 1 && id == n.cfg.ID {
		return fmt.Errorf("meta: remove %s: it is the only voter; the cluster would have none", id)
	}
	f := n.raft.RemoveServer(raft.ServerID(id), 0, enqueueTimeout(ctx))
	if err := n.wait(ctx, f); err != nil {
		return fmt.Errorf("meta: remove %s: %w", id, n.raftErr(err))
	}
	n.log.Info("member removed", "member", id)
	return nil
}

// Member is one server of the raft configuration.
type Member struct {
	ID   string
	Addr string // raft address
	// APIAddr is the client address the member recorded while it led, or
	// that was given when it joined (SetMemberAPIAddr); "" if neither.
	APIAddr  string
	Suffrage string // "voter", "nonvoter" or "staging"
	Leader   bool   // the leader as this node knows it
}

// Members returns the raft configuration as this node knows it, by ID.
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	servers, err := n.servers(ctx)
	if err != nil {
		return nil, fmt.Errorf("meta: members: %w", err)
	}
	_, leader := n.raft.LeaderWithID()
	api := n.fsm.state().apiAddrs
	out := make([]Member, 0, len(servers))
	for _, s := range servers {
		out = append(out, Member{
			ID: string(s.ID), Addr: string(s.Address), APIAddr: api[string(s.ID)],
			Suffrage: strings.ToLower(s.Suffrage.String()), Leader: s.ID == leader,
		})
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (n *Node) servers(ctx context.Context) ([]raft.Server, error) {
	f := n.raft.GetConfiguration()
	if err := n.wait(ctx, f); err != nil {
		return nil, n.raftErr(err)
	}
	return f.Configuration().Servers, nil
}

// NodeStatus is a node's view of itself and the cluster.
type NodeStatus struct {
	ID, Addr, APIAddr string
	// State is "leader", "follower", "candidate" or "shutdown".
	State string
	// LeaderID, LeaderAddr (raft) and LeaderAPIAddr name the leader this
	// node knows of; "" when none is known.
	LeaderID, LeaderAddr, LeaderAPIAddr string
	Term                                uint64
	LastIndex                           uint64 // last raft log index stored here
	CommitIndex                         uint64 // last index known committed
	AppliedIndex                        uint64 // last index applied to the state
	// LastContact is when this follower last heard from the leader (zero
	// on the leader, or never).
	LastContact time.Time
	Epoch       uint64   // the shard map epoch applied here
	Members     []Member // nil if the configuration could not be read
}

// Status returns the node's status. It reads raft's configuration, which
// takes a round trip through raft's main loop, bounded by ctx.
func (n *Node) Status(ctx context.Context) NodeStatus {
	leaderAddr, leaderID := n.raft.LeaderWithID()
	st := NodeStatus{
		ID: n.cfg.ID, Addr: n.Addr(), APIAddr: n.cfg.APIAddr,
		State:    strings.ToLower(n.raft.State().String()),
		LeaderID: string(leaderID), LeaderAddr: string(leaderAddr),
		LeaderAPIAddr: n.fsm.state().apiAddrs[string(leaderID)],
		Term:          n.raft.CurrentTerm(),
		LastIndex:     n.raft.LastIndex(),
		CommitIndex:   n.raft.CommitIndex(),
		AppliedIndex:  n.raft.AppliedIndex(),
		LastContact:   n.raft.LastContact(),
		Epoch:         n.fsm.state().epoch(),
	}
	if members, err := n.Members(ctx); err == nil {
		st.Members = members
	}
	return st
}

// WaitLeader waits until this node knows a leader (itself or another),
// the context ends, or the node stops.
func (n *Node) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if _, id := n.raft.LeaderWithID(); id != "" {
			return nil
		}
		if n.raft.State() == raft.Shutdown {
			return ErrClosed
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("meta: no leader elected: %w", ctx.Err())
		case <-n.ctx.Done():
			return ErrClosed
		case <-t.C:
		}
	}
}

// IsLeader reports whether this node is the leader right now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// requireLeader returns nil on the leader, else the error to return.
func (n *Node) requireLeader() error {
	if n.isClosed() {
		return ErrClosed
	}
	switch n.raft.State() {
	case raft.Leader:
		return nil
	case raft.Shutdown:
		return ErrClosed
	}
	return n.notLeader()
}

func (n *Node) notLeader() *NotLeaderError {
	addr, id := n.raft.LeaderWithID()
	return &NotLeaderError{LeaderID: string(id), LeaderAddr: string(addr), LeaderAPIAddr: n.fsm.state().apiAddrs[string(id)]}
}

// wait waits for a raft future, or for ctx. If ctx ends first, the
// operation goes on in raft; a goroutine waits for it (raft answers every
// future, at the latest when it shuts down).
func (n *Node) wait(ctx context.Context, f raft.Future) error {
	if ctx.Done() == nil {
		return f.Error()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan error, 1)
	if !n.spawn(func() { done <- f.Error() }) {
		return ErrClosed
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// enqueueTimeout is how long raft may take to accept an operation: until
// ctx's deadline, or forever.
func enqueueTimeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return 0
}

// raftErr translates an error of a raft future.
func (n *Node) raftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("meta: leadership was lost while committing: %w", ErrUncertain)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("meta: raft did not accept the change before the deadline (%w); nothing was applied", context.DeadlineExceeded)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("meta: stopped waiting for the change to commit (%w): %w", err, ErrUncertain)
	}
	return err
}

// propose proposes a command stamped with the leader's clock and returns
// the state machine's response.
func (n *Node) propose(ctx context.Context, typ cmdType, body any) (any, error) {
	if err := n.requireLeader(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("meta: nothing was proposed: %w", err)
	}
	data, err := encodeCommand(typ, n.cfg.now(), body)
	if err != nil {
		return nil, err
	}
	f := n.raft.Apply(data, enqueueTimeout(ctx))
	if err := n.wait(ctx, f); err != nil {
		return nil, n.raftErr(err)
	}
	return f.Response(), nil
}
