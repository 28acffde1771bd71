package pgshardtest

import (
	"maps"

	"github.com/pgshard/pgshard/proxy"
)

// User is a client user the proxy accepts (SCRAM-SHA-256). The proxy runs
// every user's statements on the shards as the servers' superuser, so the
// roles need not exist on the servers.
type User struct {
	Name     string
	Password string
}

// DefaultUser is the user the proxy accepts when [Users] is not given;
// [Cluster.DSN] connects as the first user.
var DefaultUser = User{Name: "app", Password: "app"}

// Table is a sharded table and its distribution key column. A name
// without a schema is in public.
type Table struct {
	Name string
	Key  string
}

// Strategies of a [Distribution].
const (
	Hash  = "hash"
	Range = "range"
)

// Distribution spreads tables over the shards by their key. The tables of
// one distribution are colocated: rows with equal keys are on the same
// shard, so joins on the key stay on one shard.
type Distribution struct {
	// Name defaults to the first table's name (without schema).
	Name string
	// Strategy is Hash (the default: the hash space split evenly over
	// every shard) or Range.
	Strategy string
	// KeyType is the key columns' type: "bigint" (the default; smallint
	// and integer columns too), "text" (and varchar) or "uuid" (Hash
	// only).
	KeyType string
	// Splits, for Range, are the first keys of shard1, shard2, ...: keys
	// below Splits[0] are on shard0, keys from Splits[i-1] up to (not
	// including) Splits[i] on shard i, the rest on the last shard. One
	// fewer than the shards, ascending, in the key type's text form.
	Splits []string
	Tables []Table
}

// config is what the options build.
type config struct {
	shards        int
	replicas      int
	users         []User
	distributions []Distribution
	mapYAML       string // ShardMap's document; "" when not given
	schema        []string
	settings      map[string]string
	proxyConfig   []func(*proxy.Config)
}

// Option configures [Start].
type Option func(*config)

// Shards sets the number of shards (default 2), named shard0, shard1, ...
func Shards(n int) Option { return func(c *config) { c.shards = n } }

// Replicas sets the number of streaming replicas of each shard's primary
// (default 0). The proxy sends replica-safe reads to them as configured
// by default: a session reads its own writes, but another session (of a
// connection pool, say) may read from a replica that has not replayed
// them yet. ProxyConfig(func(c *proxy.Config) { c.Reads.ReadFrom =
// proxy.ReadFromPrimary }) keeps every read on the primaries.
func Replicas(n int) Option { return func(c *config) { c.replicas = n } }

// Users sets the client users the proxy accepts (default [DefaultUser]).
// Several calls add up.
func Users(users ...User) Option {
	return func(c *config) { c.users = append(c.users, users...) }
}

// Distribute adds a distribution to the shard map. Several calls add up.
func Distribute(d Distribution) Option {
	return func(c *config) { c.distributions = append(c.distributions, d) }
}

// HashSharded spreads tables with bigint keys over every shard by the hash
// of their key, evenly (a [Distribution] with Strategy Hash).
func HashSharded(tables ...Table) Option {
	return Distribute(Distribution{Strategy: Hash, Tables: tables})
}

// RangeSharded spreads tables with bigint keys over the shards by key
// ranges: keys below splits[0] on shard0, from splits[0] on shard1, and
// so on; give one split fewer than the shards (a [Distribution] with
// Strategy Range).
func RangeSharded(splits []int64, tables ...Table) Option {
	s := make([]string, len(splits))
	for i, v := range splits {
		s[i] = formatInt(v)
	}
	return Distribute(Distribution{Strategy: Range, Splits: s, Tables: tables})
}

// ShardMap gives the shard map's distributions and tables as YAML, in
// the format of pgshard's shard map files (see the shardmap package and
// the README), without epoch and shards: the shards are named shard0,
// shard1, ... and Start adds them with their servers' addresses. It
// replaces [Distribute], [HashSharded] and [RangeSharded].
func ShardMap(yaml string) Option { return func(c *config) { c.mapYAML = yaml } }

// Schema runs SQL on every shard's primary (as the superuser, one call
// each, in order) before the proxy starts; the replicas have it when
// Start returns. DDL through the proxy works too.
func Schema(sql ...string) Option {
	return func(c *config) { c.schema = append(c.schema, sql...) }
}

// Settings adds postgresql.conf settings for every server. Several calls
// merge.
func Settings(m map[string]string) Option {
	return func(c *config) {
		if c.settings == nil {
			c.settings = make(map[string]string, len(m))
		}
		maps.Copy(c.settings, m)
	}
}

// ProxyConfig lets fn adjust the proxy's configuration (pool mode, read
// routing, limits, ...) before the proxy starts; its shards, users,
// backend and listen address are already set. Several calls run in order.
func ProxyConfig(fn func(*proxy.Config)) Option {
	return func(c *config) { c.proxyConfig = append(c.proxyConfig, fn) }
}

func buildConfig(opts []Option) config {
	c := config{shards: 2}
	for _, o := range opts {
		o(&c)
	}
	if len(c.users) == 0 {
		c.users = []User{DefaultUser}
	}
	return c
}
