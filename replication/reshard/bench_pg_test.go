package reshard

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/pgshard/pgshard/shardmap"
)

// benchRows is the size of the throughput test's table.
const benchRows = 200000

// TestCopyThroughput measures the initial copy of a move of 200k rows
// (whole table: interval [-inf, +inf)) against a plain COPY ... TO STDOUT
// piped into COPY ... FROM STDIN between the same two servers in the same
// run, and logs rows/s and MB/s of both (MB of COPY text), the plain copy
// before and after the move (the machine's noise shows in the two). It asserts
// only that both copied every row: the ratio depends on the machine.
// Skipped with -short.
func TestCopyThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("throughput measurement")
	}
	ctx := testCtx(t)
	src, tgt := startPair(t)
	const cols = "(id bigint PRIMARY KEY, n int NOT NULL, body text, at timestamptz)"
	mustExec(t, src, "CREATE TABLE public.bench "+cols+fmt.Sprintf(`; INSERT INTO public.bench SELECT g, g %% 1000, md5(g::text) || repeat('y', 68),
		'2026-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, %d) g`, benchRows))
	mustExec(t, src, "VACUUM ANALYZE public.bench")
	mustExec(t, tgt, "CREATE SCHEMA plain; CREATE TABLE plain.bench "+cols)

	plain := func(table string) (time.Duration, int64) {
		t.Helper()
		mustExec(t, tgt, "TRUNCATE "+table)
		in, out := connect(t, src), connect(t, tgt)
		pr, pw := io.Pipe()
		start := time.Now()
		type res struct {
			n   int64
			err error
		}
		done := make(chan res, 1)
		go func() {
			tag, err := in.PgConn().CopyTo(ctx, pw, "COPY public.bench TO STDOUT")
			pw.CloseWithError(err)
			done <- res{tag.RowsAffected(), err}
		}()
		cr := &countingReader{r: pr}
		tag, err := out.PgConn().CopyFrom(ctx, cr, "COPY "+table+" FROM STDIN")
		_ = pr.CloseWithError(io.ErrClosedPipe) // unblocks the writer if CopyFrom failed
		r := <-done
		if err != nil || r.err != nil {
			t.Fatalf("plain copy: %v / %v", err, r.err)
		}
		d := time.Since(start)
		if tag.RowsAffected() != benchRows || r.n != benchRows {
			t.Fatalf("plain copy moved %d/%d rows", r.n, tag.RowsAffected())
		}
		return d, cr.n
	}
	plain1, bytes := plain("plain.bench")

	mv := Move{ID: "b1", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
		Lo: shardmap.NegInf(), Hi: shardmap.PosInf(), Tables: []Table{{Name: "public.bench", KeyColumn: "id"}}}
	e := newEngine(t, mv, src, tgt)
	if err := e.PrepareTarget(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := e.StartCopy(ctx); err != nil {
		t.Fatal(err)
	}
	var copying, copied time.Duration // first seen in state copying, past it
	err := e.WaitCopied(ctx, func(p Progress) {
		s := p.Tables[0].State
		if copying == 0 && s == SyncCopying {
			copying = time.Since(start)
		}
		if copied == 0 && (s == SyncFinishedCopy || s == SyncDone || s == SyncReady) {
			copied = time.Since(start)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	ready := time.Since(start)
	if n := mustInt(t, tgt, "SELECT count(*) FROM public.bench"); n != benchRows {
		t.Fatalf("the move copied %d rows, want %d", n, benchRows)
	}
	plain2, _ := plain("plain.bench")

	rate := func(d time.Duration) string {
		return fmt.Sprintf("%8.0f rows/s %6.1f MB/s (%v)", float64(benchRows)/d.Seconds(), float64(bytes)/1e6/d.Seconds(), d.Round(time.Millisecond))
	}
	t.Logf("%d rows, %.1f MB of COPY text", benchRows, float64(bytes)/1e6)
	t.Logf("plain COPY | COPY, before:       %s", rate(plain1))
	t.Logf("plain COPY | COPY, after:        %s", rate(plain2))
	t.Logf("move, copy done (state f/s/r):   %s", rate(copied))
	t.Logf("move, ready (apply worker owns): %s", rate(ready))
	if copying > 0 {
		t.Logf("move, copy phase only:           %s (the first %v: slot, workers starting)", rate(copied-copying), copying.Round(time.Millisecond))
	}
	t.Logf("move / best plain: %.2f (copy done), %.2f (ready)", min(plain1, plain2).Seconds()/copied.Seconds(), min(plain1, plain2).Seconds()/ready.Seconds())
	if err := e.Cancel(context.WithoutCancel(ctx), DeleteOptions{BatchSize: 50000}); err != nil {
		t.Fatal(err)
	}
	assertNoReplicationObjects(t, src, tgt)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
