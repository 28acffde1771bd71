package meta

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// tcpStream is the raft.StreamLayer of a node: raft.TCPStreamLayer (what
// raft.NewTCPTransport builds) plus bookkeeping of every connection, so
// that Close also closes the connections peers opened to us. With the
// stock layer those stay open after Shutdown, each with a transport
// goroutine blocked reading it, until the peer happens to use or drop it;
// Node.Close promises that nothing of the node runs after it returns.
type tcpStream struct {
	ln        net.Listener
	advertise net.Addr

	mu     sync.Mutex
	closed bool
	conns  map[*trackedConn]struct{}
}

var _ raft.StreamLayer = (*tcpStream)(nil)

// listenTCP binds bind and advertises advertise ("" means the bound
// address, which must then be a specific IP).
func listenTCP(bind, advertise string) (*tcpStream, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("meta: listen for raft on %s: %w", bind, err)
	}
	s := &tcpStream{ln: ln, advertise: ln.Addr(), conns: map[*trackedConn]struct{}{}}
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("meta: raft advertise address %q: %w", advertise, err)
		}
		s.advertise = a
	}
	if a, ok := s.advertise.(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() || a.Port == 0 {
		ln.Close()
		return nil, fmt.Errorf("meta: raft address %s cannot be dialled by peers: bind a specific IP, or set an advertise address", s.advertise)
	}
	return s, nil
}

// Accept implements net.Listener.
func (s *tcpStream) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	return s.track(c)
}

// Dial implements raft.StreamLayer.
func (s *tcpStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(address), timeout)
	if err != nil {
		return nil, err
	}
	return s.track(c)
}

func (s *tcpStream) track(c net.Conn) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, errors.New("meta: raft transport is closed")
	}
	t := &trackedConn{Conn: c, s: s}
	s.conns[t] = struct{}{}
	return t, nil
}

// Close implements net.Listener: it stops accepting and closes every
// connection, accepted or dialled. It may be called more than once.
func (s *tcpStream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	err := s.ln.Close()
	for c := range conns {
		c.Conn.Close()
	}
	return err
}

// Addr implements net.Listener: the advertised address.
func (s *tcpStream) Addr() net.Addr { return s.advertise }

// trackedConn removes itself from its stream when closed.
type trackedConn struct {
	net.Conn
	s    *tcpStream
	once sync.Once
}

// Close implements net.Conn.
func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}
