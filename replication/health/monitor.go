package health

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/shardmap"
)

// The roles a [Target] has in the shard map.
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
	// RoleFenced is a server the map fences (TargetsWithFenced): probed
	// for its health only; it gets no traffic.
	RoleFenced = "fenced"
)

// DefaultInterval is the probe interval when [Config.Interval] is 0.
const DefaultInterval = time.Second

// applicationName is the application_name of the monitor's connections, so
// that DBAs can tell them apart in pg_stat_activity.
const applicationName = "pgshard-health"

// Target is one endpoint to watch: a shard's primary or one of its replicas.
type Target struct {
	Shard string // name of the shard in the map
	Addr  string // host:port
	Role  string // RolePrimary, RoleReplica or RoleFenced, as the shard map says
}

// TargetsFromMap lists the primary and the replicas of every shard of m.
func TargetsFromMap(m *shardmap.Map) []Target {
	if m == nil {
		return nil
	}
	var ts []Target
	for _, s := range m.Shards {
		ts = append(ts, Target{Shard: s.Name, Addr: s.Primary.String(), Role: RolePrimary})
		for _, r := range s.Replicas {
			ts = append(ts, Target{Shard: s.Name, Addr: r.String(), Role: RoleReplica})
		}
	}
	return ts
}

// TargetsWithFenced is TargetsFromMap plus the fenced servers of every
// shard (RoleFenced), so that their real health is known: the meta
// members' monitor, whose view pgshard shards list shows.
func TargetsWithFenced(m *shardmap.Map) []Target {
	ts := TargetsFromMap(m)
	if m == nil {
		return ts
	}
	for _, s := range m.Shards {
		for _, f := range s.Fenced {
			ts = append(ts, Target{Shard: s.Name, Addr: f.String(), Role: RoleFenced})
		}
	}
	return ts
}

// StaticTargets returns a [Config.Targets] function that always returns ts.
func StaticTargets(ts ...Target) func() []Target {
	ts = append([]Target(nil), ts...)
	return func() []Target { return ts }
}

// Config configures a [Monitor].
type Config struct {
	// Targets returns the endpoints to watch. Run calls it at start and
	// then once per Interval, so it can follow a shard map that changes:
	// new targets get a prober, gone ones lose theirs (and their status).
	// A target is identified by Shard and Addr; a changed Role is taken
	// over in place. Required.
	Targets func() []Target

	// Dial opens a connection to addr (host:port). nil means
	// pgconn.ConnectConfig with User, Password, Database and SSLMode.
	Dial func(ctx context.Context, addr string) (*pgconn.PgConn, error)

	// User, Password, Database and SSLMode are the connection settings
	// when Dial is nil. The probe needs no privilege: any role that can
	// log in to Database will do. Empty Database means the user's name;
	// empty SSLMode means pgconn's default (prefer).
	User, Password, Database, SSLMode string
	// SSLRootCert, SSLCert and SSLKey are libpq's sslrootcert (CA for
	// verify-ca/verify-full), sslcert and sslkey (client certificate).
	SSLRootCert, SSLCert, SSLKey string

	// Interval is the time between two probes of one endpoint; 0 means
	// DefaultInterval.
	Interval time.Duration

	// Timeout bounds one probe, connecting included; 0 means Interval.
	Timeout time.Duration
}

// Monitor probes every target of its [Config] on an interval and keeps the
// latest status of each. Create it with [New], run it with [Monitor.Run],
// read it with [Monitor.Snapshot] and its helpers from any goroutine.
type Monitor struct {
	targets  func() []Target
	dial     func(ctx context.Context, addr string) (*pgconn.PgConn, error)
	interval time.Duration // > 0
	timeout  time.Duration // > 0

	mu        sync.Mutex
	running   bool              // Run is running
	endpoints map[key]*endpoint // the current targets
}

// key identifies a target.
type key struct{ shard, addr string }

