package reshard

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/shardmap"
)

// The resharding workflow: one move of a key interval from its owner to
// another shard, kept as a replicated workflow record (see [Records]) and
// driven by a [Controller] on the meta leader, one step at a time. Every
// step is one of the engine's idempotent steps or one map epoch, and the
// record says which step was last committed, so the next leader repeats
// at most the step in progress. See doc.go for the order of the steps.

// WorkflowKind is the kind of the resharding workflow records.
const WorkflowKind = "resharding"

// Phase is the last step a move's workflow committed.
type Phase string

// The phases, in order. A move is created in PhasePrepare; a cutover runs
// from PhaseHold to PhaseCutOver; a rollback from PhaseRollbackHold to
// PhaseRolledBack.
const (
	PhasePrepare  Phase = "prepare"  // next: create the tables on the target
	PhaseCopy     Phase = "copy"     // target ready; next: start the replication
	PhaseCopying  Phase = "copying"  // initial copy running
	PhaseCopied   Phase = "copied"   // copied, streaming; waits for the cutover
	PhaseHold     Phase = "hold"     // epoch with the interval held committed; next: proxies acknowledge it
	PhaseHeld     Phase = "held"     // every live proxy holds; next: fence the source
	PhaseFenced   Phase = "fenced"   // source fenced for the interval; next: target catches up
	PhaseCaughtUp Phase = "caughtup" // next: verify
	PhaseVerified Phase = "verified" // next: stop the forward replication
	PhaseStopped  Phase = "stopped"  // next: advance the target's sequences
	PhaseAdvanced Phase = "advanced" // next: start the reverse replication
	PhaseReversed Phase = "reversed" // next: epoch with the new owner, no hold
	PhaseSwitched Phase = "switched" // new owner committed; next: proxies acknowledge it
	PhaseCutOver  Phase = "cutover"  // the target owns the interval; rollback possible until cleanup
	PhaseAborting Phase = "aborting" // a cutover failed: back to the source, then PhaseCopied

	PhaseRollbackHold     Phase = "rollback-hold"     // epoch holding the interval on the target committed
	PhaseRollbackHeld     Phase = "rollback-held"     // next: fence the target
	PhaseRollbackFenced   Phase = "rollback-fenced"   // next: source catches up
	PhaseRollbackCaughtUp Phase = "rollback-caughtup" // next: verify
	PhaseRollbackVerified Phase = "rollback-verified" // next: advance the source's sequences
	PhaseRollbackAdvanced Phase = "rollback-advanced" // next: epoch with the source as owner again
	PhaseRollbackSwitched Phase = "rollback-switched" // next: proxies acknowledge, unfence the source, drop the reverse replication
	PhaseRollbackDropped  Phase = "rollback-dropped"  // next: delete the interval's rows from the target
	PhaseRollbackDeleted  Phase = "rollback-deleted"  // next: unfence the target
	PhaseRollbackAborting Phase = "rollback-aborting" // a rollback failed: back to PhaseCutOver

	PhaseCleaning   Phase = "cleaning"   // dropping replication, deleting the source's rows
	PhaseCancelling Phase = "cancelling" // dropping replication, deleting the target's rows

	PhaseDone       Phase = "done"       // cleaned up: the move is finished
	PhaseCancelled  Phase = "cancelled"  // cancelled before cutover: nothing moved
	PhaseRolledBack Phase = "rolledback" // rolled back: the source owns the interval again
)

// Terminal reports whether p ends the workflow.
func (p Phase) Terminal() bool {
	return p == PhaseDone || p == PhaseCancelled || p == PhaseRolledBack
}

// cutoverPhases are the phases of a cutover before its new epoch: a
// failure in them aborts back to the source.
var cutoverPhases = map[Phase]bool{
	PhaseHold: true, PhaseHeld: true, PhaseFenced: true, PhaseCaughtUp: true, PhaseVerified: true,
	PhaseStopped: true, PhaseAdvanced: true, PhaseReversed: true,
}

// rollbackPhases are the phases of a rollback before its epoch.
var rollbackPhases = map[Phase]bool{
	PhaseRollbackHold: true, PhaseRollbackHeld: true, PhaseRollbackFenced: true, PhaseRollbackCaughtUp: true,
	PhaseRollbackVerified: true, PhaseRollbackAdvanced: true,
}

// InCutover reports whether p is inside a cutover or rollback (the
// interval is, or may be, held in the proxies).
func (p Phase) InCutover() bool {
	return cutoverPhases[p] || rollbackPhases[p] || p == PhaseSwitched || p == PhaseRollbackSwitched ||
		p == PhaseAborting || p == PhaseRollbackAborting
}

// CutoverMode says whether a move cuts over by itself once copied.
type CutoverMode string

// The cutover modes.
const (
	CutoverAuto   CutoverMode = "auto"
	CutoverManual CutoverMode = "manual"
)

// The operators' requests ([Controller.Act]).
const (
	ActionCutover  = "cutover"
	ActionRollback = "rollback"
	ActionCancel   = "cancel"
	ActionCleanup  = "cleanup"
	ActionVerify   = "verify"
)

