package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/pgshard/pgshard/shardmap"
)

// Defaults of [Config].
const (
	DefaultCheckInterval = 500 * time.Millisecond
	DefaultFailAfter     = 2 * time.Second
	DefaultObservers     = 1
	DefaultDrainGrace    = 5 * time.Second
	DefaultActionTimeout = 30 * time.Second
	// DefaultReplicaCheckInterval is Config.ReplicaCheckInterval's default.
	DefaultReplicaCheckInterval = 2 * time.Second
	// DefaultFenceCheckInterval is Config.FenceCheckInterval's default.
	DefaultFenceCheckInterval = 2 * time.Second
)

// Config configures a [Controller].
type Config struct {
	Store Store // required
	Admin Admin // required

	// CheckInterval is how often the leader checks the primary of every
	// shard; one check (Admin.State) may take at most this long. It is
	// also the pause before a failed workflow step is tried again. 0
	// means DefaultCheckInterval.
	CheckInterval time.Duration
	// FailAfter is how long a primary must fail every check before it is
	// failed over; at least two checks must fail whatever its value, so
	// one missed probe never starts a failover. 0 means DefaultFailAfter.
	FailAfter time.Duration
	// Observers is how many proxies must also report the primary
	// unreachable (the second observer): min(Observers, proxies
	// reporting). When no live proxy reports at all, the leader's view
	// alone decides (nobody can write then). 0 means DefaultObservers;
	// negative means the leader's view always decides alone.
	Observers int
	// DrainGrace is how long, in a switchover, open transactions on the
	// old primary may run before they are terminated. 0 means
	// DefaultDrainGrace.
	DrainGrace time.Duration
	// ActionTimeout bounds each Admin call other than State and Fence
	// (State gets CheckInterval, Fence twice that, Quiesce DrainGrace on
	// top); a call that times out is tried again. 0 means
	// DefaultActionTimeout.
	ActionTimeout time.Duration
	// ReplicaCheckInterval is how often the leader checks that every
	// replica streams from its shard's primary, and repoints one that
	// streams from another server (a replica that was down during a
	// failover, or that a DBA pointed elsewhere). 0 means
	// DefaultReplicaCheckInterval; negative: never.
	ReplicaCheckInterval time.Duration
	// FenceCheckInterval is how often the leader checks every server the
	// map fences (each shard's Fenced, and the old primary of a failover
	// past its fence step) and fences again one that is reachable and
	// writable — a former primary restarted after its failover keeps no
	// fence that it was never given, or lost. A fenced server stays
	// fenced until pgshard shards rejoin rebuilds it. 0 means
	// DefaultFenceCheckInterval; negative: never.
	FenceCheckInterval time.Duration

	// Logger receives the controller's logs. nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock of failure durations and events. nil means
	// time.Now.
	Now func() time.Time
	// OnEvent, if set, is called for every step of every failover and
	// switchover, synchronously: it must not block.
	OnEvent func(Event)
}

// Controller detects failed primaries and runs failovers and switchovers.
// It acts only on the meta leader (internal/controlplane runs it there).
// Its methods are safe for concurrent use.
type Controller struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	busy map[string]claimKind // shards whose workflow runs in this process
	// released is closed (and replaced) whenever a claim is released, so
	// a switchover can wait out a replica check (claimWait).
	released chan struct{}
	last     map[string]Event     // latest event per shard
	down     map[downKey]*suspect // failing servers, by shard and address
	stuck    map[string]uint64    // shard -> epoch at which its workflow stopped for good
	warned   map[string]warning   // shard/step -> the latest warning about it
	runs     bool                 // Run is running
	// lastReplicaCheck is when tick last checked the replicas' upstreams
	// (only the Run goroutine touches it).
	lastReplicaCheck time.Time
	// notStreaming is when each replica was first seen not streaming (of
	// the current run of such checks); repointFails counts each replica's
	// failed repoints in a row.
	notStreaming map[string]time.Time
	repointFails map[string]int
	// lastFenceCheck is when tick last checked the fenced servers (only
	// the Run goroutine touches it); fencing says a check runs.
	lastFenceCheck time.Time
	fencing        bool

	// term is cancelled when this member stops leading (or Run ends);
	// workers started by Run use it. Only the Run goroutine touches it.
	term    context.Context
	endTerm context.CancelFunc

	workers sync.WaitGroup // goroutines started by tick; Run waits for them
}

