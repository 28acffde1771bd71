// Package scatter runs one statement on several shards at once and
// answers with one result: the merged rows of a read (package
// router/merge), the summed row count of a write, the concatenated data
// of a COPY TO, a split INSERT's RETURNING rows in the client's order;
// an atomic statement commits on every shard or on none (EndTransactions,
// also used by the proxy's COPY FROM); DDL runs on every shard, all or
// none (Utility). The session gives Run server connections through
// Backends and sends what Run returns.
package scatter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/router/merge"
	"github.com/pgshard/pgshard/wire"
)

// Scatter-gather tuning.
const (
	// scatterChunkBytes is how many DataRow bytes a shard's reader batches
	// before handing them to the merge (it also hands over what it has
	// whenever the server has nothing more buffered).
	scatterChunkBytes = 32 << 10
	// scatterQueue is how many chunks may wait per shard: with the chunk
	// being filled and the one being merged, a shard holds at most about
	// (scatterQueue+2) * scatterChunkBytes before its reader stops reading
	// (backpressure through the server's socket).
	scatterQueue = 2
	// scatterFlushBytes is how much output collects before it is handed to
	// Request.Flush.
	scatterFlushBytes = 64 << 10
	// ReplyTimeout bounds the wait for ReadyForQuery after a cancel;
	// a shard that does not answer by then is closed.
	ReplyTimeout = 5 * time.Second
	// scatterAttempts is how many backends are tried per shard when a lent
	// one turns out to be dead before anything was sent on it.
	scatterAttempts = 3
)

// scatterDrainTimeout is how long shards may go on sending rows the merge
// no longer needs (after LIMIT, or after another shard failed) before
// their queries are cancelled, unless Request.DrainTimeout says
// otherwise.
const scatterDrainTimeout = 250 * time.Millisecond

// Backends lends the server connections of a scatter: the proxy's pools,
// for the session's user and database.
type Backends interface {
	// WaitSwitch holds a statement for shard's primary while the shard
	// switches its primary (an error for the client when it cannot wait).
	WaitSwitch(ctx context.Context, shard string) error
	// Pool returns the pool of shard's primary (addr "") or of its
	// replica at addr.
	Pool(ctx context.Context, shard, addr string) (*pool.Pool, error)
	// Acquire lends a backend of p, with pool errors turned into the
	// client's (*wire.Error).
	Acquire(ctx context.Context, p *pool.Pool) (*pool.Conn, error)
}

// TxBackends is Backends for a statement inside a session's transaction
// over several shards: the statement runs on the session's server
// connections in that transaction, not on connections of the pools.
type TxBackends interface {
	Backends
	// Held returns the session's connection of shard, idle in its
	// transaction (opened there if it had none), with no handler.
	Held(ctx context.Context, shard string) (*pool.Conn, error)
	// Return gives a held connection back to the session, with the
	// transaction status it ended in; ok false means its protocol state
	// is unknown (the session must not use it again).
	Return(shard string, be *pool.Conn, status byte, ok bool)
}

