package proxy

import (
	"fmt"
	"math"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/pgshard/pgshard/wire"
)

// Rate limits: token buckets (golang.org/x/time/rate) per user and per
// client address, one for statements and one for new connections each.
// A statement over its budget is refused with 53400
// (configuration_limit_exceeded: a limit the configuration sets, and
// class 53 tells clients to retry later); a connection over its budget is
// refused with 53300 (too_many_connections, what PostgreSQL sends for
// max_connections and a role's CONNECTION LIMIT, so pools and drivers
// already back off on it). The limits follow configuration reloads: a
// bucket takes the new rate and burst at its next use.
//
// The address limit on connections is checked before authentication (an
// address that hammers the proxy costs it no SCRAM work); the user limit
// after it, so nobody can spend a user's budget without its password.

// RateLimitsConfig bounds what users and client addresses may do per
// second. Zero rates mean no limit.
type RateLimitsConfig struct {
	// PerUser applies to each user (one bucket per user name), unless
	// the user sets its own rate_limit.
	PerUser RateLimit `yaml:"per_user"`
	// PerAddress applies to each client IP address.
	PerAddress RateLimit `yaml:"per_address"`
}

// RateLimit is one set of token buckets.
type RateLimit struct {
	// StatementsPerSecond is the sustained rate of statements (simple
	// queries and extended-protocol Binds); 0: no limit.
	StatementsPerSecond float64 `yaml:"statements_per_second"`
	// StatementBurst is how many statements may come at once after a
	// quiet spell; default: the rate rounded up (at least 1).
	StatementBurst int `yaml:"statement_burst"`
	// ConnectionsPerSecond is the sustained rate of new client
	// connections; 0: no limit.
	ConnectionsPerSecond float64 `yaml:"connections_per_second"`
	// ConnectionBurst is ConnectionsPerSecond's burst; default as
	// StatementBurst.
	ConnectionBurst int `yaml:"connection_burst"`
}

func (r RateLimit) validate(field string) []error {
	var errs []error
	if r.StatementsPerSecond < 0 || math.IsNaN(r.StatementsPerSecond) || math.IsInf(r.StatementsPerSecond, 0) {
		errs = append(errs, fmt.Errorf("%s.statements_per_second: %v is not a rate (0 or more)", field, r.StatementsPerSecond))
	}
	if r.ConnectionsPerSecond < 0 || math.IsNaN(r.ConnectionsPerSecond) || math.IsInf(r.ConnectionsPerSecond, 0) {
		errs = append(errs, fmt.Errorf("%s.connections_per_second: %v is not a rate (0 or more)", field, r.ConnectionsPerSecond))
	}
	if r.StatementBurst < 0 {
		errs = append(errs, fmt.Errorf("%s.statement_burst: %d is negative", field, r.StatementBurst))
	}
	if r.ConnectionBurst < 0 {
		errs = append(errs, fmt.Errorf("%s.connection_burst: %d is negative", field, r.ConnectionBurst))
	}
	return errs
}

func (c RateLimitsConfig) validate() []error {
	return append(c.PerUser.validate("rate_limits.per_user"), c.PerAddress.validate("rate_limits.per_address")...)
}

// The limits, as metric labels and in SHOW LISTS / SHOW CONFIG.
const (
	limitUserStatements     = "user_statements"
	limitAddressStatements  = "address_statements"
	limitUserConnections    = "user_connections"
	limitAddressConnections = "address_connections"
)

var limitNames = []string{limitUserStatements, limitAddressStatements, limitUserConnections, limitAddressConnections}

// Statements and connections over a limit get these SQLSTATEs.
const (
	sqlStateStatementRateLimit  = wire.SQLStateConfigurationLimitExceed // 53400
	sqlStateConnectionRateLimit = wire.SQLStateTooManyConnections       // 53300
)

// bucketIdle is how long an unused bucket is kept once a table is large
// (a bucket unused this long has refilled for any useful rate).
const bucketIdle = 5 * time.Minute

// bucketSweep is how many buckets a table holds before it drops idle ones.
const bucketSweep = 1024

// bucket is one token bucket and the setting it was made with.
type bucket struct {
	lim   *rate.Limiter
	rate  float64
	burst int
	used  time.Time
}

// buckets is one limit's buckets, by user name or address.
type buckets struct {
	mu sync.Mutex
	m  map[string]*bucket
}

// allow takes a token from key's bucket with rate per second and burst,
// adjusting the bucket to a changed setting.
func (b *buckets) allow(key string, per float64, burst int, now time.Time) bool {
	if burst <= 0 {
		burst = max(1, int(math.Ceil(per)))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[string]*bucket)
	}
	k := b.m[key]
	if k == nil {
		if len(b.m) >= bucketSweep {
			for n, o := range b.m {
				if now.Sub(o.used) > bucketIdle {
					delete(b.m, n)
				}
			}
		}
		k = &bucket{lim: rate.NewLimiter(rate.Limit(per), burst), rate: per, burst: burst}
		b.m[key] = k
	}
	if k.rate != per {
		k.lim.SetLimitAt(now, rate.Limit(per))
		k.rate = per
	}
	if k.burst != burst {
		k.lim.SetBurstAt(now, burst)
		k.burst = burst
	}
	k.used = now
	return k.lim.AllowN(now, 1)
}

// rateLimiter holds every limit's buckets and their metrics.
type rateLimiter struct {
	userStmts, addrStmts, userConns, addrConns buckets
	refused                                    *prometheus.CounterVec
	configured                                 *prometheus.GaugeVec
}

