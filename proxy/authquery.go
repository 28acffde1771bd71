package proxy

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/auth"
)

// auth_query, as in PgBouncer: a user not listed in users is looked up on
// the server — its password verifier, by a query run as auth_query.user
// on the default shard's primary — so any role the server knows logs in
// with its own password (SCRAM, or md5 for a role with an md5 verifier).
// Answers are cached for auth_query.cache_ttl, unknown roles too, so a
// changed or new password counts after at most that long. Listed users
// win over the server's roles of the same name.

// DefaultAuthQuery calls the function the README tells a DBA to install
// (pgshard.user_lookup, SECURITY DEFINER over pg_authid).
const DefaultAuthQuery = "SELECT usename, passwd FROM pgshard.user_lookup($1)"

// AuthQueryConfig configures auth_query; it is off while User is empty.
type AuthQueryConfig struct {
	// User is the role the query runs as (PgBouncer's auth_user).
	User string `yaml:"user"`
	// Password is User's password on the server; prefer PasswordEnv
	// (default PGSHARD_AUTH_PASSWORD).
	Password    string `yaml:"password"`
	PasswordEnv string `yaml:"password_env"`
	// Query returns (name, verifier) for the role named by $1; default
	// DefaultAuthQuery. No row, or a NULL verifier: the login fails.
	Query string `yaml:"query"`
	// Database the query runs in; default postgres.
	Database string `yaml:"database"`
	// CacheTTL is how long an answer is used; default 30s.
	CacheTTL Duration `yaml:"cache_ttl"`
}

func (a *AuthQueryConfig) complete() {
	if a.User == "" {
		return
	}
	if a.PasswordEnv == "" {
		a.PasswordEnv = "PGSHARD_AUTH_PASSWORD"
	}
	if v, ok := os.LookupEnv(a.PasswordEnv); ok {
		a.Password = v
	}
	if a.Query == "" {
		a.Query = DefaultAuthQuery
	}
	if a.Database == "" {
		a.Database = "postgres"
	}
	if a.CacheTTL == 0 {
		a.CacheTTL = Duration(30 * time.Second)
	}
}

func (a AuthQueryConfig) validate() []error {
	if a.User == "" {
		return nil
	}
	var errs []error
	if !strings.Contains(a.Query, "$1") {
		errs = append(errs, fmt.Errorf("auth_query.query: %q does not use $1 (the role name)", a.Query))
	}
	if a.CacheTTL < 0 {
		errs = append(errs, fmt.Errorf("auth_query.cache_ttl: %s is negative", a.CacheTTL.D()))
	}
	return errs
}

// authEntry is one cached answer of auth_query.
type authEntry struct {
	name    string
	found   bool // the server knows the role and it has a verifier
	cred    auth.Credential
	expires time.Time
}

// authCache holds auth_query's answers by role name.
type authCache struct {
	mu sync.Mutex
	m  map[string]authEntry
	// lookups serializes the lookups of one name, so a burst of logins
	// costs the server one query.
	lookups map[string]*sync.Mutex
}

// get returns the cached answer for name, if still fresh.
func (c *authCache) get(name string, now time.Time) (authEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[name]
	if !ok || now.After(e.expires) {
		return authEntry{}, false
	}
	return e, true
}

func (c *authCache) put(e authEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]authEntry)
	}
	now := time.Now()
	for n, o := range c.m { // drop stale answers
		if now.After(o.expires) {
			delete(c.m, n)
		}
	}
	c.m[e.name] = e
}

// lock serializes lookups of name; the caller calls the returned unlock.
func (c *authCache) lock(name string) func() {
	c.mu.Lock()
	if c.lookups == nil {
		c.lookups = make(map[string]*sync.Mutex)
	}
	l := c.lookups[name]
	if l == nil {
		l = &sync.Mutex{}
		c.lookups[name] = l
	}
	c.mu.Unlock()
	l.Lock()
	return func() {
		c.mu.Lock()
		if c.lookups[name] == l {
			delete(c.lookups, name)
		}
		c.mu.Unlock()
		l.Unlock()
	}
}

// entries lists the fresh answers, by name.
func (c *authCache) entries() []authEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	out := make([]authEntry, 0, len(c.m))
	for _, e := range c.m {
		if !now.After(e.expires) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b authEntry) int { return strings.Compare(a.name, b.name) })
	return out
}