// CopyProgress is the copy and replication progress of a move, as last
// written to its record.
type CopyProgress struct {
	RowsCopied  int64 `json:"rows_copied"`
	BytesCopied int64 `json:"bytes_copied"`
	// RowsTotal is the interval's rows on the source when the copy
	// started (0: unknown).
	RowsTotal    int64 `json:"rows_total"`
	Tables       int   `json:"tables"`
	TablesCopied int   `json:"tables_copied"`
	// LagBytes is the source's WAL not yet applied by the target, -1
	// when unknown (no replication).
	LagBytes    int64     `json:"lag_bytes"`
	ApplyErrors int64     `json:"apply_errors"`
	SyncErrors  int64     `json:"sync_errors"`
	Deleted     int64     `json:"rows_deleted"` // by cleanup, cancel or rollback
	At          time.Time `json:"at"`
}

// Event is one line of a move's history.
type Event struct {
	At    time.Time `json:"at"`
	Phase Phase     `json:"phase"`
	Note  string    `json:"note,omitempty"`
}

// maxEvents bounds a record's history.
const maxEvents = 40

// State is the replicated state of one move: its record's content, JSON.
type State struct {
	Distribution string      `json:"distribution"`
	Move         Move        `json:"move"`
	From         string      `json:"from"`
	To           string      `json:"to"`
	Cutover      CutoverMode `json:"cutover"`
	Phase        Phase       `json:"phase"`
	// Request is the operator's pending request (an Action), "" for none.
	Request string `json:"request,omitempty"`
	// Force makes a cutover or rollback go on after a failed verify.
	Force bool `json:"force,omitempty"`
	// CancelAfterAbort makes an abort of the cutover end in a cancel.
	CancelAfterAbort bool `json:"cancel_after_abort,omitempty"`
	// StepStarted is when the running cutover or rollback began: its
	// steps must end within ControllerConfig.CutoverTimeout of it.
	StepStarted time.Time `json:"step_started,omitzero"`
	// HoldEpoch, CutoverEpoch and RollbackEpoch are the epochs the
	// workflow committed.
	HoldEpoch     uint64        `json:"hold_epoch,omitempty"`
	CutoverEpoch  uint64        `json:"cutover_epoch,omitempty"`
	RollbackEpoch uint64        `json:"rollback_epoch,omitempty"`
	Progress      CopyProgress  `json:"progress"`
	Verify        *VerifyResult `json:"verify,omitempty"`
	// VerifyFailed is set when the last verify found differences; a
	// cutover refuses to start then, unless forced.
	VerifyFailed bool      `json:"verify_failed,omitempty"`
	LastError    string    `json:"last_error,omitempty"`
	ErrorAt      time.Time `json:"error_at,omitzero"`
	Attempts     int       `json:"attempts,omitempty"`
	Created      time.Time `json:"created"`
	Events       []Event   `json:"events,omitempty"`
}

// Interval formats the move's interval: "[401, 501)", "hash [-inf, 0)".
func (s *State) Interval() string {
	iv := "[" + s.Move.Lo.String() + ", " + s.Move.Hi.String() + ")"
	if s.Move.Strategy == shardmap.Hash {
		iv = "hash " + iv
	}
	return iv
}

// event appends to the history, keeping the last maxEvents.
func (s *State) event(now time.Time, note string) {
	s.Events = append(s.Events, Event{At: now, Phase: s.Phase, Note: note})
	if len(s.Events) > maxEvents {
		s.Events = s.Events[len(s.Events)-maxEvents:]
	}
}

// Overlaps reports whether the move's interval and [lo, hi) share keys.
func (s *State) Overlaps(dist string, lo, hi shardmap.Bound) bool {
	return s.Distribution == dist && s.Move.Lo.Compare(hi) < 0 && lo.Compare(s.Move.Hi) < 0
}

// Record is one workflow record as the record store keeps it.
type Record struct {
	ID        string
	Version   uint64
	State     []byte
	UpdatedAt time.Time
}

// Records is the replicated store of workflow records (the meta node's
// workflow records, shardmap/meta).
type Records interface {
	// Workflows lists the records of kind, by ID.
	Workflows(kind string) []Record
	// Workflow returns the record id, false when there is none.
	Workflow(id string) (Record, bool)
	// PutWorkflow sets the record if it is at expectVersion (0: absent)
	// and returns its new version; an error matching ErrStale otherwise.
	PutWorkflow(ctx context.Context, id, kind string, expectVersion uint64, state []byte) (uint64, error)
}

// Maps is the replicated shard map.
type Maps interface {
	// Map returns the current map (nil before the first).
	Map() *shardmap.Map
	// ApplyMap commits m as epoch expectEpoch+1 if the map is still at
	// expectEpoch, and returns the new epoch; an error matching
	// ErrStaleMap otherwise.
	ApplyMap(ctx context.Context, m *shardmap.Map, expectEpoch uint64, comment string) (uint64, error)
	// WaitApplied waits until every live proxy has applied epoch (a
	// proxy whose lease ran out no longer counts).
	WaitApplied(ctx context.Context, epoch uint64) error
}

