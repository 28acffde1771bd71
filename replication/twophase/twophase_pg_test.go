package twophase

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/internal/testutil"
)

// TestMain checks that no PostgreSQL server and no goroutine outlives the
// tests.
func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaksOrGoroutines(m)) }

// pgTestTimeout bounds each PostgreSQL test.
const pgTestTimeout = 90 * time.Second

// bank is n shards, each with an accounts table holding account i (on
// shard i) with balance 100, and the decision table.
type bank struct {
	t      *testing.T
	ctx    context.Context
	pg     *pgcluster.Cluster
	shards []Shard
	admin  Admin
}

func newBank(t *testing.T, n int, opts ...integration.Option) *bank {
	ctx, cancel := context.WithTimeout(context.Background(), pgTestTimeout)
	t.Cleanup(cancel)
	pg := integration.NewCluster(t, append(opts, integration.Shards(n))...)
	b := &bank{t: t, ctx: ctx, pg: pg,
		admin: NewPGAdmin(PGLogin{User: pgcluster.SuperuserName, Password: pgcluster.SuperuserPassword, SSLMode: "disable"})}
	for i, s := range pg.Shards {
		b.shards = append(b.shards, Shard{Name: "s" + strconv.Itoa(i), Addr: s.Addr()})
		if err := s.Exec(ctx, fmt.Sprintf(`CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL,
			ref int UNIQUE DEFERRABLE INITIALLY DEFERRED); INSERT INTO accounts VALUES (%d, 100, %d)`, i, i)); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// recoverer is recovery over the bank's shards with the proxies live.
func (b *bank) recoverer(live *[]string) *Recoverer {
	r, err := NewRecoverer(RecoveryConfig{Cluster: clusterFunc{b.shards, live}, Admin: b.admin, MaxAge: time.Hour})
	if err != nil {
		b.t.Fatal(err)
	}
	return r
}

type clusterFunc struct {
	shards []Shard
	live   *[]string
}

func (c clusterFunc) Primaries() []Shard { return c.shards }
func (c clusterFunc) LiveProxies() []LiveProxy {
	var out []LiveProxy
	for _, id := range *c.live {
		out = append(out, LiveProxy{ID: id})
	}
	return out
}

// begin opens a transaction on every shard listed (superuser, database
// postgres) and runs sql there.
func (b *bank) begin(sql map[int]string) []*Conn {
	var out []*Conn
	for i := 0; i < len(b.pg.Shards); i++ {
		q, ok := sql[i]
		if !ok {
			continue
		}
		conn, err := pgconn.Connect(b.ctx, b.pg.Shards[i].SuperDSN("postgres"))
		if err != nil {
			b.t.Fatal(err)
		}
		b.t.Cleanup(func() { conn.Close(context.Background()) })
		if _, err := conn.Exec(b.ctx, "BEGIN; "+q).ReadAll(); err != nil {
			b.t.Fatalf("shard %d: %v", i, err)
		}
		out = append(out, &Conn{ShardName: b.shards[i].Name, PG: conn, Wrote: !strings.HasPrefix(q, "SELECT")})
	}
	return out
}

func asParts(cs []*Conn) []Participant {
	out := make([]Participant, len(cs))
	for i, c := range cs {
		out[i] = c
	}
	return out
}

// balances are the accounts' balances, shard by shard.
func (b *bank) balances() []int {
	out := make([]int, len(b.pg.Shards))
	for i, s := range b.pg.Shards {
		v, err := s.QueryValue(b.ctx, fmt.Sprintf("SELECT balance FROM accounts WHERE id = %d", i))
		if err != nil {
			b.t.Fatal(err)
		}
		out[i], _ = strconv.Atoi(v)
	}
	return out
}

func (b *bank) wantBalances(want ...int) {
	b.t.Helper()
	if got := b.balances(); fmt.Sprint(got) != fmt.Sprint(want) {
		b.t.Fatalf("balances %v, want %v", got, want)
	}
}

// prepared counts pgshard's prepared transactions on every shard.
func (b *bank) prepared() int {
	n := 0
	for _, s := range b.pg.Shards {
		v, err := s.QueryValue(b.ctx, "SELECT count(*) FROM pg_prepared_xacts")
		if err != nil {
			b.t.Fatal(err)
		}
		k, _ := strconv.Atoi(v)
		n += k
	}
	return n
}

func (b *bank) wantNoPrepared() {
	b.t.Helper()
	if n := b.prepared(); n != 0 {
		b.t.Fatalf("%d prepared transactions left", n)
	}
}

// setup creates the decision table as recovery's first round does.
func (b *bank) setup() {
	live := []string{}
	rep := b.recoverer(&live).RunOnce(b.ctx)
	if len(rep.Problems) != 0 {
		b.t.Fatalf("problems: %+v", rep.Problems)
	}
}

func TestPGCommitAtomic(t *testing.T) {
	integration.SkipIfNoPostgres(t)
	b := newBank(t, 3)
	b.setup()
	c := New("proxy-a", RecordStore{}, Options{}, nil)

	// A transfer over three shards, plus a read-only participant.
	cs := b.begin(map[int]string{
		0: "UPDATE accounts SET balance = balance - 30 WHERE id = 0",
		1: "UPDATE accounts SET balance = balance + 10 WHERE id = 1",
		2: "UPDATE accounts SET balance = balance + 20 WHERE id = 2",
	})
	out, err := c.Commit(b.ctx, asParts(cs))
	if err != nil || !out.Committed || len(out.Pending) != 0 {
		t.Fatalf("commit: %+v %v", out, err)
	}
	b.wantBalances(70, 110, 120)
	b.wantNoPrepared()
	// The commit record is on the decision shard (the first writer).
	if v, err := b.pg.Shards[0].QueryValue(b.ctx, "SELECT committed FROM pgshard.commit_decisions WHERE gid = "+quoteLiteral(string(out.GID))); err != nil || v != "t" {
		t.Fatalf("commit record: %q %v", v, err)
	}
	for _, cn := range cs {
		if st := cn.PG.TxStatus(); st != 'I' {
			t.Errorf("%s: transaction status %c after commit, want idle", cn.ShardName, st)
		}
	}

	// One shard fails at PREPARE (a deferred unique check): nothing
	// commits anywhere, the client hears the server's SQLSTATE.
	cs = b.begin(map[int]string{
		0: "UPDATE accounts SET balance = balance - 5 WHERE id = 0",
		1: "UPDATE accounts SET balance = balance + 5 WHERE id = 1",
		2: "INSERT INTO accounts VALUES (99, 0, 2)", // ref 2 taken: fails at PREPARE
	})
	_, err = c.Commit(b.ctx, asParts(cs))
	var ae *AbortError
	if !errors.As(err, &ae) || ae.Shard != "s2" || ae.SQLState() != "23505" {
		t.Fatalf("commit: %v, want an abort from s2 with 23505", err)
	}
	b.wantBalances(70, 110, 120)
	b.wantNoPrepared()

	// One writer and a reader: one phase, no GID.
	cs = b.begin(map[int]string{0: "UPDATE accounts SET balance = balance + 1 WHERE id = 0", 1: "SELECT 1"})
	if out, err := c.Commit(b.ctx, asParts(cs)); err != nil || out.GID != "" {
		t.Fatalf("one phase: %+v %v", out, err)
	}
	b.wantBalances(71, 110, 120)
}

// abandonStore records the decision nowhere and says so: the proxy died
// after PREPARE, before the decision (so it writes no let-go record).
type abandonStore struct{}

func (abandonStore) RecordSQL(gid GID) string { return RecordStore{}.RecordSQL(gid) }

func (abandonStore) Decide(context.Context, GID, Participant) (bool, error) {
	return false, fmt.Errorf("proxy killed: %w", ErrUncertain)
}

// lostAfter is a participant whose connection is lost before COMMIT
// PREPARED reaches it (the proxy died after the decision).
type lostAfter struct{ *Conn }

func (l lostAfter) Exec(ctx context.Context, sql string) (string, error) {
	if strings.HasPrefix(sql, "COMMIT PREPARED") {
		return "", errors.New("connection lost")
	}
	return l.Conn.Exec(ctx, sql)
}

func TestPGRecovery(t *testing.T) {
	integration.SkipIfNoPostgres(t)
	b := newBank(t, 3)
	b.setup()
	live := []string{"proxy-a"}
	r := b.recoverer(&live)

	// Killed after PREPARE, before the decision.
	cs := b.begin(map[int]string{
		0: "UPDATE accounts SET balance = balance - 30 WHERE id = 0",
		1: "UPDATE accounts SET balance = balance + 30 WHERE id = 1",
		2: "UPDATE accounts SET balance = balance + 0 WHERE id = 2",
	})
	out, err := New("proxy-a", abandonStore{}, Options{}, nil).Commit(b.ctx, asParts(cs))
	var de *InDoubtError
	if !errors.As(err, &de) {
		t.Fatalf("commit: %+v %v", out, err)
	}
	if n := b.prepared(); n != 3 {
		t.Fatalf("%d prepared, want 3", n)
	}
	// While the proxy's lease runs, recovery leaves it to the proxy.
	rep := r.RunOnce(b.ctx)
	if len(rep.InDoubt) != 3 || rep.InDoubt[0].State != "in progress" || b.prepared() != 3 {
		t.Fatalf("report %+v", rep.InDoubt)
	}
	// The lease runs out: rolled back everywhere.
	live = nil
	rep = r.RunOnce(b.ctx)
	for _, d := range rep.InDoubt {
		if d.State != "rollback" {
			t.Errorf("%+v", d)
		}
	}
	b.wantNoPrepared()
	b.wantBalances(100, 100, 100)
	if v, err := b.pg.Shards[0].QueryValue(b.ctx, "SELECT count(*) FROM pgshard.commit_decisions"); err != nil || v != "0" {
		t.Fatalf("decision records: %s %v (an undecided transaction rolled back on its decision shard leaves none)", v, err)
	}

	// Killed after the decision: the decision shard committed, the
	// others are prepared; recovery commits them.
	live = []string{"proxy-a"}
	cs = b.begin(map[int]string{
		0: "UPDATE accounts SET balance = balance - 30 WHERE id = 0",
		1: "UPDATE accounts SET balance = balance + 10 WHERE id = 1",
		2: "UPDATE accounts SET balance = balance + 20 WHERE id = 2",
	})
	ps := []Participant{cs[0], lostAfter{cs[1]}, lostAfter{cs[2]}}
	out, err = New("proxy-a", RecordStore{}, Options{}, nil).Commit(b.ctx, ps)
	if err != nil || !out.Committed || len(out.Pending) != 2 {
		t.Fatalf("commit: %+v %v", out, err)
	}
	if n := b.prepared(); n != 2 {
		t.Fatalf("%d prepared, want 2", n)
	}
	live = nil
	r.RunOnce(b.ctx)
	b.wantNoPrepared()
	b.wantBalances(70, 110, 120)

	// Not prepared on the decision shard, no record: recovery records an
	// abort, which fences the coordinator's own record.
	cs = b.begin(map[int]string{
		0: "UPDATE accounts SET balance = balance - 1 WHERE id = 0",
		1: "UPDATE accounts SET balance = balance + 1 WHERE id = 1",
	})
	gid, _ := NewGID("proxy-a", "s0")
	if _, err := cs[1].Exec(b.ctx, "PREPARE TRANSACTION "+quoteLiteral(string(gid))); err != nil {
		t.Fatal(err)
	}
	r.RunOnce(b.ctx)
	b.wantNoPrepared()
	_, err = cs[0].Exec(b.ctx, RecordStore{}.RecordSQL(gid)+"; PREPARE TRANSACTION "+quoteLiteral(string(gid)))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23505" {
		t.Fatalf("the late decision shard's PREPARE: %v, want 23505 (fenced by the abort record)", err)
	}
	b.wantNoPrepared()
	b.wantBalances(70, 110, 120)

	// Recent decisions are listed.
	rep = r.RunOnce(b.ctx)
	found := false
	for _, d := range rep.Decisions {
		found = found || (d.GID == string(gid) && !d.Committed && d.Shard == "s0")
	}
	if !found {
		t.Fatalf("decisions %+v lack the abort of %s", rep.Decisions, gid)
	}
}

func TestPGNoPreparedTransactions(t *testing.T) {
	integration.SkipIfNoPostgres(t)
	b := newBank(t, 2, integration.Settings(map[string]string{"max_prepared_transactions": "0"}))
	live := []string{}
	rep := b.recoverer(&live).RunOnce(b.ctx)
	if len(rep.Problems) != 2 || !strings.Contains(rep.Problems[0].Error, "max_prepared_transactions = 0") {
		t.Fatalf("problems %+v", rep.Problems)
	}
	cs := b.begin(map[int]string{
		0: "UPDATE accounts SET balance = balance - 1 WHERE id = 0",
		1: "UPDATE accounts SET balance = balance + 1 WHERE id = 1",
	})
	_, err := New("p", RecordStore{}, Options{}, nil).Commit(b.ctx, asParts(cs))
	var ae *AbortError
	if !errors.As(err, &ae) || ae.SQLState() != "55000" {
		t.Fatalf("commit: %v, want an abort with 55000", err)
	}
	b.wantBalances(100, 100)
}

// TestPGRecoveryAfterFailover: with synchronous replication a prepared
// transaction survives the kill -9 of its primary and the promotion of
// the replica; recovery, following the map to the new primaries, commits
// the decided transaction and rolls back the undecided one there.
func TestPGRecoveryAfterFailover(t *testing.T) {
	integration.SkipIfNoPostgres(t)
	b := newBank(t, 2, integration.Replicas(1), integration.Settings(map[string]string{
		"synchronous_commit": "on", "synchronous_standby_names": "'ANY 1 (*)'",
	}))
	b.setup()

	// Decided: s0 (the decision shard) committed, s1 never heard COMMIT PREPARED.
	cs := b.begin(map[int]string{
		0: "UPDATE accounts SET balance = balance - 30 WHERE id = 0",
		1: "UPDATE accounts SET balance = balance + 30 WHERE id = 1",
	})
	out, err := New("proxy-a", RecordStore{}, Options{}, nil).Commit(b.ctx, []Participant{cs[0], lostAfter{cs[1]}})
	if err != nil || !out.Committed || len(out.Pending) != 1 {
		t.Fatalf("commit: %+v %v", out, err)
	}
	// Undecided: prepared on both, s1 is its decision shard.
	cs = b.begin(map[int]string{
		0: "INSERT INTO accounts VALUES (10, 5, 10)",
		1: "INSERT INTO accounts VALUES (11, 5, 11)",
	})
	undecided, err := New("proxy-a", abandonStore{}, Options{}, nil).Commit(b.ctx, []Participant{cs[1], cs[0]})
	if !errors.As(err, new(*InDoubtError)) {
		t.Fatalf("commit: %+v %v", undecided, err)
	}
	if n := b.prepared(); n != 3 {
		t.Fatalf("%d prepared, want 3", n)
	}

	// Both primaries die; their replicas are promoted and the map says so.
	var newPrimaries []*pgcluster.Server
	for i, p := range b.pg.Shards {
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
		r := p.Replicas[0]
		if err := r.Promote(b.ctx); err != nil {
			t.Fatal(err)
		}
		// Alone now: commits must not wait for a synchronous standby.
		if err := r.Exec(b.ctx, "ALTER SYSTEM SET synchronous_standby_names = ''"); err != nil {
			t.Fatal(err)
		}
		if err := r.Exec(b.ctx, "SELECT pg_reload_conf()"); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 10*time.Second, "synchronous_standby_names off on "+r.Name, func() (bool, string) {
			v, err := r.QueryValue(b.ctx, "SHOW synchronous_standby_names")
			return err == nil && v == "", fmt.Sprint(v, err)
		})
		b.shards[i].Addr = r.Addr()
		newPrimaries = append(newPrimaries, r)
	}
	count := func() int {
		n := 0
		for _, s := range newPrimaries {
			v, err := s.QueryValue(b.ctx, "SELECT count(*) FROM pg_prepared_xacts")
			if err != nil {
				t.Fatal(err)
			}
			k, _ := strconv.Atoi(v)
			n += k
		}
		return n
	}
	if n := count(); n != 3 {
		t.Fatalf("%d prepared on the promoted replicas, want the 3 prepared on the old primaries", n)
	}
	live := []string{} // proxy-a is dead
	rep := b.recoverer(&live).RunOnce(b.ctx)
	if n := count(); n != 0 {
		t.Fatalf("%d prepared left after recovery; report %+v", n, rep)
	}
	for i, s := range newPrimaries {
		v, err := s.QueryValue(b.ctx, "SELECT string_agg(id || ':' || balance, ' ' ORDER BY id) FROM accounts")
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"0:70", "1:130"}[i]; v != want {
			t.Errorf("shard %d: accounts %q, want %q (decided committed, undecided rolled back)", i, v, want)
		}
	}
}