// Request is one statement to run on several shards at once.
type Request struct {
	// Shards are the target shards; rows are concatenated (and ties of a
	// k-way merge broken) in this order.
	Shards []string
	// Replicas, when set, names for a shard the replica that runs the
	// statement instead of its primary (read splitting).
	Replicas map[string]string
	// SQL is sent to every shard as one simple-protocol Query: the
	// planner's ShardSQL, or the client's text. It must be one statement.
	SQL string
	// PerShardSQL, when set, replaces SQL for the shards it names (the
	// rows of a multi-row INSERT that belong to each shard).
	PerShardSQL map[string]string
	// Ext, when set, runs the statement through the extended protocol
	// with the client's parameters instead of as a simple Query: it
	// appends the Parse, Bind, Describe, Execute and Sync of a statement.
	Ext interface {
		AppendFrames(b []byte, sql string) []byte
	}
	// NoDescription leaves the RowDescription out of the output (an
	// Execute whose portal the client did not describe).
	NoDescription bool
	// Atomic runs the statement inside a transaction on every shard,
	// committed only when every shard succeeded and rolled back
	// everywhere otherwise (a multi-row INSERT split over shards).
	Atomic bool
	// Commit, when set, commits an Atomic statement's transactions once
	// every shard succeeded, instead of EndTransactions (the proxy's
	// two-phase commit). It must leave every connection outside a
	// transaction block, or broken.
	Commit CommitFunc
	// RowOrder, when set, gives for each shard the positions its
	// returned rows take in the output (INSERT ... RETURNING of a split
	// INSERT returns rows in the client's VALUES order); Spec is then
	// ignored.
	RowOrder map[string][]int
	// CopyOut marks COPY ... TO STDOUT: the shards' data is concatenated
	// in shard order (one CSV header, one binary header and trailer).
	CopyOut bool
	// CopyHeader says the COPY writes a header line (CSV HEADER).
	CopyHeader bool
	// Spec says how to merge the shards' rows; nil means concatenate in
	// shard order. Statements that return no rows (writes) ignore it:
	// their row counts are summed.
	Spec *merge.Spec
	// Prepare, when set, is called on each lent backend before the
	// statement is sent (to apply the session's parameters).
	Prepare func(ctx context.Context, be *pool.Conn) error
	// Flush, when set, takes output early: it is called with the frames
	// produced so far whenever more than scatterFlushBytes are pending, so
	// a large result streams to the client instead of piling up. What it
	// was given is not returned again; after a Flush, an error means the
	// client has seen part of the result (as when a server fails midway).
	Flush func(frames []byte) error
	// TextByteOrder says the database sorts text bytewise by default
	// (its collation is "C"); otherwise a merge that sorts by text
	// without COLLATE "C" is refused.
	TextByteOrder bool
	// MaxBufferedBytes bounds an aggregating or DISTINCT merge (see
	// merge.Merger.MaxBufferedBytes); 0 means the merger's default.
	MaxBufferedBytes int64
	// Dst is the buffer the output is appended to (may be nil).
	Dst []byte
	// Canceler, when set, lets the client's CancelRequest reach every
	// shard of the statement (see Canceler).
	Canceler *Canceler
	// Log receives the executor's warnings (a shard that does not answer
	// a cancel); nil discards them.
	Log *slog.Logger
	// DrainTimeout, when positive, replaces the 250 ms that shards may go
	// on sending rows the merge no longer needs (a test on a loaded
	// machine gives the drain the time it needs).
	DrainTimeout time.Duration
}

// Run runs req's statement on every target shard in parallel and
// returns the frames the client gets for it, appended to req.Dst:
// RowDescription, DataRows and CommandComplete of the merged result (or
// just CommandComplete with the summed row count for a write). It does not
// add ReadyForQuery. An error is a *wire.Error: a shard's ErrorResponse
// (its SQLSTATE, its message prefixed with the shard's name), 0A000 for a
// result that cannot be merged, 53300 when a pool is exhausted, 57014 when
// ctx ends. With an error, the returned slice holds req.Dst and whatever
// frames were produced before the failure (never a CommandComplete): the
// caller may send them before the ErrorResponse, as a server failing
// midway would, or drop them.
//
// Backends are acquired in shard name order (so concurrent scatters cannot
// deadlock on each other's pools) and each one's statement is sent as soon
// as it is acquired. Every backend is back in its pool (or closed) when
// scatter returns: rows the merge did not need (LIMIT reached, another
// shard failed) are drained, and a shard still busy after
// the drain timeout is cancelled and its connection closed.
func Run(ctx context.Context, b Backends, req Request) ([]byte, error) {
	if len(req.Shards) == 0 {
		return req.Dst, wire.Errorf(wire.SQLStateInternalError, "scatter: no target shards")
	}
	for i, name := range req.Shards {
		if slices.Contains(req.Shards[:i], name) {
			return req.Dst, wire.Errorf(wire.SQLStateInternalError, "scatter: shard %q listed twice", name)
		}
	}
	run := &scatterRun{
		shards:  make([]*scatterShard, len(req.Shards)),
		failed:  make(chan struct{}),
		arrived: make(chan struct{}, 1),
		drain:   scatterDrainTimeout,
		log:     req.Log,
		commit:  req.Commit,
	}
	if run.log == nil {
		run.log = slog.New(slog.DiscardHandler)
	}
	if req.DrainTimeout > 0 {
		run.drain = req.DrainTimeout
	}
	req.Canceler.begin(run)
	out, err := scatterExec(ctx, b, &req, run)
	req.Canceler.end(run)
	if ferr := run.finish(ctx, req.Atomic && err == nil); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		out = dropCommandComplete(out, req.Dst)
	}
	return out, err
}