// Steps are the engine's steps of one direction of a move ([Engine]
// through [EngineSteps]; fakes in tests).
type Steps interface {
	PrepareTarget(ctx context.Context) error
	StartCopy(ctx context.Context) error
	SourceRows(ctx context.Context) (int64, error)
	Progress(ctx context.Context) (Progress, error)
	Verify(ctx context.Context, opts VerifyOptions) (VerifyResult, error)
	Fence(ctx context.Context) error
	Unfence(ctx context.Context) error
	WaitCaughtUp(ctx context.Context) (health.LSN, error)
	StopForward(ctx context.Context) error
	AdvanceSequences(ctx context.Context) ([]SequenceAdvance, error)
	StartReverse(ctx context.Context) error
	DropReplication(ctx context.Context) error
	DeleteMoved(ctx context.Context, opts DeleteOptions) (int64, error)
	Cleanup(ctx context.Context, opts DeleteOptions) (int64, error)
	Cancel(ctx context.Context, opts DeleteOptions) error
	WaitReplicas(ctx context.Context) error
	// Reverse returns the steps of the opposite direction.
	Reverse() Steps
}

// EngineSteps returns e as Steps.
func EngineSteps(e *Engine) Steps { return engineSteps{e} }

type engineSteps struct{ *Engine }

func (s engineSteps) Reverse() Steps { return engineSteps{s.Engine.Reverse()} }

// rollbackPrewait bounds the catch-up of the reverse replication that a
// rollback waits for before its hold: three times PostgreSQL's default
// wal_retrieve_retry_interval, the longest a new subscription's apply
// worker waits for the launcher.
const rollbackPrewait = 15 * time.Second

// Engines builds the steps of move mv from shard from to shard to, as
// the current map describes them.
type Engines func(mv Move, from, to shardmap.Shard) (Steps, error)

// Errors of the controller's operations, for the API to map.
var (
	// ErrStale is matched by the record store's compare-and-set failures.
	ErrStale = errors.New("reshard: the workflow record changed meanwhile")
	// ErrStaleMap is matched by the map store's compare-and-set failures.
	ErrStaleMap = errors.New("reshard: the shard map changed meanwhile")
	// ErrNotFound: no such move, distribution or shard.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the state does not allow the request now (another
	// move holds the interval, a cutover before the copy ended, ...).
	ErrConflict = errors.New("not allowed now")
	// ErrInvalid: a malformed request.
	ErrInvalid = errors.New("invalid request")
)

// ControllerConfig configures a [Controller].
type ControllerConfig struct {
	Records Records
	Maps    Maps
	Engines Engines
	Logger  *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Tick is how often the controller looks for moves and a move's
	// driver polls its record while it waits; 0 means 200 ms.
	Tick time.Duration
	// ProgressEvery is how often the copy's progress is written to the
	// record; 0 means 1 s.
	ProgressEvery time.Duration
	// CutoverTimeout bounds a cutover (and a rollback) from its hold to
	// its new epoch; past it the cutover aborts back to the source (a
	// rollback back to the target); 0 means 30 s.
	CutoverTimeout time.Duration
	// MaxLagBytes is the replication lag above which a cutover does not
	// start; 0 means 16 MiB.
	MaxLagBytes int64
	// HoldVerifyRows bounds the pause of a cutover: a cutover first
	// compares the interval's rows (counts and checksums) while its
	// traffic flows, then, inside the hold with the source fenced and the
	// target caught up, compares them again exactly when the interval has
	// at most this many rows, and only their counts when it has more
	// (the checksum of a million rows takes tens of seconds); 0 means
	// 100,000.
	HoldVerifyRows int64
	// RetryMax bounds the wait between retries of a failed step; 0 means
	// 30 s.
	RetryMax time.Duration
	// Delete throttles cleanup's and cancel's deletes (its Progress is
	// set by the controller).
	Delete DeleteOptions
}

// Controller drives the moves of its records: [Controller.Run] on the
// meta leader; its other methods serve the API on the leader (Start,
// Act, Split, AddShard) or any member (List).
type Controller struct {
	cfg ControllerConfig
	log *slog.Logger

	mu chan struct{} // serializes the creation of moves and map edits of the API
}

// NewController checks cfg and returns its controller.
func NewController(cfg ControllerConfig) (*Controller, error) {
	if cfg.Records == nil || cfg.Maps == nil || cfg.Engines == nil {
		return nil, errors.New("reshard: ControllerConfig needs Records, Maps and Engines")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 200 * time.Millisecond
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = time.Second
	}
	if cfg.CutoverTimeout <= 0 {
		cfg.CutoverTimeout = 30 * time.Second
	}
	if cfg.MaxLagBytes <= 0 {
		cfg.MaxLagBytes = 16 << 20
	}
	if cfg.HoldVerifyRows <= 0 {
		cfg.HoldVerifyRows = 100_000
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 30 * time.Second
	}
	c := &Controller{cfg: cfg, log: cfg.Logger, mu: make(chan struct{}, 1)}
	return c, nil
}

// lock takes the controller's API lock, or fails when ctx ends.
func (c *Controller) lock(ctx context.Context) error {
	select {
	case c.mu <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Controller) unlock() { <-c.mu }
