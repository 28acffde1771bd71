package proxy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// replicaSetup is one shard with a primary and two streaming replicas
// behind a proxy that routes table kv by a shard map.
type replicaSetup struct {
	pg       *pgcluster.Server
	proxy    *testProxy
	primary  int   // the primary's port
	replicas []int // the replicas' ports
}

// startReplicaSetup starts the servers and a proxy whose users get the
// given reads settings (user app: appReads; user "eventual", same
// password: eventual reads with no lag bound).
func startReplicaSetup(t *testing.T, appReads proxy.ReadConfig, adjust ...func(*proxy.Config)) *replicaSetup {
	t.Helper()
	pg := integration.StartPostgres(t, integration.Replicas(2), integration.Name("reads"))
	ctx := ctxT(t)
	if err := pg.Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text);
		INSERT INTO kv VALUES (1, 'one');
		CREATE FUNCTION where_am_i() RETURNS int LANGUAGE sql AS 'SELECT inet_server_port()'`); err != nil {
		t.Fatal(err)
	}
	if err := pg.WaitReplayed(ctx); err != nil {
		t.Fatal(err)
	}
	mapFile := filepath.Join(t.TempDir(), "map.yaml")
	m := shardmaptest.New().Shard("s0", pg.Addr(), pg.Replicas[0].Addr(), pg.Replicas[1].Addr()).
		Hash("kv").Table("public.kv", "k").YAML(t)
	if err := os.WriteFile(mapFile, []byte(m), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, pg)
	cfg.Shards = nil
	cfg.ShardMapFile = mapFile
	cfg.HealthInterval = proxy.Duration(20 * time.Millisecond)
	cfg.Users[0].Reads = appReads
	ev := cfg.Users[0]
	ev.Name = "eventual"
	ev.Reads = proxy.ReadConfig{Consistency: proxy.ConsistencyEventual, MaxLagBytes: -1, MaxLag: -1}
	cfg.Users = append(cfg.Users, ev)
	for _, f := range adjust {
		f(cfg)
	}
	p := startProxy(t, cfg)
	rs := &replicaSetup{pg: pg, proxy: p, primary: pg.Port}
	for _, r := range pg.Replicas {
		rs.replicas = append(rs.replicas, r.Port)
	}
	// Reads go to replicas once the monitor has seen them.
	waitFor(t, func() bool {
		n := 0
		for _, st := range p.srv.Health() {
			if st.Role == "replica" && st.Up && st.InRecovery && st.LagKnown {
				n++
			}
		}
		return n == 2
	})
	return rs
}

// runPort runs sql (which returns one int) through c.
func runPort(t *testing.T, c *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var p int
	if err := c.QueryRow(ctxT(t), sql, args...).Scan(&p); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return p
}

// pauseReplay pauses (or resumes) WAL replay on every replica.
func (rs *replicaSetup) pauseReplay(t *testing.T, pause bool) {
	t.Helper()
	fn := "pg_wal_replay_resume()"
	if pause {
		fn = "pg_wal_replay_pause()"
	}
	for _, r := range rs.pg.Replicas {
		if err := r.Exec(ctxT(t), "SELECT "+fn); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadSplitting: replica-safe autocommit reads and READ ONLY
// transactions go to the replicas, spread over both; writes, locking
// reads, reads calling user functions and reads inside read-write
// transactions go to the primary; read_from: primary keeps everything
// there.
func TestReadSplitting(t *testing.T) {
	rs := startReplicaSetup(t, proxy.ReadConfig{})
	ctx := ctxT(t)
	c := connect(t, rs.proxy.dsn(""))
	simple := connect(t, rs.proxy.dsn("default_query_exec_mode=simple_protocol"))

	seen := map[int]int{}
	for range 20 {
		for _, conn := range []*pgx.Conn{c, simple} {
			p := runPort(t, conn, "SELECT inet_server_port() FROM kv WHERE k = $1", 1)
			if !slices.Contains(rs.replicas, p) {
				t.Fatalf("an autocommit read ran on port %d, not on a replica %v", p, rs.replicas)
			}
			seen[p]++
		}
	}
	if len(seen) != 2 {
		t.Errorf("reads were not spread over both replicas: %v", seen)
	}

	onPrimary := []string{
		"SELECT inet_server_port() FROM kv WHERE k = 1 FOR UPDATE",
		"SELECT where_am_i() FROM kv WHERE k = 1",
		"SELECT inet_server_port() FROM kv WHERE k = 1 AND nextval('kv_seq') > 0",
	}
	if err := rs.pg.Exec(ctx, "CREATE SEQUENCE kv_seq"); err != nil {
		t.Fatal(err)
	}
	for _, sql := range onPrimary {
		if p := runPort(t, c, sql); p != rs.primary {
			t.Errorf("%s ran on port %d, want the primary %d", sql, p, rs.primary)
		}
	}

	// A read-write transaction stays on the primary; a READ ONLY one
	// runs on one replica from start to end.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := runPort(t, tx.Conn(), "SELECT inet_server_port() FROM kv WHERE k = 1"); p != rs.primary {
		t.Errorf("read in a read-write transaction ran on %d, want the primary %d", p, rs.primary)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, begin := range []string{"BEGIN READ ONLY", "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"} {
		if _, err := simple.Exec(ctx, begin); err != nil {
			t.Fatal(err)
		}
		p1 := runPort(t, simple, "SELECT inet_server_port() FROM kv WHERE k = 1")
		p2 := runPort(t, simple, "SELECT inet_server_port()")
		if _, err := simple.Exec(ctx, "COMMIT"); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(rs.replicas, p1) || p1 != p2 {
			t.Errorf("%s: statements ran on %d and %d, want one replica of %v", begin, p1, p2, rs.replicas)
		}
	}
	// A SERIALIZABLE one stays on the primary: a hot standby refuses
	// serializable mode.
	if _, err := simple.Exec(ctx, "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY"); err != nil {
		t.Fatal(err)
	}
	if p := runPort(t, simple, "SELECT inet_server_port() FROM kv WHERE k = 1"); p != rs.primary {
		t.Errorf("a SERIALIZABLE READ ONLY transaction read on %d, want the primary %d", p, rs.primary)
	}
	if _, err := simple.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}

	// In a READ ONLY transaction every statement stays on its replica,
	// also one calling a user-defined function in the same pipeline.
	ro := connect(t, rs.proxy.dsn("")) // (c wrote: it reads its writes from the primary for now)
	rotx, err := ro.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	rb := &pgx.Batch{}
	rb.Queue("SELECT inet_server_port() FROM kv WHERE k = 1")
	rb.Queue("SELECT where_am_i() FROM kv WHERE k = 1")
	res := rotx.SendBatch(ctx, rb)
	var q1, q2 int
	if err := res.QueryRow().Scan(&q1); err != nil {
		t.Fatal(err)
	}
	if err := res.QueryRow().Scan(&q2); err != nil {
		t.Fatal(err)
	}
	if err := res.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rotx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(rs.replicas, q1) || q1 != q2 {
		t.Errorf("READ ONLY transaction pipeline ran on %d and %d, want one replica", q1, q2)
	}

	// A batch that reads and then writes without a Sync between them is
	// refused with a clear error, not run half on a replica. (A fresh
	// session: c wrote above, and reads its writes from the primary until
	// the monitor sees the replicas replay them.)
	c = connect(t, rs.proxy.dsn(""))
	b := &pgx.Batch{}
	b.Queue("SELECT inet_server_port() FROM kv WHERE k = 1")
	b.Queue("UPDATE kv SET v = 'x' WHERE k = 1")
	err = c.SendBatch(ctx, b).Close()
	if code := pgCode(err); code != "0A000" {
		t.Errorf("read-then-write batch: got %v, want 0A000", err)
	}
	// Write first, then read: both on the primary.
	b = &pgx.Batch{}
	b.Queue("UPDATE kv SET v = 'y' WHERE k = 1")
	b.Queue("SELECT inet_server_port() FROM kv WHERE k = 1")
	br := c.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		t.Fatal(err)
	}
	var p int
	if err := br.QueryRow().Scan(&p); err != nil {
		t.Fatal(err)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	if p != rs.primary {
		t.Errorf("read after a write in one batch ran on %d, want the primary", p)
	}
}

// TestShowShardsStates: SHOW SHARDS tells the state of the primary and of
// each replica; when a replica stops, reads go on without an error and
// SHOW SHARDS says it is down.
func TestShowShardsStates(t *testing.T) {
	rs := startReplicaSetup(t, proxy.ReadConfig{})
	c := connect(t, rs.proxy.dsn(""))
	var shard, primary, replicas, state, pstate, rstates, fenced, sw string
	var epoch int64
	err := c.QueryRow(ctxT(t), "SHOW SHARDS", pgx.QueryExecModeSimpleProtocol).Scan(&shard, &primary, &replicas, &state, &epoch, &pstate, &rstates, &fenced, &sw)
	if err != nil {
		t.Fatal(err)
	}
	if pstate != "up" || strings.Count(rstates, "up, lag ") != 2 || fenced != "" || sw != "" {
		t.Errorf("SHOW SHARDS: primary %q, replicas %q, fenced %q, switch %q", pstate, rstates, fenced, sw)
	}
	// Reads keep working when a replica stops: on the other one, or on
	// the primary until the probes notice.
	reader := connect(t, rs.proxy.dsn(""))
	runPort(t, reader, "SELECT inet_server_port() FROM kv WHERE k = 1")
	if err := rs.pg.Replicas[1].Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for range 30 {
		if p := runPort(t, reader, "SELECT inet_server_port() FROM kv WHERE k = 1"); p == rs.replicas[1] {
			t.Fatalf("a read ran on the stopped replica %d", p)
		}
	}
	waitFor(t, func() bool {
		err := c.QueryRow(ctxT(t), "SHOW SHARDS", pgx.QueryExecModeSimpleProtocol).Scan(&shard, &primary, &replicas, &state, &epoch, &pstate, &rstates, &fenced, &sw)
		return err == nil && strings.Contains(rstates, rs.pg.Replicas[1].Addr()+" down")
	})
}

// TestSafeFunctions: a function named in reads.safe_functions lets a read
// go to a replica.
func TestSafeFunctions(t *testing.T) {
	rs := startReplicaSetup(t, proxy.ReadConfig{}, func(c *proxy.Config) { c.Reads.SafeFunctions = []string{"where_am_i"} })
	c := connect(t, rs.proxy.dsn(""))
	if p := runPort(t, c, "SELECT where_am_i() FROM kv WHERE k = 1"); !slices.Contains(rs.replicas, p) {
		t.Errorf("a read calling a safe function ran on %d, want a replica of %v", p, rs.replicas)
	}
}

// TestReadFromPrimary: a user with read_from: primary never reads from a
// replica.
func TestReadFromPrimary(t *testing.T) {
	rs := startReplicaSetup(t, proxy.ReadConfig{ReadFrom: proxy.ReadFromPrimary})
	c := connect(t, rs.proxy.dsn(""))
	for range 10 {
		if p := runPort(t, c, "SELECT inet_server_port() FROM kv WHERE k = 1"); p != rs.primary {
			t.Fatalf("read ran on %d, want the primary %d", p, rs.primary)
		}
	}
}

// TestLagBound: replicas further behind than the user's lag bound get no
// reads; when they catch up they get them again.
func TestLagBound(t *testing.T) {
	rs := startReplicaSetup(t, proxy.ReadConfig{MaxLagBytes: 1024, MaxLag: -1})
	ctx := ctxT(t)
	c := connect(t, rs.proxy.dsn(""))
	rs.pauseReplay(t, true)
	if err := rs.pg.Exec(ctx, "INSERT INTO kv SELECT g, repeat('x', 100) FROM generate_series(2, 1000) g"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		for _, st := range rs.proxy.srv.Health() {
			if st.Role == "replica" && st.LagBytes <= 1024 {
				return false
			}
		}
		return true
	})
	for range 10 {
		if p := runPort(t, c, "SELECT inet_server_port() FROM kv WHERE k = 1"); p != rs.primary {
			t.Fatalf("read ran on %d while both replicas lag beyond the bound; want the primary %d", p, rs.primary)
		}
	}
	rs.pauseReplay(t, false)
	waitFor(t, func() bool {
		return slices.Contains(rs.replicas, runPort(t, c, "SELECT inet_server_port() FROM kv WHERE k = 1"))
	})
}

// TestReadYourWrites: while the replicas do not replay, a session with
// consistency session reads its own writes (from the primary) after
// autocommit writes, explicit transactions and the extended protocol, and
// a session with consistency eventual reads from the lagging replica
// without them. Once replay resumes, reads go back to the replicas and
// see the rows.
func TestReadYourWrites(t *testing.T) {
	rs := startReplicaSetup(t, proxy.ReadConfig{MaxLagBytes: -1, MaxLag: -1})
	ctx := ctxT(t)
	session := connect(t, rs.proxy.dsn(""))
	simple := connect(t, rs.proxy.dsn("default_query_exec_mode=simple_protocol"))
	eventual := connect(t, (&testProxy{addr: rs.proxy.addr}).dsn("")+"&user=eventual")
	rs.pauseReplay(t, true)

	readOwn := func(c *pgx.Conn, k int) {
		t.Helper()
		var v string
		var p int
		err := c.QueryRow(ctx, "SELECT v, inet_server_port() FROM kv WHERE k = $1", k).Scan(&v, &p)
		if err != nil {
			t.Fatalf("session did not read its own write k=%d: %v", k, err)
		}
		if p != rs.primary {
			t.Errorf("k=%d read on %d; with replay paused only the primary has it", k, p)
		}
	}
	for i, c := range []*pgx.Conn{session, simple} {
		k := 10 + 10*i
		if _, err := c.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, 'autocommit')", k); err != nil {
			t.Fatal(err)
		}
		readOwn(c, k)
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, 'tx')", k+1); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		readOwn(c, k+1)
	}
	// The eventual session reads from a replica, which lacks the rows.
	for range 5 {
		var n, p int
		if err := eventual.QueryRow(ctx, "SELECT count(*), inet_server_port() FROM kv WHERE k = 10").Scan(&n, &p); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(rs.replicas, p) || n != 0 {
			t.Fatalf("eventual read ran on %d and saw %d rows; want a lagging replica of %v without the row", p, n, rs.replicas)
		}
	}
	// A session that wrote nothing reads from the replicas too.
	fresh := connect(t, rs.proxy.dsn(""))
	if p := runPort(t, fresh, "SELECT inet_server_port() FROM kv WHERE k = 1"); !slices.Contains(rs.replicas, p) {
		t.Errorf("a session without writes read on %d, want a replica", p)
	}

	rs.pauseReplay(t, false)
	waitFor(t, func() bool {
		var v string
		var p int
		if err := session.QueryRow(ctx, "SELECT v, inet_server_port() FROM kv WHERE k = 10").Scan(&v, &p); err != nil {
			t.Fatalf("read own write after replay resumed: %v", err)
		}
		return slices.Contains(rs.replicas, p)
	})
}
