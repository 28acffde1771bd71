//go:build !linux

package pool

import (
	"errors"
	"net"
)

// EventLoop reads server connections without a goroutine per connection
// (Linux only; see loop_linux.go).
type EventLoop struct{}

// NewEventLoop fails: event loops need Linux.
func NewEventLoop(int) (*EventLoop, error) {
	return nil, errors.New("the server event loop needs Linux")
}

// Close does nothing.
func (*EventLoop) Close() {}

type loopState struct{}

func (c *Conn) attachLoop(*EventLoop, net.Conn) bool { return false }
func (c *Conn) unregister()                          {}
func (c *Conn) closedByUs()                          {}

func (b *connReader) fillNonBlocking() (int, error) { return 0, errors.New("no event loop") }
