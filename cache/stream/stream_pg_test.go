package stream_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshard/pgshard/cache"
	"github.com/pgshard/pgshard/cache/stream"
	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/internal/testutil"
)

// bound is the staleness bound the tests run the cache with.
const bound = 2 * time.Second

type env struct {
	t     *testing.T
	srv   *pgcluster.Server
	db    *pgx.Conn
	cache *cache.Cache
	reg   *prometheus.Registry
}

func setup(t *testing.T) *env {
	t.Helper()
	// The harness runs with synchronous_commit off, where a commit reaches
	// the WAL a logical walsender decodes only at the WAL writer's next
	// round (wal_writer_delay, 200 ms): measure with it on, as in
	// production.
	srv := integration.StartPostgres(t, integration.Settings(map[string]string{"synchronous_commit": "on"}))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	db, err := pgx.Connect(ctx, srv.SuperDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	for _, sql := range []string{
		"CREATE TABLE users (id bigint PRIMARY KEY, name text)",
		// The sharding key id is not in the replica identity (nid).
		"CREATE TABLE notes (nid bigint PRIMARY KEY, id bigint, body text)",
		"INSERT INTO users SELECT g, 'user' || g FROM generate_series(1, 100) g",
		"INSERT INTO notes SELECT g, g, 'note' || g FROM generate_series(1, 10) g",
	} {
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	c, err := cache.New(cache.Config{MaxBytes: 8 << 20, MaxStreamLag: bound})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	c.SetEpoch(1)
	c.SetTables(map[string]cache.TableSettings{"public.users": {Enabled: true}, "public.notes": {Enabled: true}, "public.missing": {Enabled: true}})
	reg := prometheus.NewRegistry()
	reg.MustRegister(c.Collectors()...)
	return &env{t: t, srv: srv, db: db, cache: c, reg: reg}
}

// tables are the reader's tables; public.missing does not exist on the
// server, so the stream does not cover it.
var tables = map[string]string{"public.users": "id", "public.notes": "id", "public.missing": "id"}

// startReader runs a reader on connStr until the test ends or the returned
// stop is called; stop waits for Run to return.
func (e *env) startReader(connStr string) (*stream.Reader, func()) {
	e.t.Helper()
	primary := func() (string, error) { return connStr, nil }
	r, err := stream.New(stream.Config{Primary: primary, Tables: tables, StatusInterval: 100 * time.Millisecond, RetryInterval: 100 * time.Millisecond}, e.cache.Stream("s1"))
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("reader: %v", err)
				}
			case <-time.After(10 * time.Second):
				e.t.Error("reader did not stop within 10s")
			}
		})
	}
	e.t.Cleanup(stop)
	return r, stop
}

func (e *env) key(b *cache.KeyBuilder, table, id string) cache.Key {
	b.Begin(1, "s1", table, []byte(id))
	b.Statement("select * from " + table + " where id = $1")
	b.Param(0, []byte(id))
	b.Role("postgres", cache.Primary)
	b.Formats(nil)
	return b.Key()
}

// fill reads a row as the proxy would (BeginFill, then the read, then
// Fill) and waits until the cache serves it.
func (e *env) fill(table, id string) {
	e.t.Helper()
	var b cache.KeyBuilder
	k := e.key(&b, table, id)
	tok := e.cache.BeginFill(k, 0)
	if !tok.Valid() {
		_, st := e.cache.Get(k, 0)
		e.t.Fatalf("BeginFill %s %s refused (%v)", table, id, st)
	}
	var v string
	err := e.db.QueryRow(e.t.Context(), "SELECT coalesce(max("+map[string]string{"public.users": "name", "public.notes": "body"}[table]+"), '') FROM "+table+" WHERE id = $1", id).Scan(&v)
	if err != nil {
		e.t.Fatal(err)
	}
	if !e.cache.Fill(tok, []byte(v)) {
		e.t.Fatalf("fill %s %s refused", table, id)
	}
	e.cache.Wait()
	e.status(table, id, cache.Hit)
}

