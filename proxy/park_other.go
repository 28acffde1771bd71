//go:build !linux

package proxy

import (
	"context"
	"errors"
	"net"
)

// Parking idle clients needs epoll (park.go): elsewhere sessions keep
// their goroutines.
type parkState struct{ early uint8 }

const earlyParks = 0

func (s *session) parkEarly() {}

type parker struct{}

func newParker(func(*session), func([]*session) []*session) (*parker, error) {
	return nil, errors.New("limits.park_idle_clients needs Linux")
}

func (p *parker) kick(*session) {}
func (p *parker) stop()         {}
func (p *parker) count() int    { return 0 }

func (s *session) parkRequested(context.Context, error, bool) (parked, retry bool) {
	return false, false
}

func (s *session) next(context.Context) (byte, []byte, error) { return s.in.Next() }

func (s *Server) resumeSession(*session) {}

func newParkConn(c net.Conn) net.Conn { return c }