// dropCommandComplete removes a trailing CommandComplete from out (which
// extends dst): a statement that failed afterwards (its commit on some
// shard) must not look completed.
func dropCommandComplete(out, dst []byte) []byte {
	i := len(dst)
	last := -1
	for i+wire.HeaderLen <= len(out) {
		n := int(binary.BigEndian.Uint32(out[i+1:])) + 1
		if n < wire.HeaderLen || i+n > len(out) {
			break
		}
		last = i
		i += n
	}
	if last >= 0 && out[last] == 'C' {
		return out[:last]
	}
	return out
}

// scatterExec starts the statement on every shard and merges the results.
func scatterExec(ctx context.Context, b Backends, req *Request, run *scatterRun) ([]byte, error) {
	order := make([]int, len(req.Shards))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(req.Shards[a], req.Shards[b]) })
	for _, i := range order {
		if err := scatterStart(ctx, b, req, run, i, scatterFrames(req, req.Shards[i])); err != nil {
			return req.Dst, err
		}
	}

	// The first event of each shard: its RowDescription, or the end of a
	// statement that returns no rows.
	first := make([]scatterEvent, len(run.shards))
	for i, h := range run.shards {
		ev, err := run.next(ctx, h)
		if err != nil {
			return req.Dst, err
		}
		if ev.end && ev.err != nil {
			return req.Dst, ev.err
		}
		first[i] = ev
	}
	var descs [][]byte
	for _, ev := range first {
		if ev.desc != nil {
			descs = append(descs, ev.desc)
		}
	}
	switch len(descs) {
	case 0:
		return scatterWriteResult(req.Dst, run, first)
	case len(first):
	default:
		return req.Dst, &wire.Error{Code: wire.SQLStateFeatureNotSupported,
			Message: "cross-shard query: some shards returned rows and others did not",
			Detail:  "Shards: " + strings.Join(req.Shards, ", ") + "."}
	}
	if req.CopyOut {
		return scatterCopyOut(ctx, req, run, descs)
	}
	if err := merge.CheckRowDescriptions(descs); err != nil {
		return req.Dst, scatterMergeError(err, req.Shards)
	}
	if req.RowOrder != nil {
		return scatterOrdered(ctx, req, run, descs[0])
	}
	spec := req.Spec
	if spec == nil {
		spec = &merge.Spec{Limit: -1}
	}
	m, err := merge.New(spec, descs[0])
	if err != nil {
		return req.Dst, scatterMergeError(err, req.Shards)
	}
	m.MaxBufferedBytes = req.MaxBufferedBytes
	if err := m.CheckTextOrder(req.TextByteOrder); err != nil {
		return req.Dst, scatterMergeError(err, req.Shards)
	}

	out := req.Dst
	if !req.NoDescription {
		out = m.RowDescription(out)
	}
	sources := make([]merge.Source, len(run.shards))
	srcs := make([]scatterSource, len(run.shards))
	for i, h := range run.shards {
		srcs[i] = scatterSource{ctx: ctx, run: run, h: h}
		sources[i] = &srcs[i]
	}
	m.Arrivals = &scatterArrivals{ctx: ctx, run: run, srcs: srcs}
	n, err := m.Merge(sources, func(row []byte) error {
		out = append(out, row...)
		if req.Flush != nil && len(out) >= scatterFlushBytes {
			if err := req.Flush(out); err != nil {
				return &scatterFlushError{err}
			}
			out = out[:0]
		}
		return nil
	})
	if err != nil {
		var fe *scatterFlushError
		if errors.As(err, &fe) {
			return out, fe.err
		}
		return out, scatterMergeError(err, req.Shards)
	}
	// A statement returning rows that is not a SELECT (UPDATE ...
	// RETURNING) keeps its command in the tag; the shards' tags are known
	// when every row was read.
	tag := ""
	if srcs[0].ended {
		tag = srcs[0].tag
	}
	if verb, ok := scatterTagPrefix(tag); ok && verb != "SELECT" {
		return scatterAppendTag(out, verb+" "+strconv.FormatInt(n, 10)), nil
	}
	return merge.AppendCommandComplete(out, n), nil
}

