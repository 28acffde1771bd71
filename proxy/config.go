package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/shardmap"

	"github.com/pgshard/pgshard/wire/auth"
)

// PoolMode says when a backend connection goes back to the pool.
type PoolMode string

// Pool modes.
const (
	// PoolTransaction returns the backend after each transaction.
	PoolTransaction PoolMode = "transaction"
	// PoolSession keeps the backend for the client's whole session.
	PoolSession PoolMode = "session"
)

// Config is the proxy's configuration file. Every field is documented in
// the README's configuration reference.
type Config struct {
	Listen      string `yaml:"listen"`       // client address; default 127.0.0.1:6432
	AdminListen string `yaml:"admin_listen"` // HTTP admin address; "" disables it
	AdminToken  string `yaml:"admin_token"`  // bearer token for the admin HTTP API; env PGSHARD_ADMIN_TOKEN
	// AdminUsers may connect to the admin console, database "pgshard".
	AdminUsers []string      `yaml:"admin_users"`
	PoolMode   PoolMode      `yaml:"pool_mode"` // transaction (default) or session
	TLS        TLSConfig     `yaml:"tls"`
	Users      []UserConfig  `yaml:"users"`
	Shards     []ShardConfig `yaml:"shards"`
	// DefaultShard receives statements without a routing hint; default:
	// the first shard.
	DefaultShard string `yaml:"default_shard"`
	// ShardMapFile is a shard map (shardmap YAML): with it, statements are
	// routed by their sharding keys, and shards default to the map's.
	ShardMapFile string `yaml:"shard_map_file"`
	// MapStateFile, when set, is where the proxy keeps the last shard map
	// it applied at run time (ApplyMap), to start from it when the meta
	// cluster is unreachable.
	MapStateFile string `yaml:"map_state_file"`
	// HealthInterval is how often every endpoint of the shard map is
	// probed (default 1s; negative disables the probes).
	HealthInterval Duration `yaml:"health_interval"`
	// Reads says where reads go (replicas, lag bounds, read-your-writes);
	// users may override each field.
	Reads ReadConfig `yaml:"reads"`
	// MetaLease is how long the proxy may go without reaching the meta
	// cluster before it refuses writes (it may have missed a failover);
	// it must not exceed the meta cluster's proxy lease. Default 10s.
	MetaLease Duration `yaml:"meta_lease"`
	// Buffer says how long statements for a shard that is switching its
	// primary are held.
	Buffer BufferConfig `yaml:"buffer"`
	// BroadcastWrites says what happens to UPDATE/DELETE without a key
	// condition on a sharded table: "refuse" (default, 0A000) or "allow"
	// (they run on every shard, each committing on its own).
	BroadcastWrites string `yaml:"broadcast_writes"`
	// Transactions says whether a transaction may span shards
	// (multitx.go).
	Transactions TransactionsConfig `yaml:"transactions"`
	// shardMap is ShardMapFile, loaded by Complete.
	shardMap *shardmap.Map
	Backend  BackendConfig `yaml:"backend"`
	Pool     PoolConfig    `yaml:"pool"`
	Limits   LimitsConfig  `yaml:"limits"`
	// ShutdownTimeout bounds how long SIGTERM waits for transactions.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// AuthQuery looks up users that Users does not list on the server
	// (authquery.go).
	AuthQuery AuthQueryConfig `yaml:"auth_query"`
	// RateLimits bounds statements and new connections per second, per
	// user and per client address (ratelimit.go).
	RateLimits RateLimitsConfig `yaml:"rate_limits"`
	// Cache configures the hot-row cache (cache.go).
	Cache CacheConfig `yaml:"cache"`

	// FollowsMeta (not read from the file; see LoadConfigFollowingMeta)
	// says the proxy follows a meta cluster: its shards come from the
	// cluster's map, so Shards may be empty, and it refuses writes until
	// the cluster has confirmed the map it routes by.
	FollowsMeta bool `yaml:"-"`

	// ReloadFunc (not read from the file) loads the configuration again
	// for the admin console's RELOAD; nil: RELOAD is refused.
	ReloadFunc func() (*Config, error) `yaml:"-"`

	// Logger (not read from the file) is where the proxy logs; nil means
	// slog.Default(). NewServer takes it; Reload keeps the server's.
	Logger *slog.Logger `yaml:"-"`
}

