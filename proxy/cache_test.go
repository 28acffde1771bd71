package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
	"github.com/pgshard/pgshard/wire"
)

// cacheBound is the staleness bound the cache tests run with
// (cache.max_stream_lag).
const cacheBound = 2 * time.Second

// cacheEnv is one PostgreSQL server (synchronous_commit on, as in
// production: see cache/stream) holding table users, marked cacheable in
// the map of proxies started with cacheProxy.
type cacheEnv struct {
	t       testing.TB
	pg      *pgcluster.Server
	direct  *pgx.Conn
	mapYAML string
}

func newCacheEnv(t testing.TB) *cacheEnv {
	t.Helper()
	pg := integration.StartPostgres(t, integration.Settings(map[string]string{"synchronous_commit": "on"}))
	ctx := ctxT(t)
	direct := connect(t, pg.SuperDSN("postgres"))
	for _, sql := range []string{
		"CREATE TABLE users (id bigint PRIMARY KEY, name text)",
		"INSERT INTO users SELECT g, 'user' || g FROM generate_series(1, 100) g",
		// A role that may read users' ids only.
		"CREATE ROLE limited LOGIN PASSWORD 'limited-secret'",
		"GRANT SELECT (id) ON users TO limited",
		// A function that writes: the proxy cannot see which rows.
		"CREATE FUNCTION rename(k bigint, n text) RETURNS void LANGUAGE sql AS $$ UPDATE users SET name = n WHERE id = k $$",
	} {
		if _, err := direct.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	m := shardmaptest.New().Shard("s0", pg.Addr()).Range("users").Table("public.users", "id").Map(t)
	m.Tables[0].Cache.Enabled = true
	return &cacheEnv{t: t, pg: pg, direct: direct, mapYAML: shardmaptest.YAML(t, m)}
}

// cacheProxy starts a proxy with the cache on; users: app (superuser on
// the server), lim (role limited), tr (trust), and app may use the
// console.
func (e *cacheEnv) cacheProxy() *testProxy {
	e.t.Helper()
	e.t.Setenv("PGSHARD_TEST_LIMITED_PASSWORD", "limited-secret")
	cfg := mapConfig(e.t, e.pg, e.mapYAML)
	cfg.Users = append(cfg.Users,
		proxy.UserConfig{Name: "lim", Auth: "trust", BackendUser: "limited", BackendPasswordEnv: "PGSHARD_TEST_LIMITED_PASSWORD"},
		proxy.UserConfig{Name: "tr", Auth: "trust"})
	cfg.AdminUsers = []string{appUser}
	cfg.HealthInterval = proxy.Duration(100 * time.Millisecond)
	cfg.BroadcastWrites = "allow"
	cfg.Cache = proxy.CacheConfig{Enabled: true, MaxBytes: 16 << 20, MaxStreamLag: proxy.Duration(cacheBound)}
	p := startProxy(e.t, cfg)
	waitServing(e.t, p)
	return p
}

// cacheStats returns SHOW CACHE of p's console as a map.
func cacheStats(t testing.TB, p *testProxy) map[string]string {
	t.Helper()
	ctx := ctxT(t)
	c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/pgshard?sslmode=disable&default_query_exec_mode=simple_protocol", appUser, appPassword, p.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	rows, err := c.Query(ctx, "SHOW CACHE")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func stat(t testing.TB, p *testProxy, name string) float64 {
	t.Helper()
	v, _ := strconv.ParseFloat(cacheStats(t, p)[name], 64)
	return v
}

// waitServing waits until p's cache serves shard s0 (its stream is up).
func waitServing(t testing.TB, p *testProxy) {
	t.Helper()
	testutil.Until(t, 15*time.Second, "the cache serves s0", func() bool {
		return strings.HasPrefix(cacheStats(t, p)["shard.s0"], "serving")
	})
}

func readName(t testing.TB, c *pgx.Conn, id int) string {
	t.Helper()
	var name string
	if err := c.QueryRow(ctxT(t), "SELECT name FROM users WHERE id = $1", id).Scan(&name); err != nil {
		t.Fatalf("read %d: %v", id, err)
	}
	return name
}

// warm reads key id through c until p answers it from the cache (its hit
// counter moves), and returns the value.
func warm(t testing.TB, p *testProxy, c *pgx.Conn, id int) string {
	t.Helper()
	var v string
	testutil.Until(t, 10*time.Second, "a cache hit", func() bool {
		before := stat(t, p, "hits")
		v = readName(t, c, id)
		return stat(t, p, "hits") > before
	})
	return v
}

// TestCacheCoherence: a cached row changed through the same proxy, a
// second proxy or straight on the shard is never served stale past the
// bound (through the same proxy: not at all), each time after the
// cache demonstrably served it; the writing session reads its own
// writes, even those the proxy cannot attribute (a function).
func TestCacheCoherence(t *testing.T) {
	e := newCacheEnv(t)
	p1 := e.cacheProxy()
	p2 := e.cacheProxy()
	ctx := ctxT(t)
	reader := connect(t, p1.dsn(""))
	simple := connect(t, p1.dsn("default_query_exec_mode=simple_protocol"))
	writer := connect(t, p1.dsn(""))
	other := connect(t, p2.dsn(""))

	if v := warm(t, p1, reader, 1); v != "user1" {
		t.Fatalf("read %q", v)
	}
	// Through the same proxy: the next read sees the write at once.
	for i := range 5 {
		want := fmt.Sprintf("same-%d", i)
		warm(t, p1, reader, 1)
		if _, err := writer.Exec(ctx, "UPDATE users SET name = $1 WHERE id = 1", want); err != nil {
			t.Fatal(err)
		}
		if got := readName(t, reader, 1); got != want {
			t.Fatalf("after a write through the same proxy: %q, want %q", got, want)
		}
		var got string
		if err := simple.QueryRow(ctx, "SELECT name FROM users WHERE id = 1").Scan(&got); err != nil || got != want {
			t.Fatalf("simple protocol after a write: %q %v, want %q", got, err, want)
		}
	}
	// A table-wide write (no key) through the same proxy.
	warm(t, p1, reader, 2)
	if _, err := writer.Exec(ctx, "UPDATE users SET name = name || '!' WHERE id < 3"); err != nil {
		t.Fatal(err)
	}
	if got := readName(t, reader, 2); got != "user2!" {
		t.Fatalf("after a write without a key: %q", got)
	}

	// Through a second proxy and straight on the shard: within the bound.
	for i, w := range []func(string) error{
		func(v string) error {
			_, err := other.Exec(ctx, "UPDATE users SET name = $1 WHERE id = 1", v)
			return err
		},
		func(v string) error {
			_, err := e.direct.Exec(ctx, "UPDATE users SET name = $1 WHERE id = 1", v)
			return err
		},
	} {
		want := fmt.Sprintf("elsewhere-%d", i)
		warm(t, p1, reader, 1)
		if err := w(want); err != nil {
			t.Fatal(err)
		}
		committed := time.Now()
		for readName(t, reader, 1) != want {
			if time.Since(committed) > cacheBound {
				t.Fatalf("write %d: still stale %v after its commit (bound %v)", i, time.Since(committed), cacheBound)
			}
			time.Sleep(5 * time.Millisecond) // polling a served value, not synchronizing
		}
		t.Logf("write %d seen after %v", i, time.Since(committed).Round(time.Millisecond))
	}

	// The writing session reads its own writes: keyed, and through a
	// function the proxy cannot see into.
	warm(t, p1, writer, 3)
	for i := range 20 {
		want := fmt.Sprintf("own-%d", i)
		var err error
		if i%2 == 0 {
			_, err = writer.Exec(ctx, "UPDATE users SET name = $1 WHERE id = 3", want)
		} else {
			_, err = writer.Exec(ctx, "SELECT rename(3, $1)", want)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := readName(t, writer, 3); got != want {
			t.Fatalf("own write %d: read %q, want %q", i, got, want)
		}
	}
}

// TestCacheNeverServes: reads inside a transaction that wrote, reads
// with volatile functions or FOR UPDATE, and a role with fewer
// privileges are never answered from the cache.
func TestCacheNeverServes(t *testing.T) {
	e := newCacheEnv(t)
	p := e.cacheProxy()
	ctx := ctxT(t)
	c := connect(t, p.dsn(""))
	warm(t, p, c, 4)

	hits := stat(t, p, "hits")
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE users SET name = 'uncommitted' WHERE id = 4"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		var name string
		if err := tx.QueryRow(ctx, "SELECT name FROM users WHERE id = $1", 4).Scan(&name); err != nil || name != "uncommitted" {
			t.Fatalf("in the transaction: %q %v", name, err)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := stat(t, p, "hits"); got != hits {
		t.Fatalf("reads in a transaction that wrote were hits (%v -> %v)", hits, got)
	}
	if got := readName(t, c, 4); got != "user4" {
		t.Fatalf("after the rollback: %q (a value of the transaction was cached)", got)
	}

	// Volatile functions and FOR UPDATE: never looked up.
	lookups := func() float64 {
		s := cacheStats(t, p)
		var n float64
		for k, v := range s {
			if k == "hits" || k == "misses" || strings.HasPrefix(k, "lookups.bypass.") {
				f, _ := strconv.ParseFloat(v, 64)
				n += f
			}
		}
		return n
	}
	before := lookups()
	var seen []float64
	for range 3 {
		var name string
		var r float64
		if err := c.QueryRow(ctx, "SELECT name, random() FROM users WHERE id = $1", 4).Scan(&name, &r); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, r)
		if _, err := c.Exec(ctx, "SELECT name FROM users WHERE id = 4 FOR UPDATE"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, "SELECT name, now() FROM users WHERE id = 4"); err != nil {
			t.Fatal(err)
		}
	}
	if seen[0] == seen[1] && seen[1] == seen[2] {
		t.Errorf("random() returned %v three times", seen)
	}
	if got := lookups(); got != before {
		t.Fatalf("volatile or locking reads went to the cache (%v lookups)", got-before)
	}

	// A role with fewer privileges: its own entries, and the server's
	// refusal.
	warm(t, p, c, 5)
	hits = stat(t, p, "hits")
	lim := connect(t, strings.Replace(p.dsn(""), appUser+":"+appPassword, "lim", 1))
	for range 3 {
		var name string
		err := lim.QueryRow(ctx, "SELECT name FROM users WHERE id = $1", 5).Scan(&name)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != wire.SQLStateInsufficientPrivilege {
			t.Fatalf("limited role read a column it may not: %q %v", name, err)
		}
	}
	if got := stat(t, p, "hits"); got != hits {
		t.Fatalf("the limited role got hits (%v -> %v)", hits, got)
	}
	var id int
	if err := lim.QueryRow(ctx, "SELECT id FROM users WHERE id = $1", 5).Scan(&id); err != nil || id != 5 {
		t.Fatalf("limited role, its column: %d %v", id, err)
	}
}

// TestCacheStreamKilled: when a shard's stream reader is killed, its
// temporary slot goes with it, the shard is bypassed (not served) until
// a new stream is up, and a proxy that stops leaves no slot.
func TestCacheStreamKilled(t *testing.T) {
	e := newCacheEnv(t)
	p := e.cacheProxy()
	ctx := ctxT(t)
	c := connect(t, p.dsn(""))
	warm(t, p, c, 6)
	slots := func() []string {
		rows, err := e.direct.Query(ctx, "SELECT slot_name FROM pg_replication_slots ORDER BY 1")
		if err != nil {
			t.Fatal(err)
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	old := slots()
	if len(old) != 1 || !strings.HasPrefix(old[0], "pgshard_cache_") {
		t.Fatalf("slots %q, want one of the cache", old)
	}
	bypassed := stat(t, p, "lookups.bypass.stream_down")
	if _, err := e.direct.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1", old[0]); err != nil {
		t.Fatal(err)
	}
	testutil.Until(t, 10*time.Second, "the shard bypassed", func() bool {
		if v := readName(t, c, 6); v != "user6" {
			t.Fatalf("read %q", v)
		}
		return stat(t, p, "lookups.bypass.stream_down") > bypassed
	})
	testutil.Until(t, 10*time.Second, "the old slot gone and a new one up", func() bool {
		now := slots()
		return len(now) == 1 && now[0] != old[0]
	})
	warm(t, p, c, 6) // served again
	ctxS, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctxS); err != nil {
		t.Fatal(err)
	}
	testutil.Until(t, 10*time.Second, "no slot after the proxy stopped", func() bool { return len(slots()) == 0 })
}

// TestCacheSameBytes: a hit answers byte for byte what the miss before
// it answered, through the simple and the extended protocol (a named
// prepared statement, the unnamed one, with and without Describe,
// binary results, a row limit).
func TestCacheSameBytes(t *testing.T) {
	e := newCacheEnv(t)
	p := e.cacheProxy()
	conn, fe := trustedSession(t, p.addr)
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	// exchange sends msgs and returns the encoded answer up to
	// ReadyForQuery.
	exchange := func(msgs ...pgproto3.FrontendMessage) []byte {
		t.Helper()
		for _, m := range msgs {
			fe.Send(m)
		}
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		var out []byte
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			out, err = m.Encode(out)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				return out
			}
		}
	}
	const sql = "SELECT id, name FROM users WHERE id = $1"
	cases := []struct {
		name string
		msgs func() []pgproto3.FrontendMessage
	}{
		{"simple", func() []pgproto3.FrontendMessage {
			return []pgproto3.FrontendMessage{&pgproto3.Query{String: "SELECT id, name FROM users WHERE id = 7"}}
		}},
		{"unnamed with Describe", func() []pgproto3.FrontendMessage {
			return []pgproto3.FrontendMessage{&pgproto3.Parse{Query: sql}, &pgproto3.Bind{Parameters: [][]byte{[]byte("8")}},
				&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}}
		}},
		{"unnamed without Describe, binary", func() []pgproto3.FrontendMessage {
			return []pgproto3.FrontendMessage{&pgproto3.Parse{Query: sql}, &pgproto3.Bind{Parameters: [][]byte{[]byte("9")}, ResultFormatCodes: []int16{1}},
				&pgproto3.Execute{}, &pgproto3.Sync{}}
		}},
	}
	// A named statement, prepared once, bound twice.
	exchange(&pgproto3.Parse{Name: "byid", Query: sql}, &pgproto3.Sync{})
	cases = append(cases, struct {
		name string
		msgs func() []pgproto3.FrontendMessage
	}{"named", func() []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{&pgproto3.Bind{PreparedStatement: "byid", Parameters: [][]byte{[]byte("11")}},
			&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}}
	}})
	for _, c := range cases {
		hits := stat(t, p, "hits")
		miss := exchange(c.msgs()...)
		if !bytes.Contains(miss, []byte("user")) {
			t.Fatalf("%s: no row in %q", c.name, miss)
		}
		var hit []byte
		testutil.Until(t, 10*time.Second, c.name+": a hit", func() bool {
			hit = exchange(c.msgs()...)
			return stat(t, p, "hits") > hits
		})
		if !bytes.Equal(hit, miss) {
			t.Errorf("%s: the hit answered\n%q\nthe miss\n%q", c.name, hit, miss)
		}
	}
	// A row limit: the server suspends the portal at the limit, even
	// with no row left (the result is not filled); the hit does the same.
	limited := func() []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{&pgproto3.Parse{Query: sql}, &pgproto3.Bind{Parameters: [][]byte{[]byte("12")}},
			&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{MaxRows: 1}, &pgproto3.Execute{MaxRows: 1}, &pgproto3.Sync{}}
	}
	miss := exchange(limited()...)
	if !bytes.Contains(miss, []byte{'s', 0, 0, 0, 4}) {
		t.Fatalf("no PortalSuspended in %q", miss)
	}
	hits := stat(t, p, "hits")
	testutil.Until(t, 10*time.Second, "a hit", func() bool {
		exchange(&pgproto3.Parse{Query: sql}, &pgproto3.Bind{Parameters: [][]byte{[]byte("12")}}, &pgproto3.Execute{}, &pgproto3.Sync{})
		return stat(t, p, "hits") > hits
	})
	hits = stat(t, p, "hits")
	if hit := exchange(limited()...); !bytes.Equal(hit, miss) || stat(t, p, "hits") == hits {
		t.Errorf("row limit: the hit answered\n%q\nthe miss\n%q", hit, miss)
	}
}