func (e *env) status(table, id string, want cache.Status) {
	e.t.Helper()
	var b cache.KeyBuilder
	if _, st := e.cache.Get(e.key(&b, table, id), 0); st != want {
		e.t.Fatalf("%s id %s: %v, want %v", table, id, st, want)
	}
}

// writeAndWait runs sql directly on the server and returns how long after its
// commit the cache stopped serving each of ids.
func (e *env) writeAndWait(sql, table string, ids ...string) time.Duration {
	e.t.Helper()
	if _, err := e.db.Exec(e.t.Context(), sql); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	committed := time.Now()
	var b cache.KeyBuilder
	testutil.WaitFor(e.t, 2*bound, "the write invalidates "+fmt.Sprint(ids), func() (bool, string) {
		for _, id := range ids {
			if _, st := e.cache.Get(e.key(&b, table, id), 0); st == cache.Hit {
				return false, table + " id " + id + " still served"
			}
		}
		return true, ""
	})
	return time.Since(committed)
}

func (e *env) waitStatus(what string, want cache.Status) {
	e.t.Helper()
	var b cache.KeyBuilder
	k := e.key(&b, "public.users", "1")
	testutil.WaitFor(e.t, 10*time.Second, what, func() (bool, string) {
		_, st := e.cache.Get(k, 0)
		return st == want, "status " + st.String()
	})
}

// currentLSN returns the server's current WAL position.
func (e *env) currentLSN() cache.LSN {
	e.t.Helper()
	var lsn string
	if err := e.db.QueryRow(e.t.Context(), "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		e.t.Fatal(err)
	}
	var hi, lo uint32
	if _, err := fmt.Sscanf(lsn, "%X/%X", &hi, &lo); err != nil {
		e.t.Fatal(err)
	}
	return cache.LSN(uint64(hi)<<32 | uint64(lo))
}

// waitApplied waits until the stream applied everything written so far.
func (e *env) waitApplied() {
	e.t.Helper()
	lsn := e.currentLSN()
	testutil.WaitFor(e.t, bound, "the stream applies "+lsn.String(), func() (bool, string) {
		a := e.cache.Stream("s1").Applied()
		return a >= lsn, "applied " + a.String()
	})
}

// staleness returns the cache's staleness histogram: its sample count and
// a summary, which it logs.
func (e *env) staleness() (uint64, string) {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pgshard_cache_staleness_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		n := h.GetSampleCount()
		if n == 0 {
			return 0, "no samples"
		}
		sum := fmt.Sprintf("commit → invalidation over %d changes: mean %.2f ms", n, 1000*h.GetSampleSum()/float64(n))
		for _, b := range h.GetBucket() {
			if float64(b.GetCumulativeCount()) >= 0.99*float64(n) {
				sum += fmt.Sprintf(", p99 ≤ %g ms", 1000*b.GetUpperBound())
				break
			}
		}
		e.t.Log("staleness histogram: " + sum)
		return n, sum
	}
	e.t.Fatal("no pgshard_cache_staleness_seconds")
	return 0, ""
}

func (e *env) slots() []string {
	e.t.Helper()
	rows, err := e.db.Query(e.t.Context(), "SELECT slot_name FROM pg_replication_slots ORDER BY 1")
	if err != nil {
		e.t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		e.t.Fatal(err)
	}
	return names
}

