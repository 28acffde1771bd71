package pgshardtest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgshard/pgshard/internal/controlplane"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/replication/failover"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
	"github.com/pgshard/pgshard/wire/auth"
)

// Database is the database every server has and the connection strings
// name.
const Database = "postgres"

// Timeouts of Start and of the cleanup.
const (
	startTimeout = 2 * time.Minute
	stopTimeout  = time.Minute
	// heartbeat is how often the proxy reports to the meta member.
	heartbeat = time.Second
)

// Cluster is a running sharded cluster: PostgreSQL shards, a meta member
// holding the shard map, and a proxy following it. Its fields are
// read-only.
type Cluster struct {
	// DSN is the proxy's connection string (a postgres:// URL) for the
	// first user; see [Cluster.UserDSN] for the others.
	DSN string
	// ProxyAddr is the proxy's address, host:port.
	ProxyAddr string
	// MetaAddr is the meta member's API address, host:port (loopback,
	// no credentials): `pgshard map show --meta ADDR`, `pgshard shards
	// list --meta ADDR`, `pgshard failover --shard shard0 --meta ADDR`.
	MetaAddr string
	// Shards are the shards in the map's order, shard0 first.
	Shards []Shard
	// Map is the shard map the cluster started with (epoch 1).
	Map *shardmap.Map

	users []User
}

// Shard is one shard's servers, reached directly (not through the proxy)
// as the servers' superuser.
type Shard struct {
	// Name is the shard's name in the map: shard0, shard1, ...
	Name string
	// Primary is the primary's connection string (a postgres:// URL).
	Primary string
	// Replicas are the streaming replicas' connection strings.
	Replicas []string
	// PrimaryAddr and ReplicaAddrs are the servers' host:port.
	PrimaryAddr  string
	ReplicaAddrs []string
}

// UserDSN returns the proxy's connection string for the user called name
// (one given to [Users], or [DefaultUser]); it panics for an unknown user.
func (c *Cluster) UserDSN(name string) string {
	for _, u := range c.users {
		if u.Name == name {
			return proxyDSN(c.ProxyAddr, u)
		}
	}
	panic(fmt.Sprintf("pgshardtest: UserDSN: no user %q (the proxy accepts %s)", name, userNames(c.users)))
}

// ShardFor returns the shard that holds the row of table (sharded in the
// map) whose key is key: an int64 or int for bigint keys, a string for
// text and uuid keys.
func (c *Cluster) ShardFor(table string, key any) (Shard, error) {
	t := c.Map.Table(qualify(table))
	if t == nil || t.Kind != shardmap.Sharded {
		return Shard{}, fmt.Errorf("pgshardtest: ShardFor: %s is not a sharded table of the map", qualify(table))
	}
	d := c.Map.Distribution(t.Distribution)
	name, err := d.ShardForKey(key)
	if err != nil {
		return Shard{}, fmt.Errorf("pgshardtest: ShardFor %s key %v: %w", t.Name, key, err)
	}
	for _, s := range c.Shards {
		if s.Name == name {
			return s, nil
		}
	}
	return Shard{}, fmt.Errorf("pgshardtest: ShardFor: the map names shard %s, which the cluster lacks", name)
}

