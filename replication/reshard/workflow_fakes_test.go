package reshard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/shardmap"
)

// Fakes of the workflow's ports: an in-memory record store, map store
// and a model of the two servers' replication objects, fences and rows.

type fakeRecords struct {
	mu   sync.Mutex
	seq  uint64
	recs map[string]Record
	puts int
	// raceEvery, when positive, makes every raceEvery-th put lose to a
	// concurrent change of the record (the same state put by another
	// writer), as an operator's request or a progress report would.
	raceEvery int
	races     int
}

func newFakeRecords() *fakeRecords { return &fakeRecords{recs: map[string]Record{}} }

func (f *fakeRecords) Workflows(kind string) []Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Record
	for _, r := range f.recs {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Record) int {
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	return out
}

func (f *fakeRecords) Workflow(id string) (Record, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.recs[id]
	return r, ok
}

func (f *fakeRecords) PutWorkflow(_ context.Context, id, kind string, expect uint64, state []byte) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if kind != WorkflowKind {
		return 0, fmt.Errorf("kind %q", kind)
	}
	if f.recs[id].Version != expect {
		return 0, fmt.Errorf("%w: at %d, not %d", ErrStale, f.recs[id].Version, expect)
	}
	f.puts++
	if cur, ok := f.recs[id]; ok && f.raceEvery > 0 && f.puts%f.raceEvery == 0 {
		f.seq++
		f.races++
		cur.Version = f.seq
		f.recs[id] = cur
		return 0, fmt.Errorf("%w: at %d, not %d", ErrStale, cur.Version, expect)
	}
	f.seq++
	f.recs[id] = Record{ID: id, Version: f.seq, State: slices.Clone(state)}
	return f.seq, nil
}

func (f *fakeRecords) state(t *testing.T, id string) State {
	t.Helper()
	r, ok := f.Workflow(id)
	if !ok {
		t.Fatalf("no record %s", id)
	}
	st, err := decodeState(r.State)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

type fakeMaps struct {
	mu       sync.Mutex
	m        *shardmap.Map
	comments []string
	// blockWait makes WaitApplied wait for its context (a lagging proxy).
	blockWait bool
	waited    []uint64
	// onApply, when set, sees every map ApplyMap is asked to commit; an
	// error refuses it.
	onApply func(*shardmap.Map) error
}

func (f *fakeMaps) Map() *shardmap.Map {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m
}

func (f *fakeMaps) ApplyMap(_ context.Context, m *shardmap.Map, expect uint64, comment string) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m.Epoch != expect {
		return 0, fmt.Errorf("%w: at %d", ErrStaleMap, f.m.Epoch)
	}
	n := m.Clone()
	n.Epoch = expect + 1
	if err := n.Validate(); err != nil {
		return 0, err
	}
	if f.onApply != nil {
		if err := f.onApply(n); err != nil {
			return 0, err
		}
	}
	f.m = n
	f.comments = append(f.comments, comment)
	return n.Epoch, nil
}

func (f *fakeMaps) WaitApplied(ctx context.Context, epoch uint64) error {
	f.mu.Lock()
	block := f.blockWait
	f.waited = append(f.waited, epoch)
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// fakeServers models both servers of a move.
type fakeServers struct {
	mu             sync.Mutex
	calls          []string
	fwdSub, revSub bool
	fenced         map[string]bool // "source", "target"
	targetRows     bool            // the target has the interval's rows
	sourceRows     bool
	progressCalls  int
	copyAfter      int // Progress calls before the copy is done
	lag            int64
	verifyEqual    bool
	verifyReread   bool             // Verify's results are equal from re-reads
	verifyOpts     []VerifyOptions  // every Verify call's options, in order
	fail           map[string]error // "fwd.Fence" -> error, every call
}

func newFakeServers() *fakeServers {
	return &fakeServers{fenced: map[string]bool{}, sourceRows: true, copyAfter: 2, verifyEqual: true, fail: map[string]error{}}
}

type fakeSteps struct {
	s   *fakeServers
	rev bool
}

func (f fakeSteps) dir() string {
	if f.rev {
		return "rev"
	}
	return "fwd"
}

// call records the call and returns its configured failure.
func (f fakeSteps) call(name string) error {
	f.s.calls = append(f.s.calls, f.dir()+"."+name)
	return f.s.fail[f.dir()+"."+name]
}

func (f fakeSteps) side(target bool) string {
	if target != f.rev {
		return "target"
	}
	return "source"
}

func (f fakeSteps) sub() *bool {
	if f.rev {
		return &f.s.revSub
	}
	return &f.s.fwdSub
}

func (f fakeSteps) Reverse() Steps { return fakeSteps{f.s, !f.rev} }

func (f fakeSteps) PrepareTarget(context.Context) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	return f.call("PrepareTarget")
}