// TestPGDecidedWhileProxyLives: a live proxy lost a participant after the
// decision; recovery finishes the commit after DecidedAge, not MaxAge.
func TestPGDecidedWhileProxyLives(t *testing.T) {
	integration.SkipIfNoPostgres(t)
	b := newBank(t, 2)
	b.setup()
	cs := b.begin(map[int]string{
		0: "UPDATE accounts SET balance = balance - 30 WHERE id = 0",
		1: "UPDATE accounts SET balance = balance + 30 WHERE id = 1",
	})
	out, err := New("proxy-a", RecordStore{}, Options{}, nil).Commit(b.ctx, []Participant{cs[0], lostAfter{cs[1]}})
	if err != nil || !out.Committed || len(out.Pending) != 1 {
		t.Fatalf("commit: %+v %v", out, err)
	}
	live := []string{"proxy-a"}
	r, err := NewRecoverer(RecoveryConfig{Cluster: clusterFunc{b.shards, &live}, Admin: b.admin, MaxAge: time.Hour, DecidedAge: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	rep := r.RunOnce(b.ctx)
	if len(rep.InDoubt) != 1 || rep.InDoubt[0].State != "commit" || !rep.InDoubt[0].ProxyAlive {
		t.Fatalf("in doubt %+v", rep.InDoubt)
	}
	b.wantNoPrepared()
	b.wantBalances(70, 130)
}

// lostReply is a participant whose server runs PREPARE TRANSACTION but
// whose answer is lost (the coordinator sees no reply).
type lostReply struct{ *Conn }

func (l lostReply) Exec(ctx context.Context, sql string) (string, error) {
	tag, err := l.Conn.Exec(ctx, sql)
	if err == nil && strings.HasPrefix(sql, "PREPARE TRANSACTION") {
		return "", errors.New("connection lost")
	}
	return tag, err
}

func TestPGLetGo(t *testing.T) {
	// A live proxy's coordinator aborts with s1's PREPARE reply lost: s1
	// holds the transaction prepared, with its row locked. The
	// coordinator's let-go record makes recovery roll it back within
	// seconds, not after MaxAge (an hour here).
	integration.SkipIfNoPostgres(t)
	b := newBank(t, 2)
	b.setup()
	live := []string{"proxy-a"}
	r := b.recoverer(&live)
	cs := b.begin(map[int]string{
		0: "UPDATE accounts SET balance = balance - 30 WHERE id = 0",
		1: "UPDATE accounts SET balance = balance + 30 WHERE id = 1",
	})
	ps := []Participant{cs[0], lostReply{cs[1]}}
	out, err := New("proxy-a", RecordStore{}, Options{}, nil).Commit(b.ctx, ps)
	var ae *AbortError
	if !errors.As(err, &ae) || ae.Shard != "s1" || out.LetGo != "s0" {
		t.Fatalf("commit: %+v %v", out, err)
	}
	if n := b.prepared(); n != 1 {
		t.Fatalf("%d prepared, want 1 (s1's)", n)
	}
	start := time.Now()
	for b.prepared() != 0 {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("s1's prepared transaction still there after %s; last report %+v", time.Since(start), r.Last())
		}
		r.RunOnce(b.ctx)
		time.Sleep(100 * time.Millisecond) // the pace of recovery rounds
	}
	t.Logf("resolved %s after the abort", time.Since(start).Round(time.Millisecond))
	b.wantBalances(100, 100)
}

// logBuffer collects a logger's output.
type logBuffer = testutil.Buffer

func TestPGDecisionTableAppears(t *testing.T) {
	// The first two-shard commit after the database appeared, before the
	// meta leader's recovery created the decision table: it waits for the
	// table instead of failing with 42P01, and commits.
	integration.SkipIfNoPostgres(t)
	b := newBank(t, 2)
	cs := b.begin(map[int]string{
		0: "UPDATE accounts SET balance = balance - 30 WHERE id = 0",
		1: "UPDATE accounts SET balance = balance + 30 WHERE id = 1",
	})
	var logs logBuffer
	c := New("proxy-a", RecordStore{}, Options{TableWait: 30 * time.Second}, slog.New(slog.NewTextHandler(&logs, nil)))
	type result struct {
		out Outcome
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := c.Commit(b.ctx, asParts(cs))
		done <- result{out, err}
	}()
	for !strings.Contains(logs.String(), "does not exist yet") {
		select {
		case res := <-done:
			t.Fatalf("commit ended before waiting for the table: %+v %v", res.out, res.err)
		case <-b.ctx.Done():
			t.Fatal(b.ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The meta leader's recovery round creates the table. It knows the
	// coordinator's proxy is alive (its lease runs), so it leaves the
	// transaction alone although it is already prepared on s1: with the
	// proxy taken for dead it would roll it back and record the abort,
	// and the commit record would then meet that record (23505).
	live := []string{"proxy-a"}
	if rep := b.recoverer(&live).RunOnce(b.ctx); len(rep.Problems) != 0 {
		t.Fatalf("recovery problems: %+v", rep.Problems)
	}
	res := <-done
	if res.err != nil || !res.out.Committed {
		t.Fatalf("commit: %+v %v", res.out, res.err)
	}
	b.wantBalances(70, 130)
	b.wantNoPrepared()
}
