package pool

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/wire"
)

// ioBufferSize is the read buffer per backend connection: large enough to
// take a typical result set in one read.
const ioBufferSize = 64 << 10

// Conn is one backend connection. It is used by one session at a time;
// the fields below are that session's to read and write while it holds
// the Conn.
type Conn struct {
	NetConn net.Conn
	Reader  *wire.FrameReader
	// Params are the ParameterStatus values the server reported at startup.
	Params map[string]string
	// PID and Secret identify the backend for CancelRequest.
	PID    uint32
	Secret []byte
	// Addr is the server's address, for cancel requests and logs.
	Addr string

	// Prepared holds the names of statements prepared on this backend by
	// the proxy (names are derived from statement text, so any client
	// with the same text can use them).
	Prepared map[string]struct{}
	// UnnamedGen counts replacements of the unnamed statement (each Parse
	// of "" and each simple Query), so a session can tell whether the
	// unnamed statement it parsed is still the one on this backend.
	UnnamedGen uint64
	// SettingsKey identifies the session parameters applied on this
	// backend ("" means the server's defaults; "?" means unknown).
	SettingsKey string

	pool      *Pool
	created   time.Time
	returned  time.Time
	tlsConfig bool

	hmu        sync.Mutex // held while the handler runs
	handler    Handler    // nil: idle or between owners
	broken     atomic.Bool
	aborted    atomic.Bool  // reset by Pool.Abort: its frames go to no one
	stallReset atomic.Int64 // reset by the watchdog after this long (ns) without acknowledgement

	watch watchState // the watchdog's

	cmu     sync.Mutex
	cancels int  // CancelRequests in flight (HoldForCancel)
	parked  bool // released while cancels > 0: Release again after them
}

// watchState is what the pool's watchdog remembers of a connection.
type watchState struct {
	waitingSince time.Time // since when it has seen something to deliver
	segsIn       uint32    // segments received, at heardAt
	heardAt      time.Time // when segsIn last changed
}

// dial opens and authenticates a backend connection and hijacks it.
func dial(ctx context.Context, p *Pool) (*Conn, error) {
	cfg := p.pgconnConfig.Copy()
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", p.cfg.Addr, err)
	}
	// pgconn may still have a background read in flight (it reads while a
	// slow write is pending); it would steal the server's first reply
	// after the hijack. SyncConn settles it, as Hijack's doc requires.
	if err := pc.SyncConn(ctx); err != nil {
		_ = pc.Close(ctx)
		return nil, fmt.Errorf("settle connection to %s: %w", p.cfg.Addr, err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		_ = pc.Close(ctx)
		return nil, fmt.Errorf("hijack connection to %s: %w", p.cfg.Addr, err)
	}
	now := p.now()
	c := &Conn{
		NetConn:   hc.Conn,
		Reader:    wire.NewFrameReader(bufio.NewReaderSize(hc.Conn, ioBufferSize), 0),
		Params:    hc.ParameterStatuses,
		PID:       hc.PID,
		Secret:    hc.SecretKey,
		Addr:      p.cfg.Addr,
		Prepared:  make(map[string]struct{}),
		pool:      p,
		created:   now,
		returned:  now,
		tlsConfig: hc.TLSConfig != nil,
	}
	p.track(c, true)
	p.readers.Add(1)
	go c.readLoop()
	return c, nil
}

// Pool returns the pool that owns c.
func (c *Conn) Pool() *Pool { return c.pool }

// TLS reports whether the connection to the server is encrypted.
func (c *Conn) TLS() bool { return c.tlsConfig }

// close closes the network connection, sending Terminate first so the
// server logs a clean disconnect.
func (c *Conn) close() {
	_ = c.NetConn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.NetConn.Write([]byte{'X', 0, 0, 0, 4})
	_ = c.NetConn.Close()
}

// abortWait bounds how long abort waits for a frame handler that is
// running (it may be blocked writing to a slow client).
const abortWait = time.Second

