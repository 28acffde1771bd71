package meta

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/pgshard/pgshard/shardmap"
)

// Change says who changed the map and why; both are optional and kept in
// the history.
type Change struct {
	Comment string
	Author  string
}

// Map returns the current map version of this node's state. Before the
// first map is applied it is the zero MapVersion (Epoch 0, Map nil). The
// Map is shared: do not change it.
func (n *Node) Map() MapVersion { return n.fsm.state().current() }

// History returns up to limit map versions, newest (the current one)
// first; all it keeps (the last 50) for limit <= 0.
func (n *Node) History(limit int) []MapVersion { return n.fsm.state().history(limit) }

// ApplyMap is ApplyMapChange with only a comment.
func (n *Node) ApplyMap(ctx context.Context, m *shardmap.Map, expectEpoch uint64, comment string) (uint64, error) {
	return n.ApplyMapChange(ctx, m, expectEpoch, Change{Comment: comment})
}

// ApplyMapChange makes m the shard map, if the current map is still at
// expectEpoch (0 when there is none yet), and returns the new epoch,
// expectEpoch + 1. m's own Epoch is ignored and m is not changed.
//
// Errors: a *NotLeaderError on a follower; an *InvalidMapError (errors.Is
// ErrInvalidMap) listing every problem if the map does not validate (the
// messages name the shard, interval or table at fault); a *StaleEpochError
// (errors.Is ErrStaleEpoch) if the map is at another epoch; an error
// wrapping ErrUncertain if leadership was lost or ctx ended after the
// change was proposed — read the epoch to learn whether it was applied.
// On success the change is committed on a quorum and applied on this node:
// Map returns it.
func (n *Node) ApplyMapChange(ctx context.Context, m *shardmap.Map, expectEpoch uint64, c Change) (uint64, error) {
	if m == nil {
		return 0, errors.New("meta: apply map: no map given")
	}
	if err := n.requireLeader(); err != nil {
		return 0, err
	}
	// Epochs only grow and this node's state is a prefix of the committed
	// log, so a current epoch above expectEpoch is stale for sure. One
	// below may be this new leader catching up: the state machine decides.
	if cur := n.fsm.state().epoch(); cur > expectEpoch {
		return 0, &StaleEpochError{Current: cur, Expected: expectEpoch}
	}
	if expectEpoch == math.MaxUint64 {
		return 0, errors.New("meta: apply map: the epoch cannot grow past 2^64-1")
	}
	next := m.Clone()
	next.Epoch = expectEpoch + 1
	if err := next.Validate(); err != nil {
		return 0, invalidMap(err)
	}
	text, err := next.YAML()
	if err != nil {
		return 0, fmt.Errorf("meta: apply map: %w", err)
	}
	// What is committed is the YAML text, so check that it reads back to
	// a valid map: the replicas will parse exactly this.
	back, err := shardmap.ParseYAML(text)
	if err == nil {
		err = back.Validate()
	}
	if err != nil {
		return 0, fmt.Errorf("meta: apply map: the map does not survive its YAML form (a pgshard bug): %w", err)
	}
	res, err := n.propose(ctx, cmdApplyMap, &applyMapCmd{MapYAML: string(text), ExpectEpoch: expectEpoch, Comment: c.Comment, Author: c.Author})
	if err != nil {
		return 0, fmt.Errorf("meta: apply map at epoch %d: %w", expectEpoch+1, err)
	}
	r, ok := res.(applyMapResult)
	if !ok {
		return 0, fmt.Errorf("meta: apply map: unexpected state machine response %T", res)
	}
	if r.err != nil {
		return 0, r.err
	}
	n.log.Info("shard map applied", "epoch", r.epoch, "comment", c.Comment, "author", c.Author)
	return r.epoch, nil
}

// Watch returns a channel that receives the map versions of this node's
// state with an epoch above after: at once if the current one is, then as
// new epochs are applied. The channel is unbuffered and coalesces: a slow
// receiver gets the latest version when it is ready and never blocks the
// state machine, so it may skip epochs (use History for every one). The
// channel is closed when ctx ends or the node closes; the goroutine behind
// it ends then too.
func (n *Node) Watch(ctx context.Context, after uint64) (<-chan MapVersion, error) {
	out := make(chan MapVersion)
	ok := n.spawn(func() {
		defer close(out)
		for {
			st, _, mapChanged := n.fsm.watch()
			cur := st.current()
			var send chan<- MapVersion
			if cur.Epoch > after {
				send = out
			}
			select {
			case send <- cur:
				after = cur.Epoch
			case <-mapChanged:
			case <-ctx.Done():
				return
			case <-n.ctx.Done():
				return
			}
		}
	})
	if !ok {
		return nil, ErrClosed
	}
	return out, nil
}