// scatterFlushError carries an error of Request.Flush through Merge.
type scatterFlushError struct{ err error }

func (e *scatterFlushError) Error() string { return e.err.Error() }

// scatterStart lends a backend of shard i, prepares it, and sends it the
// statement.
func scatterStart(ctx context.Context, b Backends, req *Request, run *scatterRun, i int, query []byte) error {
	name := req.Shards[i]
	if req.Replicas[name] == "" {
		if err := b.WaitSwitch(ctx, name); err != nil {
			return err
		}
	}
	if tb, ok := b.(TxBackends); ok {
		return scatterStartHeld(ctx, tb, req, run, i, query)
	}
	replica := req.Replicas[name]
	p, err := b.Pool(ctx, name, replica)
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		be, err := b.Acquire(ctx, p)
		if err != nil && replica != "" {
			// The replica cannot serve (down since its last probe): the
			// primary can.
			replica = ""
			if p, err = b.Pool(ctx, name, ""); err != nil {
				return err
			}
			be, err = b.Acquire(ctx, p)
		}
		if err != nil {
			return err
		}
		if req.Prepare != nil {
			if err := req.Prepare(ctx, be); err != nil {
				p.Discard(be)
				if be.Broken() && attempt < scatterAttempts {
					continue // it died just now; nothing was sent
				}
				return ShardError(name, err)
			}
		}
		h := newScatterShard(run, name, be)
		h.atomic = req.Atomic
		h.copyOK = req.CopyOut
		if err := be.SetHandler(h); err != nil {
			p.Discard(be)
			if attempt < scatterAttempts {
				continue
			}
			return ShardError(name, err)
		}
		if err := req.Canceler.started(run, i, h); err != nil {
			// Cancelled before anything was sent: the backend is clean.
			_ = be.SetHandler(nil)
			p.Release(be)
			return err
		}
		be.UnnamedGen++ // a simple query replaces the unnamed statement
		if _, err := be.NetConn.Write(query); err != nil {
			// The reader sees the failure too; finish closes the backend.
			h.markBad()
			return &wire.Error{Code: wire.SQLStateConnectionFailure,
				Message: fmt.Sprintf("shard %s: could not send the query: %v", name, err), Err: err}
		}
		return nil
	}
}

// scatterStartHeld is scatterStart on the session's connection of shard i
// in its transaction (TxBackends).
func scatterStartHeld(ctx context.Context, tb TxBackends, req *Request, run *scatterRun, i int, query []byte) error {
	name := req.Shards[i]
	be, err := tb.Held(ctx, name)
	if err != nil {
		return ShardError(name, err)
	}
	h := newScatterShard(run, name, be)
	h.held = tb
	h.copyOK = req.CopyOut
	if err := be.SetHandler(h); err != nil {
		tb.Return(name, be, 'E', false)
		return ShardError(name, err)
	}
	run.shards[i] = h
	be.UnnamedGen++
	if _, err := be.NetConn.Write(query); err != nil {
		h.markBad()
		return &wire.Error{Code: wire.SQLStateConnectionFailure,
			Message: fmt.Sprintf("shard %s: could not send the query: %v", name, err), Err: err}
	}
	return nil
}

// ShardError reports a failure to prepare a backend of a shard.
func ShardError(shard string, err error) error {
	var we *wire.Error
	if errors.As(err, &we) {
		e := *we
		e.Message = "shard " + shard + ": " + e.Message
		return &e
	}
	var pe interface{ SQLState() string }
	code := wire.SQLStateConnectionFailure
	if errors.As(err, &pe) {
		code = pe.SQLState()
	}
	return &wire.Error{Code: code, Message: fmt.Sprintf("shard %s: %v", shard, err), Err: err}
}

// scatterRun is the state one scatter shares between its shards.
type scatterRun struct {
	shards []*scatterShard // in request order; nil until started

	errOnce sync.Once
	err     error         // first shard error
	failed  chan struct{} // closed when err is set
	arrived chan struct{} // a shard queued an event (capacity 1: merge.Arrivals)

	drain  time.Duration // see Request.DrainTimeout
	log    *slog.Logger  // see Request.Log, never nil
	commit CommitFunc    // see Request.Commit

	canceled bool // the client cancelled the statement; under Canceler.mu
}