// abort resets the connection (SO_LINGER 0: the kernel drops what is
// still queued and sends RST) and waits, up to abortWait, until no frame
// handler runs; the reader passes no further frame to a handler. It
// reports whether this call aborted c (false: it was already).
func (c *Conn) abort() bool {
	if c.aborted.Swap(true) {
		return false
	}
	c.broken.Store(true)
	if tc := tcpConn(c.NetConn); tc != nil {
		_ = tc.SetLinger(0)
		_ = tc.Close() // not the TLS conn: no close_notify to wait for
	}
	_ = c.NetConn.Close()
	deadline := time.Now().Add(abortWait)
	for !c.hmu.TryLock() {
		if time.Now().After(deadline) {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	c.hmu.Unlock()
	return true
}

// reset ends a connection whose server has acknowledged nothing for
// silent while it had something to deliver (the watchdog's finding): its
// reader fails with ErrStalled. It reports whether this call reset c.
func (c *Conn) reset(silent time.Duration) bool {
	if !c.stallReset.CompareAndSwap(0, int64(max(silent, 1))) {
		return false
	}
	c.broken.Store(true)
	if tc := tcpConn(c.NetConn); tc != nil {
		_ = tc.SetLinger(0)
		_ = tc.Close()
	}
	_ = c.NetConn.Close()
	return true
}

// Aborted reports whether the connection was reset by Pool.Abort: its
// server is no longer one the proxy may use, and nothing it sent may be
// passed on.
func (c *Conn) Aborted() bool { return c.aborted.Load() }

// HoldForCancel keeps c from being lent to another owner until done is
// called: a CancelRequest sent meanwhile can only hit the current owner's
// statement. When c is released while held, it waits aside and goes back
// to the pool at done. Call it while c's owner cannot release it (under
// the owner's lock); done(false) says the cancel's fate is unknown (it
// may still arrive), and c is then closed rather than lent again.
func (c *Conn) HoldForCancel() (done func(delivered bool)) {
	c.cmu.Lock()
	c.cancels++
	c.cmu.Unlock()
	var once sync.Once
	return func(delivered bool) {
		once.Do(func() {
			if !delivered {
				c.broken.Store(true)
			}
			c.cmu.Lock()
			c.cancels--
			release := c.cancels == 0 && c.parked
			if release {
				c.parked = false
			}
			c.cmu.Unlock()
			if release {
				c.pool.Release(c)
			}
		})
	}
}

// park sets c aside when a cancel holds it, and reports whether it did.
func (c *Conn) park() bool {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	if c.cancels == 0 {
		return false
	}
	c.parked = true
	return true
}

// ErrCancelNotSent is in the error of a Cancel that could not reach the
// server: nothing was sent, so nothing can arrive later.
var ErrCancelNotSent = errors.New("cancel request not sent")

// Cancel sends a CancelRequest for whatever c's backend is running. The
// dial is bounded by the pool's connect timeout, the whole by ctx.
func (c *Conn) Cancel(ctx context.Context) error {
	nc, err := c.pool.cfg.dialer().DialContext(ctx, "tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("dial %s for cancel: %w (%w)", c.Addr, ErrCancelNotSent, err)
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	buf := make([]byte, 12, 12+len(c.Secret))
	binary.BigEndian.PutUint32(buf[0:], uint32(12+len(c.Secret)))
	binary.BigEndian.PutUint32(buf[4:], 80877102)
	binary.BigEndian.PutUint32(buf[8:], c.PID)
	buf = append(buf, c.Secret...)
	if _, err := nc.Write(buf); err != nil {
		return fmt.Errorf("send cancel to %s: %w", c.Addr, err)
	}
	// The server closes the connection when done; wait for that so the
	// cancel has been processed before we report success.
	if _, err := io.Copy(io.Discard, nc); err != nil {
		return fmt.Errorf("wait for %s to process the cancel: %w", c.Addr, err)
	}
	return nil
}