// Start starts a sharded cluster for the test and returns once the proxy
// accepts reads and writes: [Shards] shards (default 2) of local
// PostgreSQL servers, each a primary with [Replicas] streaming replicas,
// the shard map of the distributions given ([HashSharded], [RangeSharded],
// [Distribute] or [ShardMap]), a meta member holding the map, and a proxy
// following it with [Users]. When the test ends every process is
// stopped and every directory removed (t.Cleanup); when it failed, the
// last lines of the servers' and the meta member's logs are logged.
//
// The servers come from a local PostgreSQL installation: the highest
// /usr/lib/postgresql/*/bin, or `pg_config --bindir` on PATH, or the
// directory in $PGSHARD_PG_BIN. Without one the test is skipped, with a
// message saying how to install it — unless $CI is set (as CI systems
// do), where it fails; PGSHARD_ALLOW_SKIP=1 skips there too. When the
// test runs as root the servers run as the postgres OS user.
func Start(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	skipWithoutPostgres(t)
	cfg := buildConfig(opts)
	if cfg.shards < 1 || cfg.replicas < 0 {
		t.Fatalf("pgshardtest: %d shards with %d replicas each: want at least one shard", cfg.shards, cfg.replicas)
	}
	for _, u := range cfg.users {
		if u.Name == "" || u.Password == "" {
			t.Fatalf("pgshardtest: user %q: a user needs a name and a password", u.Name)
		}
	}
	dir := t.TempDir() // removed after the cleanups below
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()

	// The servers.
	started()
	pg, err := pgcluster.StartCluster(ctx, cfg.shards, pgcluster.Options{Replicas: cfg.replicas, Settings: cfg.settings})
	if err != nil {
		stopped()
		t.Fatalf("pgshardtest: start PostgreSQL: %v", err)
	}
	metaLog := filepath.Join(dir, "meta.log")
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range pg.Servers() {
				t.Logf("--- last lines of %s (%s) ---\n%s", s.Name, s.DataDir, s.LogTail(30))
			}
			t.Logf("--- last lines of the meta member's log ---\n%s", fileTail(metaLog, 40))
		}
		sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := pg.Stop(sctx); err != nil {
			t.Errorf("pgshardtest: stop PostgreSQL: %v", err)
		}
		stopped()
	})
	for _, sql := range cfg.schema {
		for _, s := range pg.Shards {
			if err := s.Exec(ctx, sql); err != nil {
				t.Fatalf("pgshardtest: Schema on %s: %v", s.Name, err)
			}
		}
	}
	if len(cfg.schema) > 0 {
		for _, s := range pg.Shards {
			if err := s.WaitReplayed(ctx); err != nil {
				t.Fatalf("pgshardtest: Schema: %v", err)
			}
		}
	}

	c := &Cluster{users: cfg.users}
	var shards []mapShard
	for _, s := range pg.Shards {
		sh := Shard{Name: s.Name, Primary: s.SuperDSN(Database), PrimaryAddr: s.Addr()}
		ms := mapShard{name: s.Name, primary: s.Addr()}
		for _, r := range s.Replicas {
			sh.Replicas = append(sh.Replicas, r.SuperDSN(Database))
			sh.ReplicaAddrs = append(sh.ReplicaAddrs, r.Addr())
			ms.replicas = append(ms.replicas, r.Addr())
		}
		c.Shards = append(c.Shards, sh)
		shards = append(shards, ms)
	}
	if c.Map, err = buildMap(&cfg, shards); err != nil {
		t.Fatal(err)
	}

	// The proxy, then the meta member whose map it follows.
	pcfg, err := proxyConfig(&cfg, c.Map)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.NewServer(pcfg)
	if err != nil {
		t.Fatalf("pgshardtest: proxy: %v", err)
	}
	if err := srv.Listen(); err != nil {
		_ = srv.Close()
		t.Fatalf("pgshardtest: proxy: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	follow, stopFollow := context.WithCancel(context.Background())
	var (
		wg      sync.WaitGroup
		member  *controlplane.Member
		logFile *os.File
	)
	t.Cleanup(func() {
		// The proxy first (it deregisters from meta as it goes), then
		// meta; the servers' cleanup runs after this one.
		sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if err := <-served; err != nil {
			t.Errorf("pgshardtest: proxy: %v", err)
		}
		stopFollow()
		wg.Wait()
		if member != nil {
			if err := member.Close(); err != nil {
				t.Errorf("pgshardtest: meta member: %v", err)
			}
			_ = logFile.Close()
		}
	})
	if member, logFile, err = startMeta(ctx, filepath.Join(dir, "meta"), metaLog, c.Map, pcfg, srv); err != nil {
		t.Fatalf("pgshardtest: meta member: %v", err)
	}
	c.MetaAddr = member.Addr()
	wg.Go(func() { srv.FollowMeta(follow, member.Source(), "pgshardtest-proxy", heartbeat) })
	c.ProxyAddr = srv.Addr().String()
	c.DSN = proxyDSN(c.ProxyAddr, cfg.users[0])

	// Writes wait until the meta member has confirmed the proxy's map.
	for srv.WriteRefusal() != "" {
		select {
		case <-ctx.Done():
			t.Fatalf("pgshardtest: the proxy does not accept writes: %s", srv.WriteRefusal())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return c
}

// proxyConfig is the proxy's configuration: the users, the map, the
// servers' superuser towards the shards.
func proxyConfig(c *config, m *shardmap.Map) (*proxy.Config, error) {
	pcfg := &proxy.Config{
		Listen: "127.0.0.1:0",
		Backend: proxy.BackendConfig{
			User: pgcluster.SuperuserName, Password: pgcluster.SuperuserPassword, SSLMode: "disable",
			// Never the password of the environment the test runs in.
			PasswordEnv: "PGSHARDTEST_UNSET_ENV",
		},
		ShutdownTimeout: proxy.Duration(5 * time.Second),
		FollowsMeta:     true,
	}
	for _, u := range c.users {
		v, err := auth.NewSCRAMVerifier(u.Password, nil, 0)
		if err != nil {
			return nil, fmt.Errorf("pgshardtest: user %s: %w", u.Name, err)
		}
		pcfg.Users = append(pcfg.Users, proxy.UserConfig{Name: u.Name, Auth: string(auth.SCRAMSHA256), Password: v.String()})
	}
	if err := pcfg.UseShardMap(m); err != nil {
		return nil, fmt.Errorf("pgshardtest: proxy: %w", err)
	}
	for _, fn := range c.proxyConfig {
		fn(pcfg)
	}
	if err := pcfg.Complete(); err != nil {
		return nil, fmt.Errorf("pgshardtest: proxy configuration: %w", err)
	}
	return pcfg, nil
}

// startMeta starts a single-member meta cluster holding m that fails over
// dead primaries and reports srv's view of the servers' health. It logs
// to logPath, whose file it returns: close it after the member.
func startMeta(ctx context.Context, dataDir, logPath string, m *shardmap.Map, pcfg *proxy.Config, srv *proxy.Server) (*controlplane.Member, *os.File, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = logFile.Close()
		return nil, nil, err
	}
	log := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))
	b := pcfg.Backend
	member, err := controlplane.New(ctx, controlplane.Config{
		Node: meta.Config{
			ID: "pgshardtest", RaftAddr: "127.0.0.1:0", DataDir: dataDir, Bootstrap: true,
			// One voter: it leads at once.
			HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond,
		},
		API:        lis,
		Server:     metarpc.ServerOptions{AllowUnauthenticated: true},
		WaitLeader: startTimeout,
		Seed:       m, SeedComment: "pgshardtest",
		ProxyHealth: srv.Health,
		Failover: &controlplane.FailoverConfig{
			PGUser: b.User, PGPassword: b.Password, PGSSLMode: b.SSLMode,
			CheckInterval: failover.DefaultCheckInterval, FailAfter: failover.DefaultFailAfter,
			Observers: failover.DefaultObservers, DrainGrace: failover.DefaultDrainGrace,
		},
		ShutdownGrace: -1,
	}, log)
	if err != nil {
		_ = logFile.Close()
		return nil, nil, err
	}
	return member, logFile, nil
}

// proxyDSN is the URL for connecting to the proxy at addr as u.
func proxyDSN(addr string, u User) string {
	return (&url.URL{Scheme: "postgres", User: url.UserPassword(u.Name, u.Password), Host: addr, Path: "/" + Database,
		RawQuery: "sslmode=disable"}).String()
}

func userNames(users []User) string {
	names := make([]string, len(users))
	for i, u := range users {
		names[i] = u.Name
	}
	return strings.Join(names, ", ")
}

// fileTail returns the last n lines of the file at path.
func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Clusters running in this process: the harness directory that holds
// the servers' data is removed when the last one stops.
var (
	runningMu sync.Mutex
	running   int
)

func started() {
	runningMu.Lock()
	defer runningMu.Unlock()
	running++
}

func stopped() {
	runningMu.Lock()
	defer runningMu.Unlock()
	if running--; running == 0 {
		// Fails harmlessly when servers of other harness users remain
		// (or PGSHARD_KEEP_DATA=1 kept data).
		_ = pgcluster.RemoveRootDir()
	}
}
