package reshard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pgshard/pgshard/shardmap"
)

// Status is a move as its record holds it.
type Status struct {
	ID        string    `json:"id"`
	Version   uint64    `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	State     State     `json:"state"`
}

// List returns the moves (id "" for all, in ID order), from this
// member's state: any member answers.
func (c *Controller) List(id string) ([]Status, error) {
	var out []Status
	for _, r := range c.cfg.Records.Workflows(WorkflowKind) {
		if id != "" && r.ID != id {
			continue
		}
		st, err := decodeState(r.State)
		if err != nil {
			return nil, fmt.Errorf("move %s: %w", r.ID, err)
		}
		out = append(out, Status{ID: r.ID, Version: r.Version, UpdatedAt: r.UpdatedAt, State: st})
	}
	if id != "" && len(out) == 0 {
		return nil, reqErr(ErrNotFound, "no move %q", id)
	}
	return out, nil
}

// MoveRequest asks for a move (Controller.Start).
type MoveRequest struct {
	// ID names the move; "" generates one.
	ID           string
	Distribution string
	// Interval is "[LO,HI)" in the distribution's bound type (hash
	// values for a hash distribution).
	Interval string
	To       string
	Cutover  CutoverMode // "" means manual
}

// newID returns a fresh move id.
func newID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "mv_" + hex.EncodeToString(b[:])
}

// Start creates a move's record (the leader's controller then drives
// it): the interval must lie inside one interval of the distribution,
// owned by another shard than To, and no unfinished move may hold any of
// its keys. Leader only.
func (c *Controller) Start(ctx context.Context, req MoveRequest) (Status, error) {
	if err := c.lock(ctx); err != nil {
		return Status{}, err
	}
	defer c.unlock()
	if req.ID == "" {
		req.ID = newID()
	}
	switch req.Cutover {
	case "":
		req.Cutover = CutoverManual
	case CutoverAuto, CutoverManual:
	default:
		return Status{}, reqErr(ErrInvalid, "cutover %q: want auto or manual", req.Cutover)
	}
	m := c.cfg.Maps.Map()
	if m == nil {
		return Status{}, reqErr(ErrConflict, "there is no shard map yet")
	}
	d := m.Distribution(req.Distribution)
	if d == nil {
		return Status{}, reqErr(ErrNotFound, "no distribution %q in the shard map", req.Distribution)
	}
	lo, hi, err := d.ParseInterval(req.Interval)
	if err != nil {
		return Status{}, reqErr(ErrInvalid, "%w", err)
	}
	if m.Shard(req.To) == nil {
		return Status{}, reqErr(ErrNotFound, "no shard %q in the shard map (register it with pgshard shards add)", req.To)
	}
	i := d.IntervalIndex(lo)
	if i < 0 || hi.Compare(d.Intervals[i].Hi) > 0 {
		return Status{}, reqErr(ErrInvalid, "interval [%s, %s) spans several intervals of distribution %s (%s): move one owner's keys at a time", lo, hi, d.Name, d.DescribeIntervals())
	}
	from := d.Intervals[i].Shard
	if from == req.To {
		return Status{}, reqErr(ErrInvalid, "interval [%s, %s) of %s is on shard %s already", lo, hi, d.Name, from)
	}
	mv, err := MoveFromMap(m, d.Name, lo, hi, req.ID)
	if err != nil {
		return Status{}, reqErr(ErrInvalid, "%w", err)
	}
	for _, r := range c.cfg.Records.Workflows(WorkflowKind) {
		if r.ID == req.ID {
			return Status{}, reqErr(ErrConflict, "move id %s is taken (a move's objects are named after it)", req.ID)
		}
		st, err := decodeState(r.State)
		if err == nil && !st.Phase.Terminal() && st.Overlaps(d.Name, lo, hi) {
			return Status{}, reqErr(ErrConflict, "move %s (%s, %s) holds keys of this interval; one move per interval at a time", r.ID, st.Interval(), st.Phase)
		}
	}
	now := c.cfg.Now()
	st := State{Distribution: d.Name, Move: mv, From: from, To: req.To, Cutover: req.Cutover, Phase: PhasePrepare,
		Created: now, Progress: CopyProgress{LagBytes: -1}}
	st.event(now, fmt.Sprintf("move %s of %s from %s to %s, cutover %s", st.Interval(), d.Name, from, req.To, req.Cutover))
	v, err := c.cfg.Records.PutWorkflow(ctx, req.ID, WorkflowKind, 0, encodeState(&st))
	if err != nil {
		return Status{}, fmt.Errorf("create move %s: %w", req.ID, err)
	}
	return Status{ID: req.ID, Version: v, UpdatedAt: now, State: st}, nil
}

// Act records an operator's request on move id, for its driver: cutover
// (force: even after a failed verify), rollback (force: even if the
// rollback's verify fails), cancel, cleanup or verify. It checks that the
// move's phase allows it. Leader only.
func (c *Controller) Act(ctx context.Context, id, action string, force bool) (Status, error) {
	for attempt := 0; ; attempt++ {
		r, ok := c.cfg.Records.Workflow(id)
		if !ok {
			return Status{}, reqErr(ErrNotFound, "no move %q", id)
		}
		st, err := decodeState(r.State)
		if err != nil {
			return Status{}, err
		}
		if err := allowed(&st, action); err != nil {
			return Status{}, fmt.Errorf("move %s: %w", id, err)
		}
		if action == ActionCutover && st.Phase != PhaseCopied {
			st.Cutover = CutoverAuto // cut over as soon as copied
		} else {
			st.Request = action
		}
		st.Force = st.Force || force
		if st.Request == ActionCutover || st.Request == ActionRollback {
			st.LastError = ""
		}
		st.event(c.cfg.Now(), "requested: "+action)
		v, err := c.cfg.Records.PutWorkflow(ctx, id, WorkflowKind, r.Version, encodeState(&st))
		if errors.Is(err, ErrStale) && attempt < 20 {
			continue // the driver wrote progress meanwhile
		}
		if err != nil {
			return Status{}, fmt.Errorf("move %s: %w", id, err)
		}
		return Status{ID: id, Version: v, UpdatedAt: c.cfg.Now(), State: st}, nil
	}
}

// allowed says whether action may be asked of st now.
func allowed(st *State, action string) error {
	p := st.Phase
	if p.Terminal() {
		return reqErr(ErrConflict, "the move is %s", p)
	}
	if st.Request != "" && st.Request != action {
		return reqErr(ErrConflict, "%s is already requested", st.Request)
	}
	switch action {
	case ActionCutover:
		if p == PhasePrepare || p == PhaseCopy || p == PhaseCopying || p == PhaseCopied {
			return nil
		}
		if p.InCutover() {
			return reqErr(ErrConflict, "a cutover or rollback is running (%s)", p)
		}
		return reqErr(ErrConflict, "the move is %s; a cutover follows the copy", p)
	case ActionRollback:
		if p == PhaseCutOver {
			return nil
		}
		return reqErr(ErrConflict, "the move is %s; rollback is for a move that is cut over (cancel one that is not)", p)
	case ActionCancel:
		switch {
		case p == PhaseRollbackSwitched || p == PhaseRollbackDropped || p == PhaseRollbackDeleted:
			return reqErr(ErrConflict, "the move is %s: it is rolling back", p)
		case p == PhaseCutOver || p == PhaseCleaning || p == PhaseSwitched || rollbackPhases[p] || p == PhaseRollbackAborting:
			return reqErr(ErrConflict, "the move is %s: the target owns the interval; roll it back first", p)
		case p == PhaseCancelling:
			return nil
		}
		return nil
	case ActionCleanup:
		if p == PhaseCutOver || p == PhaseCleaning {
			return nil
		}
		return reqErr(ErrConflict, "the move is %s; cleanup is for a move that is cut over", p)
	case ActionVerify:
		if p == PhaseCopied || p == PhaseCutOver {
			return nil
		}
		return reqErr(ErrConflict, "the move is %s; verify runs once copied (or after cutover)", p)
	}
	return reqErr(ErrInvalid, "unknown action %q (want cutover, rollback, cancel, cleanup or verify)", action)
}

// Split splits the interval of distribution dist holding at (a value of
// its bound type) in two, both on the same shard: a plain map edit, no
// data moves. Refused when at lies strictly inside an unfinished move.
// Leader only; it returns the new epoch.
func (c *Controller) Split(ctx context.Context, dist, at string) (uint64, error) {
	if err := c.lock(ctx); err != nil {
		return 0, err
	}
	defer c.unlock()
	m := c.cfg.Maps.Map()
	if m == nil {
		return 0, reqErr(ErrConflict, "there is no shard map yet")
	}
	d := m.Distribution(dist)
	if d == nil {
		return 0, reqErr(ErrNotFound, "no distribution %q in the shard map", dist)
	}
	b, err := d.ParseBound(at)
	if err != nil {
		return 0, reqErr(ErrInvalid, "%w", err)
	}
	for _, r := range c.cfg.Records.Workflows(WorkflowKind) {
		st, err := decodeState(r.State)
		if err == nil && !st.Phase.Terminal() && st.Distribution == dist && st.Move.Lo.Compare(b) < 0 && b.Compare(st.Move.Hi) < 0 {
			return 0, reqErr(ErrConflict, "%s is inside move %s (%s): split before moving, or after it ends", b, r.ID, st.Interval())
		}
	}
	return c.editMap(ctx, fmt.Sprintf("reshard split %s at %s", dist, b), func(cur *shardmap.Map) (*shardmap.Map, error) {
		next, err := cur.SplitAt(dist, b)
		if err != nil {
			return nil, reqErr(ErrInvalid, "%w", err)
		}
		return next, nil
	})
}

// AddShard registers shard s, owning no interval: it first creates the
// sharded tables of every distribution on s's primary from a shard that
// owns keys of the distribution (the engine's PrepareTarget), then
// commits a map with the shard. Leader only; it returns the new epoch.
func (c *Controller) AddShard(ctx context.Context, s shardmap.Shard) (uint64, error) {
	if err := c.lock(ctx); err != nil {
		return 0, err
	}
	defer c.unlock()
	m := c.cfg.Maps.Map()
	if m == nil {
		return 0, reqErr(ErrConflict, "there is no shard map yet")
	}
	if m.Shard(s.Name) != nil {
		return 0, reqErr(ErrConflict, "shard %s is in the map already", s.Name)
	}
	if s.State == "" {
		s.State = shardmap.StateActive
	}
	next := m.Clone()
	next.Shards = append(next.Shards, s)
	if err := next.Validate(); err != nil {
		return 0, reqErr(ErrInvalid, "%w", err)
	}
	for _, d := range m.Distributions {
		var tables []Table
		for _, t := range m.Tables {
			if t.Distribution == d.Name && t.Kind == shardmap.Sharded {
				tables = append(tables, Table{Name: t.Name, KeyColumn: t.KeyColumn})
			}
		}
		if len(tables) == 0 || len(d.Intervals) == 0 {
			continue
		}
		src := m.Shard(d.Intervals[0].Shard)
		if src == nil {
			continue
		}
		mv := Move{ID: "add_" + sanitizeID(s.Name), KeyType: d.KeyType, Strategy: d.Strategy, Lo: shardmap.NegInf(), Hi: shardmap.PosInf(), Tables: tables}
		e, err := c.cfg.Engines(mv, *src, s)
		if err != nil {
			return 0, err
		}
		if err := e.PrepareTarget(ctx); err != nil {
			return 0, fmt.Errorf("create the tables of distribution %s on shard %s from shard %s: %w", d.Name, s.Name, src.Name, err)
		}
	}
	return c.editMap(ctx, "shards add "+s.Name, func(cur *shardmap.Map) (*shardmap.Map, error) {
		if cur.Shard(s.Name) != nil {
			return nil, nil
		}
		n := cur.Clone()
		n.Shards = append(n.Shards, s)
		return n, nil
	})
}

// sanitizeID keeps what a move id may hold, at most 30 characters.
func sanitizeID(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	out := b.String()
	if len(out) > 30 {
		out = out[:30]
	}
	if out == "" {
		out = "x"
	}
	return out
}

// Find returns the unfinished move of distribution dist whose interval
// is [lo, hi) as written (lo, hi parsed with the distribution), for
// commands that name a move by its interval; a finished one when no
// unfinished one matches.
func (c *Controller) Find(dist, interval string) (Status, error) {
	m := c.cfg.Maps.Map()
	if m == nil || m.Distribution(dist) == nil {
		return Status{}, reqErr(ErrNotFound, "no distribution %q in the shard map", dist)
	}
	lo, hi, err := m.Distribution(dist).ParseInterval(interval)
	if err != nil {
		return Status{}, reqErr(ErrInvalid, "%w", err)
	}
	all, err := c.List("")
	if err != nil {
		return Status{}, err
	}
	all = slices.DeleteFunc(all, func(s Status) bool {
		return s.State.Distribution != dist || s.State.Move.Lo != lo || s.State.Move.Hi != hi
	})
	slices.SortStableFunc(all, func(a, b Status) int {
		return boolRank(a.State.Phase.Terminal()) - boolRank(b.State.Phase.Terminal())
	})
	if len(all) == 0 {
		return Status{}, reqErr(ErrNotFound, "no move of %s %s", dist, interval)
	}
	return all[0], nil
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// requestError is an error about a request, matching its kind
// (ErrNotFound, ErrConflict, ErrInvalid) without saying it.
type requestError struct {
	kind error
	err  error
}

func (e *requestError) Error() string   { return e.err.Error() }
func (e *requestError) Unwrap() []error { return []error{e.err, e.kind} }

// reqErr formats an error of kind.
func reqErr(kind error, format string, args ...any) error {
	return &requestError{kind: kind, err: fmt.Errorf(format, args...)}
}