// TLSConfig configures TLS towards clients.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Mode: "disable" (answer SSLRequest with N), "allow" (default when a
	// certificate is set: TLS if the client asks) or "require" (refuse
	// clients that do not use TLS).
	Mode string `yaml:"mode"`
}

// UserConfig is one client user.
type UserConfig struct {
	Name string `yaml:"name"`
	// Auth is scram-sha-256 (default), md5 or trust.
	Auth string `yaml:"auth"`
	// Password is a verifier: "SCRAM-SHA-256$..." for scram-sha-256 or
	// "md5..." for md5 (see `pgshard passwd`). Never a plain password.
	Password string `yaml:"password"`
	// PasswordEnv names an environment variable holding the verifier.
	PasswordEnv string `yaml:"password_env"`
	// PoolMode overrides the global pool mode for this user.
	PoolMode PoolMode `yaml:"pool_mode"`
	// MaxClientConn limits this user's client connections; 0 = no limit.
	MaxClientConn int `yaml:"max_client_conn"`
	// BackendUser / BackendPassword(Env) override Backend's credentials.
	BackendUser        string `yaml:"backend_user"`
	BackendPasswordEnv string `yaml:"backend_password_env"`
	// Reads overrides the global reads settings for this user (fields
	// left empty take the global value).
	Reads ReadConfig `yaml:"reads"`
	// RateLimit replaces rate_limits.per_user for this user.
	RateLimit *RateLimit `yaml:"rate_limit"`
	// CrossShardWrites is allow (default) or refuse: with refuse, no
	// statement or transaction of this user writes on more than one
	// shard (it never needs two-phase commit); one that would gets 0A000.
	CrossShardWrites string `yaml:"cross_shard_writes"`
}

// The read_from values.
const (
	ReadFromReplicas = "replicas" // replica-safe reads go to a healthy replica within the lag bounds
	ReadFromPrimary  = "primary"  // every statement goes to the primary
)

// The consistency values: what a session's reads see of its own writes.
const (
	// ConsistencySession: after a session's write commits, its reads go
	// only to replicas that have replayed that commit (else the primary).
	ConsistencySession = "session"
	// ConsistencyEventual: reads go to any replica within the lag bounds.
	ConsistencyEventual = "eventual"
	// ConsistencyPrimary: reads go to the primary.
	ConsistencyPrimary = "primary"
)

// ReadConfig says where a user's reads go. Read splitting applies to
// autocommit reads that call only built-in read-only functions, and to
// READ ONLY transactions; everything else goes to the primary.
type ReadConfig struct {
	// ReadFrom is replicas (default) or primary.
	ReadFrom string `yaml:"read_from"`
	// MaxLagBytes is the most WAL a replica may have left to replay to
	// serve reads; default 16 MiB, negative: no bound.
	MaxLagBytes int64 `yaml:"max_lag_bytes"`
	// MaxLag is the most replay delay (seconds behind the primary's last
	// commit) a replica may have; default 5s, negative: no bound.
	MaxLag Duration `yaml:"max_lag"`
	// Consistency is session (default), eventual or primary.
	Consistency string `yaml:"consistency"`
	// SafeFunctions names your own functions that never write ("name"
	// or "schema.name"): reads calling them may go to a replica. Global
	// only (the plan cache is shared by all users).
	SafeFunctions []string `yaml:"safe_functions"`
}

// over returns r with the fields o sets.
func (r ReadConfig) over(o ReadConfig) ReadConfig {
	if o.ReadFrom != "" {
		r.ReadFrom = o.ReadFrom
	}
	if o.MaxLagBytes != 0 {
		r.MaxLagBytes = o.MaxLagBytes
	}
	if o.MaxLag != 0 {
		r.MaxLag = o.MaxLag
	}
	if o.Consistency != "" {
		r.Consistency = o.Consistency
	}
	return r
}

