package pool

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/pgshard/pgshard/wire"
)

// Handler receives the frames a server sends on a lent connection. Its
// methods run on the connection's reader goroutine, one call at a time,
// and never after SetHandler has replaced it.
type Handler interface {
	// Frame handles one frame (header included; valid only during the
	// call). It returns true to give the connection back to the pool: the
	// reader then releases it, so the handler must have stopped using it.
	Frame(c *Conn, typ byte, frame []byte) (release bool)
	// Flush is called when no more input is buffered, before the reader
	// blocks: a handler that batches output writes it now.
	Flush(c *Conn)
	// Fail is called once when reading fails; the connection is dead and
	// the reader stops.
	Fail(c *Conn, err error)
}

// ErrBroken reports a connection found dead (the server closed it or sent
// something unsolicited while it had no handler).
var ErrBroken = errors.New("server connection is broken")

// ErrStalled is in the error a handler's Fail gets for a connection the
// pool's watchdog reset: the server acknowledged nothing for the ack
// timeout while the connection had something to deliver (it is
// unreachable, e.g. a network partition).
var ErrStalled = errors.New("server connection reset: no acknowledgement from the server")

// ErrAborted is the error a handler's Fail gets for a connection reset by
// Pool.Abort.
var ErrAborted = errors.New("server connection aborted: its server is no longer to be used")

// readLoop reads the connection for its whole life. With a handler set,
// frames go to it; without one (idle in the pool, or between owners) any
// input means the server ended the session (a FATAL from
// pg_terminate_backend, EOF, a crash), so the connection is marked broken,
// closed and dropped from the idle list at once: a dead connection is
// never lent, at no cost per transaction.
func (c *Conn) readLoop() {
	defer c.pool.readers.Done()
	defer c.pool.track(c, false)
	for {
		if c.Reader.Buffered() == 0 {
			c.hmu.Lock()
			if c.handler != nil {
				c.handler.Flush(c)
			}
			c.hmu.Unlock()
		}
		typ, frame, err := c.Reader.Next()
		c.hmu.Lock()
		if c.aborted.Load() {
			// Even a frame read before the reset is not passed on: the
			// server is no longer one whose replies count.
			err = ErrAborted
		} else if d := c.stallReset.Load(); d != 0 && err != nil {
			err = fmt.Errorf("%w: none for %s", ErrStalled, time.Duration(d).Round(time.Millisecond))
		}
		h := c.handler
		if h == nil {
			c.hmu.Unlock()
			c.markBroken()
			return
		}
		if err != nil {
			c.handler = nil
			c.broken.Store(true)
			c.hmu.Unlock()
			h.Fail(c, err)
			return
		}
		release := h.Frame(c, typ, frame)
		if release {
			c.handler = nil
		}
		c.hmu.Unlock()
		if release {
			c.pool.Release(c)
		}
	}
}

// markBroken marks the connection dead, closes it and evicts it from the
// idle list if it is there.
func (c *Conn) markBroken() {
	c.broken.Store(true)
	_ = c.NetConn.Close()
	c.pool.evict(c)
}

// Broken reports whether the connection is known to be dead.
func (c *Conn) Broken() bool { return c.broken.Load() }

// SetHandler makes h receive the connection's frames from now on (nil:
// none; input then breaks the connection). When it returns, the previous
// handler is not running and will not be called again. It fails with
// ErrBroken when the connection is already dead.
func (c *Conn) SetHandler(h Handler) error {
	c.hmu.Lock()
	c.handler = h
	c.hmu.Unlock()
	if c.broken.Load() {
		return ErrBroken
	}
	return nil
}

// ClearHandler removes h if it is the connection's handler and reports
// whether it was: false means the connection has moved on (the reader
// released it to the pool after h's last Frame, and another owner may
// hold it now), so the caller must leave it alone. When it returns true,
// h is not running and will not be called again.
func (c *Conn) ClearHandler(h Handler) bool {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if c.handler != h {
		return false
	}
	c.handler = nil
	return true
}

// ReplaceHandler makes h the connection's handler if old is, and reports
// whether it did. False means old is no longer the handler: it released
// the connection (which may be another owner's now), or the connection
// failed and old's Fail is called. When it returns true, old is not
// running and will not be called again, and h gets every later frame.
func (c *Conn) ReplaceHandler(old, h Handler) bool {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if c.handler != old {
		return false
	}
	c.handler = h
	return true
}