// endpoint is the state of one target, guarded by Monitor.mu.
type endpoint struct {
	target      Target
	up          bool        // the latest probe succeeded
	lastErr     error       // the latest probe's error; nil when it succeeded
	consecutive int         // failed probes since the latest success
	failures    uint64      // failed probes in all
	lastProbe   time.Time   // when the latest probe finished
	obs         observation // from the latest successful probe
	hasObs      bool        // obs is set: a probe has ever succeeded

	stop context.CancelFunc // ends the prober; nil when none runs
}

// New returns a monitor for cfg; it probes nothing until [Monitor.Run].
func New(cfg Config) (*Monitor, error) {
	if cfg.Targets == nil {
		return nil, errors.New("health: Config.Targets is required")
	}
	if cfg.Interval < 0 || cfg.Timeout < 0 {
		return nil, fmt.Errorf("health: negative interval %v or timeout %v", cfg.Interval, cfg.Timeout)
	}
	m := &Monitor{
		targets:   cfg.Targets,
		dial:      cfg.Dial,
		interval:  cfg.Interval,
		timeout:   cfg.Timeout,
		endpoints: make(map[key]*endpoint),
	}
	if m.interval == 0 {
		m.interval = DefaultInterval
	}
	if m.timeout == 0 {
		m.timeout = m.interval
	}
	if m.dial == nil {
		m.dial = settingsDialer(cfg, m.timeout)
	}
	return m, nil
}

// settingsDialer returns a dial function that connects with cfg's user,
// password, database and sslmode.
func settingsDialer(cfg Config, timeout time.Duration) func(context.Context, string) (*pgconn.PgConn, error) {
	return func(ctx context.Context, addr string) (*pgconn.PgConn, error) {
		u := url.URL{Scheme: "postgres", Host: addr, User: url.UserPassword(cfg.User, cfg.Password)}
		if cfg.Password == "" {
			u.User = url.User(cfg.User)
		}
		if cfg.Database != "" {
			u.Path = "/" + cfg.Database
		}
		q := url.Values{"application_name": {applicationName}}
		if cfg.SSLMode != "" {
			q.Set("sslmode", cfg.SSLMode)
		}
		for k, v := range map[string]string{"sslrootcert": cfg.SSLRootCert, "sslcert": cfg.SSLCert, "sslkey": cfg.SSLKey} {
			if v != "" {
				q.Set(k, v)
			}
		}
		u.RawQuery = q.Encode()
		pc, err := pgconn.ParseConfig(u.String())
		if err != nil {
			return nil, fmt.Errorf("health: connection settings for %s: %w", addr, err)
		}
		pc.ConnectTimeout = timeout
		return pgconn.ConnectConfig(ctx, pc)
	}
}

// Run probes every target once per interval until ctx ends, then stops its
// probers, closes their connections and returns. Each target has one
// goroutine and one connection, opened again on the next probe after a
// failure. Statuses stay readable after Run returns. Run must not be called
// again while it runs (it panics).
func (m *Monitor) Run(ctx context.Context) {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		panic("health: Monitor.Run called while already running")
	}
	m.running = true
	m.mu.Unlock()

	var wg sync.WaitGroup
	defer func() {
		m.mu.Lock()
		for _, ep := range m.endpoints {
			ep.stop()
			ep.stop = nil
		}
		m.running = false
		m.mu.Unlock()
		wg.Wait()
	}()

	ticker := time.NewTicker(m.interval)
	defer ticker.Stop()
	for {
		m.reconcile(ctx, &wg)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// reconcile starts a prober for every new target and stops those of the
// targets that are gone.
func (m *Monitor) reconcile(ctx context.Context, wg *sync.WaitGroup) {
	want := make(map[key]Target)
	for _, t := range m.targets() {
		want[key{t.Shard, t.Addr}] = t
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, ep := range m.endpoints {
		if _, ok := want[k]; !ok {
			ep.stop()
			delete(m.endpoints, k)
		}
	}
	for k, t := range want {
		ep, ok := m.endpoints[k]
		if ok {
			ep.target.Role = t.Role
		} else {
			ep = &endpoint{target: t}
			m.endpoints[k] = ep
		}
		if ep.stop == nil { // new, or left by an earlier Run
			pctx, stop := context.WithCancel(ctx)
			ep.stop = stop
			wg.Go(func() { m.probeLoop(pctx, ep) })
		}
	}
}
