package reshard

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
)

// TestMoveRangeUnderWrites moves [500, 1500) of a bigint range
// distribution while a client inserts, updates and deletes over the whole
// key space, then walks every later step; see runLedgerMove.
func TestMoveRangeUnderWrites(t *testing.T) {
	mv := Move{ID: "r1", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
		Lo: shardmap.Int64Bound(500), Hi: shardmap.Int64Bound(1500), Tables: accountsTables}
	runLedgerMove(t, mv, rangeInside(500, 1500), 2000)
}

// TestMoveHashUnderWrites does the same for the upper half of a hash
// distribution's hash space, [0, +inf): the row filter and the fence use
// hashint8extended with pgshard's seed, the ledger shardmap.HashInt64.
func TestMoveHashUnderWrites(t *testing.T) {
	mv := Move{ID: "h1", KeyType: shardmap.KeyBigint, Strategy: shardmap.Hash,
		Lo: shardmap.Int64Bound(0), Hi: shardmap.PosInf(), Tables: accountsTables}
	runLedgerMove(t, mv, func(k int64) bool { return shardmap.HashInt64(k) >= 0 }, 2000)
}

// runLedgerMove moves mv from a source to an empty target under a
// workload with a ledger and checks each step:
//   - copy under writes, fence (writes inside refused with PS001, outside
//     accepted), catch-up, verify equal, target rows = ledger, nothing
//     outside the interval copied;
//   - a repeat of every step is a no-op;
//   - sequences continue without duplicates after the cutover;
//   - the reverse replication applies the target's writes on the fenced
//     source;
//   - cleanup deletes the interval from the source, keeps the fence and
//     leaves no replication object; a second cleanup does nothing.
func runLedgerMove(t *testing.T, mv Move, inside func(int64) bool, keys int64) {
	ctx := testCtx(t)
	src, tgt := startPair(t)
	led := loadAccounts(t, src, keys)
	e := newEngine(t, mv, src, tgt)

	stop := startWorkload(t, src, keys+200, led, inside, nil)
	if err := e.PrepareTarget(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.StartCopy(ctx); err != nil {
		t.Fatal(err)
	}
	var last Progress
	if err := e.WaitCopied(ctx, func(p Progress) { last = p }); err != nil {
		t.Fatal(err)
	}
	t.Logf("copied: %+v", last)
	if last.ApplyErrors != 0 || last.SyncErrors != 0 || len(last.Tables) != 2 {
		t.Errorf("progress after the copy: %+v", last)
	}
	// Writes keep flowing and streaming after the copy.
	acked0, _ := led.counts()
	waitFor(t, "200 more writes", func() bool { a, _ := led.counts(); return a > acked0+200 })
	if res, err := e.Verify(ctx, VerifyOptions{}); err != nil {
		t.Fatal(err)
	} else if res.Fenced {
		t.Errorf("verify says fenced before the fence")
	}

	// The steps of a cutover, timed while the workload runs.
	var timings []string
	timed := func(name string, f func() error) {
		t.Helper()
		start := time.Now()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		timings = append(timings, fmt.Sprintf("%s %v", name, time.Since(start).Round(100*time.Microsecond)))
	}
	timed("fence", func() error { return e.Fence(ctx) })
	timed("catch-up", func() error { _, err := e.WaitCaughtUp(ctx); return err })
	timed("verify", func() error {
		res, err := e.Verify(ctx, VerifyOptions{})
		if err == nil && !res.Equal {
			err = fmt.Errorf("not equal under writes outside the interval: %+v", res)
		}
		return err
	})
	waitFor(t, "the workload to hit the fence", func() bool { _, f := led.counts(); return f > 0 })
	acked1, _ := led.counts()
	waitFor(t, "writes outside the interval to continue", func() bool { a, _ := led.counts(); return a > acked1+50 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	led.mu.Lock()
	t.Logf("workload: %d writes acknowledged, %d refused by the fence (%d inside the interval)", led.acked, led.fenced, led.fencedIn)
	led.mu.Unlock()

	if _, err := e.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := e.Verify(ctx, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Equal || !res.Fenced {
		t.Fatalf("verify after fence and catch-up: %+v", res)
	}
	for _, tc := range res.Tables {
		if tc.SourceRows == 0 {
			t.Errorf("table %s: no rows in the interval: the test checks nothing", tc.Table)
		}
	}
	t.Logf("verify: %+v", res.Tables)
	checkLedger(t, tgt, led, inside, true)
	checkLedger(t, src, led, func(int64) bool { return true }, false)

	// Every step again: no-ops.
	rerun := func() {
		t.Helper()
		if err := e.PrepareTarget(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.StartCopy(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.Fence(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := e.WaitCaughtUp(ctx); err != nil {
			t.Fatal(err)
		}
		if res, err := e.Verify(ctx, VerifyOptions{}); err != nil || !res.Equal {
			t.Fatalf("verify again: %+v %v", res, err)
		}
	}
	rerun()
	checkLedger(t, tgt, led, inside, true)
	if objs := replicationObjects(t, src); len(objs) != 2 {
		t.Errorf("source has %v, want one slot and one publication", objs)
	}

	// A direct writer is fenced too, inside only; the message names it.
	in, out := liveKeys(led, inside)
	code, msg := fencedWrite(t, src, "UPDATE public.accounts SET balance = -1 WHERE id = "+itoa(in))
	if code != wire.SQLStateIntervalFenced || !strings.Contains(msg, "public.accounts") || !strings.Contains(msg, "key "+itoa(in)) {
		t.Errorf("update inside the fenced interval: SQLSTATE %q, %q", code, msg)
	}
	if code, msg := fencedWrite(t, src, "TRUNCATE public.events"); code != wire.SQLStateIntervalFenced {
		t.Errorf("truncate of a fenced table: SQLSTATE %q, %q", code, msg)
	}
	if code, msg := fencedWrite(t, src, "UPDATE public.accounts SET balance = balance WHERE id = "+itoa(out)); code != "" {
		t.Errorf("update outside the interval: SQLSTATE %q, %q", code, msg)
	}

	// Cutover: forward off, sequences, reverse on.
	if err := e.StartReverse(ctx); err == nil {
		t.Fatal("StartReverse while the forward replication runs: no error")
	}
	timed("stop forward", func() error { return e.StopForward(ctx) })
	var adv []SequenceAdvance
	timed("sequences", func() error { adv, err = e.AdvanceSequences(ctx); return err })
	if len(adv) != 1 || adv[0].Column != "id" || adv[0].TargetAfter < adv[0].SourceNext {
		t.Fatalf("sequences: %+v", adv)
	}
	again, err := e.AdvanceSequences(ctx)
	if err != nil || len(again) != 1 || again[0].TargetBefore != again[0].TargetAfter {
		t.Fatalf("sequences again (want no change): %+v %v", again, err)
	}
	timed("start reverse", func() error { return e.StartReverse(ctx) })
	t.Logf("cutover steps (the workload stopped after catch-up): %s", strings.Join(timings, ", "))
	if err := e.StartReverse(ctx); err != nil {
		t.Fatal(err)
	}
	srcMax := mustInt(t, src, "SELECT max(id) FROM public.events")
	newID := mustInt(t, tgt, "INSERT INTO public.events (account_id, payload) VALUES ("+itoa(in)+", 'after cutover') RETURNING id")
	if newID <= srcMax {
		t.Errorf("the target's events sequence gave %d, the source has used up to %d", newID, srcMax)
	}
	if n := mustInt(t, tgt, "SELECT count(*) - count(DISTINCT id) FROM public.events"); n != 0 {
		t.Errorf("%d duplicate event ids on the target", n)
	}
	// The reverse replication writes through the source's fence.
	mustExec(t, tgt, "UPDATE public.accounts SET balance = 4242 WHERE id = "+itoa(in))
	lsn, err := e.Reverse().WaitCaughtUp(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := e.Reverse().Progress(ctx)
	t.Logf("reverse caught up at %s: %+v", lsn, p)
	if b := mustInt(t, src, "SELECT balance FROM public.accounts WHERE id = "+itoa(in)); b != 4242 {
		t.Errorf("the reverse replication did not reach the source: balance %d", b)
	}
	if n := mustInt(t, src, "SELECT count(*) FROM public.events WHERE id = "+itoa(newID)); n != 1 {
		t.Errorf("the event inserted on the target after cutover is on the source %d times", n)
	}

	// Cleanup, twice.
	var batches int
	deleted, err := e.Cleanup(ctx, DeleteOptions{BatchSize: 100, Progress: func(DeleteProgress) { batches++ }})
	if err != nil {
		t.Fatal(err)
	}
	if deleted == 0 || batches < 2 {
		t.Errorf("cleanup deleted %d rows in %d batches", deleted, batches)
	}
	assertNoReplicationObjects(t, src, tgt)
	inRows := mustInt(t, src, "SELECT (SELECT count(*) FROM public.accounts r WHERE "+mv.filterOn("r.id")+") + (SELECT count(*) FROM public.events r WHERE "+mv.filterOn("r.account_id")+")")
	if inRows != 0 {
		t.Errorf("%d rows of the interval left on the source", inRows)
	}
	if code, _ := fencedWrite(t, src, "INSERT INTO public.accounts (id, balance) VALUES ("+itoa(in)+", 1)"); code != wire.SQLStateIntervalFenced {
		t.Errorf("insert into the cleaned-up interval on the source: SQLSTATE %q, want the fence's", code)
	}
	if n := mustInt(t, src, "SELECT count(*) FROM public.accounts"); n == 0 {
		t.Errorf("cleanup deleted rows outside the interval")
	}
	if deleted, err := e.Cleanup(ctx, DeleteOptions{}); err != nil || deleted != 0 {
		t.Errorf("cleanup again: %d rows, %v", deleted, err)
	}
}

// liveKeys returns the smallest live account of the ledger inside the
// interval and the smallest outside.
func liveKeys(led *ledger, inside func(int64) bool) (in, out int64) {
	led.mu.Lock()
	defer led.mu.Unlock()
	for k := range led.balance {
		if inside(k) && (in == 0 || k < in) {
			in = k
		} else if !inside(k) && (out == 0 || k < out) {
			out = k
		}
	}
	return in, out
}

func itoa(i int64) string { return shardmap.Int64Bound(i).String() }
