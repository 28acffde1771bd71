package metacluster

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// Timeouts of the framework.
const (
	// startTimeout bounds starting a cluster: a leader elected, every
	// member joined.
	startTimeout = 30 * time.Second
	// stopGrace is how long a member has to stop after SIGTERM.
	stopGrace = 5 * time.Second
	// statusTimeout bounds one MemberStatus call of the framework, so a
	// paused member cannot stall a poll.
	statusTimeout = 300 * time.Millisecond
	// pollEvery is how often the framework polls a condition.
	pollEvery = 25 * time.Millisecond
)

// config is what the options build.
type config struct {
	members  int
	token    string
	logLevel string
	args     []string
	env      []string
}

// Option configures Start.
type Option func(*config)

// Members sets the number of members (default 3).
func Members(n int) Option { return func(c *config) { c.members = n } }

// Token sets the API token (default: a random one).
func Token(tok string) Option { return func(c *config) { c.token = tok } }

// LogLevel sets the members' --log-level (default info).
func LogLevel(l string) Option { return func(c *config) { c.logLevel = l } }

// Args adds arguments to every member's `pgshard meta run` command line.
func Args(args ...string) Option { return func(c *config) { c.args = append(c.args, args...) } }

// Environ adds KEY=VALUE pairs to every member's environment (secrets go
// here, not in Args).
func Environ(kv ...string) Option { return func(c *config) { c.env = append(c.env, kv...) } }

// Cluster is a meta cluster of `pgshard meta run` processes.
type Cluster struct {
	Members []*Member
	// Token is the bearer token of the members' API.
	Token string

	bin      string
	logLevel string
	args     []string
	env      []string
}

// Start starts a cluster with bin (see Build) and stops it when the test
// ends: the first member bootstraps it, the others start without
// --bootstrap and are joined by JoinMember on the leader. It returns when
// every member sees the same leader and every member as a voter. When the
// test failed, the members' log tails are logged.
func Start(t testing.TB, bin string, opts ...Option) *Cluster {
	t.Helper()
	cfg := config{members: 3, logLevel: "info"}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.token == "" {
		cfg.token = rand.Text()
	}
	c := &Cluster{Token: cfg.token, bin: bin, logLevel: cfg.logLevel, args: cfg.args, env: cfg.env}
	dir := tempDir(t, "meta-")
	for i := range cfg.members {
		raftAddr, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		apiAddr, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("m%d", i+1)
		c.Members = append(c.Members, &Member{
			ID: id, RaftAddr: raftAddr, APIAddr: apiAddr,
			DataDir: filepath.Join(dir, id), LogPath: filepath.Join(dir, id+".log"),
			c: c,
		})
	}
	t.Cleanup(func() { c.stop(t) })

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	first := c.Members[0]
	if err := first.start(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitLeader(ctx, first); err != nil {
		t.Fatalf("metacluster: the bootstrapped member never led: %v", err)
	}
	joiner, err := first.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer joiner.Close()
	for _, m := range c.Members[1:] {
		if err := m.start(ctx, false); err != nil {
			t.Fatal(err)
		}
		if err := joiner.JoinMemberAt(ctx, m.ID, m.RaftAddr, m.APIAddr); err != nil {
			t.Fatalf("metacluster: join %s at %s: %v", m.ID, m.RaftAddr, err)
		}
	}
	if err := c.WaitConverged(ctx, c.Members...); err != nil {
		t.Fatal(err)
	}
	return c
}

// tempDir returns a new directory removed when the test ends, unless
// PGSHARD_KEEP_DATA=1 (pgcluster.EnvKeepData) asks to keep it for a
// post-mortem; then its path is logged.
func tempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgshard-"+prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv(pgcluster.EnvKeepData) == "1" {
			t.Logf("metacluster: kept %s", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("metacluster: %v", err)
		}
	})
	return dir
}

// stop stops every member, logs their log tails if the test failed, and
// fails the test for a member that did not stop cleanly.
func (c *Cluster) stop(t testing.TB) {
	for _, m := range c.Members {
		if err := m.Stop(); err != nil {
			t.Errorf("metacluster: stop %s: %v", m.ID, err)
		}
		m.closeClient()
	}
	if t.Failed() {
		for _, m := range c.Members {
			t.Logf("--- last lines of meta member %s (%s) ---\n%s", m.ID, m.LogPath, LogTail(m.LogPath, 40))
		}
	}
}

