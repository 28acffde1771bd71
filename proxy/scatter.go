package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
	// scatterRequest.Flush.
	scatterFlushBytes = 64 << 10
	// scatterReplyTimeout bounds the wait for ReadyForQuery after a cancel;
	// a shard that does not answer by then is closed.
	scatterReplyTimeout = 5 * time.Second
	// scatterAttempts is how many backends are tried per shard when a lent
	// one turns out to be dead before anything was sent on it.
	scatterAttempts = 3
)

// scatterDrainTimeout is how long shards may go on sending rows the merge
// no longer needs (after LIMIT, or after another shard failed) before
// their queries are cancelled. A variable only so that a test on a loaded
// machine can give the drain the time it needs.
var scatterDrainTimeout = 250 * time.Millisecond

// scatterRequest is one statement to run on several shards at once.
type scatterRequest struct {
	// Shards are the target shards; rows are concatenated (and ties of a
	// k-way merge broken) in this order.
	Shards []string
	User   *userState
	DB     string
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
	// with the client's parameters instead of as a simple Query.
	Ext *scatterExt
	// NoDescription leaves the RowDescription out of the output (an
	// Execute whose portal the client did not describe).
	NoDescription bool
	// Atomic runs the statement inside a transaction on every shard,
	// committed only when every shard succeeded and rolled back
	// everywhere otherwise (a multi-row INSERT split over shards).
	Atomic bool
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
}

