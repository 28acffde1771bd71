package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/proxy/scatter"
	"github.com/pgshard/pgshard/router/copysplit"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// COPY ... FROM STDIN into a sharded table: the proxy starts the COPY on
// every shard of the table, inside a transaction per shard, answers the
// client's CopyInResponse itself, splits the client's rows by the key
// column (router/copysplit) and forwards each row unchanged to its shard.
// At CopyDone every shard completes its COPY and all commit (as one, with
// two-phase commit: splitcommit.go), or — after a bad row, a shard's
// error or the client's CopyFail — all roll back.

// copyInFlushBytes is how many row bytes collect for a shard before they
// are sent as one CopyData message.
const copyInFlushBytes = 64 << 10

// copyInShard is one shard's side of a COPY FROM STDIN: the backend's
// pool.Handler while the COPY runs.
type copyInShard struct {
	name  string
	conn  *pool.Conn
	buf   []byte // CopyData being filled (header included); serve only
	began bool   // the shard's stream started (the header was sent); serve only

	failed chan struct{} // shared: closed at the first shard failure
	fail   func(error)

	ready chan struct{} // closed at CopyInResponse or when the COPY cannot start
	done  chan struct{} // closed at the final ReadyForQuery or a read failure

	// Reader goroutine until done/ready are closed; serve afterwards.
	phase    int // 0: BEGIN's answer, 1: COPY's CopyInResponse, 2: copying
	copyResp []byte
	err      error
	tag      string
	status   byte
	closed   bool // done was closed (reader goroutine only)
}

// Frame implements pool.Handler.
func (h *copyInShard) Frame(_ *pool.Conn, typ byte, frame []byte) bool {
	switch typ {
	case 'N', 'S', 'A', 'C':
		if typ == 'C' && h.phase == 2 {
			h.tag = cstring(frame[wire.HeaderLen:])
		}
	case 'E':
		if h.err == nil {
			h.err = &wire.Error{
				Code:    wire.ErrorField(frame, 'C'),
				Message: "shard " + h.name + ": " + wire.ErrorField(frame, 'M'),
				Detail:  wire.ErrorField(frame, 'D'),
				Hint:    wire.ErrorField(frame, 'H'),
			}
			h.fail(h.err)
		}
	case 'G':
		if h.phase == 1 {
			h.copyResp = bytes.Clone(frame)
			h.phase = 2
			close(h.ready)
		}
	case 'Z':
		if h.phase == 0 && h.err == nil {
			h.phase = 1
			return false
		}
		if len(frame) > wire.HeaderLen {
			h.status = frame[wire.HeaderLen]
		}
		if h.phase < 2 {
			h.phase = 2
			close(h.ready)
		}
		h.closed = true
		close(h.done)
	default:
		if h.err == nil {
			h.err = &wire.Error{Code: wire.SQLStateProtocolViolation,
				Message: fmt.Sprintf("shard %s: unexpected message type %q during COPY", h.name, typ)}
			h.fail(h.err)
		}
	}
	return false
}

// Flush implements pool.Handler.
func (h *copyInShard) Flush(*pool.Conn) {}

// Fail implements pool.Handler.
func (h *copyInShard) Fail(_ *pool.Conn, err error) {
	if h.err == nil {
		h.err = &wire.Error{Code: wire.SQLStateConnectionFailure, Message: "shard " + h.name + ": lost the server connection", Err: err}
		h.fail(h.err)
	}
	if h.phase < 2 {
		h.phase = 2
		close(h.ready)
	}
	if !h.closed {
		h.closed = true
		close(h.done)
	}
}

// copyIn is one COPY FROM STDIN over several shards.
type copyIn struct {
	s      *session
	table  string
	shards []*copyInShard
	index  map[string]int
	// twoPhase commits the shards' transactions through the two-phase
	// coordinator (splitcommit.go).
	twoPhase bool
	// tx, inside the session's transaction over several shards, lends
	// the session's connections: the COPY runs in that transaction
	// (splitcommit.go), and end gives them back instead of ending it.
	tx       *txBackends
	returned bool // end gave tx's connections back

	failOnce sync.Once
	failErr  error
	failed   chan struct{}
}

func (c *copyIn) fail(err error) {
	c.failOnce.Do(func() {
		c.failErr = err
		close(c.failed)
	})
}

// runCopyIn runs COPY ... FROM STDIN of plan over its shards. No backend
// is attached, so serve owns client output; it reads the client's copy
// stream itself.
func (s *session) runCopyIn(ctx context.Context, plan rplan.Plan, sql string) error {
	s.mu.Lock()
	inTx := s.st.inTxOverShards()
	s.mu.Unlock()
	if inTx {
		return s.withSessionTx(ctx, true, func(tb *txBackends) error { return s.copyInShards(ctx, plan, sql, tb) })
	}
	return s.copyInShards(ctx, plan, sql, nil)
}