func (r *ReadConfig) complete() {
	if r.ReadFrom == "" {
		r.ReadFrom = ReadFromReplicas
	}
	if r.MaxLagBytes == 0 {
		r.MaxLagBytes = 16 << 20
	}
	if r.MaxLag == 0 {
		r.MaxLag = Duration(5 * time.Second)
	}
	if r.Consistency == "" {
		r.Consistency = ConsistencySession
	}
}

func (r ReadConfig) validate(field string) []error {
	var errs []error
	switch r.ReadFrom {
	case "", ReadFromReplicas, ReadFromPrimary:
	default:
		errs = append(errs, fmt.Errorf("%s.read_from: %q is not replicas or primary", field, r.ReadFrom))
	}
	switch r.Consistency {
	case "", ConsistencySession, ConsistencyEventual, ConsistencyPrimary:
	default:
		errs = append(errs, fmt.Errorf("%s.consistency: %q is not session, eventual or primary", field, r.Consistency))
	}
	return errs
}

// BufferConfig bounds how statements wait while a shard switches its
// primary (failover or switchover) or its primary cannot be reached.
type BufferConfig struct {
	// Window is how long a statement may wait; default 10s, negative:
	// do not wait (fail at once).
	Window Duration `yaml:"window"`
	// MaxQueued is how many statements may wait at once over all shards;
	// default 10000. Beyond it statements fail at once.
	MaxQueued int `yaml:"max_queued"`
}

// ShardConfig is one shard. With a shard map (shard_map_file, or the meta
// cluster's) the shard's server is the map's primary and an entry only
// sets Database; without one, entries are the shards.
type ShardConfig struct {
	Name string `yaml:"name"`
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	// Database on the server; empty means the client's database name.
	Database string `yaml:"database"`
}

// address is the shard's server as host:port.
func (sc *ShardConfig) address() string {
	return net.JoinHostPort(sc.Host, strconv.Itoa(sc.Port))
}

// BackendConfig holds how the proxy connects to PostgreSQL servers.
type BackendConfig struct {
	User string `yaml:"user"`
	// Password for User; prefer PasswordEnv (default PGSHARD_BACKEND_PASSWORD).
	Password    string `yaml:"password"`
	PasswordEnv string `yaml:"password_env"`
	SSLMode     string `yaml:"sslmode"`     // libpq sslmode; default prefer
	SSLRootCert string `yaml:"sslrootcert"` // CA for verify-ca / verify-full
	// SSLCert and SSLKey are a client certificate and key (PEM) for
	// servers that authenticate pgshard by certificate (pg_hba "cert").
	SSLCert string `yaml:"sslcert"`
	SSLKey  string `yaml:"sslkey"`
	// AckTimeout fails a server connection that has something to
	// deliver and receives nothing from its server this long (an
	// unreachable server, Linux); default 5s, negative: TCP's own
	// retries (minutes). A server that merely does not read is not
	// affected.
	AckTimeout Duration `yaml:"ack_timeout"`
	// KeepAliveIdle, KeepAliveInterval and KeepAliveCount: TCP keepalive
	// probes start after KeepAliveIdle without traffic (default 2s,
	// negative: no keepalives), repeat every KeepAliveInterval (1s) and
	// fail the connection after KeepAliveCount unanswered ones (3).
	KeepAliveIdle     Duration `yaml:"keepalive_idle"`
	KeepAliveInterval Duration `yaml:"keepalive_interval"`
	KeepAliveCount    int      `yaml:"keepalive_count"`
}

// PoolConfig sizes the backend pools.
type PoolConfig struct {
	Size           int      `yaml:"size"`            // per (shard, user, database); default 20
	WaitTimeout    Duration `yaml:"wait_timeout"`    // default 5s; then 53300
	ConnectTimeout Duration `yaml:"connect_timeout"` // default 5s
	IdleTimeout    Duration `yaml:"idle_timeout"`    // default 10m
	MaxLifetime    Duration `yaml:"max_lifetime"`    // default 1h
}