func (f fakeSteps) StartCopy(context.Context) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.call("StartCopy"); err != nil {
		return err
	}
	*f.sub() = true
	f.s.targetRows = true
	return nil
}

func (f fakeSteps) SourceRows(context.Context) (int64, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	return 1000, f.call("SourceRows")
}

func (f fakeSteps) Progress(context.Context) (Progress, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.call("Progress"); err != nil {
		return Progress{}, err
	}
	p := Progress{Subscription: *f.sub(), LagBytes: -1}
	if p.Subscription {
		f.s.progressCalls++
		p.LagBytes = f.s.lag
		done := f.rev || f.s.progressCalls >= f.s.copyAfter
		st := SyncCopying
		if done {
			st = SyncReady
		}
		p.Copied = done
		p.Tables = []TableProgress{{Table: "public.users", State: st, RowsCopied: int64(100 * f.s.progressCalls), BytesCopied: int64(4096 * f.s.progressCalls)}}
	}
	return p, nil
}

func (f fakeSteps) Verify(_ context.Context, opts VerifyOptions) (VerifyResult, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.call("Verify"); err != nil {
		return VerifyResult{}, err
	}
	f.s.verifyOpts = append(f.s.verifyOpts, opts)
	r := VerifyResult{Equal: f.s.verifyEqual, Fenced: f.s.fenced[f.side(false)], CountOnly: opts.CountOnly, Reread: f.s.verifyReread}
	r.Tables = []TableCheck{{Table: "public.users", SourceRows: 10, TargetRows: 10, Equal: f.s.verifyEqual}}
	if !f.s.verifyEqual {
		r.Tables[0].TargetRows = 9
	}
	return r, nil
}

func (f fakeSteps) Fence(context.Context) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.call("Fence"); err != nil {
		return err
	}
	f.s.fenced[f.side(false)] = true
	return nil
}

func (f fakeSteps) WaitReplicas(context.Context) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	return f.call("WaitReplicas")
}

func (f fakeSteps) Unfence(context.Context) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.call("Unfence"); err != nil {
		return err
	}
	f.s.fenced[f.side(false)] = false
	return nil
}

func (f fakeSteps) WaitCaughtUp(context.Context) (health.LSN, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.call("WaitCaughtUp"); err != nil {
		return 0, err
	}
	if !*f.sub() {
		return 0, errors.New("no subscription")
	}
	return 42, nil
}

func (f fakeSteps) StopForward(context.Context) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.call("StopForward"); err != nil {
		return err
	}
	*f.sub() = false
	return nil
}

func (f fakeSteps) DropReplication(context.Context) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.call("DropReplication"); err != nil {
		return err
	}
	*f.sub() = false
	return nil
}

func (f fakeSteps) AdvanceSequences(context.Context) ([]SequenceAdvance, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	return nil, f.call("AdvanceSequences")
}

func (f fakeSteps) StartReverse(context.Context) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.call("StartReverse"); err != nil {
		return err
	}
	if *f.sub() {
		return errors.New("forward subscription still exists")
	}
	*fakeSteps{f.s, !f.rev}.sub() = true
	return nil
}

func (f fakeSteps) DeleteMoved(_ context.Context, opts DeleteOptions) (int64, error) {
	f.s.mu.Lock()
	n, err := f.deleteMoved()
	f.s.mu.Unlock()
	if err == nil && n > 0 && opts.Progress != nil {
		opts.Progress(DeleteProgress{Table: "public.users", Deleted: n, Total: n, Done: true})
	}
	return n, err
}

func (f fakeSteps) deleteMoved() (int64, error) {
	if err := f.call("DeleteMoved"); err != nil {
		return 0, err
	}
	if !f.s.fenced[f.side(false)] || *f.sub() {
		return 0, errors.New("not fenced, or publication exists")
	}
	rows := &f.s.sourceRows
	if f.rev {
		rows = &f.s.targetRows
	}
	if !*rows {
		return 0, nil
	}
	*rows = false
	return 10, nil
}