// copyInShards is runCopyIn, in the session's transaction over several
// shards when tx is not nil.
func (s *session) copyInShards(ctx context.Context, plan rplan.Plan, sql string, tx *txBackends) error {
	if err := s.flushClient(); err != nil {
		return err
	}
	start := time.Now()
	c := &copyIn{s: s, failed: make(chan struct{}), index: make(map[string]int), tx: tx}
	c.table = copyTableName(sql)
	c.twoPhase = tx == nil && len(plan.Shards) > 1 && s.srv.runtime().twoPhase
	if tx == nil {
		// After release: the rows are committed. In a transaction over
		// several shards they are not yet: endMultiTx learns the
		// positions after the commit.
		defer s.learnLSNs(ctx, plan.Shards)
	}
	defer c.release()
	if err := c.start(ctx, plan, strings.Clone(sql)); err != nil {
		c.abort(ctx, "")
		return err
	}
	// The client gets the first shard's CopyInResponse (the same columns
	// on every shard).
	s.out = append(s.out, c.shards[0].copyResp...)
	if err := s.flushClient(); err != nil {
		c.abort(ctx, "client went away")
		return err
	}
	n, err := c.stream(ctx, plan)
	if err != nil {
		return err
	}
	s.out = wire.AppendString(s.out, 'C', "COPY "+strconv.FormatInt(n, 10))
	s.out = wire.AppendReadyForQuery(s.out, s.idleStatus())
	s.srv.metrics.query(time.Since(start))
	return s.flushClient()
}

// start lends a backend per shard (in name order), opens a transaction
// and starts the COPY on each, and waits until every shard is ready.
func (c *copyIn) start(ctx context.Context, plan rplan.Plan, sql string) error {
	s := c.s
	for _, name := range slices.Sorted(slices.Values(plan.Shards)) {
		var be *pool.Conn
		var err error
		if c.tx != nil {
			be, err = c.tx.Held(ctx, name) // open in the transaction
			if err != nil {
				return scatter.ShardError(name, err)
			}
		} else if be, err = s.srv.lend(ctx, name, s.user, s.db); err != nil {
			return err
		}
		h := &copyInShard{name: name, conn: be, failed: c.failed, fail: c.fail,
			ready: make(chan struct{}), done: make(chan struct{})}
		c.index[name] = len(c.shards)
		c.shards = append(c.shards, h)
		var msg []byte
		if c.tx != nil {
			h.phase = 1 // no BEGIN
		} else {
			if err := s.prepareBackend(ctx, be); err != nil {
				return scatter.ShardError(name, err)
			}
			msg = wire.AppendString(msg, 'Q', "BEGIN")
		}
		if err := be.SetHandler(h); err != nil {
			return scatter.ShardError(name, err)
		}
		be.UnnamedGen++
		msg = wire.AppendString(msg, 'Q', sql)
		if _, err := be.NetConn.Write(msg); err != nil {
			return scatter.ShardError(name, err)
		}
	}
	for _, h := range c.shards {
		select {
		case <-h.ready:
		case <-ctx.Done():
			return wire.Errorf(wire.SQLStateQueryCanceled, "canceling statement: the session ended")
		}
	}
	select {
	case <-c.failed:
		return c.failErr
	default:
	}
	return nil
}