// authQueryUser returns the user state of a role that users does not
// list, from auth_query; nil when auth_query is off. A role the server
// does not know gets a user state with no credential: its exchange fails
// as a wrong password does, as PostgreSQL's does. The error is for a
// lookup that could not be made.
func (s *Server) authQueryUser(ctx context.Context, rt *runtime, name string) (*userState, error) {
	aq := rt.cfg.AuthQuery
	if aq.User == "" || name == "" {
		return nil, nil
	}
	e, ok := s.ops.auth.get(name, time.Now())
	if !ok {
		unlock := s.ops.auth.lock(name)
		defer unlock()
		if e, ok = s.ops.auth.get(name, time.Now()); !ok {
			var err error
			if e, err = s.lookupRole(ctx, rt, name); err != nil {
				return nil, err
			}
			s.ops.auth.put(e)
		}
	}
	// The role keeps its identity on the servers: its server connections
	// log in as the role itself, never as backend.user (which would give
	// every role the privileges of that user). The proxy does not know
	// the role's password, so the servers must admit the proxy for it
	// without one (pg_hba trust or cert from the proxy's address) or
	// with backend.password; see the README.
	us := &userState{
		cfg:        UserConfig{Name: name, Auth: string(auth.MD5)},
		method:     auth.MD5, // md5 verifiers get md5, SCRAM verifiers SCRAM
		cred:       e.cred,
		beUser:     name,
		bePassword: rt.cfg.Backend.Password,
		reads:      rt.cfg.Reads,
	}
	return us, nil
}

// lookupRole runs auth_query for name on the default shard's primary.
func (s *Server) lookupRole(ctx context.Context, rt *runtime, name string) (authEntry, error) {
	aq := rt.cfg.AuthQuery
	var sc *ShardConfig
	for i := range rt.cfg.Shards {
		if rt.cfg.Shards[i].Name == rt.cfg.DefaultShard {
			sc = &rt.cfg.Shards[i]
		}
	}
	if sc == nil {
		return authEntry{}, fmt.Errorf("auth_query: no default shard to ask")
	}
	b := rt.cfg.Backend
	dsn := "host=" + dsnQuote(sc.Host) + " port=" + strconv.Itoa(sc.Port) + " dbname=" + dsnQuote(aq.Database) +
		" user=" + dsnQuote(aq.User) + " application_name=pgshard_auth_query connect_timeout=5"
	if b.SSLMode != "" {
		dsn += " sslmode=" + dsnQuote(b.SSLMode)
	}
	if b.SSLRootCert != "" {
		dsn += " sslrootcert=" + dsnQuote(b.SSLRootCert)
	}
	if b.SSLCert != "" {
		dsn += " sslcert=" + dsnQuote(b.SSLCert) + " sslkey=" + dsnQuote(b.SSLKey)
	}
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return authEntry{}, fmt.Errorf("auth_query: connection settings: %w", err)
	}
	pc.Password = aq.Password // never in dsn, so never in an error
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addr := sc.address()
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return authEntry{}, fmt.Errorf("auth_query: connect to %s as %q: %w", addr, aq.User, err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	res := conn.ExecParams(ctx, aq.Query, [][]byte{[]byte(name)}, nil, nil, nil).Read()
	if res.Err != nil {
		return authEntry{}, fmt.Errorf("auth_query on %s: %w", addr, res.Err)
	}
	e := authEntry{name: name, expires: time.Now().Add(aq.CacheTTL.D())}
	if len(res.Rows) == 0 || len(res.Rows[0]) < 2 || res.Rows[0][1] == nil {
		return e, nil // unknown role, or no password: the login fails
	}
	cred, err := auth.ParseCredential(string(res.Rows[0][1]))
	if err != nil {
		// A plain-text or unusable password: fail the login as
		// PostgreSQL does for a role it cannot check.
		s.log.Warn("auth_query returned no usable verifier", "role", name, "err", err)
		return e, nil
	}
	e.found, e.cred = true, cred
	return e, nil
}

// dsnQuote quotes a value of a libpq keyword/value connection string.
func dsnQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// authQueryFailed is the login error when auth_query cannot be run.
func authQueryFailed() *wire.Error {
	return &wire.Error{Severity: "FATAL", Code: wire.SQLStateConnectionFailure,
		Message: "pgshard could not look up the role's password (auth_query)",
		Hint:    "The proxy's log says why; retry shortly."}
}