// scatter runs req's statement on every target shard in parallel and
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
// scatterDrainTimeout is cancelled and its connection closed.
func (s *Server) scatter(ctx context.Context, req scatterRequest) ([]byte, error) {
	if len(req.Shards) == 0 {
		return req.Dst, wire.Errorf(wire.SQLStateInternalError, "scatter: no target shards")
	}
	for i, name := range req.Shards {
		if slices.Contains(req.Shards[:i], name) {
			return req.Dst, wire.Errorf(wire.SQLStateInternalError, "scatter: shard %q listed twice", name)
		}
	}
	run := &scatterRun{
		shards: make([]*scatterShard, len(req.Shards)),
		failed: make(chan struct{}),
	}
	out, err := s.scatterExec(ctx, &req, run)
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
func (s *Server) scatterExec(ctx context.Context, req *scatterRequest, run *scatterRun) ([]byte, error) {
	order := make([]int, len(req.Shards))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(req.Shards[a], req.Shards[b]) })
	for _, i := range order {
		if err := s.scatterStart(ctx, req, run, i, scatterFrames(req, req.Shards[i])); err != nil {
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

// scatterFlushError carries an error of scatterRequest.Flush through Merge.
type scatterFlushError struct{ err error }

func (e *scatterFlushError) Error() string { return e.err.Error() }

// scatterStart lends a backend of shard i, prepares it, and sends it the
// statement.
func (s *Server) scatterStart(ctx context.Context, req *scatterRequest, run *scatterRun, i int, query []byte) error {
	name := req.Shards[i]
	if req.Replicas[name] == "" {
		if err := s.waitSwitch(ctx, name); err != nil {
			return err
		}
	}
	replica := req.Replicas[name]
	p, err := s.poolAt(ctx, name, replica, req.User, req.DB)
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		be, err := s.acquire(ctx, p)
		if err != nil && replica != "" {
			// The replica cannot serve (down since its last probe): the
			// primary can.
			replica = ""
			if p, err = s.poolAt(ctx, name, "", req.User, req.DB); err != nil {
				return err
			}
			be, err = s.acquire(ctx, p)
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
				return scatterShardError(name, err)
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
			return scatterShardError(name, err)
		}
		run.shards[i] = h
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

// scatterShardError reports a failure to prepare a backend of a shard.
func scatterShardError(shard string, err error) error {
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
}

// fail records the statement's first shard error.
func (r *scatterRun) fail(err error) {
	r.errOnce.Do(func() {
		r.err = err
		close(r.failed)
	})
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
// ReadyForQuery (cancelling those still busy after scatterDrainTimeout,
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
	drain := scatterDrainTimeout
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
		for _, h := range scatterWait(busy, scatterReplyTimeout) {
			slog.Warn("scatter: shard did not answer after cancel; closing the connection", "shard", h.name, "server", h.conn.Addr)
		}
	}
	var errs []error
	if started[0].atomic {
		var txs []openTx
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
				txs = append(txs, openTx{name: h.name, conn: h.conn})
			}
		}
		if err := endTransactions(ctx, txs, commit); err != nil {
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

// scatterEvent is what a shard's reader hands to the merge, in order: a
// RowDescription (when the statement returns rows), chunks of DataRows,
// and one end event.
type scatterEvent struct {
	desc  []byte // a copy of the RowDescription frame
	rows  []byte // whole DataRow frames
	end   bool
	tag   string // CommandComplete tag of the end event
	empty bool   // EmptyQueryResponse instead of CommandComplete
	err   error  // the shard's error, for the end event
}

// scatterShard runs the statement on one shard: it is the backend's
// pool.Handler while the statement runs.
type scatterShard struct {
	run    *scatterRun
	name   string
	conn   *pool.Conn
	events chan scatterEvent
	free   chan []byte   // chunk buffers the merge is done with
	stop   chan struct{} // closed when nobody reads events any more
	done   chan struct{} // closed at ReadyForQuery or a read failure

	// Reader goroutine only.
	chunk   []byte
	gotDesc bool
	ended   bool // the end event was produced
	atomic  bool // the statement runs in a transaction the proxy opened
	copyOK  bool // the statement is a COPY TO STDOUT the proxy concatenates
	begun   bool // atomic: that BEGIN has been answered
	copyOut bool // in a refused COPY TO STDOUT

	stopOnce sync.Once
	mu       sync.Mutex
	finished bool  // ReadyForQuery seen or the read failed
	ok       bool  // the backend can go back to the pool
	bad      bool  // protocol state unknown: close the backend
	canceled bool  // a CancelRequest was sent: close the backend
	status   byte  // transaction status of the final ReadyForQuery
	extra    error // a second result set or a non-idle status
}

func newScatterShard(run *scatterRun, name string, be *pool.Conn) *scatterShard {
	return &scatterShard{
		run:    run,
		name:   name,
		conn:   be,
		events: make(chan scatterEvent, scatterQueue),
		free:   make(chan []byte, scatterQueue+1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
}

// drain makes the reader drop whatever the shard still sends.
func (h *scatterShard) drain() { h.stopOnce.Do(func() { close(h.stop) }) }

func (h *scatterShard) markBad() {
	h.mu.Lock()
	h.bad = true
	h.mu.Unlock()
}

// send hands an event to the merge, waiting while its queue is full,
// unless the shard is being drained.
func (h *scatterShard) send(ev scatterEvent) {
	select {
	case h.events <- ev:
	case <-h.stop:
	}
}

// sendRows hands over the batched DataRows.
func (h *scatterShard) sendRows() {
	if len(h.chunk) == 0 {
		return
	}
	select {
	case <-h.stop:
		h.chunk = h.chunk[:0]
		return
	default:
	}
	rows := h.chunk
	h.chunk = nil
	select {
	case h.chunk = <-h.free:
	default:
	}
	h.send(scatterEvent{rows: rows})
}

// end produces the end event (once).
func (h *scatterShard) end(ev scatterEvent) {
	if h.ended {
		return
	}
	h.ended = true
	ev.end = true
	if ev.err != nil {
		h.chunk = h.chunk[:0]
		h.run.fail(ev.err)
	} else {
		h.sendRows()
	}
	h.send(ev)
}

// setExtra records why the backend's answer does not fit one statement.
func (h *scatterShard) setExtra(err error) {
	h.mu.Lock()
	if h.extra == nil {
		h.extra = err
	}
	h.mu.Unlock()
}

func (h *scatterShard) errorf(code, format string, args ...any) *wire.Error {
	return &wire.Error{Code: code, Message: "shard " + h.name + ": " + fmt.Sprintf(format, args...)}
}

// Frame implements pool.Handler. It never releases the backend itself:
// finish does, once the merge is over.
func (h *scatterShard) Frame(c *pool.Conn, typ byte, frame []byte) bool {
	if h.atomic && !h.begun {
		switch typ {
		case 'C', 'N', 'S':
			return false
		case 'Z':
			h.begun = true
			return false
		}
	}
	if h.copyOK {
		switch typ {
		case 'H': // CopyOutResponse: the copy's "row description"
			typ = 'T'
		case 'd': // CopyData: a "row"
			typ = 'D'
		case 'c': // CopyDone
			return false
		}
	}
	switch typ {
	case 'D':
		if !h.gotDesc || h.ended {
			h.setExtra(h.errorf(wire.SQLStateFeatureNotSupported, "a multi-statement query cannot run on several shards"))
			return false
		}
		select {
		case <-h.stop:
			return false // draining
		default:
		}
		h.chunk = append(h.chunk, frame...)
		if len(h.chunk) >= scatterChunkBytes {
			h.sendRows()
		}
	case 'T':
		if h.gotDesc || h.ended {
			h.setExtra(h.errorf(wire.SQLStateFeatureNotSupported, "a multi-statement query cannot run on several shards"))
			return false
		}
		h.gotDesc = true
		h.send(scatterEvent{desc: bytes.Clone(frame)})
	case 'C':
		if h.copyOut {
			return false
		}
		if h.ended {
			h.setExtra(h.errorf(wire.SQLStateFeatureNotSupported, "a multi-statement query cannot run on several shards"))
			return false
		}
		h.end(scatterEvent{tag: cstring(frame[wire.HeaderLen:])})
	case 'I': // EmptyQueryResponse
		h.end(scatterEvent{empty: true})
	case 'E':
		if h.ended {
			// After CopyFail, or in a later statement of a multi-statement
			// query: the statement has failed already or will be refused.
			return false
		}
		h.end(scatterEvent{err: &wire.Error{
			Code:    wire.ErrorField(frame, 'C'),
			Message: "shard " + h.name + ": " + wire.ErrorField(frame, 'M'),
			Detail:  wire.ErrorField(frame, 'D'),
			Hint:    wire.ErrorField(frame, 'H'),
		}})
	case 'G': // CopyInResponse: refuse the data; the server answers E, Z
		h.end(scatterEvent{err: h.errorf(wire.SQLStateFeatureNotSupported, "COPY cannot run on several shards")})
		_, _ = c.NetConn.Write(scatterCopyFail)
	case 'H': // CopyOutResponse: its CopyData, CopyDone and C are dropped
		h.copyOut = true
		h.end(scatterEvent{err: h.errorf(wire.SQLStateFeatureNotSupported, "COPY cannot run on several shards")})
	case 'd', 'c': // CopyData, CopyDone of a refused COPY TO STDOUT
	case '1', '2', 'n', 't': // ParseComplete, BindComplete, NoData, ParameterDescription
	case 'N', 'S', 'A': // NoticeResponse, ParameterStatus, NotificationResponse
	case 'Z':
		status := byte(0)
		if len(frame) > wire.HeaderLen {
			status = frame[wire.HeaderLen]
		}
		if !h.ended {
			h.end(scatterEvent{err: h.errorf(wire.SQLStateProtocolViolation, "the server answered without completing the statement")})
		}
		h.mu.Lock()
		if h.finished {
			h.mu.Unlock()
			h.markBad()
			return false
		}
		h.finished = true
		h.status = status
		h.ok = (status == 'I' || h.atomic) && !h.bad && !h.canceled
		if (status == 'T' || status == 'E') && !h.atomic {
			if h.extra == nil {
				h.extra = &wire.Error{Code: wire.SQLStateFeatureNotSupported,
					Message: "shard " + h.name + ": a statement on several shards cannot open a transaction",
					Hint:    "Transactions run on one shard: add a condition on the sharding key."}
			}
		}
		h.mu.Unlock()
		close(h.done)
	default:
		h.markBad()
		h.end(scatterEvent{err: h.errorf(wire.SQLStateProtocolViolation, "unexpected message type %q from the server", typ)})
	}
	return false
}

// Flush implements pool.Handler: rows batched so far go to the merge when
// the server has nothing more buffered.
func (h *scatterShard) Flush(*pool.Conn) { h.sendRows() }

// Fail implements pool.Handler.
func (h *scatterShard) Fail(_ *pool.Conn, err error) {
	h.end(scatterEvent{err: &wire.Error{Code: wire.SQLStateConnectionFailure,
		Message: "shard " + h.name + ": lost the server connection", Err: err}})
	h.mu.Lock()
	h.bad = true
	first := !h.finished
	h.finished = true
	h.mu.Unlock()
	if first {
		close(h.done)
	}
}

// cancel sends a CancelRequest for a shard whose statement is still
// running. The backend is closed afterwards rather than reused, so a late
// cancel can never hit another client's query.
func (h *scatterShard) cancel() {
	h.mu.Lock()
	if h.finished {
		h.mu.Unlock()
		return
	}
	h.canceled = true
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), scatterReplyTimeout)
	defer cancel()
	if err := h.conn.Cancel(ctx); err != nil {
		slog.Debug("scatter: cancel failed", "shard", h.name, "server", h.conn.Addr, "err", err)
	}
}

// giveBack detaches the handler and returns the backend to its pool, or
// closes it when its state is not clean. It returns the shard's
// statement-level problem (extra result, open transaction), if any.
func (h *scatterShard) giveBack() error {
	h.drain()
	_ = h.conn.SetHandler(nil) // the handler no longer runs after this
	h.mu.Lock()
	ok := h.finished && h.ok && !h.canceled && !h.bad
	extra := h.extra
	if h.canceled {
		extra = nil // whatever happened after the cancel is moot
	}
	h.mu.Unlock()
	if ok {
		h.conn.Pool().Release(h.conn)
	} else {
		h.conn.Pool().Discard(h.conn)
	}
	if h.conn.Aborted() {
		// The shard map replaced or fenced the server during the
		// statement: what it answered does not count.
		return &wire.Error{Code: wire.SQLStateConnectionFailure,
			Message: "shard " + h.name + ": server connection aborted: the server is no longer the primary of its shard",
			Hint:    "Retry the statement."}
	}
	return extra
}

// scatterCopyFail is a CopyFail message.
var scatterCopyFail = func() []byte {
	msg := "COPY cannot run on several shards through pgshard"
	b := []byte{'f', 0, 0, 0, 0}
	b = append(b, msg...)
	b = append(b, 0)
	binary.BigEndian.PutUint32(b[1:], uint32(len(b)-1))
	return b
}()

// scatterSource is one shard's rows as a merge.Source.
type scatterSource struct {
	ctx   context.Context
	run   *scatterRun
	h     *scatterShard
	chunk []byte
	off   int
	ended bool
	tag   string
}

// Next implements merge.Source.
func (src *scatterSource) Next() ([]byte, error) {
	for {
		if src.off < len(src.chunk) {
			b := src.chunk[src.off:]
			if len(b) < wire.HeaderLen {
				return nil, fmt.Errorf("%w: truncated frame", merge.ErrMalformed)
			}
			n := int(binary.BigEndian.Uint32(b[1:])) + 1
			if n < wire.HeaderLen || n > len(b) {
				return nil, fmt.Errorf("%w: bad frame length", merge.ErrMalformed)
			}
			src.off += n
			return b[:n:n], nil
		}
		if src.ended {
			return nil, io.EOF
		}
		if src.chunk != nil {
			// The merge is done with the previous row: recycle its chunk.
			select {
			case src.h.free <- src.chunk[:0]:
			default:
			}
			src.chunk, src.off = nil, 0
		}
		ev, err := src.run.next(src.ctx, src.h)
		if err != nil {
			return nil, err
		}
		switch {
		case ev.end:
			src.ended = true
			if ev.err != nil {
				return nil, ev.err
			}
			src.tag = ev.tag
			return nil, io.EOF
		case ev.desc != nil:
			return nil, fmt.Errorf("%w: second RowDescription", merge.ErrMalformed)
		default:
			src.chunk, src.off = ev.rows, 0
		}
	}
}

// scatterWriteResult builds the answer to a statement that returned no
// rows on any shard: the shards' row counts are summed ("UPDATE 7",
// "INSERT 0 7"); a tag without a count must be the same on every shard.
func scatterWriteResult(dst []byte, run *scatterRun, evs []scatterEvent) ([]byte, error) {
	empty := 0
	for _, ev := range evs {
		if ev.empty {
			empty++
		}
	}
	switch empty {
	case len(evs):
		return append(dst, 'I', 0, 0, 0, 4), nil
	case 0:
	default:
		return dst, wire.Errorf(wire.SQLStateFeatureNotSupported, "cross-shard query: the shards answered differently (empty query on some)")
	}
	prefix, hasCount := scatterTagPrefix(evs[0].tag)
	var total int64
	for i, ev := range evs {
		p, ok := scatterTagPrefix(ev.tag)
		if p != prefix || ok != hasCount || (!ok && ev.tag != evs[0].tag) {
			return dst, &wire.Error{Code: wire.SQLStateFeatureNotSupported,
				Message: "cross-shard query: the shards completed different commands",
				Detail:  fmt.Sprintf("Shard %s answered %q, shard %s answered %q.", run.shards[0].name, evs[0].tag, run.shards[i].name, ev.tag)}
		}
		if ok {
			n, _ := strconv.ParseInt(ev.tag[len(prefix)+1:], 10, 64)
			total += n
		}
	}
	if !hasCount {
		return scatterAppendTag(dst, evs[0].tag), nil
	}
	return scatterAppendTag(dst, prefix+" "+strconv.FormatInt(total, 10)), nil
}

// scatterTagPrefix splits a command tag with a row count ("UPDATE 3",
// "INSERT 0 3", "SELECT 3") into what precedes the count; false when the
// tag has no count.
func scatterTagPrefix(tag string) (string, bool) {
	i := strings.LastIndexByte(tag, ' ')
	if i <= 0 {
		return tag, false
	}
	if _, err := strconv.ParseUint(tag[i+1:], 10, 64); err != nil {
		return tag, false
	}
	return tag[:i], true
}

// scatterAppendTag appends a CommandComplete frame.
func scatterAppendTag(dst []byte, tag string) []byte {
	start := len(dst)
	dst = append(dst, 'C', 0, 0, 0, 0)
	dst = append(dst, tag...)
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

// scatterMergeError turns an error of the merge into what the client
// gets: a shard's own error as is; a result the merger cannot combine
// exactly as 0A000 (54000 when it does not fit in memory).
func scatterMergeError(err error, shards []string) error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	code := wire.SQLStateFeatureNotSupported
	msg := err.Error()
	switch {
	case errors.Is(err, merge.ErrTooLarge):
		code = wire.SQLStateProgramLimitExceeded
		msg = "cross-shard query: the result is too large to merge in memory"
	case errors.Is(err, merge.ErrUnsupported):
		// UnsupportedError reads "cross-shard query: cannot ..." already.
	case errors.Is(err, merge.ErrDivisionByZero):
		code = wire.SQLStateDivisionByZero
		msg = "division by zero"
	case errors.Is(err, merge.ErrOutOfRange):
		// Where PostgreSQL itself fails: a combined sum that overflows.
		code = wire.SQLStateNumericValueOutOfRange
		msg = strings.TrimPrefix(msg, "merge: ")
	default:
		msg = "cross-shard query cannot be merged: " + strings.TrimPrefix(msg, "merge: ")
	}
	return &wire.Error{Code: code, Message: msg,
		Detail: "Shards in merge order (numbered from 0): " + strings.Join(shards, ", ") + ".", Err: err}
}

// openTx is a shard's backend with a transaction the proxy opened.
type openTx struct {
	name string
	conn *pool.Conn
}

// endTransactions commits (commit true) or rolls back the transactions a
// statement over several shards left open. Commits go shard by shard:
// when one fails, the shards before it have committed (that cannot be
// undone, and the error says so) and the rest are rolled back.
func endTransactions(ctx context.Context, txs []openTx, commit bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), scatterReplyTimeout)
	defer cancel()
	var err error
	committed := 0
	for _, tx := range txs {
		end := "ROLLBACK"
		if commit && err == nil {
			end = "COMMIT"
		}
		xerr := tx.conn.Exec(ctx, end)
		if xerr == nil {
			if end == "COMMIT" {
				committed++
			}
			continue
		}
		// (An I/O failure has marked the connection broken; a server
		// error ended the transaction.)
		if end == "COMMIT" {
			c := code(xerr)
			if c == "" {
				c = wire.SQLStateConnectionFailure
			}
			err = &wire.Error{Code: c, Err: xerr,
				Message: fmt.Sprintf("shard %s: commit failed after %d of %d shards committed: %v", tx.name, committed, len(txs), xerr)}
		}
	}
	return err
}

// scatterFrames builds what shard name is sent for req: one Query, or the
// extended-protocol sequence; with req.Atomic, after a BEGIN.
func scatterFrames(req *scatterRequest, name string) []byte {
	sql := req.SQL
	if q, ok := req.PerShardSQL[name]; ok {
		sql = q
	}
	var b []byte
	if req.Atomic {
		b = wire.AppendString(b, 'Q', "BEGIN")
	}
	if req.Ext == nil {
		return wire.AppendString(b, 'Q', sql)
	}
	return req.Ext.appendFrames(b, sql)
}

// scatterOrdered answers a statement whose rows go back in a given order
// (RowOrder): every shard's rows are collected, then placed.
func scatterOrdered(ctx context.Context, req *scatterRequest, run *scatterRun, desc []byte) ([]byte, error) {
	total := 0
	for _, rows := range req.RowOrder {
		total += len(rows)
	}
	placed := make([][]byte, total)
	var tag string
	for i, h := range run.shards {
		order := req.RowOrder[req.Shards[i]]
		src := scatterSource{ctx: ctx, run: run, h: h}
		for n := 0; ; n++ {
			row, err := src.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return req.Dst, scatterMergeError(err, req.Shards)
			}
			if n >= len(order) || order[n] >= total || placed[order[n]] != nil {
				return req.Dst, h.errorf(wire.SQLStateFeatureNotSupported, "cross-shard statement returned more rows than it was given")
			}
			placed[order[n]] = bytes.Clone(row)
		}
		if tag == "" {
			tag = src.tag
		}
	}
	out := req.Dst
	if !req.NoDescription {
		out = append(out, desc...)
	}
	n := 0
	for _, row := range placed {
		if row != nil {
			out = append(out, row...)
			n++
		}
	}
	verb, ok := scatterTagPrefix(tag)
	if !ok {
		verb = "SELECT"
	}
	return scatterAppendTag(out, verb+" "+strconv.Itoa(n)), nil
}