// TestCacheLiveSettings: the map's cache settings apply live (a table
// turned off is no longer served; a new epoch drops every entry), and the
// console flushes a table or everything.
func TestCacheLiveSettings(t *testing.T) {
	e := newCacheEnv(t)
	p := e.cacheProxy()
	ctx := ctxT(t)
	c := connect(t, p.dsn(""))
	warm(t, p, c, 20)

	console := connect(t, fmt.Sprintf("postgres://%s:%s@%s/pgshard?sslmode=disable&default_query_exec_mode=simple_protocol", appUser, appPassword, p.addr))
	for _, cmd := range []string{"FLUSH CACHE users", "FLUSH CACHE"} {
		if _, err := console.Exec(ctx, cmd); err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		misses := stat(t, p, "misses")
		readName(t, c, 20)
		if got := stat(t, p, "misses"); got != misses+1 {
			t.Fatalf("after %s: misses %v -> %v, want one more", cmd, misses, got)
		}
		warm(t, p, c, 20)
	}
	_, err := console.Exec(ctx, "FLUSH CACHE public.nosuch")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != wire.SQLStateUndefinedTable {
		t.Fatalf("FLUSH CACHE of a table that is not cacheable: %v", err)
	}

	apply := func(epoch uint64, enabled bool) {
		t.Helper()
		m := shardmaptest.New().Epoch(epoch).Shard("s0", e.pg.Addr()).Range("users").Table("public.users", "id").Map(t)
		m.Tables[0].Cache.Enabled = enabled
		if ok, err := p.srv.ApplyMap(m); err != nil || !ok {
			t.Fatalf("apply map epoch %d: %v %v", epoch, ok, err)
		}
	}
	apply(2, false)
	s := cacheStats(t, p)
	hits, misses := s["hits"], s["misses"]
	for range 3 {
		readName(t, c, 20)
	}
	if s := cacheStats(t, p); s["hits"] != hits || s["misses"] != misses {
		t.Fatalf("a table turned off was looked up: hits %s -> %s, misses %s -> %s", hits, s["hits"], misses, s["misses"])
	}
	apply(3, true)
	if s := cacheStats(t, p); s["epoch"] != "3" || s["table.public.users"] == "" {
		t.Fatalf("SHOW CACHE after epoch 3: %v", s)
	}
	waitServing(t, p)
	m := stat(t, p, "misses")
	warm(t, p, c, 20) // the entry of epoch 1 is gone: a miss first
	if stat(t, p, "misses") <= m {
		t.Fatal("no miss after a new epoch")
	}
}

