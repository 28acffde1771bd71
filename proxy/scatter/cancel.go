package scatter

import (
	"context"
	"errors"
	"sync"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/wire"
)

// Canceler forwards a client's CancelRequest to the statement a session
// runs on several shards: every shard the statement has started on gets
// a CancelRequest, and a shard not started yet does not start. Its zero
// value is ready; a session keeps one and passes it in every Request.
type Canceler struct {
	mu  sync.Mutex
	run *scatterRun // the running statement, nil between statements
}

// errCanceled is a shard's start refused after the client's cancel.
var errCanceled = &wire.Error{Code: wire.SQLStateQueryCanceled, Message: "canceling statement due to user request"}

// begin registers run as the running statement.
func (c *Canceler) begin(run *scatterRun) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.run = run
	c.mu.Unlock()
}

// end unregisters run before its backends are given back: a cancel
// afterwards cannot reach a backend that another client may use.
func (c *Canceler) end(run *scatterRun) {
	if c == nil {
		return
	}
	c.mu.Lock()
	if c.run == run {
		c.run = nil
	}
	c.mu.Unlock()
}

// started records shard h of the running statement, unless the client
// has cancelled it (errCanceled: h is not recorded, nothing is sent).
func (c *Canceler) started(run *scatterRun, i int, h *scatterShard) error {
	if c == nil {
		run.shards[i] = h
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if run.canceled {
		return errCanceled
	}
	run.shards[i] = h
	return nil
}

// Cancel sends a CancelRequest to each shard of the running statement
// (none when no statement runs), in parallel, and waits for them (at
// most until ctx ends). Each backend is held for the cancel
// (pool.Conn.HoldForCancel) so it cannot be lent to another client
// before the cancel arrives. It reports whether a statement was running.
func (c *Canceler) Cancel(ctx context.Context) bool {
	c.mu.Lock()
	run := c.run
	if run == nil {
		c.mu.Unlock()
		return false
	}
	run.canceled = true
	log := run.log
	type held struct {
		name string
		conn *pool.Conn
		done func(bool)
	}
	var hs []held
	for _, h := range run.shards {
		if h == nil {
			continue
		}
		h.mu.Lock()
		finished := h.finished
		h.mu.Unlock()
		if !finished {
			hs = append(hs, held{h.name, h.conn, h.conn.HoldForCancel()})
		}
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Go(func() {
			err := h.conn.Cancel(ctx)
			h.done(err == nil || errors.Is(err, pool.ErrCancelNotSent))
			if err != nil {
				log.Warn("scatter: forward cancel request failed", "shard", h.name, "server", h.conn.Addr, "err", err)
			}
		})
	}
	wg.Wait()
	return true
}
