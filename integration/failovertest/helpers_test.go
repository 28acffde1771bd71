package failovertest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// pgshardBin is the pgshard binary TestMain builds.
var pgshardBin string

func TestMain(m *testing.M) { os.Exit(metacluster.RunTests(m, &pgshardBin)) }

// Failover tuning of the meta members in these tests.
const (
	failAfter     = 1500 * time.Millisecond
	checkInterval = 250 * time.Millisecond
)

// env is a sharded cluster with replicas, a meta cluster and two proxies.
type env struct {
	pg      *pgcluster.Cluster
	meta    *metacluster.Cluster
	client  *metarpc.Client
	proxies []*testproxy.Proxy
	dist    *shardmap.Distribution
	// targets is where the load connects: the proxies, unless a test
	// runs its own (proxy processes).
	targets []target
}

// target is a proxy clients connect to.
type target interface{ DSN(db string) string }

// setup starts two shards of a primary and two replicas each (with
// settings), a three-member meta cluster that fails over, the map, table
// acct (hash-sharded by id) and two proxies following the meta cluster.
func setup(t *testing.T, settings map[string]string) *env {
	t.Helper()
	pg := integration.NewCluster(t, integration.Shards(2), integration.Replicas(2), integration.Name("fo"), integration.Settings(settings))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, p := range pg.Shards {
		if err := p.Exec(ctx, `CREATE TABLE acct (id bigint PRIMARY KEY, writer int NOT NULL, at timestamptz NOT NULL DEFAULT now())`); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitReplayed(ctx); err != nil {
			t.Fatal(err)
		}
	}
	meta := metacluster.Start(t, pgshardBin,
		metacluster.LogLevel("info"),
		metacluster.Args("--pg-user", pgcluster.SuperuserName, "--pg-sslmode", "disable",
			"--failover-after", failAfter.String(), "--failover-check-interval", checkInterval.String()),
		metacluster.Environ("PGSHARD_META_PG_PASSWORD="+pgcluster.SuperuserPassword))
	b := shardmaptest.New()
	for i, p := range pg.Shards {
		b.Shard(fmt.Sprintf("s%d", i), p.Addr(), p.Replicas[0].Addr(), p.Replicas[1].Addr())
	}
	m := b.Hash("acct", "s0", "s1").Table("public.acct", "id").Map(t)
	client := meta.Client(t)
	if _, err := client.ApplyMap(ctx, m, 0, "failover test"); err != nil {
		t.Fatal(err)
	}
	e := &env{pg: pg, meta: meta, client: client, dist: m.Distribution("acct")}
	for i := range 2 {
		e.proxies = append(e.proxies, e.startProxy(t, m, fmt.Sprintf("p%d", i+1)))
		e.targets = append(e.targets, e.proxies[i])
	}
	return e
}

// startProxy starts an in-process proxy that follows the meta cluster.
func (e *env) startProxy(t *testing.T, m *shardmap.Map, id string) *testproxy.Proxy {
	t.Helper()
	cfg := testproxy.Config(t, e.pg.Shards[0])
	cfg.Shards = nil
	if err := cfg.UseShardMap(m); err != nil {
		t.Fatal(err)
	}
	cfg.HealthInterval = proxy.Duration(100 * time.Millisecond)
	cfg.Pool.Size = 20
	return metacluster.StartFollowingProxy(t, cfg, e.meta.Addrs(), e.meta.ClientOptions(), id, 500*time.Millisecond)
}

// currentMap reads the meta cluster's map.
func (e *env) currentMap(t *testing.T) *shardmap.Map { return metacluster.CurrentMap(t, e.client) }

// server returns the server of the cluster at addr.
func (e *env) server(addr string) *pgcluster.Server { return integration.ServerAt(e.pg.Shards, addr) }

// load is continuous writes and reads through the proxies.
type load struct {
	env    *env
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	acked    [2][]int64     // per shard: ids whose INSERT a client saw commit
	ackAt    [2][]time.Time // when each was acknowledged
	ackStart [2][]time.Time // when each INSERT was sent
	errs     []loadError
	reads    int
	writes   int
}

