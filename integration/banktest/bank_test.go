package banktest_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// pgshardBin is the pgshard binary TestMain builds.
var pgshardBin string

func TestMain(m *testing.M) { os.Exit(metacluster.RunTests(m, &pgshardBin)) }

// The bank and its load.
const (
	nAccounts      = 200
	initialBalance = 1000
	// workersPerProxy clients per proxy: half of them use the simple
	// protocol, half pgx's default (extended, cached statements).
	workersPerProxy = 4
	// replicatedShard is the shard with two synchronous standbys, whose
	// primary is killed.
	replicatedShard = 3
)

// Timing of the cluster under test.
const (
	failAfter     = 1500 * time.Millisecond // meta: a primary unreachable this long is failed over
	checkInterval = 250 * time.Millisecond
	metaLease     = 6 * time.Second // the proxies' lease (heartbeat every 2 s)
	// recoveryBound is how soon after a kill (or after the load stops) no
	// prepared transaction may be left: the dead proxy's lease, plus the
	// recovery's age bound for transactions whose coordinator lives but
	// lost a participant (30 s), plus two recovery rounds (2 s each).
	recoveryBound = 40 * time.Second
	// deadProxyBound is how soon the transactions a dead proxy left
	// prepared must be resolved: its lease, recovery rounds (2 s each)
	// and slack for a busy machine.
	deadProxyBound = metaLease + 14*time.Second
)

// env is the cluster: four shards, a meta cluster, two proxy processes.
type env struct {
	shards  []*pgcluster.Server // the shards' first primaries
	meta    *metacluster.Cluster
	client  *metarpc.Client
	dist    *shardmap.Distribution
	proxies []*metacluster.ProxyCommand
}

