package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/pgshard/pgshard/internal/pgcluster"
)

// EnvAllowSkip names the environment variable that, when "1", lets tests
// skip instead of fail when PostgreSQL is not installed.
const EnvAllowSkip = "PGSHARD_ALLOW_SKIP"

// startTimeout bounds starting one server or cluster.
const startTimeout = 2 * time.Minute

// stopTimeout bounds stopping servers in cleanup.
const stopTimeout = time.Minute

// config is what the options build.
type config struct {
	shards int
	opts   pgcluster.Options
}

// Option configures [StartPostgres] and [NewCluster].
type Option func(*config)

// Shards sets the number of shards of [NewCluster] (default 2); StartPostgres
// ignores it.
func Shards(n int) Option { return func(c *config) { c.shards = n } }

// Replicas sets the number of streaming replicas of each primary.
func Replicas(n int) Option { return func(c *config) { c.opts.Replicas = n } }

// Settings adds postgresql.conf settings; see pgcluster.Options.Settings.
// Several calls merge.
func Settings(m map[string]string) Option {
	return func(c *config) {
		if c.opts.Settings == nil {
			c.opts.Settings = make(map[string]string, len(m))
		}
		for k, v := range m {
			c.opts.Settings[k] = v
		}
	}
}

// HostAuth sets the pg_hba.conf method for TCP connections: pgcluster.AuthScram
// (default), pgcluster.AuthMD5 or pgcluster.AuthTrust.
func HostAuth(method string) Option { return func(c *config) { c.opts.HostAuth = method } }

// TLS turns on TLS with a throwaway CA; see pgcluster.Options.TLS.
func TLS() Option { return func(c *config) { c.opts.TLS = true } }

// TrustUsers lets roles log in over TCP without a password
// (pgcluster.Options.TrustUsers).
func TrustUsers(users ...string) Option {
	return func(c *config) { c.opts.TrustUsers = append(c.opts.TrustUsers, users...) }
}

// CertUsers makes users (created with Users) log in over TLS with a
// client certificate (pgcluster.Options.CertUsers; see
// pgcluster.Server.ClientCert).
func CertUsers(users ...string) Option {
	return func(c *config) { c.opts.CertUsers = append(c.opts.CertUsers, users...) }
}

// Users creates login roles on each primary. Several calls add up.
func Users(users ...pgcluster.User) Option {
	return func(c *config) { c.opts.Users = append(c.opts.Users, users...) }
}

// Name labels the servers in directory names and logs.
func Name(name string) Option { return func(c *config) { c.opts.Name = name } }

func buildConfig(opts []Option) config {
	c := config{shards: 2}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// SkipIfNoPostgres fails the test, with a hint on how to install
// PostgreSQL, when its server binaries cannot be found; with
// PGSHARD_ALLOW_SKIP=1 it skips the test instead.
func SkipIfNoPostgres(t testing.TB) {
	t.Helper()
	if _, err := pgcluster.FindBinDir(); err != nil {
		if os.Getenv(EnvAllowSkip) == "1" {
			t.Skipf("%v (skipping: %s=1)", err, EnvAllowSkip)
		}
		t.Fatalf("%v (set %s=1 to skip instead)", err, EnvAllowSkip)
	}
}

// StartPostgres starts one primary (with replicas if asked) for the test and
// stops and removes it when the test ends.
func StartPostgres(t testing.TB, opts ...Option) *pgcluster.Server {
	t.Helper()
	SkipIfNoPostgres(t)
	c := buildConfig(opts)
	if c.opts.Name == "" {
		c.opts.Name = "pg"
	}
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	s, err := pgcluster.Start(ctx, c.opts)
	if err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	t.Cleanup(func() { cleanup(t, []*pgcluster.Server{s}, s.Destroy) })
	return s
}

// NewCluster starts a cluster of shards (default 2, see [Shards]) for the
// test and stops and removes it when the test ends.
func NewCluster(t testing.TB, opts ...Option) *pgcluster.Cluster {
	t.Helper()
	SkipIfNoPostgres(t)
	c := buildConfig(opts)
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	cl, err := pgcluster.StartCluster(ctx, c.shards, c.opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { cleanup(t, cl.Servers(), cl.Stop) })
	return cl
}

// cleanup logs the servers' log tails if the test failed, then stops them.
func cleanup(t testing.TB, servers []*pgcluster.Server, stop func(context.Context) error) {
	t.Helper()
	if t.Failed() {
		for _, s := range allServers(servers) {
			t.Logf("--- last lines of %s (%s) ---\n%s", s.Name, s.DataDir, s.LogTail(30))
		}
	}
	// t.Context is already canceled during cleanup.
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := stop(ctx); err != nil {
		t.Errorf("stop postgres: %v", err)
	}
}

// allServers adds the replicas of servers, without duplicates.
func allServers(servers []*pgcluster.Server) []*pgcluster.Server {
	seen := make(map[*pgcluster.Server]bool)
	var all []*pgcluster.Server
	var add func(s *pgcluster.Server)
	add = func(s *pgcluster.Server) {
		if s == nil || seen[s] {
			return
		}
		seen[s] = true
		all = append(all, s)
		for _, r := range s.Replicas {
			add(r)
		}
	}
	for _, s := range servers {
		add(s)
	}
	return all
}

// VerifyNoLeaks runs the tests and then checks that no PostgreSQL server
// started by this test binary is still running. Leftovers are killed, listed
// on stderr, and turn a passing exit code into 1. Use it in TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaks(m)) }
func VerifyNoLeaks(m *testing.M) int {
	code := m.Run()
	pids, err := pgcluster.Running()
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: leak check: %v\n", err)
		return max(code, 1)
	}
	if len(pids) == 0 {
		// Fails harmlessly when data was kept (PGSHARD_KEEP_DATA=1).
		_ = pgcluster.RemoveRootDir()
		return code
	}
	fmt.Fprintf(os.Stderr, "integration: %d PostgreSQL server(s) left running after the tests (pids %v); killing them\n", len(pids), pids)
	for _, pid := range pids {
		// Each postmaster leads its own process group.
		if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			fmt.Fprintf(os.Stderr, "integration: kill %d: %v\n", pid, err)
		}
	}
	return max(code, 1)
}

// ServerAt returns the server at addr among primaries and their replicas
// (nil: none).
func ServerAt(primaries []*pgcluster.Server, addr string) *pgcluster.Server {
	for _, s := range allServers(primaries) {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}
