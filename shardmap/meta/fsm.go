package meta

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// fsm is the raft.FSM: it applies committed log entries to the state and
// tells waiters about new states. Apply never blocks on readers: it swaps
// a pointer and closes a channel.
type fsm struct {
	log *slog.Logger
	cur atomic.Pointer[state]

	mu         sync.Mutex    // serialises publish; guards the channels
	changed    chan struct{} // closed (and replaced) at every new state
	mapChanged chan struct{} // closed (and replaced) when the epoch changes
}

func newFSM(log *slog.Logger) *fsm {
	f := &fsm{log: log, changed: make(chan struct{}), mapChanged: make(chan struct{})}
	f.cur.Store(newState())
	return f
}

// state returns the current state; it is never changed.
func (f *fsm) state() *state { return f.cur.Load() }

// watch returns the current state and channels that are closed when it is
// replaced (changed) or when a state with another epoch replaces it
// (mapChanged). Read the channels before acting on the state, so that a
// change after the read is never missed.
func (f *fsm) watch() (s *state, changed, mapChanged <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur.Load(), f.changed, f.mapChanged
}

// publish makes s the current state and wakes the waiters.
func (f *fsm) publish(s *state) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.cur.Swap(s)
	close(f.changed)
	f.changed = make(chan struct{})
	if old.epoch() != s.epoch() {
		close(f.mapChanged)
		f.mapChanged = make(chan struct{})
	}
}

// Apply implements raft.FSM. A committed entry that this binary cannot
// decode panics: it was written by a newer pgshard (or is corrupt), and
// skipping it would silently make this replica differ from the others.
// The node stops; upgrading its binary lets it apply the entry.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	c, err := decodeCommand(l.Data)
	if err != nil {
		f.log.Error("cannot apply a committed raft log entry; stopping", "index", l.Index, "term", l.Term, "error", err)
		panic(fmt.Sprintf("meta: raft log entry %d cannot be applied by this pgshard (%v); upgrade this node's binary", l.Index, err))
	}
	next, res := f.state().apply(c)
	f.publish(next)
	return res
}

// Snapshot implements raft.FSM: it captures the current (immutable) state;
// Persist writes it while Apply goes on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{st: f.state()}, nil
}

// Restore implements raft.FSM: it reads a snapshot into a fresh state and
// swaps it in whole. On error the old state stays.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.publish(s)
	return nil
}

// fsmSnapshot is a state being written to a snapshot.
type fsmSnapshot struct{ st *state }

// Persist implements raft.FSMSnapshot.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.st); err != nil {
		_ = sink.Cancel()
		return err
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("meta: snapshot: %w", err)
	}
	return nil
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() {}
