package reshard

import (
	"testing"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
)

// TestRollbackAfterCutover cuts a range move over, lets a client write to
// the interval on the target (the new owner), then rolls back with the
// reverse replication: fence the target, catch up the source, verify,
// advance the source's sequences, lift the source's fence, drop the
// reverse replication and delete the interval from the target. The
// source must then hold exactly the ledger of every acknowledged write,
// before and after the cutover, and nothing may be left behind.
func TestRollbackAfterCutover(t *testing.T) {
	ctx := testCtx(t)
	src, tgt := startPair(t)
	const keys = 1000
	led := loadAccounts(t, src, keys)
	inside := rangeInside(200, 600)
	mv := Move{ID: "rb1", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
		Lo: shardmap.Int64Bound(200), Hi: shardmap.Int64Bound(600), Tables: accountsTables}
	e := newEngine(t, mv, src, tgt)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Cutover.
	must(e.PrepareTarget(ctx))
	must(e.StartCopy(ctx))
	must(e.WaitCopied(ctx, nil))
	must(e.Fence(ctx))
	_, err := e.WaitCaughtUp(ctx)
	must(err)
	res, err := e.Verify(ctx, VerifyOptions{})
	must(err)
	if !res.Equal {
		t.Fatalf("verify at cutover: %+v", res)
	}
	must(e.StopForward(ctx))
	_, err = e.AdvanceSequences(ctx)
	must(err)
	must(e.StartReverse(ctx))

	// The target owns the interval and takes writes to it.
	stop := startWorkload(t, tgt, keys, led, inside, inside)
	acked0, _ := led.counts()
	waitFor(t, "300 writes on the target", func() bool { a, _ := led.counts(); return a > acked0+300 })

	// Rollback.
	r := e.Reverse()
	must(r.Fence(ctx))
	waitFor(t, "the target's fence to refuse a write", func() bool { _, f := led.counts(); return f > 0 })
	must(stop())
	_, err = r.WaitCaughtUp(ctx)
	must(err)
	res, err = r.Verify(ctx, VerifyOptions{})
	must(err)
	if !res.Equal || !res.Fenced {
		t.Fatalf("verify of the rollback: %+v", res)
	}
	adv, err := r.AdvanceSequences(ctx)
	must(err)
	if len(adv) != 1 || adv[0].TargetAfter < adv[0].SourceNext {
		t.Errorf("source sequences after rollback: %+v", adv)
	}
	must(e.Unfence(ctx))
	must(r.DropReplication(ctx))
	deleted, err := r.DeleteMoved(ctx, DeleteOptions{BatchSize: 500})
	must(err)
	if deleted == 0 {
		t.Error("the rollback deleted no rows from the target")
	}

	checkLedger(t, src, led, func(int64) bool { return true }, false)
	assertNoReplicationObjects(t, src, tgt)
	if n := mustInt(t, tgt, "SELECT (SELECT count(*) FROM public.accounts) + (SELECT count(*) FROM public.events)"); n != 0 {
		t.Errorf("%d rows left on the target", n)
	}
	// The source owns the interval again: writes pass, and its events
	// sequence continues past the target's.
	tgtMax := mustInt(t, tgt, "SELECT last_value FROM public.events_id_seq")
	id := mustInt(t, src, "INSERT INTO public.events (account_id, payload) VALUES (300, 'after rollback') RETURNING id")
	if id <= tgtMax {
		t.Errorf("the source's events sequence gave %d, the target had used up to %d", id, tgtMax)
	}
	if code, msg := fencedWrite(t, tgt, "INSERT INTO public.accounts (id, balance) VALUES (300, 1)"); code != wire.SQLStateIntervalFenced {
		t.Errorf("insert into the rolled-back interval on the target: SQLSTATE %q %q, want the fence's", code, msg)
	}
}
