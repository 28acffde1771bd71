package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

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
	Listen      string        `yaml:"listen"`       // client address; default 127.0.0.1:6432
	AdminListen string        `yaml:"admin_listen"` // HTTP admin address; "" disables it
	AdminToken  string        `yaml:"admin_token"`  // bearer token for the admin HTTP API; env PGSHARD_ADMIN_TOKEN
	PoolMode    PoolMode      `yaml:"pool_mode"`    // transaction (default) or session
	TLS         TLSConfig     `yaml:"tls"`
	Users       []UserConfig  `yaml:"users"`
	Shards      []ShardConfig `yaml:"shards"`
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
	// BroadcastWrites says what happens to UPDATE/DELETE without a key
	// condition on a sharded table: "refuse" (default, 0A000) or "allow"
	// (they run on every shard, each committing on its own).
	BroadcastWrites string `yaml:"broadcast_writes"`
	// shardMap is ShardMapFile, loaded by Complete.
	shardMap *shardmap.Map
	Backend  BackendConfig `yaml:"backend"`
	Pool     PoolConfig    `yaml:"pool"`
	Limits   LimitsConfig  `yaml:"limits"`
	// ShutdownTimeout bounds how long SIGTERM waits for transactions.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
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
}

// ShardConfig is one shard (today: exactly one).
type ShardConfig struct {
	Name string `yaml:"name"`
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	// Database on the server; empty means the client's database name.
	Database string `yaml:"database"`
}

// BackendConfig holds how the proxy connects to PostgreSQL servers.
type BackendConfig struct {
	User string `yaml:"user"`
	// Password for User; prefer PasswordEnv (default PGSHARD_BACKEND_PASSWORD).
	Password    string `yaml:"password"`
	PasswordEnv string `yaml:"password_env"`
	SSLMode     string `yaml:"sslmode"`     // libpq sslmode; default prefer
	SSLRootCert string `yaml:"sslrootcert"` // CA for verify-ca / verify-full
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
	return ParseConfig(b)
}

// ParseConfig parses, completes and validates YAML config text.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
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

// loadShardMap reads ShardMapFile and, when no shards are configured,
// takes the map's shards (their primaries).
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
// does): statements are routed by it and, when no shards are configured,
// the map's primaries are the shards. Call Validate afterwards when the
// configuration had no shards.
func (c *Config) UseShardMap(m *shardmap.Map) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if len(c.Shards) == 0 {
		for _, sh := range m.Shards {
			c.Shards = append(c.Shards, ShardConfig{Name: sh.Name, Host: sh.Primary.Host, Port: sh.Primary.Port})
		}
	}
	for _, sh := range m.Shards {
		found := false
		for _, cs := range c.Shards {
			found = found || cs.Name == sh.Name
		}
		if !found {
			return fmt.Errorf("shard %q of the map is not in shards", sh.Name)
		}
	}
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
	if len(c.Shards) == 0 {
		errs = append(errs, errors.New("shards: at least one shard is needed"))
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
	if c.DefaultShard != "" && !names[c.DefaultShard] {
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
