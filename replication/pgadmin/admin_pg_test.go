package pgadmin

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/wire"
)

// TestState reads a primary and its streaming replica.
func TestState(t *testing.T) {
	t.Parallel()
	p := startShard(t, "pgadmin-state", 1)
	r := p.Replicas[0]
	a := newAdmin()

	lsn := writeSync(t, p, "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)")
	if err := a.WaitReplayed(testCtx(t), r.Addr(), lsn); err != nil {
		t.Fatal(err)
	}

	ps := mustState(t, a, p)
	if ps.InRecovery || ps.CurrentLSN < lsn || ps.ReceiveLSN != 0 || ps.ReplayLSN != 0 || ps.ReadOnly || ps.UpstreamAddr != "" {
		t.Errorf("primary state %+v: want not in recovery, CurrentLSN >= %v, no receive/replay LSN, not read-only, no upstream", ps, lsn)
	}
	rs := mustState(t, a, r)
	if !rs.InRecovery || rs.CurrentLSN != 0 || rs.ReplayLSN < lsn || rs.ReceiveLSN < rs.ReplayLSN ||
		rs.ReplayLSN > ps.CurrentLSN || rs.ReadOnly || rs.UpstreamAddr != p.Addr() {
		t.Errorf("replica state %+v: want in recovery, no CurrentLSN, %v <= ReplayLSN <= ReceiveLSN, ReplayLSN <= primary's %v, not read-only, upstream %s",
			rs, lsn, ps.CurrentLSN, p.Addr())
	}

	// A replica whose replay is paused does not get there; the error says
	// how far it got.
	mustExec(t, r, "SELECT pg_wal_replay_pause()")
	testutil.WaitFor(t, 10*time.Second, "replay to pause", func() (bool, string) {
		v := mustValue(t, r, "SELECT pg_get_wal_replay_pause_state()")
		return v == "paused", v
	})
	paused := mustState(t, a, r).ReplayLSN
	lsn2 := writeSync(t, p, "INSERT INTO t SELECT generate_series(1, 1000)")
	ctx, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
	err := a.WaitReplayed(ctx, r.Addr(), lsn2)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "replayed up to "+paused.String()) {
		t.Errorf("WaitReplayed with replay paused: %v, want a deadline error saying it replayed up to %v", err, paused)
	}
	mustExec(t, r, "SELECT pg_wal_replay_resume()")
	if err := a.WaitReplayed(testCtx(t), r.Addr(), lsn2); err != nil {
		t.Fatal(err)
	}

	// Nothing listens on port 1.
	_, err = a.State(testCtx(t), "127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("State of a closed port: %v, want an error naming the address", err)
	}
	noSecret(t, err)
	bad := New(Config{User: adminUser.Name, Password: "wrong-" + adminUser.Password})
	_, err = bad.State(testCtx(t), p.Addr())
	if sqlState(err) != "28P01" || strings.Contains(err.Error(), adminUser.Password) {
		t.Errorf("State with a wrong password: %v, want SQLSTATE 28P01 without the password", err)
	}
}

