package reshard

import (
	"slices"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/shardmap"
)

// TestVerifyFindsDifferingKeys moves ['g', 'p') of a text range
// distribution, then damages the target (one row changed, one deleted,
// one extra) and checks that Verify reports exactly those keys, fenced
// and unfenced, and bounds the list.
func TestVerifyFindsDifferingKeys(t *testing.T) {
	ctx := testCtx(t)
	src, tgt := startPair(t)
	mustExec(t, src, `CREATE TABLE public.names (name text PRIMARY KEY, v int NOT NULL, at timestamptz, f float8);
		INSERT INTO public.names SELECT w || g, g, '2024-01-01'::timestamptz + g * interval '1 hour', g / 3.0
		FROM unnest(ARRAY['alpha', 'golf', 'hotel', 'kilo', 'oscar', 'papa', 'zulu']) w, generate_series(1, 200) g`)
	mv := Move{ID: "v1", KeyType: shardmap.KeyText, Strategy: shardmap.Range,
		Lo: shardmap.TextBound("g"), Hi: shardmap.TextBound("p"), Tables: []Table{{Name: "public.names", KeyColumn: "name"}}}
	e := newEngine(t, mv, src, tgt)
	if err := e.PrepareTarget(ctx); err != nil {
		t.Fatal(err)
	}
	// A slot of the move's name without a subscription, as a crash inside
	// CREATE SUBSCRIPTION leaves it: StartCopy replaces it.
	mustExec(t, src, "SELECT pg_create_logical_replication_slot('"+e.Names().Slot+"', 'pgoutput')")
	if err := e.StartCopy(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.WaitCopied(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Fence(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := e.Verify(ctx, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Equal || !res.Fenced || res.Tables[0].SourceRows != 800 {
		t.Fatalf("verify of an intact copy: %+v", res)
	}
	if n := mustInt(t, tgt, "SELECT count(*) FROM public.names WHERE name < 'g' OR name >= 'p'"); n != 0 {
		t.Errorf("%d rows outside the interval copied", n)
	}

	// Damage the target behind the subscription's back.
	mustExec(t, tgt, `UPDATE public.names SET v = -1 WHERE name = 'kilo17';
		DELETE FROM public.names WHERE name = 'golf5';
		INSERT INTO public.names VALUES ('hotel999', 1, now(), 0)`)
	want := []string{"golf5", "hotel999", "kilo17"}
	res, err = e.Verify(ctx, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tc := res.Tables[0]
	if res.Equal || tc.Equal || tc.TargetRows != tc.SourceRows || tc.SourceChecksum == tc.TargetChecksum {
		t.Errorf("verify of a damaged copy (same count, other rows): %+v", res)
	}
	if !slices.Equal(tc.DiffKeys, want) || tc.MoreDiffKeys {
		t.Errorf("fenced verify: differing keys %v (more: %t), want %v", tc.DiffKeys, tc.MoreDiffKeys, want)
	}
	res, err = e.Verify(ctx, VerifyOptions{MaxDiffKeys: 2})
	if err != nil {
		t.Fatal(err)
	}
	if tc := res.Tables[0]; !slices.Equal(tc.DiffKeys, want[:2]) || !tc.MoreDiffKeys {
		t.Errorf("verify bounded to 2 keys: %v (more: %t)", tc.DiffKeys, tc.MoreDiffKeys)
	}

	// Unfenced, with writes flowing on other keys, the same keys come out
	// of the re-check.
	if err := e.Unfence(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.Fenced(ctx); err != nil || ok {
		t.Fatalf("fenced after Unfence: %t %v", ok, err)
	}
	mustExec(t, src, "UPDATE public.names SET v = v + 1 WHERE name = 'hotel3'")
	res, err = e.Verify(ctx, VerifyOptions{Rounds: 2})
	if err != nil {
		t.Fatal(err)
	}
	if tc := res.Tables[0]; res.Fenced || !slices.Equal(tc.DiffKeys, want) {
		t.Errorf("unfenced verify: fenced %t, differing keys %v, want %v", res.Fenced, tc.DiffKeys, want)
	}
	if err := e.Cancel(ctx, DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	assertNoReplicationObjects(t, src, tgt)
}

// TestCancelMidCopy cancels a uuid range move while the initial copy of
// 200k rows runs: no slot, publication or subscription is left on either
// server, the target's copied rows are gone, the source is not fenced; a
// second Cancel finds nothing; the move can start again afterwards.
func TestCancelMidCopy(t *testing.T) {
	ctx := testCtx(t)
	src, tgt := startPair(t)
	mustExec(t, src, `CREATE TABLE public.docs (id uuid PRIMARY KEY, body text);
		INSERT INTO public.docs SELECT md5(g::text)::uuid, repeat('x', 100) FROM generate_series(1, 200000) g`)
	lo := shardmap.MustParseUUID("40000000-0000-0000-0000-000000000000")
	mv := Move{ID: "c1", KeyType: shardmap.KeyUUID, Strategy: shardmap.Range,
		Lo: shardmap.UUIDBound(lo), Hi: shardmap.PosInf(), Tables: []Table{{Name: "public.docs", KeyColumn: "id"}}}
	e := newEngine(t, mv, src, tgt)
	if err := e.PrepareTarget(ctx); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		if err := e.StartCopy(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.Fence(ctx); err != nil { // Cancel must also lift a fence
			t.Fatal(err)
		}
		// Cancel once the sync worker is copying (its own slot exists).
		var p Progress
		waitFor(t, "the initial copy to run", func() bool {
			var err error
			if p, err = e.Progress(ctx); err != nil {
				t.Fatal(err)
			}
			if p.Copied {
				t.Fatal("the copy of 200k rows finished before Cancel: the test does not cancel mid-copy")
			}
			return p.Tables[0].State == SyncCopying && p.Tables[0].RowsCopied > 0
		})
		t.Logf("round %d: cancel at %+v; source has %v", round, p, replicationObjects(t, src))
		if err := e.Cancel(ctx, DeleteOptions{BatchSize: 20000}); err != nil {
			t.Fatal(err)
		}
		assertNoReplicationObjects(t, src, tgt)
		if n := mustInt(t, tgt, "SELECT count(*) FROM public.docs"); n != 0 {
			t.Errorf("%d copied rows left on the target", n)
		}
		if ok, err := e.Fenced(ctx); err != nil || ok {
			t.Errorf("fenced after Cancel: %t %v", ok, err)
		}
		if err := e.Cancel(ctx, DeleteOptions{}); err != nil {
			t.Errorf("second Cancel: %v", err)
		}
	}
	if n := mustInt(t, src, "SELECT count(*) FROM public.docs"); n != 200000 {
		t.Errorf("the source has %d rows, want 200000", n)
	}
	// Cleanup before any replication existed also finds nothing to drop.
	if err := e.DropReplication(ctx); err != nil {
		t.Error(err)
	}
}

// TestStartCopyRefuses checks the refusals of StartCopy, each before any
// object exists: a replica identity without the key column (no primary
// key; a primary key on another column; REPLICA IDENTITY NOTHING), and
// rows of the interval already on the target.
func TestStartCopyRefuses(t *testing.T) {
	ctx := testCtx(t)
	src, tgt := startPair(t)
	mustExec(t, src, `CREATE TABLE public.nopk (k bigint, v int);
		CREATE TABLE public.otherpk (id bigint PRIMARY KEY, k bigint);
		CREATE TABLE public.nothing (k bigint PRIMARY KEY);
		ALTER TABLE public.nothing REPLICA IDENTITY NOTHING;
		CREATE TABLE public.full (k bigint);
		ALTER TABLE public.full REPLICA IDENTITY FULL`)
	rng := func(id string, tables ...Table) *Engine {
		return newEngine(t, Move{ID: id, KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
			Lo: shardmap.Int64Bound(10), Hi: shardmap.Int64Bound(20), Tables: tables}, src, tgt)
	}
	e := rng("i1", Table{"public.nopk", "k"}, Table{"public.otherpk", "k"}, Table{"public.nothing", "k"}, Table{"public.full", "k"})
	if err := e.PrepareTarget(ctx); err != nil {
		t.Fatal(err)
	}
	err := e.StartCopy(ctx)
	if err == nil {
		t.Fatal("StartCopy accepted tables whose replica identity lacks the key")
	}
	for _, want := range []string{"table public.nopk has no primary key", "replica identity of table public.otherpk (id) does not include the key column k",
		"table public.nothing has REPLICA IDENTITY NOTHING"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "public.full") {
		t.Errorf("error %q names public.full, whose REPLICA IDENTITY FULL is enough", err)
	}
	assertNoReplicationObjects(t, src, tgt)

	// Rows of the interval on the target.
	mustExec(t, src, "INSERT INTO public.full VALUES (1), (15)")
	mustExec(t, tgt, "INSERT INTO public.full VALUES (12)")
	err = rng("i2", Table{"public.full", "k"}).StartCopy(ctx)
	if err == nil || !strings.Contains(err.Error(), "already has 1 rows of the interval in table public.full") {
		t.Errorf("StartCopy onto a target with rows of the interval: %v", err)
	}
	assertNoReplicationObjects(t, src, tgt)
}

// TestStartCopyNeedsSlots checks that a source without a free replication
// slot for the copy's sync worker is refused with the setting to raise,
// before anything is created.
func TestStartCopyNeedsSlots(t *testing.T) {
	ctx := testCtx(t)
	src := integration.StartPostgres(t, integration.Name("src"), integration.Settings(map[string]string{"max_replication_slots": "1"}))
	tgt := integration.StartPostgres(t, integration.Name("tgt"))
	mustExec(t, src, "CREATE TABLE public.t (k bigint PRIMARY KEY)")
	e := newEngine(t, Move{ID: "s1", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
		Lo: shardmap.Int64Bound(10), Hi: shardmap.Int64Bound(20), Tables: []Table{{"public.t", "k"}}}, src, tgt)
	if err := e.PrepareTarget(ctx); err != nil {
		t.Fatal(err)
	}
	err := e.StartCopy(ctx)
	if err == nil || !strings.Contains(err.Error(), "1 free replication slots, the move needs 2: raise max_replication_slots") {
		t.Errorf("StartCopy with one free slot: %v", err)
	}
	assertNoReplicationObjects(t, src, tgt)
}