type loadError struct {
	at    time.Time
	took  time.Duration // from the statement's start to the error
	shard int           // -1 for reads
	code  string
	err   error
}

// startLoad runs writersPerShard writers per shard (spread over the
// proxies, each inserting ids of its shard in autocommit) and one reader
// per proxy until stop.
func (e *env) startLoad(t *testing.T, writersPerShard int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{env: e, cancel: cancel}
	w := 0
	for shard := range 2 {
		for range writersPerShard {
			w++
			px, id := e.targets[w%len(e.targets)], w
			l.wg.Go(func() { l.writer(ctx, t, px, id, shard) })
		}
	}
	for _, px := range e.targets {
		l.wg.Go(func() { l.reader(ctx, t, px) })
	}
	return l
}

// stop ends the load and waits for it.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// dial connects to the proxy, retrying while ctx lasts.
func dial(ctx context.Context, px target) (*pgx.Conn, error) {
	for {
		c, err := pgx.Connect(ctx, px.DSN(""))
		if err == nil || ctx.Err() != nil {
			return c, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *load) writer(ctx context.Context, t *testing.T, px target, w, shard int) {
	var c *pgx.Conn
	defer func() {
		if c != nil {
			_ = c.Close(context.Background())
		}
	}()
	name := fmt.Sprintf("s%d", shard)
	seq := int64(0)
	for ctx.Err() == nil {
		if c == nil || c.IsClosed() {
			var err error
			if c, err = dial(ctx, px); err != nil {
				return
			}
		}
		// The next id of this writer that lives on its shard.
		var id int64
		for {
			seq++
			id = int64(w)<<32 | seq
			if s, err := l.env.dist.ShardForInt64(id); err == nil && s == name {
				break
			}
		}
		qctx, qcancel := context.WithTimeout(ctx, 20*time.Second)
		start := time.Now()
		_, err := c.Exec(qctx, "INSERT INTO acct (id, writer) VALUES ($1, $2)", id, w)
		qcancel()
		now := time.Now()
		l.mu.Lock()
		l.writes++
		if err == nil {
			l.acked[shard] = append(l.acked[shard], id)
			l.ackAt[shard] = append(l.ackAt[shard], now)
			l.ackStart[shard] = append(l.ackStart[shard], start)
		} else if ctx.Err() == nil {
			l.errs = append(l.errs, loadError{at: now, took: now.Sub(start), shard: shard, code: code(err), err: err})
		}
		l.mu.Unlock()
		if err != nil {
			time.Sleep(10 * time.Millisecond) // a client's retry pause
		}
	}
}

func (l *load) reader(ctx context.Context, t *testing.T, px target) {
	var c *pgx.Conn
	defer func() {
		if c != nil {
			_ = c.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if c == nil || c.IsClosed() {
			var err error
			if c, err = dial(ctx, px); err != nil {
				return
			}
		}
		var n int64
		qctx, qcancel := context.WithTimeout(ctx, 20*time.Second)
		err := c.QueryRow(qctx, "SELECT count(*) FROM acct WHERE id = $1", int64(1)<<32|1).Scan(&n)
		qcancel()
		l.mu.Lock()
		l.reads++
		if err != nil && ctx.Err() == nil {
			l.errs = append(l.errs, loadError{at: time.Now(), shard: -1, code: code(err), err: err})
		}
		l.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
}

// code returns err's SQLSTATE, or "" when it has none.
func code(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// ackCount returns how many writes to shard were acknowledged.
func (l *load) ackCount(shard int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked[shard])
}

// waitAcks waits until shard has n more acknowledged writes than now.
func (l *load) waitAcks(t *testing.T, shard, n int, timeout time.Duration) {
	t.Helper()
	want := l.ackCount(shard) + n
	deadline := time.Now().Add(timeout)
	for l.ackCount(shard) < want {
		if time.Now().After(deadline) {
			t.Fatalf("shard s%d: fewer than %d writes acknowledged within %s", shard, n, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// maxGap returns the longest time between consecutive acknowledged writes
// to shard from since on (and the start of that gap).
func (l *load) maxGap(shard int, since time.Time) (time.Duration, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var gap time.Duration
	var at, prev time.Time
	for _, a := range l.ackAt[shard] {
		if a.Before(since) {
			continue
		}
		if d := a.Sub(prev); !prev.IsZero() && d > gap {
			gap, at = d, prev
		}
		prev = a
	}
	return gap, at
}

// verify checks that every acknowledged write is on its shard's current
// primary (count and sum of ids) and returns how many are missing.
func (l *load) verify(t *testing.T, m *shardmap.Map) (acked, missing int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	for shard := range 2 {
		ids := l.acked[shard]
		acked += len(ids)
		primary := l.env.server(m.Shard(fmt.Sprintf("s%d", shard)).Primary.String())
		conn, err := pgx.Connect(ctx, primary.SuperDSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		var n, sum, want int64
		for _, id := range ids {
			want += id
		}
		err = conn.QueryRow(ctx, "SELECT count(*), coalesce(sum(id), 0)::bigint FROM acct WHERE id = ANY($1)", ids).Scan(&n, &sum)
		_ = conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		missing += len(ids) - int(n)
		if int(n) == len(ids) && sum != want {
			t.Errorf("shard s%d: checksum of acknowledged ids %d, on the primary %d", shard, want, sum)
		}
	}
	return acked, missing
}

// errorSummary counts the load's errors by shard and SQLSTATE.
func (l *load) errorSummary() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, e := range l.errs {
		k := fmt.Sprintf("s%d %s", e.shard, e.code)
		if e.shard < 0 {
			k = "read " + e.code
		}
		out[k]++
	}
	return out
}

// firstErrors returns up to n of the load's errors, as text.
func (l *load) firstErrors(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.errs[:min(n, len(l.errs))] {
		out = append(out, fmt.Sprintf("%s s%d: %v", e.at.Format("15:04:05.000"), e.shard, e.err))
	}
	return out
}

// waitMap waits until cond holds for the meta cluster's map.
func (e *env) waitMap(t *testing.T, timeout time.Duration, what string, cond func(*shardmap.Map) bool) *shardmap.Map {
	t.Helper()
	return metacluster.WaitMap(t, e.client, timeout, what, cond)
}

// ackedWrite is one acknowledged write of the load.
type ackedWrite struct {
	shard int
	id    int64
	start time.Time // when the INSERT was sent
	at    time.Time // when the client saw it commit
}

// missing returns the acknowledged writes that are not on their shard's
// primary in m.
func (l *load) missing(t *testing.T, m *shardmap.Map) []ackedWrite {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []ackedWrite
	for shard := range 2 {
		primary := l.env.server(m.Shard(fmt.Sprintf("s%d", shard)).Primary.String())
		present := idsOn(t, ctx, primary, l.acked[shard])
		for i, id := range l.acked[shard] {
			if !present[id] {
				out = append(out, ackedWrite{shard: shard, id: id, start: l.ackStart[shard][i], at: l.ackAt[shard][i]})
			}
		}
	}
	return out
}

// idsOn returns which of ids are rows of acct on s.
func idsOn(t *testing.T, ctx context.Context, s *pgcluster.Server, ids []int64) map[int64]bool {
	t.Helper()
	conn, err := pgx.Connect(ctx, s.SuperDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT id FROM acct WHERE id = ANY($1)", ids)
	if err != nil {
		t.Fatal(err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int64]bool, len(found))
	for _, id := range found {
		out[id] = true
	}
	return out
}

// waitRefusesWrites waits until a direct write on s (not through a proxy)
// fails with 25006: the server itself refuses writes (fenced).
func waitRefusesWrites(t *testing.T, s *pgcluster.Server, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	for time.Since(start) < timeout {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		conn, err := pgx.Connect(ctx, s.SuperDSN("postgres"))
		if err == nil {
			_, err = conn.Exec(ctx, "INSERT INTO acct (id, writer) VALUES ($1, -1)", -time.Now().UnixNano())
			_ = conn.Close(ctx)
			if code(err) == "25006" {
				cancel()
				return time.Since(start)
			}
			if err == nil {
				err = errors.New("the write succeeded")
			}
		}
		cancel()
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the fenced server %s still takes direct writes %s on: %v", s.Addr(), timeout, last)
	return 0
}