// New checks cfg, fills in its defaults and returns a controller. Call
// Run to start it.
func New(cfg Config) (*Controller, error) {
	if cfg.Store == nil {
		return nil, errors.New("failover: config: no Store")
	}
	if cfg.Admin == nil {
		return nil, errors.New("failover: config: no Admin")
	}
	if cfg.CheckInterval < 0 || cfg.FailAfter < 0 || cfg.DrainGrace < 0 || cfg.ActionTimeout < 0 {
		return nil, errors.New("failover: config: durations cannot be negative")
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.FailAfter == 0 {
		cfg.FailAfter = DefaultFailAfter
	}
	if cfg.Observers == 0 {
		cfg.Observers = DefaultObservers
	}
	if cfg.DrainGrace == 0 {
		cfg.DrainGrace = DefaultDrainGrace
	}
	if cfg.ActionTimeout == 0 {
		cfg.ActionTimeout = DefaultActionTimeout
	}
	if cfg.ReplicaCheckInterval == 0 {
		cfg.ReplicaCheckInterval = DefaultReplicaCheckInterval
	}
	if cfg.FenceCheckInterval == 0 {
		cfg.FenceCheckInterval = DefaultFenceCheckInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Controller{
		cfg:      cfg,
		log:      cfg.Logger,
		busy:     make(map[string]claimKind),
		released: make(chan struct{}),
		last:     make(map[string]Event),
		down:     make(map[downKey]*suspect),
		stuck:    make(map[string]uint64),
		warned:   make(map[string]warning),

		notStreaming: make(map[string]time.Time),
		repointFails: make(map[string]int),
	}, nil
}

// Run checks the primaries and drives the switches of the map until ctx
// ends, then waits for the workflows it started to stop and returns nil.
// The control plane (internal/controlplane) runs it while this member
// leads and cancels it when it stops leading; Run checks on its own too.
// It acts only while Store.IsLeader(): when this member becomes leader it
// resumes every switch found in the map, and when it stops leading it
// stops them (between steps, or by cancelling the call in flight) and
// leaves them to the next leader. Every CheckInterval it checks the
// primary of each shard that is not offline and has no switch.
//
// Run may be called once at a time.
func (c *Controller) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.runs {
		c.mu.Unlock()
		return errors.New("failover: Run is already running")
	}
	c.runs = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.runs = false
		// Failed checks count per leader term: a Run started again
		// (this member leads again) counts afresh.
		clear(c.down)
		clear(c.stuck)
		c.mu.Unlock()
	}()
	defer c.workers.Wait()
	defer c.stopTerm()

	t := time.NewTicker(c.cfg.CheckInterval)
	defer t.Stop()
	for {
		c.tick(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// stopTerm ends the current term: the workers started in it stop.
func (c *Controller) stopTerm() {
	if c.endTerm != nil {
		c.endTerm()
		c.term, c.endTerm = nil, nil
	}
}

// tick is one round of Run: follow leadership, resume switches, check
// primaries and start failovers.
func (c *Controller) tick(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	if !c.cfg.Store.IsLeader() {
		if c.term != nil {
			c.log.Info("failover: no longer the meta leader; stopping, the next leader resumes any switch")
			c.stopTerm()
		}
		c.mu.Lock()
		clear(c.down) // another leader's checks count now
		clear(c.stuck)
		c.mu.Unlock()
		return
	}
	if c.term == nil {
		c.term, c.endTerm = context.WithCancel(ctx)
		c.log.Info("failover: meta leader; checking primaries and resuming switches")
	}
	m := c.cfg.Store.Map()
	if m == nil {
		return
	}
	var checks []check
	for i := range m.Shards {
		sh := &m.Shards[i]
		if c.isBusy(sh.Name) {
			continue
		}
		if sh.Switch != nil {
			c.mu.Lock()
			at, stuck := c.stuck[sh.Name]
			c.mu.Unlock()
			if !stuck || at != m.Epoch {
				c.spawn(sh.Name, nil)
			}
			continue
		}
		if sh.State == shardmap.StateOffline {
			continue
		}
		checks = append(checks, check{shard: sh.Name, addr: sh.Primary.String()})
	}
	start := c.cfg.Now()
	c.probeAll(c.term, checks)
	healthy := make(map[string]bool)
	for _, ch := range checks {
		if ok, reason := c.observe(ch.shard, ch.addr, ch.state, ch.err, start); ok {
			c.spawn(ch.shard, &detection{addr: ch.addr, reason: reason})
		} else if ch.err == nil && !ch.state.InRecovery {
			healthy[ch.shard] = true
		}
	}
	if c.cfg.FenceCheckInterval > 0 && start.Sub(c.lastFenceCheck) >= c.cfg.FenceCheckInterval {
		c.lastFenceCheck = start
		c.superviseFences(m)
	}
	if c.cfg.ReplicaCheckInterval > 0 && start.Sub(c.lastReplicaCheck) >= c.cfg.ReplicaCheckInterval {
		c.lastReplicaCheck = start
		for i := range m.Shards {
			if sh := &m.Shards[i]; healthy[sh.Name] && len(sh.Replicas) > 0 {
				c.superviseReplicas(*sh)
			}
		}
	}
}

// superviseReplicas checks, in the background, that every replica of sh
// (whose primary just answered) streams from that primary, and repoints
// one that streams from another server — a replica that was down during
// a failover and came back following the old, fenced primary — or that
// has not streamed at all for five check intervals (its primary_conninfo
// names a server that is gone). A repoint only sets primary_conninfo and
// waits a little for streaming: the shard is claimed meanwhile, so no
// workflow of it runs at the same time, and its primary is not checked.
func (c *Controller) superviseReplicas(sh shardmap.Shard) {
	if !c.claimAs(sh.Name, claimSupervise) {
		return
	}
	ctx := c.term
	primary := sh.Primary.String()
	c.workers.Add(1)
	go func() {
		defer c.workers.Done()
		defer c.release(sh.Name)
		for _, r := range sh.Replicas {
			addr := r.String()
			st, err := c.probe(ctx, addr)
			if err != nil || !st.InRecovery || st.Upstream == primary {
				c.mu.Lock()
				delete(c.notStreaming, addr)
				if st.Upstream == primary {
					delete(c.repointFails, addr)
				}
				c.mu.Unlock()
				continue
			}
			why := "the replica streamed from " + st.Upstream
			if st.Upstream == "" {
				now := c.cfg.Now()
				c.mu.Lock()
				since, seen := c.notStreaming[addr]
				if !seen {
					c.notStreaming[addr] = now
				}
				c.mu.Unlock()
				if !seen || now.Sub(since) < 5*c.cfg.ReplicaCheckInterval {
					continue
				}
				why = "the replica has not streamed for " + now.Sub(since).Round(time.Second).String()
			}
			c.log.Warn("failover: a replica does not stream from its shard's primary; repointing it",
				"shard", sh.Name, "replica", addr, "why", why, "primary", primary)
			rctx, cancel := context.WithTimeout(ctx, min(c.cfg.ActionTimeout, 2*time.Second))
			err = c.cfg.Admin.Repoint(rctx, addr, primary)
			cancel()
			c.mu.Lock()
			delete(c.notStreaming, addr)
			fails := 0
			if err != nil {
				c.repointFails[addr]++
				fails = c.repointFails[addr]
			} else {
				delete(c.repointFails, addr)
			}
			c.mu.Unlock()
			c.emit(Event{Shard: sh.Name, Step: EventRepoint, From: st.Upstream, To: primary, Addr: addr, Err: err, Detail: why})
			if fails >= maxRepointFails {
				c.fenceReplica(ctx, sh.Name, r, err)
			}
		}
	}()
}

// fencedTarget is a server the map fences, with its shard.
type fencedTarget struct{ shard, addr string }

// fencedServers lists the servers of m that must not take writes: each
// shard's Fenced, and the old primary of a failover that got past its
// fence step (it is fenced once the new primary is committed), unless
// stuck says the workflow gave up on that shard's switch (it is left to a
// DBA, untouched).
func fencedServers(m *shardmap.Map, stuck func(shard string) bool) []fencedTarget {
	var out []fencedTarget
	seen := make(map[string]bool)
	add := func(shard string, e shardmap.Endpoint) {
		if a := e.String(); !seen[a] {
			seen[a] = true
			out = append(out, fencedTarget{shard, a})
		}
	}
	for _, s := range m.Shards {
		for _, f := range s.Fenced {
			add(s.Name, f)
		}
		// Only a switch the workflow can drive: one it must refuse
		// (promoteStep) is left to a DBA, untouched.
		if sw := s.Switch; sw != nil && sw.Kind == shardmap.Failover && sw.Step == StepPromote &&
			slices.Contains(s.Replicas, sw.To) && !stuck(s.Name) {
			add(s.Name, sw.From)
		}
	}
	return out
}

// superviseFences checks, in the background, every server the map fences
// and fences again (Admin.Fence) one that answers as a writable primary:
// not in recovery, default_transaction_read_only off. A server that is
// down, in recovery or already read-only costs one probe. At most one
// such check runs at a time; it does not claim the shards, so failovers
// are not delayed.
func (c *Controller) superviseFences(m *shardmap.Map) {
	targets := fencedServers(m, func(shard string) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		at, stuck := c.stuck[shard]
		return stuck && at == m.Epoch
	})
	if len(targets) == 0 {
		return
	}
	c.mu.Lock()
	if c.fencing {
		c.mu.Unlock()
		return
	}
	c.fencing = true
	c.mu.Unlock()
	ctx := c.term
	c.workers.Add(1)
	go func() {
		defer c.workers.Done()
		defer func() {
			c.mu.Lock()
			c.fencing = false
			c.mu.Unlock()
		}()
		checks := make([]check, len(targets))
		for i, t := range targets {
			checks[i] = check{shard: t.shard, addr: t.addr}
		}
		c.probeAll(ctx, checks)
		for _, ch := range checks {
			if ch.err != nil || ch.state.InRecovery || ch.state.ReadOnly || ctx.Err() != nil {
				continue
			}
			fctx, cancel := context.WithTimeout(ctx, 2*c.cfg.CheckInterval)
			err := c.cfg.Admin.Fence(fctx, ch.addr)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				// emit logs it (repeats quietly).
				err = fmt.Errorf("fence %s again: %w", ch.addr, err)
			} else {
				c.log.Warn("failover: a fenced server was up and writable; fenced it again (read-only default, its sessions terminated)",
					"shard", ch.shard, "addr", ch.addr)
			}
			c.emit(Event{Shard: ch.shard, Step: EventRefence, Addr: ch.addr, Err: err,
				Detail: "the map fences it, but it answered as a writable primary"})
		}
	}()
}

// maxRepointFails is how many repoints of a replica in a row may fail
// before the replica is fenced.
const maxRepointFails = 3

// fenceReplica moves replica r of shard to Fenced: it cannot follow its
// primary (it replayed past the point where the primary's timeline forked
// — it followed a former primary — or is broken otherwise), so it must not
// serve reads, which might show what the primary never had, until a DBA
// rebuilds it (pgshard shards rejoin).
func (c *Controller) fenceReplica(ctx context.Context, shard string, r shardmap.Endpoint, why error) {
	_, err := c.commit(ctx, shard, "fence replica "+r.String()+": it does not follow the primary", func(s *shardmap.Shard) error {
		i := slices.Index(s.Replicas, r)
		if i < 0 || s.Switch != nil {
			return errMoved
		}
		s.Replicas = slices.Delete(s.Replicas, i, i+1)
		s.Fenced = append(s.Fenced, r)
		return nil
	})
	if err != nil && !errors.Is(err, errMoved) {
		c.log.Warn("failover: could not fence a replica that does not follow its primary", "shard", shard, "replica", r, "err", err)
		return
	}
	if err == nil {
		c.mu.Lock()
		delete(c.repointFails, r.String())
		c.mu.Unlock()
		c.log.Error("failover: fenced a replica that cannot follow its primary; rebuild it (pgshard shards rejoin)", "shard", shard, "replica", r, "last_error", why)
		c.emit(Event{Shard: shard, Step: EventFenceReplica, Addr: r.String(), Detail: why.Error()})
	}
}

// detection is a primary found down by tick.
type detection struct{ addr, reason string }

// spawn starts a worker that runs the shard's workflow in the current
// term: when d is not nil it first commits a failover of the primary d
// found down; then it drives the switch in the map.
func (c *Controller) spawn(shard string, d *detection) {
	if !c.claim(shard) {
		return // a switchover of it started meanwhile
	}
	if d != nil {
		c.emit(Event{Shard: shard, Kind: shardmap.Failover, Step: EventDetect, From: d.addr, Detail: d.reason})
	}
	ctx := c.term
	c.workers.Add(1)
	go func() {
		defer c.workers.Done()
		defer c.release(shard)
		if d != nil {
			if started, err := c.startFailover(ctx, shard, d); err != nil || !started {
				if err != nil {
					c.stopped(shard, err)
				}
				return
			}
		}
		_, err := c.drive(ctx, shard)
		c.forget(shard)
		if err != nil {
			c.stopped(shard, err)
		}
	}()
}

// stopped logs why a worker stopped and, when retrying cannot help,
// remembers not to start it again until the map changes.
func (c *Controller) stopped(shard string, err error) {
	var pe *permanentError
	switch {
	case errors.As(err, &pe):
		c.log.Error("failover: the switch of this shard cannot go on; a DBA must fix the map", "shard", shard, "err", err)
		if m := c.cfg.Store.Map(); m != nil {
			c.mu.Lock()
			c.stuck[shard] = m.Epoch
			c.mu.Unlock()
		}
	case errors.Is(err, ErrNotLeader), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		c.log.Debug("failover: workflow stopped", "shard", shard, "err", err)
	default:
		c.log.Warn("failover: workflow stopped; it is retried", "shard", shard, "err", err)
	}
}

// claimKind says what holds a shard's claim.
type claimKind uint8

const (
	claimWorkflow  claimKind = iota + 1 // a failover or switchover
	claimSupervise                      // a check of the shard's replicas (superviseReplicas)
)

// claim marks shard's workflow as running in this process; false if it
// already is.
func (c *Controller) claim(shard string) bool { return c.claimAs(shard, claimWorkflow) }

func (c *Controller) claimAs(shard string, k claimKind) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy[shard] != 0 {
		return false
	}
	c.busy[shard] = k
	return true
}

