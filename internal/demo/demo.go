package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/wire/auth"
)

// The demo's fixed names and defaults.
const (
	// User and Password are the client credentials the proxy accepts.
	User     = "demo"
	Password = "demo"
	// Database is the database clients connect to (the servers' default).
	Database = "postgres"

	// DefaultListen and DefaultAdminListen are the proxy's client and
	// admin HTTP addresses.
	DefaultListen      = "127.0.0.1:6432"
	DefaultAdminListen = "127.0.0.1:9930"

	// Shards and Replicas describe the cluster: shards, each with this
	// many streaming replicas.
	Shards   = 2
	Replicas = 1

	// SpareShard is the name of the demo's spare shard: a primary with no
	// replica, registered in the map with the sample schema but owning no
	// interval, to move key intervals onto (pgshard reshard move --to
	// spare). It is the cluster's last shard, after the [Shards] others.
	SpareShard = "spare"

	// poolSize is the backend pool size per (shard, user, database).
	poolSize = 10
)

// startTimeout bounds starting the servers; initdb on a cold template cache
// takes a few seconds.
const startTimeout = 2 * time.Minute

// StartPostgres starts the demo's PostgreSQL servers: [Shards] shards, each
// a primary with [Replicas] streaming replicas, and the spare shard (see
// [SpareShard], the cluster's last shard), in a private temporary
// directory. On error nothing is left running. When no PostgreSQL server
// binaries are installed the error is a *pgcluster.ErrNoPostgres; see
// [InstallHelp].
func StartPostgres(ctx context.Context) (*pgcluster.Cluster, error) {
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	c, err := pgcluster.StartCluster(sctx, Shards, pgcluster.Options{Replicas: Replicas})
	if err != nil {
		// StartCluster stops what it started, but this process's harness
		// directory may remain.
		_ = pgcluster.RemoveRootDir()
		return nil, fmt.Errorf("start PostgreSQL: %w", err)
	}
	spare, err := pgcluster.Start(sctx, pgcluster.Options{Name: SpareShard})
	if err != nil {
		err = errors.Join(err, c.Stop(context.WithoutCancel(ctx)), pgcluster.RemoveRootDir())
		return nil, fmt.Errorf("start PostgreSQL: %w", err)
	}
	c.Shards = append(c.Shards, spare)
	return c, nil
}

// DataShards returns the shards of c that hold the sample data (all but
// the spare).
func DataShards(c *pgcluster.Cluster) []*pgcluster.Server {
	return c.Shards[:min(len(c.Shards), Shards)]
}

// Spare returns the spare shard of c, nil when c has none.
func Spare(c *pgcluster.Cluster) *pgcluster.Server {
	if len(c.Shards) <= Shards {
		return nil
	}
	return c.Shards[Shards]
}

// StopPostgres stops every server of c, removes their data directories and
// this process's harness directory. It is safe to call with a nil c.
func StopPostgres(ctx context.Context, c *pgcluster.Cluster) error {
	var errs []error
	if c != nil {
		errs = append(errs, c.Stop(ctx))
	}
	if path, err := shardMapPath(); err == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, pgcluster.RemoveRootDir())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop PostgreSQL: %w", err)
	}
	return nil
}

