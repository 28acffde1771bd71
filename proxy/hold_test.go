package proxy_test

import (
	"context"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// metricSample returns the value of an unlabelled sample in a scrape.
func metricSample(t *testing.T, p *testProxy, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(scrape(t, p))
	if m == nil {
		t.Fatalf("metrics lack %s", name)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestIntervalHold: while the map holds kv [40, 60) moving from s0 to s1,
// statements for keys in it wait (a read and a write), keys outside it on
// s0 and s1 keep flowing (a concurrent writer's longest gap stays under
// 200 ms), a statement inside a transaction already open on s0 runs there
// at once; the map that releases the interval to s1 sends the held
// statements to s1; the hold metrics count them.
func TestIntervalHold(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.Buffer.Window = proxy.Duration(10 * time.Second)
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	createKV(t, ctx, c.Shards)
	m1 := readMap(t, cfg.ShardMapFile)
	lo, hi := shardmap.Int64Bound(40), shardmap.Int64Bound(60)
	hold, err := m1.WithMoving("kv", shardmap.Moving{ID: "m1", Lo: lo, Hi: hi, From: "s0", To: "s1", Step: shardmap.MoveHold}, false)
	if err != nil {
		t.Fatal(err)
	}
	hold.Epoch = 2

	// A writer outside the interval, on both shards, all along.
	wctx, stopWriter := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var maxGap time.Duration
	var writes int
	var werr error
	writer := connect(t, p.dsn(""))
	wg.Go(func() {
		last := time.Now()
		for i := 0; wctx.Err() == nil; i++ {
			k := []int64{5, 150, 39, 60}[i%4]
			if _, err := writer.Exec(wctx, `INSERT INTO kv (k, v) VALUES ($1, 'w') ON CONFLICT (k) DO UPDATE SET v = excluded.v || $2`, k, strconv.Itoa(i)); err != nil {
				if wctx.Err() == nil {
					werr = err
				}
				return
			}
			now := time.Now()
			maxGap = max(maxGap, now.Sub(last))
			last = now
			writes++
		}
	})

	if ok, err := p.srv.ApplyMap(hold); !ok || err != nil {
		t.Fatalf("apply the hold: %v %v", ok, err)
	}
	heldWrite := connect(t, p.dsn(""))
	heldRead := connect(t, p.dsn(""))
	wdone := make(chan error, 1)
	rdone := make(chan error, 1)
	var readV string
	go func() {
		_, err := heldWrite.Exec(context.Background(), `INSERT INTO kv (k, v) VALUES (50, 'held')`)
		wdone <- err
	}()
	go func() {
		rdone <- heldRead.QueryRow(context.Background(), `SELECT v FROM kv WHERE k = $1`, 50).Scan(&readV)
	}()
	waitFor(t, func() bool { return metricSample(t, p, "pgshard_interval_held") == 2 })

	// In a transaction open on s0, a statement for the interval runs there.
	txc := connect(t, p.dsn(""))
	tx, err := txc.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES (7, 'tx')`); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err = tx.Exec(tctx, `INSERT INTO kv (k, v) VALUES (55, 'tx')`)
	cancel()
	if err != nil {
		t.Fatalf("a statement in a transaction open on s0 was held or failed: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Shards[0].QueryValue(ctx, `SELECT v FROM kv WHERE k = 55`); err != nil || v != "tx" {
		t.Fatalf("the transaction's row on s0: %q %v", v, err)
	}

	// Held statements stay held while other keys flow.
	time.Sleep(300 * time.Millisecond) // a stretch of hold for the writer to cross, not synchronisation
	select {
	case err := <-wdone:
		t.Fatalf("the write for key 50 ran during the hold (%v)", err)
	case err := <-rdone:
		t.Fatalf("the read for key 50 ran during the hold (%v)", err)
	default:
	}

	// The release: [40, 60) now on s1, no marker.
	rel, err := m1.SetOwner("kv", lo, hi, "s1")
	if err != nil {
		t.Fatal(err)
	}
	rel.Epoch = 3
	if ok, err := p.srv.ApplyMap(rel); !ok || err != nil {
		t.Fatalf("apply the release: %v %v", ok, err)
	}
	for _, ch := range []chan error{wdone, rdone} {
		select {
		case err := <-ch:
			if err != nil && err.Error() != "no rows in result set" {
				t.Fatalf("held statement: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("held statement still waits after the release")
		}
	}
	stopWriter()
	wg.Wait()
	if werr != nil {
		t.Fatalf("writer outside the interval: %v", werr)
	}
	t.Logf("writer outside the interval: %d writes, longest gap %s", writes, maxGap.Round(time.Millisecond))
	if maxGap >= 200*time.Millisecond {
		t.Errorf("longest gap outside the interval %s, want < 200ms", maxGap)
	}
	if v, err := c.Shards[1].QueryValue(ctx, `SELECT v FROM kv WHERE k = 50`); err != nil || v != "held" {
		t.Fatalf("held write on s1 (To): %q %v", v, err)
	}
	if v, err := c.Shards[0].QueryValue(ctx, `SELECT count(*) FROM kv WHERE k = 50`); err != nil || v != "0" {
		t.Fatalf("held write on s0 (From): %q %v", v, err)
	}
	if n := metricSample(t, p, "pgshard_interval_hold_statements_total"); n != 2 {
		t.Errorf("pgshard_interval_hold_statements_total = %v, want 2", n)
	}
	if n := metricSample(t, p, "pgshard_interval_held"); n != 0 {
		t.Errorf("pgshard_interval_held = %v after the release, want 0", n)
	}
	if n := metricSample(t, p, "pgshard_interval_hold_seconds_count"); n != 2 {
		t.Errorf("pgshard_interval_hold_seconds_count = %v, want 2", n)
	}
	if n := metricSample(t, p, "pgshard_buffered_statements_total"); n != 0 {
		t.Errorf("statements buffered for a switch: %v, want 0", n)
	}
}

// mapFeed is a MetaSource that sends the maps given on maps and records
// the epochs the proxy acknowledges.
type mapFeed struct {
	maps  chan *shardmap.Map
	acked chan uint64 // every heartbeat's applied epoch
}

func (f *mapFeed) WatchMap(ctx context.Context, after uint64, fn func(metarpc.MapVersion) error) error {
	for {
		select {
		case m := <-f.maps:
			if err := fn(metarpc.MapVersion{Epoch: m.Epoch, Map: m}); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *mapFeed) ProxyHeartbeat(ctx context.Context, id, addr string, applied uint64, unreachable []string) (uint64, error) {
	select {
	case f.acked <- applied:
	default:
	}
	return applied, nil
}

// TestIntervalHoldAck: once the proxy acknowledges (heartbeat) the epoch
// with the marker, a new statement for the interval is held; inside a
// transaction open on From, a write to the fenced interval fails with
// PS001, which reaches the client (it retries the transaction), and the
// proxy does not retry it.
func TestIntervalHoldAck(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.Buffer.Window = proxy.Duration(10 * time.Second)
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	createKV(t, ctx, c.Shards)
	m1 := readMap(t, cfg.ShardMapFile)
	feed := &mapFeed{maps: make(chan *shardmap.Map, 4), acked: make(chan uint64, 1)}
	first := m1.Clone()
	first.Epoch = 2
	feed.maps <- first
	follow(t, p, feed)
	waitAck := func(epoch uint64) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case e := <-feed.acked:
				if e >= epoch {
					return
				}
			case <-deadline:
				t.Fatalf("epoch %d never acknowledged", epoch)
			}
		}
	}
	waitAck(2)
	if err := c.Shards[0].Exec(ctx, `INSERT INTO kv VALUES (45, 'before'), (7, 'x')`); err != nil {
		t.Fatal(err)
	}
	lo, hi := shardmap.Int64Bound(40), shardmap.Int64Bound(60)
	hold, err := m1.WithMoving("kv", shardmap.Moving{ID: "m1", Lo: lo, Hi: hi, From: "s0", To: "s1", Step: shardmap.MoveHold}, false)
	if err != nil {
		t.Fatal(err)
	}
	hold.Epoch = 3
	feed.maps <- hold
	waitAck(3)
	held := connect(t, p.dsn(""))
	done := make(chan error, 1)
	go func() {
		_, err := held.Exec(context.Background(), `UPDATE kv SET v = 'held' WHERE k = 45`)
		done <- err
	}()
	waitFor(t, func() bool { return metricSample(t, p, "pgshard_interval_held") == 1 })

	// The fence on s0 (as the workflow installs it after the acknowledgements).
	if err := c.Shards[0].Exec(ctx, `CREATE FUNCTION fence() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF (TG_OP <> 'INSERT' AND OLD.k >= 40 AND OLD.k < 60) OR (TG_OP <> 'DELETE' AND NEW.k >= 40 AND NEW.k < 60) THEN
				RAISE EXCEPTION 'interval fenced' USING ERRCODE = 'PS001';
			END IF;
			RETURN COALESCE(NEW, OLD);
		END $$;
		CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON kv FOR EACH ROW EXECUTE FUNCTION fence()`); err != nil {
		t.Fatal(err)
	}
	// A transaction open on s0 during the hold (a key outside the interval).
	txc := connect(t, p.dsn(""))
	tx, err := txc.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE kv SET v = 'tx' WHERE k = 7`); err != nil {
		t.Fatal(err)
	}

	if _, err := tx.Exec(ctx, `UPDATE kv SET v = 'tx' WHERE k = 45`); pgCode(err) != "PS001" {
		t.Fatalf("write to the fenced interval in a transaction open on s0: %v, want PS001", err)
	}
	_ = tx.Rollback(ctx)
	if v, err := c.Shards[0].QueryValue(ctx, `SELECT v FROM kv WHERE k = 45`); err != nil || v != "before" {
		t.Fatalf("row 45 on s0 after the fenced write: %q %v", v, err)
	}

	// The release: the held UPDATE runs on s1.
	if err := c.Shards[1].Exec(ctx, `INSERT INTO kv VALUES (45, 'copied')`); err != nil {
		t.Fatal(err)
	}
	rel, err := m1.SetOwner("kv", lo, hi, "s1")
	if err != nil {
		t.Fatal(err)
	}
	rel.Epoch = 4
	feed.maps <- rel
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("held update: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held update still waits after the release")
	}
	if v, err := c.Shards[1].QueryValue(ctx, `SELECT v FROM kv WHERE k = 45`); err != nil || v != "held" {
		t.Fatalf("row 45 on s1: %q %v", v, err)
	}
}

// TestIntervalHoldKeyless: while kv [40, 60) moves from s0, a write
// without a key that reaches s0 (a broadcast UPDATE) is held and runs
// once the interval is released, a read without a key (scatter) and a
// keyed write on s1 flow.
func TestIntervalHoldKeyless(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.Buffer.Window = proxy.Duration(10 * time.Second)
	cfg.BroadcastWrites = "allow"
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	createKV(t, ctx, c.Shards)
	if err := c.Shards[0].Exec(ctx, `INSERT INTO kv VALUES (1, 'a'), (45, 'a')`); err != nil {
		t.Fatal(err)
	}
	if err := c.Shards[1].Exec(ctx, `INSERT INTO kv VALUES (150, 'a')`); err != nil {
		t.Fatal(err)
	}
	m1 := readMap(t, cfg.ShardMapFile)
	lo, hi := shardmap.Int64Bound(40), shardmap.Int64Bound(60)
	hold, err := m1.WithMoving("kv", shardmap.Moving{ID: "m1", Lo: lo, Hi: hi, From: "s0", To: "s1", Step: shardmap.MoveHold}, false)
	if err != nil {
		t.Fatal(err)
	}
	hold.Epoch = 2
	if ok, err := p.srv.ApplyMap(hold); !ok || err != nil {
		t.Fatalf("apply the hold: %v %v", ok, err)
	}
	held := connect(t, p.dsn(""))
	done := make(chan error, 1)
	go func() {
		_, err := held.Exec(context.Background(), `UPDATE kv SET v = 'b' WHERE v = 'a'`)
		done <- err
	}()
	waitFor(t, func() bool { return metricSample(t, p, "pgshard_interval_held") == 1 })
	other := connect(t, p.dsn(""))
	var n int
	if err := other.QueryRow(ctx, `SELECT count(*) FROM kv`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("scatter read during the hold: %d %v", n, err)
	}
	if _, err := other.Exec(ctx, `UPDATE kv SET v = 'c' WHERE k = 150`); err != nil {
		t.Fatalf("keyed write on s1 during the hold: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("the broadcast UPDATE ran during the hold (%v)", err)
	default:
	}
	// Released, aborted: the interval stays on s0.
	rel := m1.Clone()
	rel.Epoch = 3
	if ok, err := p.srv.ApplyMap(rel); !ok || err != nil {
		t.Fatalf("apply the release: %v %v", ok, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("held broadcast UPDATE: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held broadcast UPDATE still waits after the release")
	}
	if v, err := c.Shards[0].QueryValue(ctx, `SELECT string_agg(v, ',' ORDER BY k) FROM kv`); err != nil || v != "b,b" {
		t.Fatalf("s0 after the held UPDATE: %q %v", v, err)
	}
}

// TestIntervalHoldFirstInTx: a transaction whose BEGIN came before the
// hold but which has run nothing yet has its first statement for the
// interval held like an autocommit one, and runs on the new owner.
func TestIntervalHoldFirstInTx(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.Buffer.Window = proxy.Duration(10 * time.Second)
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	createKV(t, ctx, c.Shards)
	m1 := readMap(t, cfg.ShardMapFile)
	conn := connect(t, p.dsn(""))
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := shardmap.Int64Bound(40), shardmap.Int64Bound(60)
	hold, err := m1.WithMoving("kv", shardmap.Moving{ID: "m1", Lo: lo, Hi: hi, From: "s0", To: "s1", Step: shardmap.MoveHold}, false)
	if err != nil {
		t.Fatal(err)
	}
	hold.Epoch = 2
	if ok, err := p.srv.ApplyMap(hold); !ok || err != nil {
		t.Fatalf("apply the hold: %v %v", ok, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := tx.Exec(context.Background(), `INSERT INTO kv (k, v) VALUES (50, 'tx')`)
		done <- err
	}()
	waitFor(t, func() bool { return metricSample(t, p, "pgshard_interval_held") == 1 })
	rel, err := m1.SetOwner("kv", lo, hi, "s1")
	if err != nil {
		t.Fatal(err)
	}
	rel.Epoch = 3
	if ok, err := p.srv.ApplyMap(rel); !ok || err != nil {
		t.Fatalf("apply the release: %v %v", ok, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("held first statement of the transaction: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first statement of the transaction still waits after the release")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Shards[1].QueryValue(ctx, `SELECT v FROM kv WHERE k = 50`); err != nil || v != "tx" {
		t.Fatalf("row 50 on s1: %q %v", v, err)
	}
	if v, err := c.Shards[0].QueryValue(ctx, `SELECT count(*) FROM kv`); err != nil || v != "0" {
		t.Fatalf("rows on s0: %q %v", v, err)
	}
}
