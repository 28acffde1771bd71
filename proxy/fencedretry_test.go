package proxy_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
)

// fenceKV installs on srv a fence like the resharding workflow's: a
// write to a row of kv with k in [lo, hi) fails with PS001.
func fenceKV(t *testing.T, ctx context.Context, exec func(context.Context, string) error, lo, hi int) {
	t.Helper()
	sql := `CREATE FUNCTION kv_fence() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  IF TG_OP <> 'DELETE' AND NEW.k >= ` + itoa(lo) + ` AND NEW.k < ` + itoa(hi) + ` OR TG_OP <> 'INSERT' AND OLD.k >= ` + itoa(lo) + ` AND OLD.k < ` + itoa(hi) + ` THEN
    RAISE EXCEPTION USING ERRCODE = 'PS001', MESSAGE = 'write refused: interval fenced';
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END $f$;
CREATE TRIGGER kv_fence BEFORE INSERT OR UPDATE OR DELETE ON kv FOR EACH ROW EXECUTE FUNCTION kv_fence();`
	if err := exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestFencedRetry: kv [40, 60) is fenced on s0 (as the resharding
// workflow fences a moving interval) while the proxy still has the map
// from before the move's hold. Autocommit writes for the interval — a
// simple query, an extended-protocol statement prepared by name and one
// with the unnamed statement — reach s0 and fail there with PS001: the
// proxy keeps them (the client sees nothing), through the map that holds
// the interval, and sends them to s1 when the map that gives it to s1
// arrives; every client gets success and the rows are on s1 only. A
// PS001 inside an explicit transaction reaches the client at once (the
// transaction is aborted; only the client can retry it), and so does the
// autocommit PS001 once buffer.window passes without a newer map (a
// second proxy with a short window).
func TestFencedRetry(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.Buffer.Window = proxy.Duration(20 * time.Second)
	p := startProxy(t, cfg)
	short := kvMapConfig(t, c)
	short.Buffer.Window = proxy.Duration(500 * time.Millisecond)
	ps := startProxy(t, short)
	ctx := ctxT(t)
	createKV(t, ctx, c.Shards)
	fenceKV(t, ctx, c.Shards[0].Exec, 40, 60)
	m1 := readMap(t, cfg.ShardMapFile)

	// In an explicit transaction the PS001 reaches the client at once.
	txc := connect(t, p.dsn(""))
	tx, err := txc.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'tx')`, 45)
	if code := sqlState(err); code != wire.SQLStateIntervalFenced {
		t.Fatalf("a fenced write in a transaction: %v (SQLSTATE %q), want PS001", err, code)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the PS001 in a transaction took %s: it was kept, not passed on", d)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// The simple protocol too, inside BEGIN ... in one query.
	if _, err := txc.Exec(ctx, `BEGIN`); err != nil {
		t.Fatal(err)
	}
	err = txc.PgConn().Exec(ctx, `INSERT INTO kv (k, v) VALUES (46, 'tx')`).Close()
	if code := sqlState(err); code != wire.SQLStateIntervalFenced {
		t.Fatalf("a fenced simple-query write in a transaction: %v (SQLSTATE %q), want PS001", err, code)
	}
	if _, err := txc.Exec(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}

	// Without a newer map within buffer.window, the autocommit PS001
	// reaches the client after the window.
	sc := connect(t, ps.dsn(""))
	start = time.Now()
	_, err = sc.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'short')`, 47)
	if code := sqlState(err); code != wire.SQLStateIntervalFenced {
		t.Fatalf("a fenced autocommit write with no newer map: %v (SQLSTATE %q), want PS001", err, code)
	}
	if d := time.Since(start); d < 400*time.Millisecond || d > 5*time.Second {
		t.Errorf("the autocommit PS001 came after %s, want after buffer.window (500ms)", d)
	}
	if _, err := sc.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'short')`, 7); err != nil {
		t.Fatalf("the session after a PS001 given up: %v", err)
	}

	// Autocommit writes for the interval, with the old map: kept.
	type result struct {
		what string
		err  error
	}
	done := make(chan result, 4)
	simple := connect(t, p.dsn(""))
	named := connect(t, p.dsn(""))
	unnamed := connect(t, p.dsn(""))
	outside := connect(t, p.dsn(""))
	go func() {
		done <- result{"simple query", simple.PgConn().Exec(context.Background(), `INSERT INTO kv (k, v) VALUES (50, 'simple')`).Close()}
	}()
	go func() {
		_, err := named.Exec(context.Background(), `INSERT INTO kv (k, v) VALUES ($1, $2)`, 51, "named")
		done <- result{"prepared statement", err}
	}()
	go func() {
		_, err := unnamed.Exec(context.Background(), `INSERT INTO kv (k, v) VALUES ($1, $2)`, pgx.QueryExecModeExec, 52, "unnamed")
		done <- result{"unnamed statement", err}
	}()
	waitFor(t, func() bool { return metricSample(t, p, "pgshard_interval_fenced_retries_total") >= 3 })
	// Other keys of s0 flow meanwhile.
	if _, err := outside.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'out')`, 30); err != nil {
		t.Fatalf("a write outside the fenced interval: %v", err)
	}
	hold, err := m1.WithMoving("kv", shardmap.Moving{ID: "m1", Lo: shardmap.Int64Bound(40), Hi: shardmap.Int64Bound(60), From: "s0", To: "s1", Step: shardmap.MoveHold}, false)
	if err != nil {
		t.Fatal(err)
	}
	hold.Epoch = 2
	if ok, err := p.srv.ApplyMap(hold); !ok || err != nil {
		t.Fatalf("apply the hold: %v %v", ok, err)
	}
	// Sent again under the hold map, they are held there now.
	waitFor(t, func() bool { return metricSample(t, p, "pgshard_interval_held") == 3 })
	select {
	case r := <-done:
		t.Fatalf("the %s ended during the hold: %v", r.what, r.err)
	default:
	}
	rel, err := m1.SetOwner("kv", shardmap.Int64Bound(40), shardmap.Int64Bound(60), "s1")
	if err != nil {
		t.Fatal(err)
	}
	rel.Epoch = 3
	if ok, err := p.srv.ApplyMap(rel); !ok || err != nil {
		t.Fatalf("apply the release: %v %v", ok, err)
	}
	for range 3 {
		select {
		case r := <-done:
			if r.err != nil {
				t.Errorf("the %s: %v (SQLSTATE %q), want success", r.what, r.err, sqlState(r.err))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a write still waits after the release")
		}
	}
	for k, want := range map[int]string{50: "simple", 51: "named", 52: "unnamed"} {
		if v, err := c.Shards[1].QueryValue(ctx, `SELECT v FROM kv WHERE k = `+itoa(k)); err != nil || v != want {
			t.Errorf("key %d on s1: %q %v, want %q", k, v, err, want)
		}
	}
	if v, err := c.Shards[0].QueryValue(ctx, `SELECT count(*) FROM kv WHERE k >= 40 AND k < 60`); err != nil || v != "0" {
		t.Errorf("rows of [40, 60) on the fenced s0: %q %v, want 0", v, err)
	}
	// Each was kept once and held once.
	if n := metricSample(t, p, "pgshard_interval_fenced_retries_total"); n != 3 {
		t.Errorf("pgshard_interval_fenced_retries_total = %v, want 3", n)
	}
	if n := metricSample(t, p, "pgshard_interval_hold_statements_total"); n != 3 {
		t.Errorf("pgshard_interval_hold_statements_total = %v, want 3", n)
	}
	// The sessions go on.
	for _, conn := range []*pgx.Conn{simple, named, unnamed} {
		if _, err := conn.Exec(ctx, `UPDATE kv SET v = v || '+' WHERE k = $1`, 50); err != nil {
			t.Errorf("a statement after the retried one: %v", err)
		}
	}
	if v, err := c.Shards[1].QueryValue(ctx, `SELECT v FROM kv WHERE k = 50`); err != nil || v != "simple+++" {
		t.Errorf("key 50 on s1 after three updates: %q %v", v, err)
	}
}