// TestStreamInvalidates: writes made straight on the server invalidate the
// cached keys they touch, and only those, within the bound.
func TestStreamInvalidates(t *testing.T) {
	e := setup(t)
	e.status("public.users", "1", cache.BypassStreamDown)
	r, _ := e.startReader(e.srv.SuperDSN("postgres"))
	e.waitStatus("the stream comes up", cache.Miss)

	// The publication holds the cacheable tables; the slot is temporary.
	rows, _ := e.db.Query(t.Context(), "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = 'pgshard_cache' ORDER BY 1")
	pubTables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || !slices.Equal(pubTables, []string{"public.notes", "public.users"}) {
		t.Fatalf("publication tables %v (%v)", pubTables, err)
	}
	e.status("public.missing", "1", cache.BypassNotStreamed)
	var temporary bool
	if err := e.db.QueryRow(t.Context(), "SELECT temporary FROM pg_replication_slots WHERE slot_name = $1", r.Slot()).Scan(&temporary); err != nil || !temporary {
		t.Fatalf("slot %q: temporary=%v (%v)", r.Slot(), temporary, err)
	}

	// Updates of single keys, one at a time.
	var delays []time.Duration
	for i := 1; i <= 20; i++ {
		id := fmt.Sprint(i)
		e.fill("public.users", id)
		e.fill("public.users", "99")
		delays = append(delays, e.writeAndWait("UPDATE users SET name = 'changed' WHERE id = "+id, "public.users", id))
		e.status("public.users", "99", cache.Hit) // another key is untouched
	}
	slices.Sort(delays)
	t.Logf("UPDATE → invalidated, 20 writes: p50 %v, max %v (bound %v)", delays[len(delays)/2], delays[len(delays)-1], bound)
	if delays[len(delays)-1] > bound {
		t.Errorf("an invalidation took %v, over the bound %v", delays[len(delays)-1], bound)
	}

	// INSERT of a key whose absence was cached; DELETE; an UPDATE moving a
	// row to another key invalidates both.
	e.fill("public.users", "1000")
	e.writeAndWait("INSERT INTO users VALUES (1000, 'new')", "public.users", "1000")
	e.fill("public.users", "50")
	e.writeAndWait("DELETE FROM users WHERE id = 50", "public.users", "50")
	e.fill("public.users", "60")
	e.fill("public.users", "600")
	e.writeAndWait("UPDATE users SET id = 600 WHERE id = 60", "public.users", "60", "600")
	e.status("public.users", "99", cache.Hit)

	// A table whose replica identity (its primary key nid) lacks the
	// sharding key: a DELETE and an UPDATE invalidate the whole table,
	// the only safe choice; with REPLICA IDENTITY FULL only the key.
	e.fill("public.notes", "1")
	e.fill("public.notes", "2")
	e.writeAndWait("DELETE FROM notes WHERE id = 1", "public.notes", "1", "2")
	e.fill("public.notes", "2")
	e.fill("public.notes", "3")
	e.writeAndWait("UPDATE notes SET body = 'x' WHERE id = 4", "public.notes", "2", "3")
	if _, err := e.db.Exec(t.Context(), "ALTER TABLE notes REPLICA IDENTITY FULL"); err != nil {
		t.Fatal(err)
	}
	e.fill("public.notes", "2")
	e.fill("public.notes", "3")
	e.writeAndWait("DELETE FROM notes WHERE id = 2", "public.notes", "2")
	if _, err := e.db.Exec(t.Context(), "UPDATE notes SET id = 30 WHERE id = 4"); err != nil {
		t.Fatal(err)
	}
	e.waitApplied()
	e.status("public.notes", "3", cache.Hit) // another key's change left key 3 alone

	// TRUNCATE invalidates the table.
	e.fill("public.users", "99")
	e.writeAndWait("TRUNCATE users", "public.users", "99")

	// Read your writes: a session's commit LSN is applied by the stream
	// within the bound, even when it touched no cacheable table.
	if _, err := e.db.Exec(t.Context(), "CREATE TABLE other (x int)"); err != nil {
		t.Fatal(err)
	}
	sessionLSN := e.currentLSN()
	e.fill("public.users", "7")
	var b cache.KeyBuilder
	k := e.key(&b, "public.users", "7")
	start := time.Now()
	testutil.WaitFor(t, bound, "the stream applies the session's commit", func() (bool, string) {
		_, st := e.cache.Get(k, sessionLSN)
		return st == cache.Hit, "status " + st.String()
	})
	if _, st := e.cache.Get(k, e.cache.Stream("s1").Applied()+1<<32); st != cache.BypassReadYourWrites {
		t.Fatalf("a session ahead of the stream got %v, want %v", st, cache.BypassReadYourWrites)
	}
	t.Logf("read-your-writes: commit %v applied by the stream after %v", sessionLSN, time.Since(start))

	// The staleness histogram saw the changes.
	if n, _ := e.staleness(); n < 20 {
		t.Errorf("staleness histogram has %d samples, want at least 20", n)
	}
}