// TestCacheFollowsFailover: when the map names a new primary for a shard
// (a failover), the proxy's stream of that shard moves to it — the old
// primary, still running, keeps no slot — and writes straight on the new
// primary invalidate within the bound.
func TestCacheFollowsFailover(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(1), integration.Replicas(1),
		integration.Settings(map[string]string{"synchronous_commit": "on"}))
	ctx := ctxT(t)
	oldPrimary, replica := c.Shards[0], c.Shards[0].Replicas[0]
	if err := oldPrimary.Exec(ctx, "CREATE TABLE users (id bigint PRIMARY KEY, name text); INSERT INTO users SELECT g, 'user' || g FROM generate_series(1, 10) g"); err != nil {
		t.Fatal(err)
	}
	if err := oldPrimary.WaitReplayed(ctx); err != nil {
		t.Fatal(err)
	}
	mapYAML := func(epoch uint64, primary string, replicas ...string) string {
		m := shardmaptest.New().Epoch(epoch).Shard("s0", primary, replicas...).Range("users").Table("public.users", "id").Map(t)
		m.Tables[0].Cache.Enabled = true
		return shardmaptest.YAML(t, m)
	}
	cfg := mapConfig(t, oldPrimary, mapYAML(1, oldPrimary.Addr(), replica.Addr()))
	cfg.AdminUsers = []string{appUser}
	cfg.Cache = proxy.CacheConfig{Enabled: true, MaxStreamLag: proxy.Duration(cacheBound)}
	p := startProxy(t, cfg)
	waitServing(t, p)
	conn := connect(t, p.dsn(""))
	warm(t, p, conn, 1)

	slots := func(srv *pgcluster.Server) int {
		db := connect(t, srv.SuperDSN("postgres"))
		var n int
		if err := db.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgshard_cache%'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		_ = db.Close(ctx)
		return n
	}
	if err := replica.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	m := shardmaptest.New().Epoch(2).Shard("s0", replica.Addr()).Range("users").Table("public.users", "id").Map(t)
	m.Tables[0].Cache.Enabled = true
	if ok, err := p.srv.ApplyMap(m); err != nil || !ok {
		t.Fatalf("apply map: %v %v", ok, err)
	}
	testutil.Until(t, 15*time.Second, "the stream on the new primary, none on the old", func() bool {
		return slots(replica) == 1 && slots(oldPrimary) == 0
	})
	waitServing(t, p)
	warm(t, p, conn, 1)
	newDB := connect(t, replica.SuperDSN("postgres"))
	if _, err := newDB.Exec(ctx, "UPDATE users SET name = 'after failover' WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	for readName(t, conn, 1) != "after failover" {
		if time.Since(committed) > cacheBound {
			t.Fatalf("a write on the new primary still unseen after %v", time.Since(committed))
		}
		time.Sleep(5 * time.Millisecond) // polling a served value
	}
}