// execHandler collects the reply to a statement the proxy runs itself.
type execHandler struct {
	want     byte // transaction status expected at ReadyForQuery (0: any)
	done     chan error
	firstErr error
	tag      string // last CommandComplete tag
	value    []byte // first column of the first row (nil: none or NULL)
	gotRow   bool
}

func (h *execHandler) Frame(_ *Conn, typ byte, frame []byte) bool {
	switch typ {
	case 'D':
		if !h.gotRow && len(frame) >= 11 && binary.BigEndian.Uint16(frame[5:]) > 0 {
			h.gotRow = true
			if n := int32(binary.BigEndian.Uint32(frame[7:])); n >= 0 && int(n) <= len(frame)-11 {
				h.value = bytes.Clone(frame[11 : 11+n])
			}
		}
	case 'C':
		if len(frame) > 5 {
			h.tag = string(frame[5 : len(frame)-1])
		}
	case 'E':
		if h.firstErr == nil {
			h.firstErr = &ServerError{Code: wire.ErrorField(frame, 'C'), Message: wire.ErrorField(frame, 'M')}
		}
	case 'Z':
		err := h.firstErr
		if len(frame) > 5 && h.want != 0 && frame[5] != h.want && err == nil {
			err = errors.Join(err, fmt.Errorf("server left in transaction state %q", frame[5]))
		}
		h.finish(err)
	}
	return false
}

func (h *execHandler) finish(err error) {
	select {
	case h.done <- err:
	default: // already finished
	}
}

func (h *execHandler) Flush(*Conn) {}

func (h *execHandler) Fail(_ *Conn, err error) { h.finish(fmt.Errorf("read reply: %w", err)) }

// ServerError is an ErrorResponse the server sent to a statement the proxy
// ran itself.
type ServerError struct {
	Code    string
	Message string
}

// Error implements error.
func (e *ServerError) Error() string { return fmt.Sprintf("%s (SQLSTATE %s)", e.Message, e.Code) }

// SQLState returns the error's SQLSTATE.
func (e *ServerError) SQLState() string { return e.Code }

// Exec runs sql (simple protocol, results discarded) on a connection that
// has no handler and is idle, and returns the first error the server
// reported. On timeout or I/O failure the connection is marked broken.
func (c *Conn) Exec(ctx context.Context, sql string) error {
	_, err := c.ExecTag(ctx, sql)
	return err
}

// ExecTag is Exec that also returns the last CommandComplete tag.
func (c *Conn) ExecTag(ctx context.Context, sql string) (string, error) {
	return c.exec(ctx, sql, 'I')
}

// QueryValue is Exec for a query that returns a value: the first column
// of its first row, as text ("" when there is no row or it is NULL).
func (c *Conn) QueryValue(ctx context.Context, sql string) (string, error) {
	h := &execHandler{want: 'I', done: make(chan error, 1)}
	_, err := c.run(ctx, sql, h)
	return string(h.value), err
}

// ExecInTx is ExecTag for statements that leave a transaction open (they
// start with BEGIN): the server must end in transaction status 'T'.
func (c *Conn) ExecInTx(ctx context.Context, sql string) (string, error) {
	return c.exec(ctx, sql, 'T')
}

// ExecTagAnyState is ExecTag for statements run inside a transaction the
// caller manages (savepoints, PREPARE TRANSACTION): the server may end in
// any transaction status.
func (c *Conn) ExecTagAnyState(ctx context.Context, sql string) (string, error) {
	return c.exec(ctx, sql, 0)
}

func (c *Conn) exec(ctx context.Context, sql string, want byte) (string, error) {
	return c.run(ctx, sql, &execHandler{want: want, done: make(chan error, 1)})
}

func (c *Conn) run(ctx context.Context, sql string, h *execHandler) (string, error) {
	if err := c.SetHandler(h); err != nil {
		return "", err
	}
	defer c.SetHandler(nil)
	msg := wire.AppendString(nil, 'Q', sql)
	if dl, ok := ctx.Deadline(); ok {
		_ = c.NetConn.SetWriteDeadline(dl)
		defer c.NetConn.SetWriteDeadline(time.Time{})
	}
	if _, err := c.NetConn.Write(msg); err != nil {
		c.markBroken()
		return "", fmt.Errorf("send query: %w", err)
	}
	select {
	case err := <-h.done:
		return h.tag, err
	case <-ctx.Done():
		c.markBroken()
		return "", fmt.Errorf("wait for reply: %w", ctx.Err())
	}
}