// ProxyConfig returns the completed proxy configuration for c: clients log
// in as [User]/[Password] (SCRAM-SHA-256) on listen, the admin HTTP API is on
// adminListen ("" disables it), and the proxy connects to the shard
// primaries as the pgcluster superuser.
func ProxyConfig(c *pgcluster.Cluster, listen, adminListen string) (*proxy.Config, error) {
	v, err := auth.NewSCRAMVerifier(Password, nil, 0)
	if err != nil {
		return nil, fmt.Errorf("demo user verifier: %w", err)
	}
	cfg := &proxy.Config{
		Listen:      listen,
		AdminListen: adminListen,
		Users:       []proxy.UserConfig{{Name: User, Auth: string(auth.SCRAMSHA256), Password: v.String()}},
		Backend: proxy.BackendConfig{
			User:     pgcluster.SuperuserName,
			Password: pgcluster.SuperuserPassword,
			SSLMode:  "disable",
		},
		Pool:            proxy.PoolConfig{Size: poolSize},
		ShutdownTimeout: proxy.Duration(5 * time.Second),
		// The hot-row cache, for users (cacheable in the map); SHOW CACHE
		// in the admin console (database pgshard) shows it at work.
		Cache:      proxy.CacheConfig{Enabled: true, MaxBytes: 64 << 20},
		AdminUsers: []string{User},
		// A transaction may write on both shards: two-phase commit (the
		// servers run with max_prepared_transactions).
		Transactions: proxy.TransactionsConfig{CrossShard: proxy.CrossShardTwoPhase},
	}
	mapFile, err := writeShardMap(c)
	if err != nil {
		return nil, err
	}
	cfg.ShardMapFile = mapFile
	if err := cfg.Complete(); err != nil {
		return nil, fmt.Errorf("demo proxy config: %w", err)
	}
	// Complete reads the backend password from PGSHARD_BACKEND_PASSWORD
	// when it is set; the demo's servers only know theirs.
	cfg.Backend.Password = pgcluster.SuperuserPassword
	return cfg, nil
}

// SplitID is the first users.id of the second shard: users (and their
// orders) with smaller ids live on the first shard.
const SplitID = SampleRows/2 + 1

// writeShardMap writes the demo's shard map into the harness directory:
// users range-sharded by id over the two data shards, orders colocated by
// user_id, and the spare shard registered with no interval.
func writeShardMap(c *pgcluster.Cluster) (string, error) {
	if len(c.Shards) != Shards+1 || Spare(c).Name != SpareShard {
		return "", fmt.Errorf("demo shard map: the demo needs %d shards and the spare, not %d shards", Shards, len(c.Shards))
	}
	var b strings.Builder
	b.WriteString("epoch: 1\nshards:\n")
	for _, s := range c.Shards {
		var replicas []string
		for _, r := range s.Replicas {
			replicas = append(replicas, strconv.Quote(r.Addr()))
		}
		fmt.Fprintf(&b, "  - {name: %s, primary: %q, replicas: [%s]}\n", s.Name, s.Addr(), strings.Join(replicas, ", "))
	}
	fmt.Fprintf(&b, `distributions:
  - name: users
    key_type: bigint
    strategy: range
    default_shard: %[1]s
    intervals:
      - {lo: -inf, hi: %[3]d, shard: %[1]s}
      - {lo: %[3]d, hi: +inf, shard: %[2]s}
tables:
  - {name: public.users, distribution: users, key: id, cache: {enabled: true}}
  - {name: public.orders, distribution: users, key: user_id}
`, c.Shards[0].Name, c.Shards[1].Name, SplitID)
	path, err := shardMapPath()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("demo shard map: %w", err)
	}
	return path, nil
}

// shardMapPath is where the demo keeps its shard map: in this process's
// harness directory, removed by StopPostgres.
func shardMapPath() (string, error) {
	root, err := pgcluster.RootDir()
	if err != nil {
		return "", fmt.Errorf("demo shard map: %w", err)
	}
	return filepath.Join(root, "shardmap.yaml"), nil
}

// ConnString returns the URL for connecting to the proxy at addr as the
// demo user, ready to paste into psql.
func ConnString(addr string) string {
	u := url.URL{
		Scheme: "postgres",
		User:   url.UserPassword(User, Password),
		Host:   addr,
		Path:   "/" + Database,
	}
	return u.String()
}

// ConsoleConnString is the URL of the proxy's admin console at addr
// (database pgshard, as the demo user).
func ConsoleConnString(addr string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(User, Password), Host: addr, Path: "/" + proxy.ConsoleDatabase}
	return u.String()
}

// DialAddr turns a listen address into one a client can dial: an
// unspecified host (":6432", "0.0.0.0:6432", "[::]:6432") becomes loopback.
func DialAddr(listenAddr string) string {
	host, port, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return listenAddr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