// TestCacheReadOnlyTx: the point reads of a READ ONLY transaction at READ
// COMMITTED (BEGIN READ ONLY, SET TRANSACTION READ ONLY, the session's
// default_transaction_read_only) are answered from the cache while it
// has not reached a server, in both protocols, with the transaction's
// status, the session's own writes and a write on the shard; other
// transactions are not, and the transaction stays READ ONLY on the
// server once it gets there.
func TestCacheReadOnlyTx(t *testing.T) {
	e := newCacheEnv(t)
	p := e.cacheProxy()
	ctx := ctxT(t)
	ext := connect(t, p.dsn(""))
	simple := connect(t, p.dsn("default_query_exec_mode=simple_protocol"))
	warm(t, p, ext, 6)
	warm(t, p, simple, 6)

	// read runs stmts (transaction control) then reads key 6 three times
	// on c, and returns the hits it got, the value and the transaction
	// status after the reads; it ends with ROLLBACK.
	read := func(c *pgx.Conn, stmts ...string) (float64, string, byte) {
		t.Helper()
		for _, s := range stmts {
			if _, err := c.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		before := stat(t, p, "hits")
		var v string
		for range 3 {
			v = readName(t, c, 6)
		}
		status := c.PgConn().TxStatus()
		got := stat(t, p, "hits") - before
		if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
			t.Fatal(err)
		}
		return got, v, status
	}
	for _, c := range []*pgx.Conn{ext, simple} {
		for _, stmts := range [][]string{
			{"BEGIN READ ONLY"},
			{"START TRANSACTION ISOLATION LEVEL READ COMMITTED, READ ONLY"},
			{"BEGIN", "SET TRANSACTION READ ONLY"},
			{"SET default_transaction_read_only = on", "BEGIN"},
			{"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "BEGIN"},
		} {
			if strings.HasPrefix(stmts[0], "SET ") {
				// Session parameters are part of the key: warm it.
				if _, err := c.Exec(ctx, stmts[0]); err != nil {
					t.Fatal(err)
				}
				warm(t, p, c, 6)
				stmts = stmts[1:]
			}
			hits, v, status := read(c, stmts...)
			if hits != 3 || v != "user6" || status != 'T' {
				t.Errorf("%v: %v hits, %q, status %c; want 3 hits of user6 in a transaction", stmts, hits, v, status)
			}
			if _, err := c.Exec(ctx, "RESET ALL"); err != nil {
				t.Fatal(err)
			}
		}
		for _, stmts := range [][]string{
			{"BEGIN"},
			{"BEGIN READ WRITE"},
			{"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"},
			{"BEGIN READ ONLY ISOLATION LEVEL SERIALIZABLE"},
			{"BEGIN READ ONLY", "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"},
			{"SET default_transaction_isolation = 'repeatable read'", "BEGIN READ ONLY"},
			{"BEGIN READ ONLY", "SET LOCAL search_path = pg_catalog, public"},
		} {
			if hits, v, _ := read(c, stmts...); hits != 0 || v != "user6" {
				t.Errorf("%v: %v hits (%q), want none", stmts, hits, v)
			}
			if _, err := c.Exec(ctx, "RESET ALL"); err != nil {
				t.Fatal(err)
			}
		}
	}

	// On the server the transaction is READ ONLY (a miss takes it there).
	tx, err := ext.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	if got := readName(t, ext, 6); got != "user6" {
		t.Fatalf("read only transaction: %q", got)
	}
	var ro string
	if err := tx.QueryRow(ctx, "SHOW transaction_read_only").Scan(&ro); err != nil || ro != "on" {
		t.Fatalf("transaction_read_only on the server: %q %v", ro, err)
	}
	_ = tx.Rollback(ctx)
	if _, err := simple.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := simple.Exec(ctx, "SET TRANSACTION READ ONLY"); err != nil {
		t.Fatal(err)
	}
	_, err = simple.Exec(ctx, "UPDATE users SET name = 'x' WHERE id = 6")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "25006" {
		t.Fatalf("UPDATE after SET TRANSACTION READ ONLY: %v, want 25006", err)
	}
	if _, err := simple.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}

	// The session's own write, then a write on the shard: read in a READ
	// ONLY transaction at once (own), within the bound (the shard's).
	if _, err := ext.Exec(ctx, "UPDATE users SET name = 'own' WHERE id = 6"); err != nil {
		t.Fatal(err)
	}
	if _, v, _ := read(ext, "BEGIN READ ONLY"); v != "own" {
		t.Fatalf("own write read in a READ ONLY transaction as %q", v)
	}
	warm(t, p, ext, 6)
	if _, err := e.direct.Exec(ctx, "UPDATE users SET name = 'direct' WHERE id = 6"); err != nil {
		t.Fatal(err)
	}
	written := time.Now()
	testutil.Until(t, 10*time.Second, "the shard's write read in a READ ONLY transaction", func() bool {
		_, v, _ := read(ext, "BEGIN READ ONLY")
		if v != "direct" && time.Since(written) > cacheBound {
			t.Fatalf("stale %q served %v after the write (bound %v)", v, time.Since(written), cacheBound)
		}
		return v == "direct"
	})
}