// claimWait claims shard for a workflow, first waiting for a replica check
// of it to end (a few probes and at most one repoint): an operator's
// switchover must not be refused for a routine check. It is false when a
// workflow holds the shard, or when ctx ends first.
func (c *Controller) claimWait(ctx context.Context, shard string) bool {
	for {
		c.mu.Lock()
		k, released := c.busy[shard], c.released
		if k == 0 {
			c.busy[shard] = claimWorkflow
			c.mu.Unlock()
			return true
		}
		c.mu.Unlock()
		if k != claimSupervise {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-released:
		}
	}
}

func (c *Controller) release(shard string) {
	c.mu.Lock()
	delete(c.busy, shard)
	close(c.released)
	c.released = make(chan struct{})
	c.mu.Unlock()
}

func (c *Controller) isBusy(shard string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.busy[shard] != 0
}

// LastEvent returns the latest event of the shard's failovers and
// switchovers run by this controller, and false if there was none.
func (c *Controller) LastEvent(shard string) (Event, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.last[shard]
	return e, ok
}

// repeatWarnEvery is how often a step that keeps failing with the same
// error is logged as a warning; the repeats in between are logged at debug
// level.
const repeatWarnEvery = time.Minute

// warning is the latest warning logged for a step of a shard.
type warning struct {
	msg string
	at  time.Time
}