// TestFailover kills a primary with two replicas, promotes one replica
// and repoints the other to it.
func TestFailover(t *testing.T) {
	t.Parallel()
	p := startShard(t, "pgadmin-failover", 2)
	a := newAdmin()

	lsn := writeSync(t, p, "CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, 'before' FROM generate_series(1, 100) g")
	for _, r := range p.Replicas {
		if err := a.WaitReplayed(testCtx(t), r.Addr(), lsn); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}

	// Promote the replica that has received the most, as a controller would.
	ra, rb := p.Replicas[0], p.Replicas[1]
	sa, sb := mustState(t, a, ra), mustState(t, a, rb)
	if sb.ReceiveLSN > sa.ReceiveLSN {
		ra, rb = rb, ra
	}
	if err := a.Promote(testCtx(t), ra.Addr()); err != nil {
		t.Fatal(err)
	}
	sa = mustState(t, a, ra)
	if sa.InRecovery || sa.ReadOnly || sa.CurrentLSN == 0 || sa.ReceiveLSN != 0 || sa.ReplayLSN != 0 {
		t.Errorf("promoted state %+v: want a writable primary", sa)
	}
	writeSync(t, ra, "INSERT INTO t SELECT g, 'after' FROM generate_series(101, 150) g")
	// The timeline is in the name of the WAL file being written.
	const timelineSQL = "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"
	timeline := mustValue(t, ra, timelineSQL)
	if timeline != "00000002" {
		t.Errorf("timeline after Promote = %s, want 00000002", timeline)
	}

	// Promote again: a no-op (no new timeline).
	if err := a.Promote(testCtx(t), ra.Addr()); err != nil {
		t.Fatalf("second Promote: %v", err)
	}
	if got := mustValue(t, ra, timelineSQL); got != timeline {
		t.Errorf("timeline after a second Promote = %s, want %s", got, timeline)
	}

	// Repoint the other replica to the new primary.
	oldConninfo := mustValue(t, rb, "SHOW primary_conninfo")
	if err := a.Repoint(testCtx(t), rb.Addr(), ra.Addr()); err != nil {
		t.Fatal(err)
	}
	if sb = mustState(t, a, rb); !sb.InRecovery || sb.UpstreamAddr != ra.Addr() {
		t.Errorf("repointed replica state %+v: want streaming from %s", sb, ra.Addr())
	}
	before, err := parseConninfo(oldConninfo)
	if err != nil {
		t.Fatal(err)
	}
	want, err := before.withAddr(ra.Addr())
	if err != nil {
		t.Fatal(err)
	}
	newConninfo := mustValue(t, rb, "SHOW primary_conninfo")
	if got, err := parseConninfo(newConninfo); err != nil || !got.equal(want) {
		t.Errorf("primary_conninfo after Repoint = %s (%v), want %s", got.Masked(), err, want.Masked())
	}
	lsn = writeSync(t, ra, "INSERT INTO t VALUES (1000, 'streamed')")
	if err := a.WaitReplayed(testCtx(t), rb.Addr(), lsn); err != nil {
		t.Fatal(err)
	}
	if got := mustValue(t, rb, "SELECT note || ' ' || (SELECT count(*) FROM t) FROM t WHERE id = 1000"); got != "streamed 151" {
		t.Errorf("on the repointed replica: %q, want %q", got, "streamed 151")
	}

	// Repoint again: a no-op (same setting, same WAL receiver).
	receiver := mustValue(t, rb, "SELECT pid FROM pg_stat_wal_receiver")
	if err := a.Repoint(testCtx(t), rb.Addr(), ra.Addr()); err != nil {
		t.Fatalf("second Repoint: %v", err)
	}
	if got := mustValue(t, rb, "SHOW primary_conninfo"); got != newConninfo {
		t.Errorf("second Repoint changed primary_conninfo")
	}
	if got := mustValue(t, rb, "SELECT pid FROM pg_stat_wal_receiver"); got != receiver {
		t.Errorf("second Repoint restarted the WAL receiver (pid %s, was %s)", got, receiver)
	}

	// A primary cannot be repointed; a dead server cannot be promoted.
	if err := a.Repoint(testCtx(t), ra.Addr(), rb.Addr()); err == nil || !strings.Contains(err.Error(), "not a replica") {
		t.Errorf("Repoint of a primary: %v, want a not-a-replica error", err)
	}
	if err := a.Promote(testCtx(t), p.Addr()); err == nil {
		t.Error("Promote of a killed server: no error")
	}
}

