package auth

import (
	"errors"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire"
)

// Conn is the client connection an exchange runs over: the methods of
// *pgproto3.Backend that Authenticate uses. A proxy that already reads the
// connection through a wire.FrameReader uses FrameConn.
type Conn interface {
	// SetAuthType says which authentication message was sent last, which
	// decides how the client's next 'p' message is decoded.
	SetAuthType(authType uint32) error
	Send(msg pgproto3.BackendMessage)
	Flush() error
	Receive() (pgproto3.FrontendMessage, error)
}

var (
	_ Conn = (*pgproto3.Backend)(nil)
	_ Conn = (*FrameConn)(nil)
)

// FrameConn is a Conn over a wire.FrameReader and the connection's writer.
// It holds no read buffer of its own (a pgproto3.Backend takes 8 KiB per
// connection for an exchange of a few hundred bytes), and bytes a client
// sends right after its last authentication message stay in the frame
// reader's buffer for whoever reads the connection next.
type FrameConn struct {
	fr       *wire.FrameReader
	w        io.Writer
	authType uint32
	out      []byte
	err      error
}

// NewFrameConn returns a FrameConn reading frames from fr and writing to
// w. fr's size limit bounds the client's authentication messages.
func NewFrameConn(fr *wire.FrameReader, w io.Writer) *FrameConn {
	return &FrameConn{fr: fr, w: w}
}

// SetAuthType implements Conn.
func (c *FrameConn) SetAuthType(authType uint32) error {
	c.authType = authType
	return nil
}

// Send implements Conn: msg is buffered until Flush.
func (c *FrameConn) Send(msg pgproto3.BackendMessage) {
	if c.err != nil {
		return
	}
	c.out, c.err = msg.Encode(c.out)
}

// Flush implements Conn.
func (c *FrameConn) Flush() error {
	if c.err != nil {
		return c.err
	}
	_, err := c.w.Write(c.out)
	c.out = c.out[:0]
	return err
}

// Receive implements Conn. The message may alias the frame reader's
// buffer: it is valid until the next Receive.
func (c *FrameConn) Receive() (pgproto3.FrontendMessage, error) {
	typ, frame, err := c.fr.Next()
	if err != nil {
		return nil, err
	}
	var msg pgproto3.FrontendMessage
	switch typ {
	case 'p':
		switch c.authType {
		case pgproto3.AuthTypeSASL:
			msg = &pgproto3.SASLInitialResponse{}
		case pgproto3.AuthTypeSASLContinue, pgproto3.AuthTypeSASLFinal:
			msg = &pgproto3.SASLResponse{}
		default:
			msg = &pgproto3.PasswordMessage{}
		}
	case 'X':
		msg = &pgproto3.Terminate{}
	default:
		return otherMessage(typ), nil
	}
	if err := msg.Decode(frame[wire.HeaderLen:]); err != nil {
		return nil, err
	}
	return msg, nil
}

// otherMessage is a message no authentication step expects; only its type
// is kept, for the error that names it.
type otherMessage byte

func (otherMessage) Frontend() {}

func (otherMessage) Decode([]byte) error {
	return errors.New("auth: otherMessage is not decoded")
}

func (m otherMessage) Encode(dst []byte) ([]byte, error) {
	return append(dst, byte(m), 0, 0, 0, 4), nil
}
