package proxy

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/wire"
)

// Startup parameters (and "-c name=value" in options) are applied by the
// proxy on every server connection a client uses, not by the server at
// connect. So that a bad one is refused at startup with the server's own
// error, as PostgreSQL does (FATAL 42704 unrecognized configuration
// parameter, 22023 invalid value, ...), the first session with a given
// set of parameters applies them on a server connection before it is
// greeted; a set that worked is remembered for the backend user and
// database.

// startupChecked remembers the startup parameter sets known to apply.
type startupChecked struct {
	mu   sync.Mutex
	good map[string]struct{}
}

// startupCheckTimeout bounds checkStartupParams.
const startupCheckTimeout = 3 * time.Second

// maxStartupChecked bounds startupChecked (application_name makes many
// sets): past it the memory starts again.
const maxStartupChecked = 4096

func (c *startupChecked) known(k string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.good[k]
	return ok
}

func (c *startupChecked) add(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.good == nil || len(c.good) >= maxStartupChecked {
		c.good = make(map[string]struct{})
	}
	c.good[k] = struct{}{}
}

// checkStartupParams applies the session's startup parameters on a
// server connection of the shard that greets it and returns the
// server's refusal as a FATAL error. A connection that cannot be had
// now (or in startupCheckTimeout) leaves the check to the session's
// first statement.
func (s *Server) checkStartupParams(ctx context.Context, ss *session) error {
	if len(ss.sets.startup) == 0 {
		return nil
	}
	k := ss.user.beUser + "\x00" + ss.db + "\x00" + ss.sets.key
	if s.startupOK.known(k) {
		return nil
	}
	// A server slow to answer delays the greeting by at most this; the
	// check is then left to the first statement.
	ctx, cancel := context.WithTimeout(ctx, startupCheckTimeout)
	defer cancel()
	plan, err := s.router().Route(router.Query{})
	if err != nil {
		return nil
	}
	shard := plan.Shard
	if shards := s.startupShards(plan.Shard); len(shards) > 1 {
		if sh, ok := s.upPrimary(s.endpointStatuses(), shards, nil); ok {
			shard = sh
		}
	}
	p, err := s.pool(ctx, shard, ss.user, ss.db)
	if err != nil {
		return nil
	}
	be, err := s.acquire(ctx, p)
	if err != nil {
		return nil
	}
	err = ss.prepareBackend(ctx, be)
	if be.Broken() {
		p.Discard(be)
	} else {
		// A failed apply ran in one implicit transaction: the connection
		// keeps its earlier parameters (and SettingsKey).
		p.Release(be)
	}
	var we *wire.Error
	if errors.As(err, &we) && we.Severity == "FATAL" {
		return we // the server's refusal (prepareBackend)
	}
	if err == nil {
		s.startupOK.add(k)
	}
	return nil
}
