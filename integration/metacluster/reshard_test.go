package metacluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/ledger"
	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
	"github.com/pgshard/pgshard/wire"
)

// TestReshardWorkflow runs resharding as a DBA would, with the real
// binaries: one `pgshard meta run` member logging in to three real
// servers, of which the map first knows two. `pgshard shards add`
// registers the third (its kv table created from s0); `reshard move
// --cutover auto` moves kv [400, 600) from s0 onto it; the map's owner
// changes, the target has the interval's rows and the source refuses
// writes to them (PS001); a write on the new owner is carried back by
// `reshard rollback`, which restores the routing and the rows; a move
// cancelled while its copy is stuck leaves no slot, publication or
// subscription behind.
func TestReshardWorkflow(t *testing.T) {
	pg := integration.NewCluster(t, integration.Shards(3))
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	s0, s1, s2 := pg.Shards[0], pg.Shards[1], pg.Shards[2]
	for _, s := range []*pgcluster.Server{s0, s1} {
		if err := s.Exec(ctx, "CREATE TABLE kv (id bigint PRIMARY KEY, v text NOT NULL)"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s0.Exec(ctx, "INSERT INTO kv SELECT i, 'v' || i FROM generate_series(1, 999) i"); err != nil {
		t.Fatal(err)
	}
	mc, client := startReshardMeta(t, "20s", metacluster.Members(1))
	two := twoShardKV(s0, s1, shardmap.Range, []shardmap.Interval{
		{Lo: shardmap.NegInf(), Hi: shardmap.Int64Bound(1000), Shard: "s0"},
		{Lo: shardmap.Int64Bound(1000), Hi: shardmap.PosInf(), Shard: "s1"},
	})
	if _, err := client.ApplyMap(ctx, two, 0, "two shards"); err != nil {
		t.Fatal(err)
	}
	cli := metaCLI(t, ctx, mc)
	owner := func(key int64) string {
		t.Helper()
		v, err := client.GetMap(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s, err := v.Map.Distribution("kv").ShardForInt64(key)
		if err != nil {
			t.Fatal(err)
		}
		if mv := v.Map.Distribution("kv").Moving; len(mv) > 0 {
			t.Errorf("epoch %d still holds %s", v.Epoch, shardmap.DescribeMoving(mv))
		}
		return s
	}
	count := func(s *pgcluster.Server, where string) int64 { t.Helper(); return countKV(t, ctx, s, where) }

	// shards add: the new shard owns nothing and has the table.
	code, stdout, stderr := cli("shards", "add", "s2", "--primary", s2.Addr(), "-o", "json")
	var added struct {
		Shard string `json:"shard"`
		Epoch uint64 `json:"epoch"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &added) != nil || added.Shard != "s2" {
		t.Fatalf("shards add: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if v, _ := s2.QueryValue(ctx, "SELECT to_regclass('public.kv') IS NOT NULL"); v != "t" {
		t.Fatalf("shards add did not create kv on s2 (%q)", v)
	}
	if v, err := client.GetMap(ctx); err != nil || v.Epoch != added.Epoch || v.Map.Shard("s2") == nil || owner(450) != "s0" {
		t.Fatalf("after shards add: %+v %v", v, err)
	}
	if code, _, stderr := cli("shards", "add", "s2", "--primary", s2.Addr()); code != 1 || !strings.Contains(stderr, "is in the map already") {
		t.Fatalf("shards add twice: exit %d\n%s", code, stderr)
	}

	// move with an automatic cutover.
	code, stdout, stderr = cli("reshard", "move", "--distribution", "kv", "--interval", "[400,600)", "--to", "s2", "--cutover", "auto", "--id", "mv1", "-o", "json", "--wait", "2m")
	var moved struct {
		ID       string `json:"id"`
		Interval string `json:"interval"`
		State    struct {
			Phase        string `json:"phase"`
			From, To     string
			CutoverEpoch uint64 `json:"cutover_epoch"`
			Progress     struct {
				RowsTotal int64 `json:"rows_total"`
			} `json:"progress"`
			Verify struct {
				Equal, Fenced bool
			} `json:"verify"`
		} `json:"state"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &moved) != nil {
		t.Fatalf("reshard move: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if moved.ID != "mv1" || moved.Interval != "[400, 600)" || moved.State.Phase != "cutover" || moved.State.From != "s0" || moved.State.To != "s2" ||
		moved.State.Progress.RowsTotal != 200 || !moved.State.Verify.Equal || !moved.State.Verify.Fenced {
		t.Fatalf("reshard move printed %s", stdout)
	}
	if o := owner(450); o != "s2" || owner(399) != "s0" || owner(600) != "s0" {
		t.Fatalf("after cutover key 450 is on %s (399 on %s, 600 on %s)", o, owner(399), owner(600))
	}
	if n := count(s2, "id >= 400 AND id < 600"); n != 200 {
		t.Fatalf("the target has %d rows of [400, 600), want 200", n)
	}
	if n := count(s2, "id < 400 OR id >= 600"); n != 0 {
		t.Fatalf("the target has %d rows outside [400, 600)", n)
	}
	if code := pgCode(ctx, t, s0, "UPDATE kv SET v = 'stale' WHERE id = 450"); code != wire.SQLStateIntervalFenced {
		t.Fatalf("a write to the moved interval on the source: SQLSTATE %q, want PS001 (fenced)", code)
	}
	if code := pgCode(ctx, t, s0, "UPDATE kv SET v = 'ok' WHERE id = 100"); code != "" {
		t.Fatalf("a write outside the interval on the source failed: %s", code)
	}
	// The new owner takes a write; status shows the move from the CLI.
	if err := s2.Exec(ctx, "UPDATE kv SET v = 'written on s2' WHERE id = 450"); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := cli("reshard", "status"); code != 0 || !strings.Contains(stdout, "mv1") || !strings.Contains(stdout, "cutover") {
		t.Fatalf("reshard status: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if code, stdout, stderr := cli("reshard", "verify", "--distribution", "kv", "--interval", "[400,600)", "--wait", "1m"); code != 0 || !strings.Contains(stdout, "verify:   equal") {
		t.Fatalf("reshard verify after cutover: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if code, _, stderr := cli("reshard", "cancel", "mv1"); code != 1 || !strings.Contains(stderr, "roll it back first") {
		t.Fatalf("cancel after cutover: exit %d\n%s", code, stderr)
	}

	// rollback: routing and rows back on s0, the write made on s2 kept.
	if code, stdout, stderr := cli("reshard", "rollback", "mv1", "--wait", "2m"); code != 0 {
		t.Fatalf("reshard rollback: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if o := owner(450); o != "s0" {
		t.Fatalf("after rollback key 450 is on %s", o)
	}
	if n := count(s0, "id >= 400 AND id < 600"); n != 200 {
		t.Fatalf("the source has %d rows of [400, 600) after rollback, want 200", n)
	}
	if v, _ := s0.QueryValue(ctx, "SELECT v FROM kv WHERE id = 450"); v != "written on s2" {
		t.Fatalf("after rollback row 450 on s0 is %q: the write made on s2 is lost", v)
	}
	if n := count(s2, "true"); n != 0 {
		t.Fatalf("the target keeps %d rows after rollback", n)
	}
	if code := pgCode(ctx, t, s0, "UPDATE kv SET v = 'back' WHERE id = 450"); code != "" {
		t.Fatalf("the source is still fenced after rollback: %s", code)
	}
	assertNoReplication(ctx, t, s0, s2)

	// cancel while the copy is stuck: a SHARE lock on the target's table
	// holds the initial copy back.
	lock, err := pgx.Connect(ctx, s2.SuperDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close(context.Background())
	tx, err := lock.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE kv IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := cli("reshard", "move", "--distribution", "kv", "--interval", "[600,1000)", "--to", "s2", "--id", "mv2", "--detach"); code != 0 {
		t.Fatalf("reshard move mv2: exit %d\n%s\n%s", code, stdout, stderr)
	}
	ok, why := waitFor(30*time.Second, func() (bool, string) {
		subs := replicationObjects(ctx, t, s2)
		_, out, _ := cli("reshard", "status", "mv2", "-o", "json")
		return strings.Contains(out, `"phase": "copying"`) && slices.Contains(subs, "subscription pgshard_mv_mv2"), out + strings.Join(subs, ",")
	})
	if !ok {
		t.Fatalf("mv2 never copied: %s", why)
	}
	if n := count(s2, "true"); n != 0 {
		t.Fatalf("the copy was not held back: s2 has %d rows", n)
	}
	if code, _, stderr := cli("reshard", "cancel", "mv2", "--detach"); code != 0 {
		t.Fatalf("reshard cancel: exit %d\n%s", code, stderr)
	}
	ok, why = waitFor(30*time.Second, func() (bool, string) {
		_, out, _ := cli("reshard", "status", "mv2", "-o", "json")
		return strings.Contains(out, `"phase": "cancelling"`) || strings.Contains(out, `"phase": "cancelled"`), out
	})
	if !ok {
		t.Fatalf("mv2 never cancelling: %s", why)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := cli("reshard", "cancel", "mv2", "--wait", "1m"); code != 0 && !strings.Contains(stderr, "is cancelled") {
		t.Fatalf("reshard cancel (follow): exit %d\n%s\n%s", code, stdout, stderr)
	}
	ok, why = waitFor(30*time.Second, func() (bool, string) {
		_, out, _ := cli("reshard", "status", "mv2", "-o", "json")
		return strings.Contains(out, `"phase": "cancelled"`), out
	})
	if !ok {
		t.Fatalf("mv2 never cancelled: %s", why)
	}
	assertNoReplication(ctx, t, s0, s2)
	if n := count(s2, "true"); n != 0 {
		t.Fatalf("s2 keeps %d rows after the cancel", n)
	}
	if n := count(s0, "id >= 600 AND id < 1000"); n != 400 || owner(700) != "s0" {
		t.Fatalf("after the cancel s0 has %d rows of [600, 1000), owner %s", n, owner(700))
	}
}

// pgCode runs sql on s as the superuser and returns its SQLSTATE, "" on
// success.
func pgCode(ctx context.Context, t *testing.T, s *pgcluster.Server, sql string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, s.SuperDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	var pe *pgconn.PgError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &pe):
		return pe.Code
	}
	t.Fatalf("%s: %s: %v", s.Name, sql, err)
	return ""
}

// replicationObjects lists s's slots, publications and subscriptions.
func replicationObjects(ctx context.Context, t *testing.T, s *pgcluster.Server) []string {
	t.Helper()
	conn, err := pgx.Connect(ctx, s.SuperDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT 'slot ' || slot_name FROM pg_replication_slots
		UNION ALL SELECT 'publication ' || pubname FROM pg_publication
		UNION ALL SELECT 'subscription ' || subname FROM pg_subscription`)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// assertNoReplication fails when a server keeps a slot, a publication or
// a subscription.
func assertNoReplication(ctx context.Context, t *testing.T, servers ...*pgcluster.Server) {
	t.Helper()
	for _, s := range servers {
		if objs := replicationObjects(ctx, t, s); len(objs) > 0 {
			t.Errorf("%s keeps %s", s.Name, strings.Join(objs, ", "))
		}
	}
}

// TestReshardLeaderKilled kills the meta leader (SIGKILL) twice during a
// move of kv [400, 600) from s0 to s2, each time while a step cannot
// finish: during the copy (a SHARE lock on the target holds it back),
// and during the cutover, after the hold and before the fence (a write
// transaction on the source holds the fence's lock). The next leader
// resumes the move from its record each time: the copy completes, the
// cutover completes with exactly two epochs (hold, new owner), the
// target has the interval's rows and the source is fenced.
func TestReshardLeaderKilled(t *testing.T) {
	pg := integration.NewCluster(t, integration.Shards(3))
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	s0, s2 := pg.Shards[0], pg.Shards[2]
	for _, s := range pg.Shards {
		if err := s.Exec(ctx, "CREATE TABLE kv (id bigint PRIMARY KEY, v text NOT NULL)"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s0.Exec(ctx, "INSERT INTO kv SELECT i, 'v' || i FROM generate_series(1, 999) i"); err != nil {
		t.Fatal(err)
	}
	mc, client := startReshardMeta(t, "60s")
	// kvMap lists every shard of pg; s2 owns no interval.
	first, err := client.ApplyMap(ctx, kvMap(t, pg, 1000), 0, "three shards, s2 empty")
	if err != nil {
		t.Fatal(err)
	}
	state := func() (string, string) {
		mvs, err := client.ListMoves(ctx, metarpc.MoveRef{ID: "mvk"})
		if err != nil || len(mvs) != 1 {
			return "", fmt.Sprint(err)
		}
		var st struct {
			Phase     string `json:"phase"`
			LastError string `json:"last_error"`
		}
		_ = json.Unmarshal(mvs[0].State, &st)
		return st.Phase, st.LastError
	}
	waitPhase := func(want string, d time.Duration) {
		t.Helper()
		ok, why := waitFor(d, func() (bool, string) {
			p, e := state()
			return p == want, p + " " + e
		})
		if !ok {
			t.Fatalf("the move never reached %s: %s", want, why)
		}
	}
	killLeader := func() *metacluster.Member {
		t.Helper()
		leader, err := mc.WaitLeader(ctx, mc.Members...)
		if err != nil {
			t.Fatal(err)
		}
		if err := leader.Kill(); err != nil {
			t.Fatal(err)
		}
		next, err := mc.WaitLeader(ctx, mc.Others(leader)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("killed the leader %s; %s leads", leader.ID, next.ID)
		return leader
	}
	begin := func(s *pgcluster.Server, sql string) pgx.Tx {
		t.Helper()
		conn, err := pgx.Connect(ctx, s.SuperDSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
		return tx
	}

	// 1. During the copy.
	hold := begin(s2, "LOCK TABLE kv IN SHARE MODE")
	if _, err := client.StartMove(ctx, metarpc.MoveRequest{ID: "mvk", Distribution: "kv", Interval: "[400,600)", To: "s2"}); err != nil {
		t.Fatal(err)
	}
	waitPhase("copying", 30*time.Second)
	killed := killLeader()
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitPhase("copied", 60*time.Second)
	if err := killed.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mc.WaitConverged(ctx, mc.Members...); err != nil {
		t.Fatal(err)
	}

	// 2. During the cutover: held, the fence waits for a writer.
	writer := begin(s0, "UPDATE kv SET v = 'busy' WHERE id = 1")
	if _, err := client.ReshardAction(ctx, metarpc.MoveRef{ID: "mvk"}, "cutover", false); err != nil {
		t.Fatal(err)
	}
	waitPhase("held", 30*time.Second)
	killLeader()
	if err := writer.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitPhase("cutover", 90*time.Second)

	v, err := client.GetMap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.Epoch != first+3 {
		t.Errorf("map at epoch %d, want %d: the target's stale rows, the hold and the new owner once each", v.Epoch, first+3)
	}
	d := v.Map.Distribution("kv")
	if owner, _ := d.ShardForInt64(450); owner != "s2" || len(d.Moving) != 0 {
		t.Fatalf("after the cutover key 450 is on %s, moving %s", owner, shardmap.DescribeMoving(d.Moving))
	}
	if n, _ := s2.QueryValue(ctx, "SELECT count(*) FROM kv WHERE id >= 400 AND id < 600"); n != "200" {
		t.Fatalf("the target has %s rows of the interval, want 200", n)
	}
	if code := pgCode(ctx, t, s0, "DELETE FROM kv WHERE id = 450"); code != wire.SQLStateIntervalFenced {
		t.Fatalf("a write to the moved interval on the source: %q, want PS001", code)
	}
}

// TestReshardDeadProxyDelaysCutover: a real `pgshard proxy` process
// following meta is frozen (SIGSTOP) after the copy, the cutover is
// asked for, and once the cutover waits in its hold step for the
// proxies' acknowledgements the frozen proxy is killed (SIGKILL): a dead
// proxy mid-hold. The cutover completes once its lease (the default
// 10 s) runs out, and not much later. Writers through a surviving
// in-process proxy keep going all along: the interval's statements are
// held (past buffer.window they fail with 08006, retryable), the other
// keys flow (gap under 200 ms, no error), and afterwards the target's
// rows of the interval and the source's other rows equal their ledger.
func TestReshardDeadProxyDelaysCutover(t *testing.T) {
	pg := integration.NewCluster(t, integration.Shards(3))
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	for _, s := range pg.Shards {
		if err := s.Exec(ctx, "CREATE TABLE kv (id bigint PRIMARY KEY, v text NOT NULL)"); err != nil {
			t.Fatal(err)
		}
	}
	if err := pg.Shards[0].Exec(ctx, "INSERT INTO kv SELECT i, 'v' || i FROM generate_series(1, 999) i"); err != nil {
		t.Fatal(err)
	}
	mc, client := startReshardMeta(t, "40s", metacluster.Members(1))
	if _, err := client.ApplyMap(ctx, kvMap(t, pg, 1000), 0, "three shards, s2 empty"); err != nil {
		t.Fatal(err)
	}

	// The proxy process that dies, and the in-process one that survives.
	dir := t.TempDir()
	cfg := proxyConfig(t, pg)
	var err error
	if cfg.Listen, err = metacluster.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	if cfg.AdminListen, err = metacluster.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	cfgFile := dir + "/pgshard.yaml"
	metacluster.WriteProxyConfig(t, cfgFile, cfg)
	doomed := metacluster.StartProxyProcess(t, ctx, pgshardBin, dir+"/proxy.log", cfg,
		[]string{"proxy", "--config", cfgFile, "--meta", mc.Members[0].APIAddr, "--meta-token", mc.Token, "--proxy-id", "doomed"})
	survivor := startFollowingProxy(t, pg, mc.Addrs(), mc.ClientOptions(), "survivor")
	if ok, why := waitFor(15*time.Second, func() (bool, string) {
		list, err := client.ListProxies(ctx)
		if err != nil {
			return false, err.Error()
		}
		return len(list) == 2, fmt.Sprintf("%+v", list)
	}); !ok {
		t.Fatalf("both proxies never registered: %s", why)
	}

	keys := func(lo, hi, step, off int64) []int64 {
		var out []int64
		for k := lo + off; k < hi; k += step {
			out = append(out, k)
		}
		return out
	}
	seeded := func(k int64) (string, bool) { return fmt.Sprintf("v%d", k), k < 1000 }
	mk := func(name, dsn string, ks []int64) *ledger.Writer {
		return ledger.New(t, ctx, name, dsn, ledger.KV, ks, seeded)
	}
	inside := []*ledger.Writer{mk("in-a", survivor.DSN(""), keys(400, 600, 2, 0)), mk("in-b", survivor.DSN(""), keys(400, 600, 2, 1))}
	outside := []*ledger.Writer{mk("out-s0", survivor.DSN(""), keys(100, 300, 1, 0)), mk("out-s1", survivor.DSN(""), keys(2000, 2200, 1, 0))}
	// A writer through the doomed proxy, on keys of its own (its last
	// statement's outcome is unknown when the proxy dies).
	lost := mk("doomed", doomed.DSN(""), keys(3000, 3100, 1, 0))
	stopLost := ledger.Start(ctx, lost)

	phase := func() string {
		mvs, err := client.ListMoves(ctx, metarpc.MoveRef{ID: "mvp"})
		if err != nil || len(mvs) != 1 {
			return fmt.Sprint(err)
		}
		var st struct {
			Phase string `json:"phase"`
		}
		_ = json.Unmarshal(mvs[0].State, &st)
		return st.Phase
	}
	if _, err := client.StartMove(ctx, metarpc.MoveRequest{ID: "mvp", Distribution: "kv", Interval: "[400,600)", To: "s2"}); err != nil {
		t.Fatal(err)
	}
	if ok, why := waitFor(60*time.Second, func() (bool, string) { p := phase(); return p == "copied", p }); !ok {
		t.Fatalf("never copied: %s", why)
	}
	stop := ledger.Start(ctx, append(append([]*ledger.Writer{}, inside...), outside...)...)
	time.Sleep(300 * time.Millisecond) // writes before the cutover, not synchronisation

	// Frozen, the proxy no longer heartbeats nor acknowledges epochs.
	if err := doomed.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	if _, err := client.ReshardAction(ctx, metarpc.MoveRef{ID: "mvp"}, "cutover", false); err != nil {
		t.Fatal(err)
	}
	if ok, why := waitFor(30*time.Second, func() (bool, string) { p := phase(); return p == "hold", p }); !ok {
		t.Fatalf("the cutover never reached its hold step: %s", why)
	}
	if err := doomed.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	sawHold := false
	ok, why := waitFor(60*time.Second, func() (bool, string) {
		p := phase()
		if p == "hold" && time.Since(frozen) > 5*time.Second {
			sawHold = true
		}
		return p == "cutover", p
	})
	took := time.Since(frozen)
	time.Sleep(300 * time.Millisecond) // writes after the cutover, routed to s2
	stop()
	stopLost()
	if !ok {
		t.Fatalf("never cut over: %s", why)
	}
	t.Logf("cut over %s after the proxy froze (killed %s after it froze); the doomed proxy's writer: %d writes, ended by %v",
		took.Round(10*time.Millisecond), killed.Sub(frozen).Round(10*time.Millisecond), lost.Writes(), lost.Err)
	// The lease runs from the proxy's last heartbeat, at most its
	// heartbeat interval before it froze.
	if !sawHold || took > 16*time.Second {
		t.Errorf("cutover %s after the proxy froze (still in hold 5 s after it froze: %v); want it held until the 10 s lease ran out, and not much longer", took, sawHold)
	}
	// The survivor's held statements waited past buffer.window (10 s)
	// at most once per writer: they may fail with 08006, retryable.
	ledger.Check(t, inside, outside, 16*time.Second, 200*time.Millisecond)
	if held := heldStatements(survivor); held == 0 {
		t.Error("the surviving proxy held no statement during the cutover")
	}
	s0, s1, s2 := pg.Shards[0], pg.Shards[1], pg.Shards[2]
	compareLedger(t, "s2's rows of [400, 600)", kvRows(t, ctx, s2, "id >= 400 AND id < 600"), nil, inside...)
	compareLedger(t, "s0's rows of [100, 300)", kvRows(t, ctx, s0, "id >= 100 AND id < 300"), nil, outside[0])
	compareLedger(t, "s1's rows of [2000, 2200)", kvRows(t, ctx, s1, "id >= 2000 AND id < 2200"), nil, outside[1])
}