// Addrs returns the members' API addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.APIAddr
	}
	return out
}

// ClientOptions are the options of the framework's clients: the token,
// no TLS (loopback), and short timeouts and pauses, so that a client
// moves on from a dead or paused member quickly.
func (c *Cluster) ClientOptions() metarpc.ClientOptions {
	return clientOptions(c.Token)
}

func clientOptions(token string) metarpc.ClientOptions {
	return metarpc.ClientOptions{
		Token:          token,
		Insecure:       true,
		AttemptTimeout: time.Second,
		MinBackoff:     20 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
	}
}

// Client returns a client of every member, closed when the test ends.
func (c *Cluster) Client(t testing.TB) *metarpc.Client {
	t.Helper()
	return newClient(t, c.Addrs(), c.ClientOptions())
}

func newClient(t testing.TB, addrs []string, opts metarpc.ClientOptions) *metarpc.Client {
	t.Helper()
	cl, err := metarpc.NewClient(addrs, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// Member returns the member called id, or nil.
func (c *Cluster) Member(id string) *Member {
	for _, m := range c.Members {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// Others returns the members other than those given.
func (c *Cluster) Others(not ...*Member) []*Member {
	var out []*Member
	for _, m := range c.Members {
		skip := false
		for _, n := range not {
			skip = skip || m == n
		}
		if !skip {
			out = append(out, m)
		}
	}
	return out
}

// WaitLeader polls the MemberStatus of the members given until one of
// them is the leader and all of them name it as their leader, and returns
// it. A member that does not answer keeps it waiting: give only members
// that run.
func (c *Cluster) WaitLeader(ctx context.Context, among ...*Member) (*Member, error) {
	var last string
	for {
		leader, why := c.agreedLeader(ctx, among)
		if leader != nil {
			return leader, nil
		}
		last = why
		if err := sleep(ctx, pollEvery); err != nil {
			return nil, fmt.Errorf("metacluster: no agreed leader among %s: %w (last: %s)", ids(among), err, last)
		}
	}
}

// agreedLeader returns the leader all of among agree on, or why there is
// none.
func (c *Cluster) agreedLeader(ctx context.Context, among []*Member) (*Member, string) {
	var leader *Member
	var leaderID string
	for _, m := range among {
		st, err := m.Status(ctx)
		if err != nil {
			return nil, fmt.Sprintf("%s: %v", m.ID, err)
		}
		if st.LeaderID == "" {
			return nil, m.ID + " knows no leader (state " + st.State + ")"
		}
		if leaderID != "" && st.LeaderID != leaderID {
			return nil, fmt.Sprintf("%s names %s, another member names %s", m.ID, st.LeaderID, leaderID)
		}
		leaderID = st.LeaderID
		if st.State == "leader" {
			leader = m
		}
	}
	if leader == nil || leader.ID != leaderID {
		return nil, fmt.Sprintf("the leader %q is not among %s or does not say it leads", leaderID, ids(among))
	}
	return leader, ""
}

// WaitConverged waits until the members given agree on a leader, each
// sees every member of the cluster as a voter, and all have applied the
// same map epoch.
func (c *Cluster) WaitConverged(ctx context.Context, among ...*Member) error {
	var last string
	for {
		last = c.converged(ctx, among)
		if last == "" {
			return nil
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return fmt.Errorf("metacluster: members %s did not converge: %w (last: %s)", ids(among), err, last)
		}
	}
}

func (c *Cluster) converged(ctx context.Context, among []*Member) string {
	if _, why := c.agreedLeader(ctx, among); why != "" {
		return why
	}
	epochs := map[uint64]bool{}
	for _, m := range among {
		st, err := m.Status(ctx)
		if err != nil {
			return fmt.Sprintf("%s: %v", m.ID, err)
		}
		voters := 0
		for _, mm := range st.Members {
			if mm.Suffrage == "voter" {
				voters++
			}
		}
		if voters != len(c.Members) {
			return fmt.Sprintf("%s sees %d voters, want %d", m.ID, voters, len(c.Members))
		}
		epochs[st.MapEpoch] = true
	}
	if len(epochs) > 1 {
		return fmt.Sprintf("the members are at different map epochs %v", epochs)
	}
	return ""
}

func ids(ms []*Member) string {
	s := "["
	for i, m := range ms {
		if i > 0 {
			s += " "
		}
		s += m.ID
	}
	return s + "]"
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
