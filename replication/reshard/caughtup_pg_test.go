package reshard

import (
	"fmt"
	"testing"
	"time"

	"github.com/pgshard/pgshard/shardmap"
)

// caughtUpBound is how long WaitCaughtUp may take on servers with no
// backlog.
const caughtUpBound = 1500 * time.Millisecond

// TestWaitCaughtUpPrompt runs several moves of one interval back and forth
// in quick succession, the way a cutover followed at once by a rollback
// does: each cutover creates the reverse subscription, and the rollback
// waits for it at once. Every WaitCaughtUp, in both directions, must end
// within caughtUpBound, and the side caught up must have the last write of
// the interval made before it.
func TestWaitCaughtUpPrompt(t *testing.T) {
	ctx := testCtx(t)
	src, tgt := startPair(t)
	loadAccounts(t, src, 1000)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	timed := func(e *Engine, what string) {
		t.Helper()
		start := time.Now()
		_, err := e.WaitCaughtUp(ctx)
		must(err)
		took := time.Since(start)
		t.Logf("%s: %s -> %s: WaitCaughtUp %s", what, e.cfg.Source.Shard, e.cfg.Target.Shard, took.Round(time.Millisecond))
		if took > caughtUpBound {
			t.Errorf("%s: %s -> %s: WaitCaughtUp took %s, want under %s", what, e.cfg.Source.Shard, e.cfg.Target.Shard, took, caughtUpBound)
		}
	}
	for i := range 3 {
		mv := Move{ID: fmt.Sprintf("cu%d", i), KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
			Lo: shardmap.Int64Bound(200), Hi: shardmap.Int64Bound(600), Tables: accountsTables}
		e := newEngine(t, mv, src, tgt)
		if i == 0 {
			must(e.PrepareTarget(ctx))
		}
		must(e.StartCopy(ctx))
		must(e.WaitCopied(ctx, nil))
		mustExec(t, src, "UPDATE public.accounts SET balance = balance + 1 WHERE id = 300")
		must(e.Fence(ctx))
		timed(e, mv.ID+" cutover")
		must(e.StopForward(ctx))
		_, err := e.AdvanceSequences(ctx)
		must(err)
		must(e.StartReverse(ctx))
		must(e.Unfence(ctx))
		mustExec(t, tgt, "UPDATE public.accounts SET balance = balance + 1 WHERE id = 300")
		r := e.Reverse()
		must(r.Fence(ctx))
		timed(r, mv.ID+" rollback")
		want := mustInt(t, tgt, "SELECT balance FROM public.accounts WHERE id = 300")
		if got := mustInt(t, src, "SELECT balance FROM public.accounts WHERE id = 300"); got != want {
			t.Errorf("%s: source's balance of 300 = %d after the rollback's WaitCaughtUp, target has %d", mv.ID, got, want)
		}
		must(r.DropReplication(ctx))
		_, err = r.DeleteMoved(ctx, DeleteOptions{BatchSize: 500})
		must(err)
		must(r.Unfence(ctx))
	}
	assertNoReplicationObjects(t, src, tgt)
}

// TestWaitCaughtUpWakesLauncher creates a subscription on a server 3.5 s
// after the start of another one's apply worker there. PostgreSQL 15's
// launcher, woken by the commit too soon after its last start, would sleep
// 5 s more (the worker starting about 8.5 s after the first one's start);
// WaitCaughtUp must wake it so that the new worker starts once the 5 s
// since the previous start have passed, and return well before that.
func TestWaitCaughtUpWakesLauncher(t *testing.T) {
	ctx := testCtx(t)
	src, tgt := startPair(t)
	loadAccounts(t, src, 1000)
	mustExec(t, tgt, accountsSchema)
	a := newEngine(t, Move{ID: "la", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
		Lo: shardmap.Int64Bound(100), Hi: shardmap.Int64Bound(200), Tables: accountsTables}, src, tgt)
	b := newEngine(t, Move{ID: "lb", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
		Lo: shardmap.Int64Bound(300), Hi: shardmap.Int64Bound(400), Tables: accountsTables}, src, tgt)
	if err := a.startReplication(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	// The first worker's start, by the target's clock (same host).
	started := time.UnixMicro(mustInt(t, tgt, `SELECT (extract(epoch FROM a.backend_start) * 1e6)::bigint
		FROM pg_stat_subscription s JOIN pg_stat_activity a USING (pid) WHERE s.subname = 'pgshard_mv_la' AND s.relid IS NULL`))
	// Not synchronisation: the second subscription must come at a chosen
	// point inside the launcher's 5 s interval.
	time.Sleep(time.Until(started.Add(3500 * time.Millisecond)))
	if err := b.startReplication(ctx, false); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	if _, err := b.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("second subscription caught up %s after its creation, %s after the first worker's start",
		time.Since(created).Round(time.Millisecond), time.Since(started).Round(time.Millisecond))
	// 5 s after the first start, plus 1.5 s for a busy machine; the
	// launcher left asleep would take until about 8.5 s.
	if d := time.Since(started); d > 6500*time.Millisecond {
		t.Errorf("the second subscription caught up %s after the first worker's start, want under 6.5 s", d)
	}
	for _, e := range []*Engine{a, b} {
		if err := e.DropReplication(ctx); err != nil {
			t.Fatal(err)
		}
	}
	assertNoReplicationObjects(t, src, tgt)
}