// stream reads the client's copy stream, splits it and sends each shard
// its rows; at CopyDone it completes the COPY everywhere and commits.
func (c *copyIn) stream(ctx context.Context, plan rplan.Plan) (int64, error) {
	s := c.s
	binaryFormat := plan.Copy.Format == "binary"
	sp, err := copysplit.New(plan.Copy, func(key []byte, null bool) (int, error) {
		if null {
			return 0, &wire.Error{Code: wire.SQLStateNotNullViolation,
				Message: "the sharding key of a row is NULL: pgshard cannot place it on a shard"}
		}
		name, err := plan.Copy.Shard(key, binaryFormat)
		if err != nil {
			return 0, &wire.Error{Code: wire.SQLStateInvalidTextRepresentation,
				Message: "cannot route the row by its sharding key: " + err.Error()}
		}
		i, ok := c.index[name]
		if !ok {
			return 0, wire.Errorf(wire.SQLStateInternalError, "the key's shard %s is not among the COPY's shards", name)
		}
		return i, nil
	}, copysplit.WithColumnNames(plan.Copy.Names...), copysplit.WithClientEncoding(s.sets.clientEncoding()))
	if err != nil {
		c.abort(ctx, "")
		return 0, c.rowError(err)
	}
	emit := func(i int, row []byte) error {
		h := c.shards[i]
		if !h.began {
			h.began = true
			h.buf = append(h.buf[:0], 'd', 0, 0, 0, 0)
			hdr, _ := sp.Header() // complete: a row came after it
			h.buf = append(h.buf, hdr...)
		}
		if len(h.buf) == 0 {
			h.buf = append(h.buf, 'd', 0, 0, 0, 0)
		}
		h.buf = append(h.buf, row...)
		if len(h.buf) >= copyInFlushBytes {
			return c.send(h)
		}
		return nil
	}
	for {
		select {
		case <-c.failed:
			c.abort(ctx, "")
			return 0, c.failErr
		default:
		}
		typ, frame, err := s.next(ctx)
		if err != nil {
			c.abort(ctx, "the client connection was lost during COPY")
			return 0, err
		}
		switch typ {
		case 'd':
			if err := sp.Write(frame[wire.HeaderLen:], emit); err != nil {
				c.abort(ctx, "invalid input")
				return 0, c.rowError(err)
			}
		case 'c':
			if err := sp.Close(emit); err != nil {
				c.abort(ctx, "invalid input")
				return 0, c.rowError(err)
			}
			hdr, _ := sp.Header()
			return c.complete(ctx, hdr, sp.Trailer())
		case 'f':
			msg := cstring(frame[wire.HeaderLen:])
			c.abort(ctx, msg)
			return 0, wire.Errorf(wire.SQLStateQueryCanceled, "COPY from stdin failed: %s", msg)
		case 'H', 'S':
			// Flush and Sync mean nothing during COPY (as in PostgreSQL).
		default:
			c.abort(ctx, "protocol violation")
			return 0, wire.Errorf(wire.SQLStateProtocolViolation, "unexpected message type 0x%02X during COPY from stdin", typ)
		}
	}
}

// rowError turns a splitting error into the client's error, naming the
// table as PostgreSQL's COPY errors do.
func (c *copyIn) rowError(err error) error {
	var we *wire.Error
	var se *copysplit.Error
	switch {
	case errors.As(err, &se):
		if errors.As(se.Err, &we) { // the route callback's error
			return &wire.Error{Code: we.Code, Message: we.Message, Detail: we.Detail, Hint: we.Hint, Where: se.Where(c.table)}
		}
		return &wire.Error{Code: se.Code, Message: se.Message, Detail: se.Detail, Hint: se.Hint, Where: se.Where(c.table)}
	case errors.As(err, &we):
		return we
	}
	return wire.Errorf(wire.SQLStateBadCopyFileFormat, "COPY %s: %v", c.table, err)
}

// send writes the shard's filled CopyData message.
func (c *copyIn) send(h *copyInShard) error {
	if len(h.buf) <= wire.HeaderLen {
		return nil
	}
	putLen(h.buf)
	_, err := h.conn.NetConn.Write(h.buf)
	h.buf = h.buf[:0]
	if err != nil {
		// The reader sees the failure too and reports it.
		return &wire.Error{Code: wire.SQLStateConnectionFailure, Message: "shard " + h.name + ": could not send COPY data", Err: err}
	}
	return nil
}

// complete ends the COPY on every shard (the rest of its rows, the
// stream's header when it got no row, the trailer, CopyDone), waits for
// the counts and commits everywhere.
func (c *copyIn) complete(ctx context.Context, header, trailer []byte) (int64, error) {
	for _, h := range c.shards {
		if !h.began {
			h.began = true
			h.buf = append(h.buf[:0], 'd', 0, 0, 0, 0)
			h.buf = append(h.buf, header...)
		}
		if len(h.buf) == 0 {
			h.buf = append(h.buf, 'd', 0, 0, 0, 0)
		}
		h.buf = append(h.buf, trailer...)
		if err := c.send(h); err != nil {
			c.abort(ctx, "")
			return 0, err
		}
		if _, err := h.conn.NetConn.Write([]byte{'c', 0, 0, 0, 4}); err != nil {
			c.abort(ctx, "")
			return 0, &wire.Error{Code: wire.SQLStateConnectionFailure, Message: "shard " + h.name + ": could not send CopyDone", Err: err}
		}
	}
	if err := c.wait(ctx); err != nil {
		c.abort(ctx, "")
		return 0, err
	}
	var total int64
	var written []string
	for _, h := range c.shards {
		if h.err != nil {
			c.abort(ctx, "")
			return 0, h.err
		}
		if n, ok := strings.CutPrefix(h.tag, "COPY "); ok {
			v, _ := strconv.ParseInt(n, 10, 64)
			total += v
			if v > 0 {
				written = append(written, h.name)
			}
		}
	}
	if c.s.refusesCrossShardWrites() && c.tx != nil {
		c.s.mu.Lock()
		for _, a := range c.s.st.atts {
			if a.wrote && !slices.Contains(written, a.shard) {
				written = append(written, a.shard)
			}
		}
		c.s.mu.Unlock()
	}
	if len(written) > 1 && c.s.refusesCrossShardWrites() {
		c.abort(ctx, "")
		return 0, c.s.crossShardWriteRefusal(written)
	}
	if err := c.end(ctx, true); err != nil {
		return 0, err
	}
	return total, nil
}