func newRateLimiter(reg *prometheus.Registry) *rateLimiter {
	r := &rateLimiter{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgshard_rate_limited_total",
			Help: "Statements (53400) and connections (53300) refused by a rate limit, by limit.",
		}, []string{"limit"}),
		configured: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgshard_rate_limit_per_second",
			Help: "The configured rate of each limit (per user or per client address; 0: none).",
		}, []string{"limit"}),
	}
	for _, n := range limitNames {
		r.refused.WithLabelValues(n)
		r.configured.WithLabelValues(n)
	}
	reg.MustRegister(r.refused, r.configured)
	return r
}

// observe publishes cfg's rates.
func (r *rateLimiter) observe(cfg RateLimitsConfig) {
	r.configured.WithLabelValues(limitUserStatements).Set(cfg.PerUser.StatementsPerSecond)
	r.configured.WithLabelValues(limitAddressStatements).Set(cfg.PerAddress.StatementsPerSecond)
	r.configured.WithLabelValues(limitUserConnections).Set(cfg.PerUser.ConnectionsPerSecond)
	r.configured.WithLabelValues(limitAddressConnections).Set(cfg.PerAddress.ConnectionsPerSecond)
}

// userLimit is the per-user limit that applies to u.
func userLimit(cfg *Config, u *userState) RateLimit {
	if u != nil && u.cfg.RateLimit != nil {
		return *u.cfg.RateLimit
	}
	return cfg.RateLimits.PerUser
}

// clientIP is the address part of a client's remote address.
func clientIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// limitAddressConnection refuses a new connection from addr over
// per_address.connections_per_second.
func (s *Server) limitAddressConnection(addr net.Addr) *wire.Error {
	lim := s.runtime().cfg.RateLimits.PerAddress
	if lim.ConnectionsPerSecond == 0 {
		return nil
	}
	ip := clientIP(addr)
	if s.ops.limits.addrConns.allow(ip, lim.ConnectionsPerSecond, lim.ConnectionBurst, time.Now()) {
		return nil
	}
	s.ops.limits.refused.WithLabelValues(limitAddressConnections).Inc()
	return &wire.Error{Severity: "FATAL", Code: sqlStateConnectionRateLimit,
		Message: fmt.Sprintf("too many new connections from %s: at most %g per second (rate_limits.per_address.connections_per_second)", ip, lim.ConnectionsPerSecond),
		Hint:    "Reuse connections (a client-side pool), or retry shortly."}
}

// limitUserConnection refuses a new connection of an authenticated user
// over its connections_per_second.
func (s *Server) limitUserConnection(u *userState) *wire.Error {
	lim := userLimit(s.runtime().cfg, u)
	if lim.ConnectionsPerSecond == 0 {
		return nil
	}
	if s.ops.limits.userConns.allow(u.cfg.Name, lim.ConnectionsPerSecond, lim.ConnectionBurst, time.Now()) {
		return nil
	}
	s.ops.limits.refused.WithLabelValues(limitUserConnections).Inc()
	return &wire.Error{Severity: "FATAL", Code: sqlStateConnectionRateLimit,
		Message: fmt.Sprintf("too many new connections for role %q: at most %g per second (rate limit)", u.cfg.Name, lim.ConnectionsPerSecond),
		Hint:    "Reuse connections (a client-side pool), or retry shortly."}
}

// limitStatement is called where the session takes a client statement (a
// simple Query or a Bind): over the user's or the address's statement
// rate, the statement is refused with 53400 — by the attached server when
// there is one, so the error arrives in order and aborts an open
// transaction as any error would.
func (s *session) limitStatement(typ byte) error {
	if typ != 'Q' && typ != 'B' {
		return nil
	}
	cfg := s.srv.runtime().cfg
	ul, al := userLimit(cfg, s.user), cfg.RateLimits.PerAddress
	if ul.StatementsPerSecond == 0 && al.StatementsPerSecond == 0 {
		return nil
	}
	now := time.Now()
	var e *wire.Error
	switch {
	case ul.StatementsPerSecond > 0 && !s.srv.ops.limits.userStmts.allow(s.user.cfg.Name, ul.StatementsPerSecond, ul.StatementBurst, now):
		s.srv.ops.limits.refused.WithLabelValues(limitUserStatements).Inc()
		e = &wire.Error{Code: sqlStateStatementRateLimit,
			Message: fmt.Sprintf("statement refused: role %q may run at most %g statements per second (rate limit)", s.user.cfg.Name, ul.StatementsPerSecond),
			Hint:    "Retry shortly, or ask the operator to raise the limit."}
	case al.StatementsPerSecond > 0 && !s.srv.ops.limits.addrStmts.allow(clientIP(s.conn.RemoteAddr()), al.StatementsPerSecond, al.StatementBurst, now):
		s.srv.ops.limits.refused.WithLabelValues(limitAddressStatements).Inc()
		e = &wire.Error{Code: sqlStateStatementRateLimit,
			Message: fmt.Sprintf("statement refused: clients from %s may run at most %g statements per second (rate_limits.per_address)", clientIP(s.conn.RemoteAddr()), al.StatementsPerSecond),
			Hint:    "Retry shortly, or ask the operator to raise the limit."}
	default:
		return nil
	}
	if be := s.attached(); be != nil {
		return s.raiseViaServer(be, e)
	}
	return e
}