func setup(t *testing.T) *env {
	t.Helper()
	e := &env{}
	for i := range 4 {
		opts := []integration.Option{integration.Name(fmt.Sprintf("bank-s%d", i))}
		if i == replicatedShard {
			opts = append(opts, integration.Replicas(2), integration.Settings(map[string]string{
				"synchronous_commit":        "on",
				"synchronous_standby_names": "'ANY 1 (*)'",
			}))
		}
		e.shards = append(e.shards, integration.StartPostgres(t, opts...))
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, s := range e.shards {
		if err := s.Exec(ctx, `CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE transfers (acct bigint NOT NULL, id uuid NOT NULL, src bigint NOT NULL, dst bigint NOT NULL, amount bigint NOT NULL, PRIMARY KEY (acct, id))`); err != nil {
			t.Fatal(err)
		}
	}
	e.meta = metacluster.Start(t, pgshardBin,
		metacluster.Args("--pg-user", pgcluster.SuperuserName, "--pg-sslmode", "disable",
			"--failover-after", failAfter.String(), "--failover-check-interval", checkInterval.String()),
		metacluster.Environ("PGSHARD_META_PG_PASSWORD="+pgcluster.SuperuserPassword))
	b := shardmaptest.New()
	for i, s := range e.shards {
		var replicas []string
		for _, r := range s.Replicas {
			replicas = append(replicas, r.Addr())
		}
		b.Shard(fmt.Sprintf("s%d", i), s.Addr(), replicas...)
	}
	m := b.Hash("acct", "s0", "s1", "s2", "s3").Table("public.accounts", "id").Table("public.transfers", "acct").Map(t)
	e.dist = m.Distribution("acct")
	e.client = e.meta.Client(t)
	if _, err := e.client.ApplyMap(ctx, m, 0, "bank test"); err != nil {
		t.Fatal(err)
	}
	// The accounts, each on its shard.
	rows := make([][]string, 4)
	for id := int64(1); id <= nAccounts; id++ {
		i := e.shardOf(t, id)
		rows[i] = append(rows[i], fmt.Sprintf("(%d, %d)", id, initialBalance))
	}
	for i, s := range e.shards {
		if len(rows[i]) == 0 {
			t.Fatalf("no account on s%d", i)
		}
		if err := s.Exec(ctx, "INSERT INTO accounts VALUES "+strings.Join(rows[i], ", ")); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.shards[replicatedShard].WaitReplayed(ctx); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	for _, id := range []string{"p1", "p2"} {
		p := newProxyProc(t, e.meta, e.shards[0], dir, id, metaLease)
		p.Start(t, pgshardBin)
		e.proxies = append(e.proxies, p)
	}
	waitDecisionTables(t, e.shards)
	for _, p := range e.proxies {
		e.waitWritable(t, p)
	}
	return e
}

// waitDecisionTables waits until the meta leader's two-phase recovery has
// created its decision table on every primary: until then a transaction
// that writes on several shards fails at COMMIT with 42P01 (README).
func waitDecisionTables(t *testing.T, primaries []*pgcluster.Server) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range primaries {
		for {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			v, err := s.QueryValue(ctx, "SELECT to_regclass('pgshard.commit_decisions') IS NOT NULL")
			cancel()
			if err == nil && v == "t" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no pgshard.commit_decisions 20 s after the map was applied (%q, %v)", s.Addr(), v, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// newProxyProc writes the configuration of a proxy process with ID id
// that follows meta, runs transactions over several shards with two-phase
// commit and has the lease given; its files go to dir. any is a server
// whose credentials the proxy uses.
func newProxyProc(t *testing.T, meta *metacluster.Cluster, any *pgcluster.Server, dir, id string, lease time.Duration) *metacluster.ProxyCommand {
	t.Helper()
	return metacluster.NewProxyCommand(t, meta, any, dir, id, func(cfg *proxy.Config) {
		cfg.Transactions.CrossShard = proxy.CrossShardTwoPhase
		cfg.MetaLease = proxy.Duration(lease)
		cfg.Pool.WaitTimeout = proxy.Duration(10 * time.Second)
	})
}

// shardOf returns the index of the shard account id lives on.
func (e *env) shardOf(t *testing.T, id int64) int {
	name, err := e.dist.ShardForInt64(id)
	if err != nil {
		t.Fatal(err)
	}
	var i int
	if _, err := fmt.Sscanf(name, "s%d", &i); err != nil {
		t.Fatal(err)
	}
	return i
}

// waitWritable waits until a transfer of nothing over two shards commits
// through p: it follows meta and its lease runs.
func (e *env) waitWritable(t *testing.T, p *metacluster.ProxyCommand) {
	t.Helper()
	waitWritable(t, p, e.twoShardAccounts(t))
}

// waitWritable waits until a transaction that writes nothing new on the
// accounts given (on two shards) commits through p.
func waitWritable(t *testing.T, p *metacluster.ProxyCommand, accounts []int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		last = func() error {
			c, err := pgx.Connect(ctx, p.DSN(""))
			if err != nil {
				return err
			}
			defer c.Close(ctx)
			tx, err := c.Begin(ctx)
			if err != nil {
				return err
			}
			for _, id := range accounts {
				if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance WHERE id = $1", id); err != nil {
					_ = tx.Rollback(ctx)
					return err
				}
			}
			return tx.Commit(ctx)
		}()
		cancel()
		if last == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("proxy %s does not commit a transaction over two shards: %v", p.ID, last)
}

// twoShardAccounts returns two accounts on different shards.
func (e *env) twoShardAccounts(t *testing.T) []int64 {
	for id := int64(2); id <= nAccounts; id++ {
		if e.shardOf(t, id) != e.shardOf(t, 1) {
			return []int64{1, id}
		}
	}
	t.Fatal("every account on one shard")
	return nil
}

// currentMap reads the meta cluster's map.
func (e *env) currentMap(t *testing.T) *shardmap.Map { return metacluster.CurrentMap(t, e.client) }

// server returns the test's server at addr.
func (e *env) server(addr string) *pgcluster.Server { return integration.ServerAt(e.shards, addr) }

// live returns every server of the map (primaries and replicas) except
// the dead ones given.
func (e *env) live(t *testing.T, m *shardmap.Map, dead ...*pgcluster.Server) []*pgcluster.Server {
	t.Helper()
	var out []*pgcluster.Server
	for _, sh := range m.Shards {
		for _, ep := range append([]shardmap.Endpoint{sh.Primary}, sh.Replicas...) {
			s := e.server(ep.String())
			if s == nil {
				t.Fatalf("map names %s, not a server of the test", ep)
			}
			if !slices.Contains(dead, s) && !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// primaries returns the current primaries, s0 to s3.
func (e *env) primaries(t *testing.T, m *shardmap.Map) []*pgcluster.Server {
	t.Helper()
	out := make([]*pgcluster.Server, 4)
	for i := range out {
		out[i] = e.server(m.Shard(fmt.Sprintf("s%d", i)).Primary.String())
		if out[i] == nil {
			t.Fatalf("s%d's primary is not a server of the test", i)
		}
	}
	return out
}

// prepared returns the prepared transactions on servers, by server
// address.
func prepared(ctx context.Context, servers []*pgcluster.Server) (map[string][]string, error) {
	out := map[string][]string{}
	for _, s := range servers {
		v, err := s.QueryValue(ctx, "SELECT coalesce(string_agg(gid, ' ' ORDER BY gid), '') FROM pg_prepared_xacts")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Addr(), err)
		}
		if v != "" {
			out[s.Addr()] = strings.Fields(v)
		}
	}
	return out, nil
}

// waitNoPrepared polls servers until none holds a prepared transaction
// (of those in only, when only is not nil: the load makes new ones all
// the time), within timeout, and returns how long that took.
func waitNoPrepared(t *testing.T, servers []*pgcluster.Server, only map[string]bool, timeout time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	var left []string
	var lastErr error
	for time.Since(start) < timeout {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		var now map[string][]string
		now, lastErr = prepared(ctx, servers)
		cancel()
		left = nil
		for addr, gids := range now {
			for _, g := range gids {
				if only == nil || only[g] {
					left = append(left, addr+" "+g)
				}
			}
		}
		if lastErr == nil && len(left) == 0 {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: prepared transactions left %s later: %v (%v)", what, timeout, left, lastErr)
	return 0
}

// preparedNow returns the GIDs prepared on servers now.
func preparedNow(t *testing.T, servers []*pgcluster.Server) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	now, err := prepared(ctx, servers)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, gids := range now {
		for _, g := range gids {
			out[g] = true
		}
	}
	return out
}

// killProxyMidCommit kills p with SIGKILL while one of its transactions
// is prepared on a primary (between its PREPARE and COMMIT PREPARED), and
// returns the GIDs of its prepared transactions at the kill: the ones it
// left in doubt.
func killProxyMidCommit(t *testing.T, p *metacluster.ProxyCommand, prims []*pgcluster.Server) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conns := make([]*pgx.Conn, len(prims))
	for i, s := range prims {
		c, err := pgx.Connect(ctx, s.SuperDSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		conns[i] = c
	}
	suffix := "/" + p.ID
	ours := func() []string {
		var gids []string
		for _, c := range conns {
			rows, err := c.Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'pgshard/1/%' AND right(gid, $1) = $2", len(suffix), suffix)
			if err != nil {
				t.Fatal(err)
			}
			g, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			gids = append(gids, g...)
		}
		return gids
	}
	// Freeze it as soon as one of its transactions is prepared; if one
	// still is, kill it, else let it go on and try again.
	var gids []string
	for attempt := 0; ; attempt++ {
		for len(ours()) == 0 {
			if ctx.Err() != nil {
				t.Fatalf("no transaction of proxy %s was ever seen prepared", p.ID)
			}
		}
		if err := p.Proc.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		if gids = ours(); len(gids) > 0 || attempt == 50 {
			break
		}
		if err := p.Proc.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Proc.Kill(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(gids)
	return slices.Compact(gids)
}

// TestBank: transfers over four shards through two proxy processes while
// a proxy, a shard primary and the meta leader are killed in turn; no
// money is created or lost, every acknowledged transfer is applied once,
// every failed one not at all, and no prepared transaction is left.
func TestBank(t *testing.T) {
	start := time.Now()
	e := setup(t)
	t.Logf("cluster up in %s", time.Since(start).Round(time.Millisecond))
	l := e.startLoad(t)
	defer l.stop()

	// 1. A proxy killed -9 while its commits are in flight.
	l.waitAcked(t, 100, 30*time.Second)
	l.setPhase("proxy kill")
	p1 := e.proxies[0]
	inDoubt := killProxyMidCommit(t, p1, e.primaries(t, e.currentMap(t)))
	killed := time.Now()
	if len(inDoubt) == 0 {
		t.Fatal("proxy p1 was never killed with a transaction prepared")
	}
	servers := e.live(t, e.currentMap(t))
	then := preparedNow(t, servers)
	l.waitAcked(t, 50, 30*time.Second) // p2 goes on; p1's clients moved to it
	waitNoPrepared(t, servers, then, recoveryBound, "after the kill of proxy p1")
	t.Logf("proxy p1 killed -9 with %d transactions prepared %v; they and every other transaction prepared at the kill were resolved %s after it",
		len(inDoubt), inDoubt, time.Since(killed).Round(time.Millisecond))
	if since := time.Since(killed); since > deadProxyBound {
		t.Errorf("the dead proxy's prepared transactions were resolved %s after the kill, want within %s (its lease, %s, and a few recovery rounds)", since.Round(time.Millisecond), deadProxyBound, metaLease)
	}
	p1.Start(t, pgshardBin)
	e.waitWritable(t, p1)

	// 2. The primary of the replicated shard killed -9: meta fails it
	// over to a synchronous standby.
	l.waitAcked(t, 100, 30*time.Second)
	l.setPhase("primary kill")
	name := fmt.Sprintf("s%d", replicatedShard)
	old := e.shards[replicatedShard]
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	killed = time.Now()
	m := e.waitMap(t, 30*time.Second, "failover of "+name, func(m *shardmap.Map) bool {
		sh := m.Shard(name)
		return sh.Switch == nil && sh.Primary.String() != old.Addr()
	})
	t.Logf("%s: primary killed -9; new map (epoch %d, primary %s) after %s", name, m.Epoch, m.Shard(name).Primary, time.Since(killed).Round(time.Millisecond))
	l.waitShardAcked(t, replicatedShard, killed, 20, 30*time.Second)
	servers = e.live(t, m, old)
	then = preparedNow(t, servers)
	waitNoPrepared(t, servers, then, recoveryBound, "after the failover of "+name)
	t.Logf("%s: transfers touching it flow again; the %d transactions prepared after the failover resolved %s after the kill", name, len(then), time.Since(killed).Round(time.Millisecond))

	// 3. The meta leader killed -9, then a proxy again: the new leader
	// resolves what it left.
	l.setPhase("meta leader kill")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	leader, err := e.meta.WaitLeader(ctx, e.meta.Members...)
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	killed = time.Now()
	next, err := e.meta.WaitLeader(ctx, e.meta.Others(leader)...)
	if err != nil {
		t.Fatal(err)
	}
	l.waitAcked(t, 100, 30*time.Second)
	t.Logf("meta leader %s killed -9; %s leads after %s; transfers went on", leader.ID, next.ID, time.Since(killed).Round(time.Millisecond))

	// The new leader's recovery: the other proxy killed -9 mid-commit.
	l.setPhase("proxy kill (new meta leader)")
	p2 := e.proxies[1]
	inDoubt = killProxyMidCommit(t, p2, e.primaries(t, e.currentMap(t)))
	killed = time.Now()
	then = preparedNow(t, servers)
	l.waitAcked(t, 50, 30*time.Second) // p1 goes on; p2's clients moved to it
	waitNoPrepared(t, servers, then, recoveryBound, "after the kill of proxy p2")
	t.Logf("proxy p2 killed -9 with %d transactions prepared; the new meta leader resolved them (and every other transaction prepared at the kill) %s after the kill",
		len(inDoubt), time.Since(killed).Round(time.Millisecond))
	if since := time.Since(killed); since > deadProxyBound {
		t.Errorf("the dead proxy's prepared transactions were resolved %s after the kill, want within %s (its lease, %s, and a few recovery rounds)", since.Round(time.Millisecond), deadProxyBound, metaLease)
	}

	// The end: stop the load, then check.
	l.setPhase("end")
	l.stop()
	took := waitNoPrepared(t, servers, nil, recoveryBound, "after the load stopped")
	t.Logf("no prepared transaction left %s after the load stopped", took.Round(time.Millisecond))
	l.verify(t, e, e.primaries(t, e.currentMap(t)))
	t.Logf("test took %s", time.Since(start).Round(time.Millisecond))
}

// waitMap waits until cond holds for the meta cluster's map.
func (e *env) waitMap(t *testing.T, timeout time.Duration, what string, cond func(*shardmap.Map) bool) *shardmap.Map {
	t.Helper()
	return metacluster.WaitMap(t, e.client, timeout, what, cond)
}