// fail records the statement's first shard error.
func (r *scatterRun) fail(err error) {
	r.errOnce.Do(func() {
		r.err = err
		close(r.failed)
	})
}

// scatterArrivals tells the merge which shards have rows
// (merge.Arrivals).
type scatterArrivals struct {
	ctx  context.Context
	run  *scatterRun
	srcs []scatterSource
}

// Ready implements merge.Arrivals.
func (a *scatterArrivals) Ready(i int) bool {
	src := &a.srcs[i]
	if src.off < len(src.chunk) || src.ended || len(src.h.events) > 0 {
		return true
	}
	select {
	case <-a.run.failed:
		return true
	case <-a.ctx.Done():
		return true
	default:
		return false
	}
}

// Wait implements merge.Arrivals: a shard's event (or failure, or the end
// of ctx, which Next then reports) since the last call.
func (a *scatterArrivals) Wait() {
	select {
	case <-a.run.arrived:
	case <-a.run.failed:
	case <-a.ctx.Done():
	}
}

// next returns shard h's next event, or an error when another shard
// failed or ctx ended.
func (r *scatterRun) next(ctx context.Context, h *scatterShard) (scatterEvent, error) {
	select {
	case ev := <-h.events:
		return ev, nil
	case <-r.failed:
		return scatterEvent{}, r.err
	case <-ctx.Done():
		return scatterEvent{}, &wire.Error{Code: wire.SQLStateQueryCanceled,
			Message: "canceling statement: the session ended", Err: ctx.Err()}
	}
}

// finish stops the shards' event delivery, waits for each to answer its
// ReadyForQuery (cancelling those still busy after the drain timeout,
// at once when ctx has ended), ends the transactions of an atomic
// statement (commit on every shard, else rollback), and returns every
// backend to its pool or closes it. It returns an error when a shard ran
// more than one statement or was left inside a transaction, or when a
// commit failed.
func (r *scatterRun) finish(ctx context.Context, commit bool) error {
	var started []*scatterShard
	for _, h := range r.shards {
		if h != nil {
			started = append(started, h)
			h.drain()
		}
	}
	if len(started) == 0 {
		return nil
	}
	drain := r.drain
	if ctx.Err() != nil {
		drain = 0
	}
	busy := scatterWait(started, drain)
	if len(busy) > 0 {
		var wg sync.WaitGroup
		for _, h := range busy {
			wg.Go(h.cancel)
		}
		wg.Wait()
		for _, h := range scatterWait(busy, ReplyTimeout) {
			h.run.log.Warn("scatter: shard did not answer after cancel; closing the connection", "shard", h.name, "server", h.conn.Addr)
		}
	}
	var errs []error
	if started[0].atomic {
		var txs []Tx
		for _, h := range started {
			h.drain()
			_ = h.conn.SetHandler(nil)
			h.mu.Lock()
			open := h.finished && h.ok && !h.bad && !h.canceled && (h.status == 'T' || h.status == 'E')
			if open {
				h.status = 'I'
			}
			h.mu.Unlock()
			if open {
				txs = append(txs, Tx{Name: h.name, Conn: h.conn})
			} else if commit {
				// Its transaction is lost: commit none of the others.
				commit = false
				errs = append(errs, &wire.Error{Code: wire.SQLStateConnectionFailure,
					Message: fmt.Sprintf("shard %s: its transaction was lost before the commit; rolled back on every shard", h.name)})
			}
		}
		end := func(ctx context.Context, txs []Tx) error { return EndTransactions(ctx, txs, commit) }
		if commit && r.commit != nil {
			end = r.commit
		}
		if err := end(ctx, txs); err != nil {
			errs = append(errs, err)
		}
	}
	for _, h := range started {
		if err := h.giveBack(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// scatterWait waits up to d for the shards to reach ReadyForQuery and
// returns those that did not.
func scatterWait(shards []*scatterShard, d time.Duration) []*scatterShard {
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	var late []*scatterShard
	for _, h := range shards {
		if timeout == nil {
			select {
			case <-h.done:
			default:
				late = append(late, h)
			}
			continue
		}
		select {
		case <-h.done:
		case <-timeout:
			timeout = nil
			late = append(late, h)
		}
	}
	return late
}
