package failover

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// check is one probe of a server of a shard.
type check struct {
	shard, addr string
	state       ServerState
	err         error
}

// downKey names a server of a shard.
type downKey struct{ shard, addr string }

// suspect is a server that failed its latest checks.
type suspect struct {
	since   time.Time // start of the first failed check of the run
	fails   int       // failed checks in a row
	lastErr error
	waiting bool // logged that the observers do not agree yet
	misrole bool // logged that a primary says it is in recovery
}

// probe asks addr for its state, within CheckInterval.
func (c *Controller) probe(ctx context.Context, addr string) (ServerState, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CheckInterval)
	defer cancel()
	st, err := c.cfg.Admin.State(ctx, addr)
	if err != nil {
		return st, fmt.Errorf("state of %s: %w", addr, err)
	}
	return st, nil
}

// probeAll probes every check's server at the same time and fills in its
// state and error.
func (c *Controller) probeAll(ctx context.Context, checks []check) {
	var wg sync.WaitGroup
	for i := range checks {
		wg.Go(func() { checks[i].state, checks[i].err = c.probe(ctx, checks[i].addr) })
	}
	wg.Wait()
}

// observe records the outcome of a check of the shard's server addr that
// started at at, and reports whether the server is now confirmed down:
// it failed at least two checks in a row, for FailAfter, and enough
// proxies agree (see Config.Observers). reason says so, for people.
func (c *Controller) observe(shard, addr string, st ServerState, err error, at time.Time) (down bool, reason string) {
	key := downKey{shard, addr}
	c.mu.Lock()
	s := c.down[key]
	if err == nil {
		var misrole, recovered bool
		fails := 0
		if s != nil {
			fails = s.fails
		}
		switch {
		case st.InRecovery:
			// Not a reason to fail over: a DBA may have switched the
			// primary outside pgshard, and promoting another replica
			// would make two primaries. Say it once.
			misrole = s == nil || !s.misrole
			c.down[key] = &suspect{misrole: true}
		case s != nil:
			recovered = fails > 0
			delete(c.down, key)
		}
		c.mu.Unlock()
		if misrole {
			c.log.Warn("failover: the shard's primary says it is in recovery; the map may be out of date, no failover is started", "shard", shard, "primary", addr)
		}
		if recovered {
			c.log.Info("failover: server answers again", "shard", shard, "addr", addr, "failed_checks", fails)
		}
		return false, ""
	}
	if s == nil {
		s = &suspect{}
		c.down[key] = s
	}
	if s.fails == 0 {
		s.since = at
	}
	s.fails++
	s.lastErr = err
	failing, fails := at.Sub(s.since), s.fails
	c.mu.Unlock()

	if fails < 2 || failing < c.cfg.FailAfter {
		c.log.Debug("failover: server failed a check", "shard", shard, "addr", addr, "failed_checks", fails, "for", failing, "err", err)
		return false, ""
	}
	unreachable, reporting := c.cfg.Store.Reports(addr)
	need := max(min(c.cfg.Observers, reporting), 0)
	c.mu.Lock()
	defer c.mu.Unlock()
	if unreachable < need {
		if !s.waiting {
			s.waiting = true
			c.log.Warn("failover: server fails every check, but the proxies do not confirm it; waiting for them",
				"shard", shard, "addr", addr, "failing_for", failing, "proxies_unreachable", unreachable, "proxies_reporting", reporting, "needed", need, "err", err)
		}
		return false, ""
	}
	s.waiting = false
	observers := fmt.Sprintf("%d of %d reporting proxies find it unreachable", unreachable, reporting)
	if reporting == 0 {
		observers = "no proxy reports, so the leader's view decides"
	}
	return true, fmt.Sprintf("%s failed %d checks in a row for %s (last: %v); %s", addr, fails, failing.Round(time.Millisecond), err, observers)
}

// confirmDown checks the shard's server addr once more (the workflow calls
// it after an action on addr failed) and reports whether it is now
// confirmed down, by the same rule as a primary.
func (c *Controller) confirmDown(ctx context.Context, shard, addr string) (bool, string) {
	at := c.cfg.Now()
	st, err := c.probe(ctx, addr)
	if ctx.Err() != nil {
		return false, ""
	}
	if err == nil {
		st.InRecovery = false // reachable is all that counts here
	}
	return c.observe(shard, addr, st, err, at)
}

// forget drops the failed checks of the shard's servers and the warnings
// about its steps: its switch is over, stopped, or was never started. A
// failed check of a later run must not count with those of this one.
func (c *Controller) forget(shard string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.down {
		if k.shard == shard {
			delete(c.down, k)
		}
	}
	for k := range c.warned {
		if strings.HasPrefix(k, shard+"/") {
			delete(c.warned, k)
		}
	}
}