// TestStreamStopAndKill: a stopped reader leaves no slot and its shard is
// bypassed; a new reader resumes; a reader whose connection dies without a
// goodbye (its process killed) leaves no slot either.
func TestStreamStopAndKill(t *testing.T) {
	e := setup(t)
	r, stop := e.startReader(e.srv.SuperDSN("postgres"))
	e.waitStatus("the stream comes up", cache.Miss)
	slot := r.Slot()
	if !slices.Contains(e.slots(), slot) {
		t.Fatalf("slot %q not in pg_replication_slots %v", slot, e.slots())
	}
	e.fill("public.users", "1")

	stop()
	e.status("public.users", "1", cache.BypassStreamDown)
	testutil.WaitFor(t, 10*time.Second, "the slot of the stopped reader is gone", func() (bool, string) {
		s := e.slots()
		return !slices.Contains(s, slot), fmt.Sprint("slots ", s)
	})
	// While down, a write straight on the server is not seen...
	if _, err := e.db.Exec(t.Context(), "UPDATE users SET name = 'while down' WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	// ...so a new stream starts from nothing cached for the shard.
	_, stop2 := e.startReader(e.srv.SuperDSN("postgres"))
	e.waitStatus("a new stream comes up", cache.Miss)
	e.fill("public.users", "1")
	e.writeAndWait("UPDATE users SET name = 'after' WHERE id = 1", "public.users", "1")

	// The walsender is terminated on the server: the reader reconnects
	// with a new slot, and the old one is gone.
	r2 := rFromCurrent(t, e)
	old := r2
	if _, err := e.db.Exec(t.Context(), "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1", old); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "a new slot replaces the terminated one", func() (bool, string) {
		s := e.slots()
		return len(s) == 1 && s[0] != old, fmt.Sprint("slots ", s)
	})
	e.waitStatus("the stream is back", cache.Miss)
	stop2()
	e.status("public.users", "1", cache.BypassStreamDown)

	// Killed: the reader's connection is cut without a protocol goodbye,
	// as when its process dies, and it cannot reconnect.
	fwd := newForwarder(t, e.srv.Addr())
	r3, stop3 := e.startReader(fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pgcluster.SuperuserName, pgcluster.SuperuserPassword, fwd.addr()))
	defer stop3()
	e.waitStatus("the forwarded stream comes up", cache.Miss)
	if !slices.Contains(e.slots(), r3.Slot()) {
		t.Fatalf("slot %q not in pg_replication_slots %v", r3.Slot(), e.slots())
	}
	killed := r3.Slot()
	fwd.kill()
	testutil.WaitFor(t, 10*time.Second, "the killed reader's slot is gone", func() (bool, string) {
		s := e.slots()
		return !slices.Contains(s, killed), fmt.Sprint("slots ", s)
	})
	e.waitStatus("the shard of the killed reader is bypassed", cache.BypassStreamDown)
}

// rFromCurrent returns the name of the one slot on the server.
func rFromCurrent(t *testing.T, e *env) string {
	t.Helper()
	s := e.slots()
	if len(s) != 1 {
		t.Fatalf("slots %v, want one", s)
	}
	return s[0]
}

// forwarder relays TCP connections to a server until kill, which closes
// the listener and every relayed connection at once.
type forwarder struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newForwarder(t *testing.T, target string) *forwarder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{ln: ln}
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, s)
			f.mu.Unlock()
			f.wg.Go(func() { _, _ = io.Copy(s, c); s.Close() })
			f.wg.Go(func() { _, _ = io.Copy(c, s); c.Close() })
		}
	})
	t.Cleanup(f.kill)
	return f
}

func (f *forwarder) addr() string { return f.ln.Addr().String() }

func (f *forwarder) kill() {
	_ = f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset, as from a dead process
		}
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}
