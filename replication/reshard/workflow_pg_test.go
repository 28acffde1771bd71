package reshard

import (
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
)

// TestWorkflowOnPostgres drives moves with the real engine on two real
// servers, with a new controller (a new meta leader: fresh engine, fresh
// driver) for every single step, so that every step is resumed from the
// record as a leader change would: a move of [500, 1500) under writes is
// cut over (target rows = the ledger, source fenced), rolled back (a
// write made on the target comes back, nothing left on the target, no
// replication object, source writable), and a second move cancelled
// while copying leaves no slot, publication or subscription.
func TestWorkflowOnPostgres(t *testing.T) {
	ctx := testCtx(t)
	src, tgt := startPair(t)
	const keys = 2000
	led := loadAccounts(t, src, keys)
	inside := rangeInside(500, 1500)
	servers := map[string]*pgcluster.Server{"src": src, "tgt": tgt}
	maps := &fakeMaps{m: &shardmap.Map{
		Epoch: 1,
		Shards: []shardmap.Shard{
			{Name: "src", Primary: shardmap.Endpoint{Host: src.Host, Port: src.Port}, State: shardmap.StateActive},
			{Name: "tgt", Primary: shardmap.Endpoint{Host: tgt.Host, Port: tgt.Port}, State: shardmap.StateActive},
		},
		Distributions: []shardmap.Distribution{{Name: "accounts", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
			Intervals: []shardmap.Interval{{Lo: shardmap.NegInf(), Hi: shardmap.PosInf(), Shard: "src"}}}},
		Tables: []shardmap.Table{
			{Name: "public.accounts", Kind: shardmap.Sharded, KeyColumn: "id", Distribution: "accounts"},
			{Name: "public.events", Kind: shardmap.Sharded, KeyColumn: "account_id", Distribution: "accounts"},
		},
	}}
	recs := newFakeRecords()
	leaders := 0
	newLeader := func() *Controller {
		leaders++
		c, err := NewController(ControllerConfig{
			Records: recs, Maps: maps, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Tick: 20 * time.Millisecond, ProgressEvery: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond,
			CutoverTimeout: 30 * time.Second,
			Engines: func(mv Move, from, to shardmap.Shard) (Steps, error) {
				e, err := New(Config{Move: mv,
					Source:       Endpoint{Shard: from.Name, DSN: servers[from.Name].SuperDSN("postgres")},
					Target:       Endpoint{Shard: to.Name, DSN: servers[to.Name].SuperDSN("postgres")},
					PollInterval: 20 * time.Millisecond})
				if err != nil {
					return nil, err
				}
				return EngineSteps(e), nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// drive runs move id one step per leader until its phase is want.
	drive := func(id string, want Phase) State {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			st := recs.state(t, id)
			if st.Phase == want {
				return st
			}
			if st.Phase.Terminal() || time.Now().After(deadline) {
				t.Fatalf("move %s is %s, want %s (last error %q)", id, st.Phase, want, st.LastError)
			}
			c := newLeader()
			d := &driver{c: c, id: id, log: c.log}
			if _, pause := d.once(ctx); pause > 0 {
				time.Sleep(pause)
			}
		}
	}

	stop := startWorkload(t, src, keys+200, led, inside, nil)
	c := newLeader()
	if _, err := c.Start(ctx, MoveRequest{ID: "w1", Distribution: "accounts", Interval: "[500,1500)", To: "tgt", Cutover: CutoverAuto}); err != nil {
		t.Fatal(err)
	}
	st := drive("w1", PhaseCopied)
	if st.Progress.RowsTotal == 0 || st.Progress.Tables != 2 || st.Progress.TablesCopied != 2 {
		t.Errorf("progress after the copy: %+v", st.Progress)
	}
	st = drive("w1", PhaseCutOver)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("cut over after %d leaders; verify %+v", leaders, st.Verify)
	if st.Verify == nil || !st.Verify.Equal || !st.Verify.Fenced {
		t.Fatalf("the cutover's verify: %+v", st.Verify)
	}
	d := maps.Map().Distribution("accounts")
	if got := d.DescribeIntervals(); got != "[-inf, 500) on src, [500, 1500) on tgt, [1500, +inf) on src" || len(d.Moving) != 0 ||
		len(d.Stale) != 1 || d.Stale[0].Shard != "src" {
		t.Fatalf("map after cutover: %s, moving %+v, stale rows %+v", got, d.Moving, d.Stale)
	}
	checkLedger(t, tgt, led, inside, true)
	if code, _ := fencedWrite(t, src, "UPDATE public.accounts SET balance = 0 WHERE id = 600"); code != wire.SQLStateIntervalFenced {
		t.Fatalf("a write to the moved interval on the source: %q, want PS001 (interval fenced)", code)
	}
	if code, _ := fencedWrite(t, src, "UPDATE public.accounts SET balance = 0 WHERE id = 100"); code != "" {
		t.Fatalf("a write outside the interval on the source: %q", code)
	}

	// The new owner takes a write; the rollback carries it back.
	mustExec(t, tgt, "UPDATE public.accounts SET balance = 123456 WHERE id = 600")
	if _, err := c.Act(ctx, "w1", ActionRollback, false); err != nil {
		t.Fatal(err)
	}
	drive("w1", PhaseRolledBack)
	if got := maps.Map().Distribution("accounts").DescribeIntervals(); got != "[-inf, 500) on src, [500, 1500) on src, [1500, +inf) on src" {
		t.Fatalf("map after rollback: %s", got)
	}
	if n := mustInt(t, src, "SELECT balance FROM public.accounts WHERE id = 600"); n != 123456 {
		t.Fatalf("after rollback account 600 has %d on the source: the target's write is lost", n)
	}
	if n := mustInt(t, tgt, "SELECT (SELECT count(*) FROM public.accounts) + (SELECT count(*) FROM public.events)"); n != 0 {
		t.Fatalf("the target keeps %d rows after rollback", n)
	}
	if code, _ := fencedWrite(t, src, "UPDATE public.accounts SET balance = 1 WHERE id = 600"); code != "" {
		t.Fatalf("the source is still fenced after rollback: %q", code)
	}
	if code, _ := fencedWrite(t, tgt, "INSERT INTO public.accounts (id, balance) VALUES (600, 1)"); code != "" {
		t.Fatalf("the target is still fenced after rollback: %q", code)
	}
	mustExec(t, tgt, "DELETE FROM public.accounts")
	assertNoReplicationObjects(t, src, tgt)

	// A second move, cancelled while copying.
	if _, err := c.Start(ctx, MoveRequest{ID: "w2", Distribution: "accounts", Interval: "[1500,+inf)", To: "tgt"}); err != nil {
		t.Fatal(err)
	}
	drive("w2", PhaseCopying)
	if objs := replicationObjects(t, tgt); !slices.Contains(objs, "subscription pgshard_mv_w2") {
		t.Fatalf("copying without a subscription: %v", objs)
	}
	if _, err := c.Act(ctx, "w2", ActionCancel, false); err != nil {
		t.Fatal(err)
	}
	drive("w2", PhaseCancelled)
	assertNoReplicationObjects(t, src, tgt)
	if n := mustInt(t, tgt, "SELECT (SELECT count(*) FROM public.accounts) + (SELECT count(*) FROM public.events)"); n != 0 {
		t.Fatalf("the target keeps %d rows after the cancel", n)
	}
	if m := maps.Map(); m.Epoch != 9 || len(m.Distribution("accounts").Stale) != 0 {
		t.Fatalf("map epoch %d, stale rows %+v, want 9 (w1: stale rows, hold, cutover, hold, rollback, rows deleted; w2: stale rows, rows deleted) and none",
			m.Epoch, m.Distribution("accounts").Stale)
	}
}
