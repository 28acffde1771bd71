package reshard

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// TestVerifyUnderWrites: an unfenced verify while every key of the
// interval is updated in turn (each once per pass, so no key is written
// again while it is re-read) finds the shards equal: the aggregates of a
// round differ by the writes in flight, but no key still differs once
// re-read, and the cutover is not blocked by it.
func TestVerifyUnderWrites(t *testing.T) {
	ctx := testCtx(t)
	src, tgt := startPair(t)
	const keys = 3000
	mustExec(t, src, `CREATE TABLE public.acc (id bigint PRIMARY KEY, v bigint NOT NULL);
		INSERT INTO public.acc SELECT g, 0 FROM generate_series(1, 3000) g`)
	mv := Move{ID: "w1", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
		Lo: shardmap.Int64Bound(1), Hi: shardmap.PosInf(), Tables: []Table{{Name: "public.acc", KeyColumn: "id"}}}
	e := newEngine(t, mv, src, tgt)
	if err := e.PrepareTarget(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.StartCopy(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.WaitCopied(ctx, nil); err != nil {
		t.Fatal(err)
	}

	conn := connect(t, src)
	var writes atomic.Int64
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() {
		for i := int64(0); wctx.Err() == nil; i++ {
			if _, err := conn.Exec(wctx, "UPDATE public.acc SET v = v + 1 WHERE id = $1", i%keys+1); err != nil {
				if wctx.Err() == nil {
					werr = err
				}
				return
			}
			writes.Add(1)
		}
	})
	waitFor(t, "writes flowing", func() bool { return writes.Load() >= 50 })
	before := writes.Load()
	res, err := e.Verify(ctx, VerifyOptions{})
	during := writes.Load() - before
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	if during == 0 {
		t.Fatal("no write committed during the verify: the test checks nothing")
	}
	if !res.Equal || res.Fenced || !res.Tables[0].Equal || len(res.Tables[0].DiffKeys) != 0 {
		t.Errorf("unfenced verify with %d writes in flight: %+v, want equal", during, res)
	}
	// Fenced, it is exact and equal too.
	if err := e.Fence(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err = e.Verify(ctx, VerifyOptions{}); err != nil || !res.Equal || !res.Fenced {
		t.Errorf("fenced verify after the writes: %+v, %v", res, err)
	}
	if err := e.Cancel(ctx, DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	assertNoReplicationObjects(t, src, tgt)
}
