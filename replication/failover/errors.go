package failover

import "errors"

// Errors returned by [Controller.Switchover], wrapped with the shard and
// the servers concerned; test them with errors.Is.
var (
	// ErrNotLeader: this meta member is not the leader, or stopped being
	// it while the switchover ran (the next leader resumes it).
	ErrNotLeader = errors.New("failover: this meta member is not the leader")
	// ErrUnknownShard: the shard is not in the map.
	ErrUnknownShard = errors.New("failover: no such shard")
	// ErrSwitching: a failover or switchover of the shard is already
	// running.
	ErrSwitching = errors.New("failover: a failover or switchover of this shard is already running")
	// ErrNoReplica: the shard has no replica, or none is healthy enough
	// to take over.
	ErrNoReplica = errors.New("failover: no replica can take over")
	// ErrNotReplica: the server named is not one of the shard's replicas.
	ErrNotReplica = errors.New("failover: not a replica of the shard")
	// ErrUnreachable: a server the switchover needs did not answer.
	ErrUnreachable = errors.New("failover: server unreachable")
	// ErrBecameFailover: the switchover completed as a failover, because
	// its old primary went down while it drained or its new primary could
	// not be promoted. Switchover returns the new primary with it; writes
	// the old primary committed but no replica had received may be lost,
	// as in any failover.
	ErrBecameFailover = errors.New("failover: the switchover turned into a failover")
)

// permanentError marks an error that retrying cannot fix (the shard was
// removed, the map names a step this version does not know, an edit would
// make the map invalid): the workflow stops and logs it instead of
// retrying every CheckInterval.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err} }

// errMoved says that the shard's switch is no longer in the state a step
// edits (another commit moved it, possibly our own whose outcome was
// uncertain): re-read the map and carry on from what it says.
var errMoved = errors.New("failover: the shard's switch changed meanwhile")
