package reshard

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/wire"
)

// TestMain checks that no PostgreSQL server and no goroutine outlives the
// tests.
func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaksOrGoroutines(m)) }

// testTimeout bounds each test.
const testTimeout = 3 * time.Minute

// testCtx is the test's context, bounded by testTimeout.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// startPair starts a source and a target server.
func startPair(t *testing.T) (src, tgt *pgcluster.Server) {
	t.Helper()
	src = integration.StartPostgres(t, integration.Name("src"))
	tgt = integration.StartPostgres(t, integration.Name("tgt"))
	return src, tgt
}

// newEngine builds the engine of mv from src to tgt.
func newEngine(t *testing.T, mv Move, src, tgt *pgcluster.Server) *Engine {
	t.Helper()
	e, err := New(Config{
		Move:   mv,
		Source: Endpoint{Shard: "src", DSN: src.SuperDSN("postgres")},
		Target: Endpoint{Shard: "tgt", DSN: tgt.SuperDSN("postgres")},
		// A short poll keeps the tests quick.
		PollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// connect opens a pgx session on s as the superuser.
func connect(t *testing.T, s *pgcluster.Server) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(testCtx(t), s.SuperDSN("postgres"))
	if err != nil {
		t.Fatalf("connect to %s: %v", s.Name, err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, s *pgcluster.Server, sql string) {
	t.Helper()
	if err := s.Exec(testCtx(t), sql); err != nil {
		t.Fatalf("%s: %s: %v", s.Name, sql, err)
	}
}

func mustInt(t *testing.T, s *pgcluster.Server, sql string) int64 {
	t.Helper()
	var n int64
	if err := connect(t, s).QueryRow(testCtx(t), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %s: %v", s.Name, sql, err)
	}
	return n
}

// replicationObjects lists the replication slots and publications of s,
// and its subscriptions, as "slot x", "publication y", "subscription z".
func replicationObjects(t *testing.T, s *pgcluster.Server) []string {
	t.Helper()
	rows, err := connect(t, s).Query(testCtx(t), `SELECT 'slot ' || slot_name FROM pg_replication_slots
		UNION ALL SELECT 'publication ' || pubname FROM pg_publication
		UNION ALL SELECT 'subscription ' || subname FROM pg_subscription`)
	if err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	objs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	return objs
}

// assertNoReplicationObjects fails unless neither server has a slot, a
// publication or a subscription.
func assertNoReplicationObjects(t *testing.T, servers ...*pgcluster.Server) {
	t.Helper()
	for _, s := range servers {
		if objs := replicationObjects(t, s); len(objs) > 0 {
			t.Errorf("%s still has %s", s.Name, strings.Join(objs, ", "))
		}
	}
}

// accountsSchema is the distribution of the ledger tests: accounts by id,
// and their events colocated by account_id, with a bigserial.
const accountsSchema = `
CREATE TABLE public.accounts (id bigint PRIMARY KEY, balance bigint NOT NULL, note text, updated timestamptz DEFAULT now());
CREATE TABLE public.events (id bigserial, account_id bigint NOT NULL, payload text, PRIMARY KEY (account_id, id));
CREATE INDEX events_id ON public.events (id);`

var accountsTables = []Table{{Name: "public.accounts", KeyColumn: "id"}, {Name: "public.events", KeyColumn: "account_id"}}

// ledger is the client-side record of every acknowledged write of the
// workload: the balance of each live account, and the events inserted.
type ledger struct {
	mu       sync.Mutex
	balance  map[int64]int64 // live accounts
	events   map[[2]int64]bool
	acked    int
	fenced   int // writes refused with wire.SQLStateIntervalFenced
	fencedIn int // of which in the interval (all of them must be)
}

// workload writes to the accounts and events of keys [1, keys] on s
// until stop is set (between two writes, so every write's outcome is
// known): inserts, updates and deletes of accounts and inserts
// of events, recording each acknowledged write in the ledger. A write the
// fence refuses (wire.SQLStateIntervalFenced) is counted, not recorded; inside
// reports whether a key is in the moving interval, and a refusal of a key
// outside it is an error. Any other error ends it.
func workload(ctx context.Context, stop *atomic.Bool, s *pgcluster.Server, keys int64, led *ledger, inside, only func(int64) bool) error {
	conn, err := pgx.Connect(ctx, s.SuperDSN("postgres"))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	rng := rand.New(rand.NewPCG(1, 2))
	for !stop.Load() {
		k := rng.Int64N(keys) + 1
		if only != nil && !only(k) {
			continue
		}
		led.mu.Lock()
		_, live := led.balance[k]
		led.mu.Unlock()
		var (
			apply func()
			err   error
		)
		switch op := rng.IntN(10); {
		case !live:
			v := rng.Int64N(1000)
			_, err = conn.Exec(ctx, "INSERT INTO public.accounts (id, balance, note) VALUES ($1, $2, 'w')", k, v)
			apply = func() { led.balance[k] = v }
		case op < 5:
			v := rng.Int64N(1000)
			_, err = conn.Exec(ctx, "UPDATE public.accounts SET balance = $2, updated = now() WHERE id = $1", k, v)
			apply = func() { led.balance[k] = v }
		case op < 6:
			_, err = conn.Exec(ctx, "DELETE FROM public.accounts WHERE id = $1", k)
			apply = func() { delete(led.balance, k) }
		default:
			var id int64
			err = conn.QueryRow(ctx, "INSERT INTO public.events (account_id, payload) VALUES ($1, 'e') RETURNING id", k).Scan(&id)
			apply = func() { led.events[[2]int64{k, id}] = true }
		}
		led.mu.Lock()
		switch {
		case err == nil:
			apply()
			led.acked++
		case sqlState(err) == wire.SQLStateIntervalFenced:
			led.fenced++
			if inside(k) {
				led.fencedIn++
			} else {
				led.mu.Unlock()
				return fmt.Errorf("key %d outside the interval refused by the fence: %w", k, err)
			}
		default:
			led.mu.Unlock()
			return fmt.Errorf("write of key %d: %w", k, err)
		}
		led.mu.Unlock()
	}
	return nil
}

// startWorkload runs workload in a goroutine, over the keys for which
// only holds (all when nil); the returned stop ends it and returns its
// error.
func startWorkload(t *testing.T, s *pgcluster.Server, keys int64, led *ledger, inside, only func(int64) bool) (stop func() error) {
	ctx := testCtx(t)
	var flag atomic.Bool
	done := make(chan error, 1)
	go func() { done <- workload(ctx, &flag, s, keys, led, inside, only) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			flag.Store(true)
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// waitFor polls cond until it holds or the test's context ends.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx := testCtx(t)
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// acked returns the number of acknowledged and of fenced writes so far.
func (l *ledger) counts() (acked, fenced int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked, l.fenced
}

// checkLedger compares the accounts and events of the interval on s with
// the ledger's, and fails if s has rows outside the interval when
// onlyInside is set.
func checkLedger(t *testing.T, s *pgcluster.Server, led *ledger, inside func(int64) bool, onlyInside bool) {
	t.Helper()
	conn := connect(t, s)
	ctx := testCtx(t)
	rows, err := conn.Query(ctx, "SELECT id, balance FROM public.accounts")
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]int64{}
	for rows.Next() {
		var id, b int64
		if err := rows.Scan(&id, &b); err != nil {
			t.Fatal(err)
		}
		got[id] = b
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	var problems []string
	led.mu.Lock()
	defer led.mu.Unlock()
	for id, b := range got {
		if !inside(id) {
			if onlyInside {
				problems = append(problems, fmt.Sprintf("account %d outside the interval copied", id))
			}
			continue
		}
		if want, ok := led.balance[id]; !ok {
			problems = append(problems, fmt.Sprintf("account %d exists, the ledger has it deleted", id))
		} else if want != b {
			problems = append(problems, fmt.Sprintf("account %d has balance %d, the ledger %d", id, b, want))
		}
	}
	nIn := 0
	for id := range led.balance {
		if inside(id) {
			nIn++
			if _, ok := got[id]; !ok {
				problems = append(problems, fmt.Sprintf("account %d missing, the ledger has it", id))
			}
		}
	}
	rows, err = conn.Query(ctx, "SELECT account_id, id FROM public.events")
	if err != nil {
		t.Fatal(err)
	}
	gotEv := map[[2]int64]bool{}
	for rows.Next() {
		var a, id int64
		if err := rows.Scan(&a, &id); err != nil {
			t.Fatal(err)
		}
		gotEv[[2]int64{a, id}] = true
		if !inside(a) && onlyInside {
			problems = append(problems, fmt.Sprintf("event %d of account %d outside the interval copied", id, a))
		}
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	evIn := 0
	for ev := range led.events {
		if inside(ev[0]) {
			evIn++
			if !gotEv[ev] {
				problems = append(problems, fmt.Sprintf("event %d of account %d missing", ev[1], ev[0]))
			}
		}
	}
	for ev := range gotEv {
		if inside(ev[0]) && !led.events[ev] {
			problems = append(problems, fmt.Sprintf("event %d of account %d not in the ledger", ev[1], ev[0]))
		}
	}
	sort.Strings(problems)
	if len(problems) > 0 {
		if len(problems) > 20 {
			problems = append(problems[:20], fmt.Sprintf("... %d more", len(problems)-20))
		}
		t.Errorf("%s differs from the ledger:\n%s", s.Name, strings.Join(problems, "\n"))
	}
	t.Logf("%s: %d accounts and %d events of the interval match the ledger", s.Name, nIn, evIn)
	if nIn == 0 || evIn == 0 {
		t.Errorf("the interval holds no accounts (%d) or no events (%d): the test checks nothing", nIn, evIn)
	}
}

// loadAccounts creates the accounts schema on s with accounts [1, n] and
// one event each, and returns a ledger holding them.
func loadAccounts(t *testing.T, s *pgcluster.Server, n int64) *ledger {
	t.Helper()
	mustExec(t, s, accountsSchema)
	mustExec(t, s, fmt.Sprintf(`INSERT INTO public.accounts (id, balance, note) SELECT g, g %% 1000, 'init' FROM generate_series(1, %d) g;
		INSERT INTO public.events (account_id, payload) SELECT g, 'init' FROM generate_series(1, %d) g`, n, n))
	led := &ledger{balance: map[int64]int64{}, events: map[[2]int64]bool{}}
	for i := int64(1); i <= n; i++ {
		led.balance[i] = i % 1000
		led.events[[2]int64{i, i}] = true // bigserial from 1, in order
	}
	return led
}

// fencedWrite runs sql on s and returns its SQLSTATE ("" when it worked).
func fencedWrite(t *testing.T, s *pgcluster.Server, sql string) (string, string) {
	t.Helper()
	_, err := connect(t, s).Exec(testCtx(t), sql)
	if err == nil {
		return "", ""
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("%s: %s: %v", s.Name, sql, err)
	}
	return pe.Code, pe.Message
}

// rangeInside is membership of [lo, hi) for bigint keys.
func rangeInside(lo, hi int64) func(int64) bool {
	return func(k int64) bool { return k >= lo && k < hi }
}