// TestQuiesce quiesces a primary while one transaction commits within the
// grace period and another is left open past it.
func TestQuiesce(t *testing.T) {
	t.Parallel()
	// The WAL writer flushes asynchronous commits only every 10s: the
	// commit made within grace reaches the replica before that only if
	// Quiesce flushes it.
	p := startShard(t, "pgadmin-quiesce", 1, integration.Settings(map[string]string{"wal_writer_delay": "'10s'"}))
	r := p.Replicas[0]
	a := newAdmin()
	ctx := testCtx(t)
	mustExec(t, p, "CREATE TABLE t (id int PRIMARY KEY, note text)")

	// Two transactions that have written, not committed. The harness runs
	// with synchronous_commit off: Quiesce must flush their WAL itself.
	inGrace, leftOpen := session(t, p), session(t, p)
	if err := run(ctx, inGrace, "BEGIN; INSERT INTO t VALUES (1, 'committed within grace')"); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, leftOpen, "BEGIN; INSERT INTO t VALUES (2, 'left open')"); err != nil {
		t.Fatal(err)
	}

	const grace = 2 * time.Second
	type result struct {
		lsn   health.LSN
		err   error
		spent time.Duration
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		lsn, err := a.Quiesce(ctx, p.Addr(), grace)
		done <- result{lsn, err, time.Since(start)}
	}()
	// Once new sessions are read-only, Quiesce is waiting for the open
	// transactions: commit one of them.
	testutil.WaitFor(t, 10*time.Second, "the primary to turn read-only", func() (bool, string) {
		st, err := a.State(ctx, p.Addr())
		return err == nil && st.ReadOnly, "not read-only yet"
	})
	if err := run(ctx, inGrace, "COMMIT"); err != nil {
		t.Errorf("commit within grace: %v", err)
	}
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		t.Fatal("Quiesce did not return")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.spent < grace {
		t.Errorf("Quiesce returned after %v, before the grace period of %v ended", res.spent, grace)
	}

	// The transaction left open was terminated and lost its row.
	if err := run(ctx, leftOpen, "COMMIT"); err == nil {
		t.Error("the transaction left open past grace could still commit")
	}
	if got := mustValue(t, p, "SELECT string_agg(id::text, ',') FROM t"); got != "1" {
		t.Errorf("rows on the primary: %q, want 1", got)
	}

	// The replica, still streaming, replays up to the returned position
	// (well before the WAL writer's next flush) and then has the commit.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.WaitReplayed(wctx, r.Addr(), res.lsn); err != nil {
		t.Fatal(err)
	}
	if got := mustValue(t, r, "SELECT coalesce(string_agg(note, ','), '') FROM t"); got != "committed within grace" {
		t.Errorf("rows on the replica after WaitReplayed(%v): %q, want the commit made within grace", res.lsn, got)
	}
	if st := mustState(t, a, r); st.UpstreamAddr != p.Addr() {
		t.Errorf("replica state after Quiesce %+v: want still streaming from %s", st, p.Addr())
	}

	// New write transactions fail.
	err := p.Exec(ctx, "INSERT INTO t VALUES (3, 'after quiesce')")
	wantSQLState(t, "write after Quiesce", err, wire.SQLStateReadOnlyTransaction)

	// Again: with nothing open it does not wait, and returns a position at
	// or after the first.
	start = time.Now()
	lsn2, err := a.Quiesce(ctx, p.Addr(), grace)
	if spent := time.Since(start); err != nil || lsn2 < res.lsn || spent >= grace {
		t.Errorf("second Quiesce = %v, %v after %v; want no error, a position >= %v, and no wait", lsn2, err, spent, res.lsn)
	}
	// Quiesce refuses a replica.
	if _, err := a.Quiesce(ctx, r.Addr(), 0); err == nil {
		t.Error("Quiesce of a replica: no error")
	}
}

// TestFence fences a live primary, then lifts the fence with Promote.
func TestFence(t *testing.T) {
	t.Parallel()
	p := startShard(t, "pgadmin-fence", 0)
	a := newAdmin()
	ctx := testCtx(t)
	mustExec(t, p, "CREATE TABLE t (id int)")

	idle, inTx := session(t, p), session(t, p)
	if err := run(ctx, inTx, "BEGIN; INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := a.Fence(ctx, p.Addr()); err != nil {
			t.Fatalf("Fence #%d: %v", i+1, err)
		}
	}
	if err := run(ctx, idle, "SELECT 1"); err == nil {
		t.Error("an idle session survived Fence")
	}
	if err := run(ctx, inTx, "COMMIT"); err == nil {
		t.Error("a session in a transaction survived Fence and committed")
	}
	err := p.Exec(ctx, "INSERT INTO t VALUES (2)")
	wantSQLState(t, "write after Fence", err, wire.SQLStateReadOnlyTransaction)
	if got := mustValue(t, p, "SELECT count(*) FROM t"); got != "0" {
		t.Errorf("rows after Fence: %s, want 0", got)
	}
	if st := mustState(t, a, p); st.InRecovery || !st.ReadOnly {
		t.Errorf("fenced state %+v: want a read-only primary", st)
	}

	// Promote on a primary only resets the setting.
	if err := a.Promote(ctx, p.Addr()); err != nil {
		t.Fatal(err)
	}
	if st := mustState(t, a, p); st.InRecovery || st.ReadOnly {
		t.Errorf("state after Promote of a fenced primary %+v: want a writable primary", st)
	}
	if err := p.Exec(ctx, "INSERT INTO t VALUES (3)"); err != nil {
		t.Errorf("write after the fence was lifted: %v", err)
	}
	if err := a.Fence(ctx, "127.0.0.1:1"); err == nil {
		t.Error("Fence of a closed port: no error")
	}
}
