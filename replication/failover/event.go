package failover

import (
	"time"

	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/shardmap"
)

// The steps stored in [shardmap.Switch.Step]: the last step the workflow
// committed, from which any meta leader resumes it.
const (
	// StepFence (failover): proxies are told to stop using the old
	// primary; the new one is not chosen yet (Switch.To is zero).
	StepFence = "fence"
	// StepDrain (switchover): proxies hold the shard's writes; the old
	// primary is quiesced and Switch.To catches up with it. To is zero
	// only after the chosen replica was found down.
	StepDrain = "drain"
	// StepPromote (both kinds): Switch.To is chosen and is being promoted;
	// the other replicas are repointed to it.
	StepPromote = "promote"
)

// The steps of an [Event] that are not commits of a map step. An event
// whose Step is StepFence, StepDrain or StepPromote reports the commit of
// that step (Epoch says which epoch).
const (
	// EventDetect: the primary failed every check for FailAfter and the
	// observers agree; a failover starts.
	EventDetect = "detect"
	// EventApplied: every live proxy applied the epoch of the switch.
	EventApplied = "applied"
	// EventFenceOld: Admin.Fence on the old primary returned (an error is
	// expected when it is dead).
	EventFenceOld = "fence-old"
	// EventChoose: the replica to promote was chosen (To), or none could
	// be (Err).
	EventChoose = "choose"
	// EventQuiesce: Admin.Quiesce on the old primary returned (LSN).
	EventQuiesce = "quiesce"
	// EventReplayed: the new primary has replayed LSN.
	EventReplayed = "replayed"
	// EventPromoted: Admin.Promote on the new primary returned.
	EventPromoted = "promoted"
	// EventRepoint: Admin.Repoint of replica Addr returned.
	EventRepoint = "repoint"
	// EventDone: the final map (new primary, no switch) is committed.
	EventDone = "done"
	// EventCommit: a commit of the map failed (Err); Detail names it.
	EventCommit = "commit"
	// EventFenceReplica: a replica (Addr) whose repoints kept failing was
	// moved to Fenced (it cannot follow its primary).
	EventFenceReplica = "fence-replica"
	// EventRefence: a server the map fences (Addr) was found reachable
	// and writable (not in recovery, default_transaction_read_only off),
	// and Admin.Fence was called on it again (Err if that failed).
	EventRefence = "refence"
)

// Event is one step of a failover or switchover, for logs, metrics and
// tests ([Config.OnEvent], [Controller.LastEvent]).
type Event struct {
	Shard string
	Kind  shardmap.SwitchKind
	// Step is a map step (StepFence, StepDrain, StepPromote: it was
	// committed) or one of the Event* constants.
	Step string
	At   time.Time // by Config.Now
	// Err is why the step failed. The workflow tries failed steps again,
	// except EventFenceOld and EventRepoint, which are best effort.
	Err      error
	From, To string // the switch's old and new primary; To is "" until chosen
	// Addr is the server acted on when it is neither From nor To (the
	// replica of an EventRepoint).
	Addr string
	// Epoch is the epoch the step committed (for EventApplied: the epoch
	// the proxies applied), 0 when there is none.
	Epoch uint64
	// LSN is the old primary's last write position (EventQuiesce,
	// EventReplayed).
	LSN health.LSN
	// Detail says more, for people (the reason of EventDetect).
	Detail string
}
