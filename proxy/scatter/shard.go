package scatter

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/router/merge"
	"github.com/pgshard/pgshard/wire"
)

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
	// held is set when the statement runs on a session's connection in
	// its transaction (TxBackends): it goes back there.
	held    TxBackends
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
		select {
		case h.run.arrived <- struct{}{}:
		default: // a wake-up is pending already
		}
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
		h.ok = (status == 'I' || h.atomic || h.held != nil) && !h.bad && !h.canceled
		if (status == 'T' || status == 'E') && !h.atomic && h.held == nil {
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
	ctx, cancel := context.WithTimeout(context.Background(), ReplyTimeout)
	defer cancel()
	if err := h.conn.Cancel(ctx); err != nil {
		h.run.log.Debug("scatter: cancel failed", "shard", h.name, "server", h.conn.Addr, "err", err)
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
	status := h.status
	h.mu.Unlock()
	if h.held != nil {
		h.held.Return(h.name, h.conn, status, ok)
	} else if ok {
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
