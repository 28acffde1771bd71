package pool

import (
	"bufio"
	"context"
	"encoding/binary"
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

	hmu     sync.Mutex // held while the handler runs
	handler Handler    // nil: idle or between owners
	broken  atomic.Bool
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

// Cancel sends a CancelRequest for whatever c's backend is running.
func (c *Conn) Cancel(ctx context.Context) error {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("dial %s for cancel: %w", c.Addr, err)
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
	_, _ = io.Copy(io.Discard, nc)
	return nil
}
