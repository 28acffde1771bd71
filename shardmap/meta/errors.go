package meta

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Errors returned by a Node wrap them, or are typed errors
// whose Is method matches them, so that callers (the RPC layer) can map
// them to status codes with errors.Is.
var (
	// ErrClosed is returned by a Node that was closed, or whose raft has
	// stopped because the node was removed from the cluster.
	ErrClosed = errors.New("meta: this node has stopped (it was closed, or removed from the cluster)")

	// ErrNotLeader is matched by every [*NotLeaderError].
	ErrNotLeader = errors.New("meta: this node is not the leader")

	// ErrStaleEpoch is matched by every [*StaleEpochError].
	ErrStaleEpoch = errors.New("meta: stale epoch")

	// ErrInvalidMap is matched by every [*InvalidMapError].
	ErrInvalidMap = errors.New("meta: the shard map is invalid and was not applied")

	// ErrUncertain is wrapped when a change was handed to raft but its
	// outcome is unknown: leadership was lost before it committed, or the
	// context ended while waiting. It may or may not have been applied;
	// read the state again (for a map, its epoch) before retrying.
	ErrUncertain = errors.New("the change may or may not have been applied; check the current state before retrying")

	// ErrAlreadyBootstrapped is returned by Bootstrap on a node that
	// already has raft state (it bootstrapped before, or joined a cluster).
	ErrAlreadyBootstrapped = errors.New("meta: this node already has raft state; it cannot bootstrap a new cluster")

	// ErrNotMember is wrapped by Remove for an ID that is not a member.
	ErrNotMember = errors.New("meta: no such member")
)

// NotLeaderError is returned by the operations that only the leader can do
// (changes and membership) when this node is not the leader.
type NotLeaderError struct {
	// LeaderID and LeaderAddr (its raft address) name the leader this node
	// knows of; both are "" during an election.
	LeaderID   string
	LeaderAddr string
	// LeaderAPIAddr is the leader's client (gRPC) address as the leader
	// recorded it in the replicated state (Config.APIAddr); "" when the
	// leader has none or has not recorded it yet (just elected).
	LeaderAPIAddr string
}

// Error implements error.
func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" && e.LeaderAddr == "" {
		return "meta: this node is not the leader and no leader is known (an election is in progress, or there is no quorum)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "meta: this node is not the leader; the leader is %s (raft %s", e.LeaderID, e.LeaderAddr)
	if e.LeaderAPIAddr != "" {
		fmt.Fprintf(&b, ", api %s", e.LeaderAPIAddr)
	}
	b.WriteString(")")
	return b.String()
}

// Is matches ErrNotLeader.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// LeaderAddress returns the leader's client (API) address, or "": the
// redirection the RPC layer (metarpc.LeaderRedirect) gives clients.
func (e *NotLeaderError) LeaderAddress() string { return e.LeaderAPIAddr }

// StaleEpochError is returned by ApplyMap when the map was changed since
// the caller read it: Expected is the epoch the caller edited, Current is
// the epoch of the map now.
type StaleEpochError struct {
	Current, Expected uint64
}

// Error implements error.
func (e *StaleEpochError) Error() string {
	return fmt.Sprintf("meta: the shard map is at epoch %d, not %d as expected: someone changed it meanwhile; look at epoch %d and apply your change to it",
		e.Current, e.Expected, e.Current)
}

// Is matches ErrStaleEpoch.
func (e *StaleEpochError) Is(target error) bool { return target == ErrStaleEpoch }

// StaleEpoch returns both epochs (for metarpc.EpochConflict).
func (e *StaleEpochError) StaleEpoch() (current, expected uint64) { return e.Current, e.Expected }

// InvalidMapError is returned by ApplyMap for a map that does not
// validate. Nothing was written.
type InvalidMapError struct {
	// Problems are what shardmap.Map.Validate found, one per problem,
	// each naming the shard, distribution, interval or table at fault.
	Problems []error
}

// Error lists the problems, one per line.
func (e *InvalidMapError) Error() string {
	var b strings.Builder
	b.WriteString(ErrInvalidMap.Error())
	b.WriteString(":")
	for _, p := range e.Problems {
		b.WriteString("\n")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap returns the problems.
func (e *InvalidMapError) Unwrap() []error { return e.Problems }

// Is matches ErrInvalidMap.
func (e *InvalidMapError) Is(target error) bool { return target == ErrInvalidMap }

// InvalidArgument reports true: the request is wrong in itself (for
// metarpc.InvalidInput).
func (e *InvalidMapError) InvalidArgument() bool { return true }

// invalidMap wraps the error of Validate.
func invalidMap(err error) *InvalidMapError {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return &InvalidMapError{Problems: j.Unwrap()}
	}
	return &InvalidMapError{Problems: []error{err}}
}

// LaggingProxiesError is returned by WaitApplied when its context ends
// before every live proxy applied the epoch. It unwraps to the context's
// error.
type LaggingProxiesError struct {
	Epoch   uint64
	Lagging []ProxyStatus // the live proxies still below Epoch, by ID
	Err     error         // ctx.Err()
}

// Error implements error.
func (e *LaggingProxiesError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "meta: %d live prox", len(e.Lagging))
	if len(e.Lagging) == 1 {
		b.WriteString("y has")
	} else {
		b.WriteString("ies have")
	}
	fmt.Fprintf(&b, " not applied epoch %d yet:", e.Epoch)
	for i, p := range e.Lagging {
		if i == 10 {
			fmt.Fprintf(&b, " and %d more", len(e.Lagging)-i)
			break
		}
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %s (%s) at epoch %d", p.ID, p.Addr, p.AppliedEpoch)
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

// Unwrap returns the context's error.
func (e *LaggingProxiesError) Unwrap() error { return e.Err }