// BenchmarkCacheHit: a point read answered from the cache, through the
// proxy (in this process, so allocations are the proxy's and the
// client's), in the extended protocol (a prepared statement, as pgbench
// -M prepared) and in the simple protocol.
func BenchmarkCacheHit(b *testing.B) {
	e := newCacheEnv(b)
	p := e.cacheProxy()
	ctx := ctxT(b)
	for _, mode := range []string{"prepared", "simple"} {
		b.Run(mode, func(b *testing.B) {
			c := connect(b, p.dsn(""))
			pc := c.PgConn()
			if _, err := pc.Prepare(ctx, "hit", "SELECT name FROM users WHERE id = $1", nil); err != nil {
				b.Fatal(err)
			}
			param := [][]byte{[]byte("7")}
			run := func() {
				var err error
				if mode == "prepared" {
					err = pc.ExecPrepared(ctx, "hit", param, nil, nil).Read().Err
				} else {
					_, err = pc.Exec(ctx, "SELECT name FROM users WHERE id = 7").ReadAll()
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			testutil.Until(b, 10*time.Second, "a cache hit", func() bool {
				before := stat(b, p, "hits")
				run()
				return stat(b, p, "hits") > before
			})
			hits := stat(b, p, "hits")
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				run()
			}
			b.StopTimer()
			if got := stat(b, p, "hits") - hits; got < float64(b.N) {
				b.Fatalf("%v hits of %d reads", got, b.N)
			}
		})
	}
}

// TestCacheMapReloadSameEpoch: a map file reloaded under the same epoch
// that places a key on another shard: the cache never serves what was
// read under the old placement (hits are found without planning, so the
// key must tell the maps apart).
func TestCacheMapReloadSameEpoch(t *testing.T) {
	ctx := ctxT(t)
	var servers []*pgcluster.Server
	for _, prefix := range []string{"a", "b"} {
		srv := integration.StartPostgres(t, integration.Settings(map[string]string{"synchronous_commit": "on"}))
		c := connect(t, srv.SuperDSN("postgres"))
		for _, sql := range []string{
			"CREATE TABLE users (id bigint PRIMARY KEY, name text)",
			"INSERT INTO users SELECT g, '" + prefix + "' || g FROM generate_series(1, 20) g",
		} {
			if _, err := c.Exec(ctx, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		servers = append(servers, srv)
	}
	config := func(split int64) *proxy.Config {
		m := shardmaptest.New().Shard("s0", servers[0].Addr()).Shard("s1", servers[1].Addr()).
			Range("users", split).Table("public.users", "id").Map(t)
		m.Tables[0].Cache.Enabled = true
		cfg := mapConfig(t, servers[0], shardmaptest.YAML(t, m))
		cfg.HealthInterval = proxy.Duration(100 * time.Millisecond)
		cfg.AdminUsers = []string{appUser}
		cfg.Cache = proxy.CacheConfig{Enabled: true, MaxBytes: 16 << 20, MaxStreamLag: proxy.Duration(cacheBound)}
		return cfg
	}
	cfg := config(1000)
	p := startProxy(t, cfg)
	serving := func() {
		testutil.Until(t, 15*time.Second, "the cache serves s0 and s1", func() bool {
			s := cacheStats(t, p)
			return strings.HasPrefix(s["shard.s0"], "serving") && strings.HasPrefix(s["shard.s1"], "serving")
		})
	}
	serving()
	c := connect(t, p.dsn(""))
	if v := warm(t, p, c, 8); v != "a8" {
		t.Fatalf("key 8 under the first map: %q, want a8 (from s0)", v)
	}
	cfg2 := config(5)
	cfg2.Listen = cfg.Listen
	if err := cfg2.Complete(); err != nil {
		t.Fatal(err)
	}
	if err := p.srv.Reload(cfg2); err != nil {
		t.Fatal(err)
	}
	if v := readName(t, c, 8); v != "b8" {
		t.Fatalf("key 8 after the map moved it to s1 under the same epoch: %q, want b8", v)
	}
	serving()
	if v := warm(t, p, c, 8); v != "b8" {
		t.Fatalf("key 8 cached again: %q, want b8", v)
	}
}