// scatterCopyOut concatenates the shards' COPY ... TO STDOUT data: one
// CopyOutResponse, every shard's CopyData in shard order (a CSV header
// only from the first shard; binary: the file header only from the first
// shard and the trailer only from the last), CopyDone and the summed
// COPY count.
func scatterCopyOut(ctx context.Context, req *scatterRequest, run *scatterRun, descs [][]byte) ([]byte, error) {
	for i, d := range descs[1:] {
		if !bytes.Equal(d, descs[0]) {
			return req.Dst, &wire.Error{Code: wire.SQLStateFeatureNotSupported,
				Message: "cross-shard COPY: the shards answered with different column formats",
				Detail:  fmt.Sprintf("Shard %s differs from shard %s.", req.Shards[i+1], req.Shards[0])}
		}
	}
	binaryFormat := len(descs[0]) > wire.HeaderLen && descs[0][wire.HeaderLen] == 1
	out := append(req.Dst, descs[0]...)
	emit := func(data []byte) error {
		if len(data) == 0 {
			return nil
		}
		out = append(out, 'd', 0, 0, 0, 0)
		binary.BigEndian.PutUint32(out[len(out)-4:], uint32(len(data)+4))
		out = append(out, data...)
		if req.Flush != nil && len(out) >= scatterFlushBytes {
			if err := req.Flush(out); err != nil {
				return err
			}
			out = out[:0]
		}
		return nil
	}
	var total int64
	for i, h := range run.shards {
		src := scatterSource{ctx: ctx, run: run, h: h}
		first, last := i == 0, i == len(run.shards)-1
		var held []byte // binary: the previous message, which may end with the trailer
		for n := 0; ; n++ {
			frame, err := src.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return out, scatterMergeError(err, req.Shards)
			}
			data := frame[wire.HeaderLen:]
			switch {
			case binaryFormat:
				if n == 0 && !first {
					hl, ok := copyBinaryHeaderLen(data)
					if !ok {
						return out, h.errorf(wire.SQLStateFeatureNotSupported, "cross-shard COPY: the shard's binary data does not start with a COPY file header")
					}
					data = data[hl:]
				}
				if err := emit(held); err != nil {
					return out, err
				}
				held = append(held[:0], data...)
				continue
			case n == 0 && !first && req.CopyHeader:
				continue // the header line, sent once
			}
			if err := emit(data); err != nil {
				return out, err
			}
		}
		if binaryFormat {
			if !last {
				if len(held) < 2 {
					return out, h.errorf(wire.SQLStateFeatureNotSupported, "cross-shard COPY: the shard's binary data does not end with a COPY file trailer")
				}
				held = held[:len(held)-2]
			}
			if err := emit(held); err != nil {
				return out, err
			}
		}
		if p, ok := scatterTagPrefix(src.tag); ok && p == "COPY" {
			n, _ := strconv.ParseInt(src.tag[len(p)+1:], 10, 64)
			total += n
		}
	}
	out = append(out, 'c', 0, 0, 0, 4)
	return scatterAppendTag(out, "COPY "+strconv.FormatInt(total, 10)), nil
}

// copyBinaryHeaderLen returns the length of the binary COPY file header
// at the start of b: signature, flags, extension length and extension.
func copyBinaryHeaderLen(b []byte) (int, bool) {
	const fixed = 11 + 4 + 4
	if len(b) < fixed || string(b[:11]) != "PGCOPY\n\xff\r\n\x00" {
		return 0, false
	}
	n := fixed + int(binary.BigEndian.Uint32(b[15:]))
	if n < fixed || n > len(b) {
		return 0, false
	}
	return n, true
}