// LimitsConfig protects the proxy from clients.
type LimitsConfig struct {
	MaxClientConn  int      `yaml:"max_client_conn"`  // default 10000
	StartupTimeout Duration `yaml:"startup_timeout"`  // startup + auth; default 10s
	MaxMessageSize int      `yaml:"max_message_size"` // bytes; default 1 GiB - 1
	// ParkIdleClients ends the goroutine of a client that is idle (no
	// server connection, nothing to read), takes its socket out of the
	// runtime's poller and watches it with epoll instead (park.go; Linux,
	// plain TCP). Default (nil): on where it is supported. The
	// environment's PGSHARD_PARK_IDLE_CLIENTS=1 or 0 overrides it.
	ParkIdleClients *bool `yaml:"park_idle_clients"`
}

// parkIdleClientsEnv turns limits.park_idle_clients on (1) or off (0),
// whatever the configuration says (for running the test suite on either
// path).
const parkIdleClientsEnv = "PGSHARD_PARK_IDLE_CLIENTS"

// parkIdleClients says whether limits.park_idle_clients is on, and
// whether it was asked for (set in the configuration or the
// environment) rather than a default that an unsupported platform drops.
func (l LimitsConfig) parkIdleClients() (on, asked bool) {
	on, asked = true, false
	if l.ParkIdleClients != nil {
		on, asked = *l.ParkIdleClients, true
	}
	switch os.Getenv(parkIdleClientsEnv) {
	case "1":
		on, asked = true, true
	case "0":
		on, asked = false, true
	}
	return on, asked
}

// Duration is a time.Duration that reads "5s"-style strings from YAML.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: invalid duration %q: %w", n.Line, n.Value, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// LoadConfig reads, completes and validates a YAML config file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return parseConfig(b, false)
}

// LoadConfigFollowingMeta is LoadConfig for a proxy that follows a meta
// cluster (FollowsMeta): shards is optional, since the shards come from
// the cluster's map, and shard_map_file is only a seed for a first start
// while the cluster cannot be reached.
func LoadConfigFollowingMeta(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return parseConfig(b, true)
}

// ParseConfig parses, completes and validates YAML config text.
func ParseConfig(b []byte) (*Config, error) { return parseConfig(b, false) }