func (f fakeSteps) Cleanup(context.Context, DeleteOptions) (int64, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.call("Cleanup"); err != nil {
		return 0, err
	}
	f.s.fwdSub, f.s.revSub = false, false
	return f.deleteMoved()
}

func (f fakeSteps) Cancel(context.Context, DeleteOptions) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.call("Cancel"); err != nil {
		return err
	}
	f.s.fwdSub, f.s.revSub, f.s.targetRows = false, false, false
	f.s.fenced["source"] = false
	return nil
}

// rig is a controller over the fakes, with a settable clock.
type rig struct {
	t       *testing.T
	recs    *fakeRecords
	maps    *fakeMaps
	srv     *fakeServers
	now     time.Time
	mu      sync.Mutex
	engines int // engines built
	// holdVerifyRows is the controllers' ControllerConfig.HoldVerifyRows.
	holdVerifyRows int64
}

func testMap() *shardmap.Map {
	ep := func(p int) shardmap.Endpoint { return shardmap.Endpoint{Host: "10.0.0.1", Port: p} }
	return &shardmap.Map{
		Epoch: 5,
		Shards: []shardmap.Shard{
			{Name: "s1", Primary: ep(5432), State: shardmap.StateActive},
			{Name: "s2", Primary: ep(5433), State: shardmap.StateActive},
			{Name: "s3", Primary: ep(5434), State: shardmap.StateActive},
		},
		Distributions: []shardmap.Distribution{{Name: "users", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
			Intervals: []shardmap.Interval{
				{Lo: shardmap.NegInf(), Hi: shardmap.Int64Bound(501), Shard: "s1"},
				{Lo: shardmap.Int64Bound(501), Hi: shardmap.PosInf(), Shard: "s2"},
			}}},
		Tables: []shardmap.Table{{Name: "public.users", Kind: shardmap.Sharded, KeyColumn: "id", Distribution: "users"}},
	}
}

func newRig(t *testing.T) *rig {
	return &rig{t: t, recs: newFakeRecords(), maps: &fakeMaps{m: testMap()}, srv: newFakeServers(),
		now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
}

func (r *rig) clock() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now
}

func (r *rig) advance(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now = r.now.Add(d)
}

// controller returns a new controller, as a new leader would build one.
func (r *rig) controller() *Controller {
	c, err := NewController(ControllerConfig{
		Records: r.recs, Maps: r.maps, Now: r.clock,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Tick:   time.Millisecond, RetryMax: time.Millisecond, CutoverTimeout: 30 * time.Second,
		HoldVerifyRows: r.holdVerifyRows,
		Engines: func(mv Move, from, to shardmap.Shard) (Steps, error) {
			r.mu.Lock()
			r.engines++
			r.mu.Unlock()
			if from.Name == to.Name {
				return nil, errors.New("same shard")
			}
			return fakeSteps{s: r.srv}, nil
		},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// start creates a move of [401, 501) from s1 to s3.
func (r *rig) start(c *Controller, mode CutoverMode) string {
	r.t.Helper()
	st, err := c.Start(context.Background(), MoveRequest{ID: "m1", Distribution: "users", Interval: "[401,501)", To: "s3", Cutover: mode})
	if err != nil {
		r.t.Fatal(err)
	}
	return st.ID
}

// runUntil drives move id with a fresh driver of c until its phase is
// one of want (or it is terminal), at most 200 steps.
func (r *rig) runUntil(c *Controller, id string, want ...Phase) State {
	r.t.Helper()
	d := &driver{c: c, id: id, log: c.log}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 200; i++ {
		st := r.recs.state(r.t, id)
		if slices.Contains(want, st.Phase) || st.Phase.Terminal() {
			return st
		}
		if stop, _ := d.once(ctx); stop {
			return r.recs.state(r.t, id)
		}
	}
	st := r.recs.state(r.t, id)
	r.t.Fatalf("move %s stuck in %s (want %v): last error %q", id, st.Phase, want, st.LastError)
	return st
}

// owner is the shard owning key 450 of users.
func (r *rig) owner() string {
	s, err := r.maps.Map().Distribution("users").ShardForInt64(450)
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

func (r *rig) calls() []string {
	r.srv.mu.Lock()
	defer r.srv.mu.Unlock()
	return slices.Clone(r.srv.calls)
}

func (r *rig) resetCalls() {
	r.srv.mu.Lock()
	defer r.srv.mu.Unlock()
	r.srv.calls = nil
}