// emit timestamps e, logs it, keeps it as the shard's last event and
// hands it to Config.OnEvent.
func (c *Controller) emit(e Event) {
	e.At = c.cfg.Now()
	c.mu.Lock()
	c.last[e.Shard] = e
	quiet := false // a failure repeated: log it at debug level
	if e.Err != nil {
		key, msg := e.Shard+"/"+e.Step, e.Err.Error()
		w, ok := c.warned[key]
		quiet = ok && w.msg == msg && e.At.Sub(w.at) < repeatWarnEvery
		if !quiet {
			c.warned[key] = warning{msg: msg, at: e.At}
		}
	}
	c.mu.Unlock()
	attrs := []any{"shard", e.Shard, "kind", e.Kind, "step", e.Step, "from", e.From}
	if e.To != "" {
		attrs = append(attrs, "to", e.To)
	}
	if e.Addr != "" {
		attrs = append(attrs, "addr", e.Addr)
	}
	if e.Epoch != 0 {
		attrs = append(attrs, "epoch", e.Epoch)
	}
	if e.LSN != 0 {
		attrs = append(attrs, "lsn", e.LSN)
	}
	if e.Detail != "" {
		attrs = append(attrs, "detail", e.Detail)
	}
	switch {
	case quiet:
		c.log.Debug("failover: step failed again", append(attrs, "err", e.Err)...)
	case e.Err != nil:
		c.log.Warn("failover: step failed", append(attrs, "err", e.Err)...)
	default:
		c.log.Info("failover: step", attrs...)
	}
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(e)
	}
}

// leading returns ctx's error, or ErrNotLeader when this member does not
// lead: the checks before each step.
func (c *Controller) leading(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !c.cfg.Store.IsLeader() {
		return ErrNotLeader
	}
	return nil
}

// whileLeader returns a context that is cancelled when this member stops
// leading (checked every CheckInterval) or ctx ends, and the function that
// releases it, which also stops the goroutine that watches.
func (c *Controller) whileLeader(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(c.cfg.CheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if !c.cfg.Store.IsLeader() {
					cancel()
					return
				}
			}
		}
	}()
	return ctx, func() { cancel(); <-done }
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