func parseConfig(b []byte, followsMeta bool) (*Config, error) {
	c := Config{FollowsMeta: followsMeta}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	if err := c.Complete(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Complete fills defaults, reads secrets from the environment and
// validates the result.
func (c *Config) Complete() error {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:6432"
	}
	if c.PoolMode == "" {
		c.PoolMode = PoolTransaction
	}
	if c.AdminToken == "" {
		c.AdminToken = os.Getenv("PGSHARD_ADMIN_TOKEN")
	}
	if c.Backend.PasswordEnv == "" {
		c.Backend.PasswordEnv = "PGSHARD_BACKEND_PASSWORD"
	}
	if v, ok := os.LookupEnv(c.Backend.PasswordEnv); ok {
		c.Backend.Password = v
	}
	if c.Backend.AckTimeout == 0 {
		c.Backend.AckTimeout = Duration(pool.DefaultAckTimeout)
	}
	if c.Backend.KeepAliveIdle == 0 {
		c.Backend.KeepAliveIdle = Duration(pool.DefaultKeepAliveIdle)
	}
	if c.Backend.KeepAliveInterval == 0 {
		c.Backend.KeepAliveInterval = Duration(pool.DefaultKeepAliveInterval)
	}
	if c.Backend.KeepAliveCount == 0 {
		c.Backend.KeepAliveCount = pool.DefaultKeepAliveCount
	}
	if c.Limits.MaxClientConn == 0 {
		c.Limits.MaxClientConn = 10000
	}
	if c.Limits.StartupTimeout == 0 {
		c.Limits.StartupTimeout = Duration(10 * time.Second)
	}
	if c.Limits.MaxMessageSize <= 0 {
		c.Limits.MaxMessageSize = 1<<30 - 1
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = Duration(30 * time.Second)
	}
	if c.TLS.Mode == "" {
		c.TLS.Mode = "allow"
		if c.TLS.CertFile == "" {
			c.TLS.Mode = "disable"
		}
	}
	for i := range c.Users {
		u := &c.Users[i]
		if u.Auth == "" {
			u.Auth = string(auth.SCRAMSHA256)
		}
		if u.PasswordEnv != "" {
			if v, ok := os.LookupEnv(u.PasswordEnv); ok {
				u.Password = v
			}
		}
	}
	for i := range c.Shards {
		if c.Shards[i].Name == "" {
			c.Shards[i].Name = fmt.Sprintf("s%d", i)
		}
		if c.Shards[i].Port == 0 {
			c.Shards[i].Port = 5432
		}
		if c.Shards[i].Host == "" {
			c.Shards[i].Host = "127.0.0.1"
		}
	}
	if c.BroadcastWrites == "" {
		c.BroadcastWrites = "refuse"
	}
	if c.Transactions.CrossShard == "" {
		c.Transactions.CrossShard = CrossShardRefuse
	}
	c.Reads.complete()
	c.AuthQuery.complete()
	if c.MetaLease == 0 {
		c.MetaLease = Duration(10 * time.Second)
	}
	if c.Buffer.Window == 0 {
		c.Buffer.Window = Duration(10 * time.Second)
	}
	if c.Buffer.MaxQueued == 0 {
		c.Buffer.MaxQueued = 10000
	}
	if c.ShardMapFile != "" {
		if err := c.loadShardMap(); err != nil {
			return err
		}
	}
	if c.DefaultShard == "" && len(c.Shards) > 0 {
		c.DefaultShard = c.Shards[0].Name
	}
	return c.Validate()
}

// loadShardMap reads ShardMapFile and takes the map's shards (their
// primaries).
func (c *Config) loadShardMap() error {
	b, err := os.ReadFile(c.ShardMapFile)
	if err != nil {
		return fmt.Errorf("shard_map_file: %w", err)
	}
	m, err := shardmap.ParseYAML(b)
	if err != nil {
		return fmt.Errorf("shard_map_file %s: %w", c.ShardMapFile, err)
	}
	if err := c.UseShardMap(m); err != nil {
		return fmt.Errorf("shard_map_file %s: %w", c.ShardMapFile, err)
	}
	return nil
}

// ShardMap returns the configuration's shard map (nil without one).
func (c *Config) ShardMap() *shardmap.Map { return c.shardMap }

// UseShardMap makes m the configuration's shard map (as shard_map_file
// does): statements are routed by it and the shards are the map's, each
// served by its primary in m — a configured shard only keeps its
// database override (its host and port are not used). Call Validate
// afterwards.
func (c *Config) UseShardMap(m *shardmap.Map) error {
	if err := m.Validate(); err != nil {
		return err
	}
	c.Shards = mapShards(m, c.Shards)
	c.shardMap = m
	if c.DefaultShard == "" {
		c.DefaultShard = c.Shards[0].Name
	}
	return nil
}

// Validate reports the first problem with c, naming the field.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %w", err))
	}
	switch c.PoolMode {
	case PoolTransaction, PoolSession:
	default:
		errs = append(errs, fmt.Errorf("pool_mode: %q is not transaction or session", c.PoolMode))
	}
	switch c.TLS.Mode {
	case "disable":
	case "allow", "require":
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			errs = append(errs, fmt.Errorf("tls: mode %q needs cert_file and key_file", c.TLS.Mode))
		}
	default:
		errs = append(errs, fmt.Errorf("tls.mode: %q is not disable, allow or require", c.TLS.Mode))
	}
	if len(c.Shards) == 0 && !c.FollowsMeta {
		errs = append(errs, errors.New("shards: at least one shard is needed (or a shard_map_file, or --meta)"))
	}
	names := map[string]bool{}
	for i, sh := range c.Shards {
		if names[sh.Name] {
			errs = append(errs, fmt.Errorf("shards[%d].name: duplicate shard %q", i, sh.Name))
		}
		names[sh.Name] = true
	}
	if c.BroadcastWrites != "refuse" && c.BroadcastWrites != "allow" {
		errs = append(errs, fmt.Errorf("broadcast_writes: %q is not refuse or allow", c.BroadcastWrites))
	}
	if err := c.Transactions.check(); err != nil {
		errs = append(errs, err)
	}
	for i, a := range c.AdminUsers {
		if !slices.ContainsFunc(c.Users, func(u UserConfig) bool { return u.Name == a }) {
			errs = append(errs, fmt.Errorf("admin_users[%d]: %q is not one of users", i, a))
		}
	}
	if (c.Backend.SSLCert == "") != (c.Backend.SSLKey == "") {
		errs = append(errs, errors.New("backend.sslcert and backend.sslkey go together"))
	}
	if c.Backend.KeepAliveInterval < 0 {
		errs = append(errs, fmt.Errorf("backend.keepalive_interval: %s is negative", c.Backend.KeepAliveInterval.D()))
	}
	if c.Backend.KeepAliveCount < 0 {
		errs = append(errs, fmt.Errorf("backend.keepalive_count: %d is negative", c.Backend.KeepAliveCount))
	}
	errs = append(errs, c.Reads.validate("reads")...)
	errs = append(errs, c.AuthQuery.validate()...)
	errs = append(errs, c.RateLimits.validate()...)
	for i, u := range c.Users {
		if len(u.Reads.SafeFunctions) > 0 {
			errs = append(errs, fmt.Errorf("users[%d].reads.safe_functions: set it in the global reads section (plans are shared by all users)", i))
		}
	}
	if c.DefaultShard != "" && !names[c.DefaultShard] && len(names) > 0 {
		errs = append(errs, fmt.Errorf("default_shard: %q is not one of the shards", c.DefaultShard))
	}
	if len(c.Users) == 0 {
		errs = append(errs, errors.New("users: at least one user is needed"))
	}
	seen := map[string]bool{}
	for i, u := range c.Users {
		field := fmt.Sprintf("users[%d]", i)
		if u.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: empty", field))
		}
		if seen[u.Name] {
			errs = append(errs, fmt.Errorf("%s.name: duplicate user %q", field, u.Name))
		}
		seen[u.Name] = true
		m, err := auth.ParseMethod(u.Auth)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.auth: %w", field, err))
			continue
		}
		if _, err := credential(m, u.Password); err != nil {
			errs = append(errs, fmt.Errorf("%s.password: %w", field, err))
		}
		switch u.PoolMode {
		case "", PoolTransaction, PoolSession:
		default:
			errs = append(errs, fmt.Errorf("%s.pool_mode: %q is not transaction or session", field, u.PoolMode))
		}
		errs = append(errs, u.Reads.validate(field+".reads")...)
		if u.RateLimit != nil {
			errs = append(errs, u.RateLimit.validate(field+".rate_limit")...)
		}
		switch u.CrossShardWrites {
		case "", CrossShardWritesAllow, CrossShardWritesRefuse:
		default:
			errs = append(errs, fmt.Errorf("%s.cross_shard_writes: %q is not %s or %s", field, u.CrossShardWrites, CrossShardWritesAllow, CrossShardWritesRefuse))
		}
	}
	return errors.Join(errs...)
}

// credential turns a configured verifier into what auth needs, checking
// it fits the method.
func credential(m auth.Method, verifier string) (auth.Credential, error) {
	if m == auth.Trust {
		return auth.Credential{}, nil
	}
	c, err := auth.ParseCredential(verifier)
	if err != nil {
		return auth.Credential{}, fmt.Errorf("%w (generate one with: pgshard passwd USER)", err)
	}
	if m == auth.SCRAMSHA256 && c.SCRAM == nil {
		return auth.Credential{}, errors.New("scram-sha-256 users need a SCRAM-SHA-256 verifier (generate one with: pgshard passwd USER)")
	}
	if m == auth.MD5 && c.MD5 == "" {
		return auth.Credential{}, errors.New("md5 users need an md5 verifier (generate one with: pgshard passwd --md5 USER)")
	}
	return c, nil
}