// wait waits for every shard's final ReadyForQuery.
func (c *copyIn) wait(ctx context.Context) error {
	for _, h := range c.shards {
		select {
		case <-h.done:
		case <-ctx.Done():
			return wire.Errorf(wire.SQLStateQueryCanceled, "canceling statement: the session ended")
		}
	}
	return nil
}

// abort stops the COPY on every shard that still runs it (CopyFail with
// why) and rolls every transaction back.
func (c *copyIn) abort(ctx context.Context, why string) {
	if why == "" {
		why = "COPY failed on another shard"
	}
	msg := wire.AppendString(nil, 'f', "pgshard: "+why)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), scatter.ReplyTimeout)
	defer cancel()
	for _, h := range c.shards {
		select {
		case <-h.ready:
		case <-wctx.Done():
		}
		select {
		case <-h.done:
		default:
			_, _ = h.conn.NetConn.Write(msg)
		}
	}
	if err := c.wait(wctx); err != nil {
		c.s.log.Warn("COPY: a shard did not answer CopyFail; closing its connection")
		for _, h := range c.shards {
			select {
			case <-h.done:
			default:
				h.conn.NetConn.Close()
			}
		}
	}
	_ = c.end(ctx, false)
}

// end commits (commit true) or rolls back the shards' transactions; see
// scatter.EndTransactions, or commitTxs with twoPhase (a shard that got
// no row commits in one phase).
func (c *copyIn) end(ctx context.Context, commit bool) error {
	if c.tx != nil {
		c.giveBackHeld()
		return nil
	}
	var txs []scatter.Tx
	empty := make(map[string]bool)
	for _, h := range c.shards {
		_ = h.conn.SetHandler(nil)
		select {
		case <-h.done:
		default:
			continue // unknown state: release closes it
		}
		if h.status == 'T' || h.status == 'E' {
			txs = append(txs, scatter.Tx{Name: h.name, Conn: h.conn})
			h.status = 'I' // ended below, or the connection is closed
			empty[h.name] = h.tag == "COPY 0"
		}
	}
	if commit && c.twoPhase {
		return c.s.commitTxs(ctx, txs, empty)
	}
	return scatter.EndTransactions(ctx, txs, commit)
}

// giveBackHeld gives the session's connections back to its transaction
// (tx), each with its status: a failed COPY left its shard's transaction
// failed, which fails the session's, as on PostgreSQL.
func (c *copyIn) giveBackHeld() {
	if c.returned {
		return
	}
	c.returned = true
	for _, h := range c.shards {
		_ = h.conn.SetHandler(nil)
		ok := false
		select {
		case <-h.done:
			ok = !h.conn.Broken()
		default:
		}
		c.tx.write = h.tag != "COPY 0"
		c.tx.Return(h.name, h.conn, h.status, ok)
	}
}

// putLen writes the length of the message in b (type byte first).
func putLen(b []byte) {
	binary.BigEndian.PutUint32(b[1:], uint32(len(b)-1))
}

// release returns every backend to its pool, or closes those whose state
// is not clean.
func (c *copyIn) release() {
	if c.tx != nil {
		c.giveBackHeld()
		c.shards = nil
		return
	}
	for _, h := range c.shards {
		_ = h.conn.SetHandler(nil)
		clean := false
		select {
		case <-h.done:
			clean = h.status == 'I' && !h.conn.Broken()
		default:
		}
		if clean {
			h.conn.Pool().Release(h.conn)
		} else {
			h.conn.Pool().Discard(h.conn)
		}
	}
	c.shards = nil
}

// copyTableName returns the table a COPY statement names, for messages.
func copyTableName(sql string) string {
	f := strings.Fields(sql)
	for i, w := range f {
		if strings.EqualFold(w, "copy") && i+1 < len(f) {
			name, _, _ := strings.Cut(f[i+1], "(")
			return name
		}
	}
	return "table"
}
