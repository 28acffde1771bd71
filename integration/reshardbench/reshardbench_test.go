// Package reshardbench measures online resharding (make bench-reshard)
// with the real pieces: three PostgreSQL 15 servers, one `pgshard meta
// run` member (its leader drives the moves), two proxies following it
// (in the test process, with the writers), and moves started through the
// meta API as `pgshard reshard move --cutover auto` does. In one run:
//
//   - a plain `COPY (SELECT ... WHERE interval) TO STDOUT | COPY ... FROM
//     STDIN` of the big interval between the source and the target, before
//     and after the move (the machine's noise shows in the two);
//   - the move of that interval with writers going on: the initial copy's
//     throughput (rows/s, MB/s of COPY text) and its ratio to the plain
//     copy, the catch-up after the copy, the cutover;
//   - CUTOVERS moves of a small interval to another shard and back
//     (`reshard rollback`): the pause each cutover and rollback makes,
//     i.e. the longest gap between acknowledged writes of the writers in
//     the moving interval (through the proxies) overlapping the cutover
//     (hold epoch to the new owner acknowledged), the longest gap of the
//     writers outside it, and the statements the proxies held
//     (pgshard_interval_hold_*).
//
// The writers keep a ledger of acknowledged writes, checked against the
// servers at the end: the benchmark fails when a write is lost.
//
// It runs only when PGSHARD_RESHARDBENCH is set, and prints the Markdown
// section of docs/benchmarks.md. Settings (environment):
// PGSHARD_RESHARDBENCH_ROWS (rows of the big interval, default 1000000),
// PGSHARD_RESHARDBENCH_CUTOVERS (default 5), PGSHARD_RESHARDBENCH_SMALL_ROWS
// (rows of the small interval, default 10000).
package reshardbench_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/ledger"
	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/replication/reshard"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// The key space of distribution kv: s0 owns [-inf, 10^12), s1 the rest.
// The big interval [1, 10^9) holds ROWS rows (ids 1..ROWS) and its
// writers' keys; the small interval [2·10^9, 3·10^9) SMALL_ROWS rows
// from 2·10^9 and its writers' keys; the other writers write on s0
// outside both (5·10^9) and on s1 (2·10^12).
const (
	bigLo, bigHi     = int64(1), int64(1_000_000_000)
	smallLo, smallHi = int64(2_000_000_000), int64(3_000_000_000)
	splitS1          = int64(1_000_000_000_000)
	// writerKeys is how many keys each writer cycles through.
	writerKeys = 200
	// proxyHeartbeat is the proxies' heartbeat to meta: pgshard proxy's.
	proxyHeartbeat = 2 * time.Second
	// cutoverTimeout is the meta member's --reshard-cutover-timeout: long
	// enough for the big interval's cutover, whose fenced verify reads
	// every row of the interval on both sides while the proxies hold it
	// (the default 30 s aborts a cutover of a million rows here).
	cutoverTimeout = 3 * time.Minute
)

const tableCols = "(id bigint PRIMARY KEY, n int NOT NULL, body text, at timestamptz)"

func TestReshardBench(t *testing.T) {
	if os.Getenv("PGSHARD_RESHARDBENCH") == "" {
		t.Skip("set PGSHARD_RESHARDBENCH=1 (make bench-reshard)")
	}
	rows := int64(envInt("PGSHARD_RESHARDBENCH_ROWS", 1_000_000))
	cutovers := envInt("PGSHARD_RESHARDBENCH_CUTOVERS", 5)
	smallRows := int64(envInt("PGSHARD_RESHARDBENCH_SMALL_ROWS", 10_000))
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	began := time.Now()

	pg := integration.NewCluster(t, integration.Shards(3), integration.Settings(map[string]string{"shared_buffers": "128MB", "max_wal_size": "1GB"}))
	s0, s1, s2 := pg.Shards[0], pg.Shards[1], pg.Shards[2]
	for _, s := range []*pgcluster.Server{s0, s1} {
		if err := s.Exec(ctx, "CREATE TABLE kv "+tableCols); err != nil {
			t.Fatal(err)
		}
	}
	fill := func(from, n int64) string {
		return fmt.Sprintf(`INSERT INTO kv SELECT g, g %% 1000, md5(g::text) || repeat('y', 68),
			'2026-01-01'::timestamptz + (g %% 100000000) * interval '1 second' FROM generate_series(%d, %d) g`, from, from+n-1)
	}
	for _, sql := range []string{fill(bigLo, rows), fill(smallLo, smallRows), "VACUUM ANALYZE kv"} {
		if err := s0.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if err := s2.Exec(ctx, "CREATE SCHEMA plain; CREATE TABLE plain.kv "+tableCols); err != nil {
		t.Fatal(err)
	}
	t.Logf("tables filled (%d + %d rows) in %s", rows, smallRows, time.Since(began).Round(time.Millisecond))

	mc := metacluster.Start(t, pgshardBin, metacluster.Members(1),
		metacluster.Args("--pg-user", pgcluster.SuperuserName, "--pg-sslmode", "disable", "--no-failover", "--reshard-cutover-timeout", cutoverTimeout.String()),
		metacluster.Environ("PGSHARD_META_PG_PASSWORD="+pgcluster.SuperuserPassword))
	client := mc.Client(t)
	m := &shardmap.Map{Epoch: 1, Tables: []shardmap.Table{{Name: "public.kv", Kind: shardmap.Sharded, KeyColumn: "id", Distribution: "kv"}}}
	for i, s := range []*pgcluster.Server{s0, s1} {
		m.Shards = append(m.Shards, shardmap.Shard{Name: "s" + strconv.Itoa(i), Primary: shardmap.Endpoint{Host: s.Host, Port: s.Port}, State: shardmap.StateActive})
	}
	m.Distributions = []shardmap.Distribution{{Name: "kv", KeyType: shardmap.KeyBigint, Strategy: shardmap.Range, Intervals: []shardmap.Interval{
		{Lo: shardmap.NegInf(), Hi: shardmap.Int64Bound(splitS1), Shard: "s0"},
		{Lo: shardmap.Int64Bound(splitS1), Hi: shardmap.PosInf(), Shard: "s1"},
	}}}
	if _, err := client.ApplyMap(ctx, m, 0, "two shards"); err != nil {
		t.Fatal(err)
	}
	if _, err := client.AddShard(ctx, "s2", s2.Addr(), nil); err != nil {
		t.Fatal(err)
	}
	proxies := []*testproxy.Proxy{
		metacluster.StartFollowingProxy(t, proxyConfig(t, pg), mc.Addrs(), mc.ClientOptions(), "pa", proxyHeartbeat),
		metacluster.StartFollowingProxy(t, proxyConfig(t, pg), mc.Addrs(), mc.ClientOptions(), "pb", proxyHeartbeat),
	}

	// The writers: two in each moving interval (one per proxy), one on
	// s0 outside both, one on s1.
	mk := func(name string, p *testproxy.Proxy, first int64) *ledger.Writer {
		var keys []int64
		for k := range int64(writerKeys) {
			keys = append(keys, first+k)
		}
		return ledger.New(t, ctx, name, p.DSN(""), kvStatements, keys, nil)
	}
	bigWriters := []*ledger.Writer{mk("big-a", proxies[0], bigHi-2*writerKeys), mk("big-b", proxies[1], bigHi-writerKeys)}
	smallWriters := []*ledger.Writer{mk("small-a", proxies[0], smallHi-2*writerKeys), mk("small-b", proxies[1], smallHi-writerKeys)}
	outWriters := []*ledger.Writer{mk("out-s0", proxies[1], 5_000_000_000), mk("out-s1", proxies[0], 2*splitS1)}
	all := slices.Concat(bigWriters, smallWriters, outWriters)
	stopWriters := ledger.Start(ctx, all...)
	defer stopWriters()

	// 1. Plain copy, the move, plain copy again.
	filter := fmt.Sprintf("id >= %d AND id < %d", bigLo, bigHi)
	plain1, err := plainCopy(ctx, s0, s2, filter)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("plain copy: %d rows, %d bytes in %s", plain1.rows, plain1.bytes, plain1.took.Round(time.Millisecond))

	big := measureMove(ctx, t, client, s2, proxies, "big", fmt.Sprintf("[%d,%d)", bigLo, bigHi), "s2")
	t.Logf("big move: copy %s (from start %s), ready %s, cutover at %s", big.copyEnd.Sub(big.copyStart).Round(time.Millisecond),
		big.copyEnd.Sub(big.start).Round(time.Millisecond), big.ready.Sub(big.start).Round(time.Millisecond), big.cutEnd.Sub(big.start).Round(time.Millisecond))
	plain2, err := plainCopy(ctx, s0, s2, filter)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("plain copy again: %d rows in %s", plain2.rows, plain2.took.Round(time.Millisecond))

	// 2. The small interval to s1 and back, CUTOVERS times.
	var switches []*cutoverRun
	for i := range cutovers {
		id := "c" + strconv.Itoa(i+1)
		fw := measureMove(ctx, t, client, s1, proxies, id, fmt.Sprintf("[%d,%d)", smallLo, smallHi), "s1")
		switches = append(switches, &fw.cutoverRun)
		back := measureRollback(ctx, t, client, proxies, id)
		switches = append(switches, back)
		t.Logf("%s: cutover %s, rollback %s", id, fw.cutEnd.Sub(fw.cutStart).Round(time.Millisecond), back.cutEnd.Sub(back.cutStart).Round(time.Millisecond))
	}
	stopWriters()

	// The writers: no error but the documented retryable ones, and the
	// ledger equals the servers.
	for _, w := range all {
		t.Logf("%s: %d acknowledged writes, retryable errors %v", w.Name, len(w.Acks), w.Retryable)
		if w.Err != nil {
			t.Error(w.Err)
		}
		if len(w.Acks) == 0 {
			t.Errorf("%s: no acknowledged write", w.Name)
		}
	}
	for _, w := range outWriters {
		if len(w.Retryable) > 0 {
			t.Errorf("%s (outside the moving intervals): errors %v", w.Name, w.Retryable)
		}
	}
	for _, c := range []struct {
		s  *pgcluster.Server
		ws []*ledger.Writer
	}{{s2, bigWriters}, {s0, smallWriters}, {s0, outWriters[:1]}, {s1, outWriters[1:]}} {
		for _, w := range c.ws {
			if err := check(ctx, w, c.s); err != nil {
				t.Error(err)
			}
		}
	}
	big.gaps(bigWriters, slices.Concat(smallWriters, outWriters))
	for _, c := range switches {
		c.gaps(smallWriters, slices.Concat(bigWriters, outWriters))
	}
	if t.Failed() {
		return
	}
	fmt.Print(report(reportInput{rows: rows, smallRows: smallRows, plain: []copyRun{plain1, plain2}, big: big, switches: switches,
		writers: all, took: time.Since(began)}))
}

// proxyConfig is testproxy's configuration with every shard of pg.
func proxyConfig(t testing.TB, pg *pgcluster.Cluster) *proxy.Config {
	cfg := testproxy.Config(t, pg.Shards[0])
	cfg.Shards = nil
	for i, s := range pg.Shards {
		cfg.Shards = append(cfg.Shards, proxy.ShardConfig{Name: "s" + strconv.Itoa(i), Host: s.Host, Port: s.Port})
	}
	return cfg
}

// kvStatements are the writers' statements on kv (id, n, body).
var kvStatements = ledger.Statements{
	Insert: `INSERT INTO kv (id, n, body) VALUES ($1, 0, $2)`,
	Delete: `DELETE FROM kv WHERE id = $1 AND body = $2`,
	Update: `UPDATE kv SET body = $2, n = n + 1 WHERE id = $1 AND body = $3`,
}

// check compares the writer's keys on s with its ledger.
func check(ctx context.Context, w *ledger.Writer, s *pgcluster.Server) error {
	conn, err := pgx.Connect(ctx, s.SuperDSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	r, err := conn.Query(ctx, "SELECT id, body FROM kv WHERE id >= $1 AND id <= $2", w.Keys[0], w.Keys[len(w.Keys)-1])
	if err != nil {
		return err
	}
	got := map[int64]string{}
	for r.Next() {
		var k int64
		var v string
		if err := r.Scan(&k, &v); err != nil {
			return err
		}
		got[k] = v
	}
	if err := r.Err(); err != nil {
		return err
	}
	if diff := ledger.Diff(w.Ledger, got); len(diff) > 0 {
		return fmt.Errorf("%s: %s differs from the ledger in %d keys: %s", w.Name, s.Name, len(diff), ledger.Summary(diff, 5))
	}
	return nil
}

// copyRun is one plain COPY | COPY.
type copyRun struct {
	rows, bytes int64
	took        time.Duration
}

// plainCopy empties plain.kv on to and copies the rows of kv matching
// filter from from into it: COPY (SELECT ...) TO STDOUT piped into COPY
// FROM STDIN, as the move's initial copy does it.
func plainCopy(ctx context.Context, from, to *pgcluster.Server, filter string) (copyRun, error) {
	if err := to.Exec(ctx, "TRUNCATE plain.kv"); err != nil {
		return copyRun{}, err
	}
	in, err := pgx.Connect(ctx, from.SuperDSN("postgres"))
	if err != nil {
		return copyRun{}, err
	}
	defer in.Close(context.Background())
	out, err := pgx.Connect(ctx, to.SuperDSN("postgres"))
	if err != nil {
		return copyRun{}, err
	}
	defer out.Close(context.Background())
	pr, pw := io.Pipe()
	type res struct {
		n   int64
		err error
	}
	done := make(chan res, 1)
	start := time.Now()
	go func() {
		tag, err := in.PgConn().CopyTo(ctx, pw, "COPY (SELECT * FROM kv WHERE "+filter+") TO STDOUT")
		pw.CloseWithError(err)
		done <- res{tag.RowsAffected(), err}
	}()
	cr := &countingReader{r: pr}
	tag, err := out.PgConn().CopyFrom(ctx, cr, "COPY plain.kv FROM STDIN")
	_ = pr.CloseWithError(io.ErrClosedPipe) // unblocks the writer if CopyFrom failed
	r := <-done
	if err != nil || r.err != nil {
		return copyRun{}, fmt.Errorf("plain copy: %w", errors.Join(err, r.err))
	}
	if tag.RowsAffected() != r.n {
		return copyRun{}, fmt.Errorf("plain copy: %d rows out, %d in", r.n, tag.RowsAffected())
	}
	return copyRun{rows: r.n, bytes: cr.n, took: time.Since(start)}, nil
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

// cutoverRun is one cutover (or rollback) and what the writers saw.
type cutoverRun struct {
	what string
	// cutStart is the hold epoch's commit (the phase hold or
	// rollback-hold), cutEnd when every proxy acknowledged the new owner
	// (the phase after the switch).
	cutStart, cutEnd time.Time
	// held, holdSeconds and holdTimeouts are the proxies' hold metrics
	// over the cutover.
	held, holdSeconds, holdTimeouts float64
	// inside and outside are the longest gaps between acknowledged
	// writes overlapping [cutStart, cutEnd] of the writers in the moving
	// interval and outside it.
	inside, outside time.Duration
	// errors counts the retryable errors of the writers in the moving
	// interval from a second before cutStart to a second after cutEnd, by
	// SQLSTATE.
	errors map[string]int
	// events is the move's history, first, last the cutover's phases.
	events      []reshard.Event
	first, last reshard.Phase
}

// slowest is the cutover's longest step: the phase and the time it took
// to reach it from the previous one.
func (c *cutoverRun) slowest() string {
	var prev time.Time
	var name reshard.Phase
	var d time.Duration
	for _, e := range c.events {
		switch {
		case e.Phase == c.first:
			prev = e.At
		case !prev.IsZero():
			if e.At.Sub(prev) > d {
				name, d = e.Phase, e.At.Sub(prev)
			}
			prev = e.At
			if e.Phase == c.last {
				return fmt.Sprintf("%s %s", name, ms(d))
			}
		}
	}
	return fmt.Sprintf("%s %s", name, ms(d))
}

func (c *cutoverRun) gaps(in, out []*ledger.Writer) {
	c.errors = map[string]int{}
	for _, w := range in {
		c.inside = max(c.inside, w.GapOver(c.cutStart, c.cutEnd))
		for _, f := range w.Failed {
			if f.At >= c.cutStart.Add(-time.Second).UnixNano() && f.At <= c.cutEnd.Add(time.Second).UnixNano() {
				c.errors[f.Code]++
			}
		}
	}
	for _, w := range out {
		c.outside = max(c.outside, w.GapOver(c.cutStart, c.cutEnd))
	}
}

// moveRun is a move's measurements.
type moveRun struct {
	cutoverRun
	rowsTotal int64
	// start: the move was asked for; copyStart, copyEnd: first seen the
	// target's table in state copying and past it (pg_subscription_rel,
	// polled every 20 ms); ready: every table streamed by the apply
	// worker (state ready).
	start, copyStart, copyEnd, ready time.Time
	// copied is the workflow's phase copied (its event).
	copied time.Time
}

// holdMetrics is the proxies' hold metrics, summed.
func holdMetrics(proxies []*testproxy.Proxy) (statements, seconds, timeouts float64) {
	for _, p := range proxies {
		rec := httptest.NewRecorder()
		p.Server.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		for line := range strings.SplitSeq(rec.Body.String(), "\n") {
			name, v, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			switch name {
			case "pgshard_interval_hold_statements_total":
				statements += f
			case "pgshard_interval_hold_seconds_sum":
				seconds += f
			case "pgshard_interval_hold_timeouts_total":
				timeouts += f
			}
		}
	}
	return statements, seconds, timeouts
}

// moveState reads move id's state.
func moveState(ctx context.Context, client *metarpc.Client, id string) (reshard.State, error) {
	mvs, err := client.ListMoves(ctx, metarpc.MoveRef{ID: id})
	if err != nil {
		return reshard.State{}, err
	}
	if len(mvs) != 1 {
		return reshard.State{}, fmt.Errorf("%d moves named %s", len(mvs), id)
	}
	var st reshard.State
	if err := json.Unmarshal(mvs[0].State, &st); err != nil {
		return reshard.State{}, fmt.Errorf("move %s: %w", id, err)
	}
	return st, nil
}

// waitPhase polls move id until its phase is want; any other terminal
// phase, or an error recorded while an abort runs, fails.
func waitPhase(ctx context.Context, t *testing.T, client *metarpc.Client, id string, want reshard.Phase, timeout time.Duration) reshard.State {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := moveState(ctx, client, id)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case st.Phase == want:
			return st
		case st.Phase.Terminal(), st.Phase == reshard.PhaseAborting, st.Phase == reshard.PhaseRollbackAborting:
			t.Fatalf("move %s is %s, waiting for %s (last error: %s)", id, st.Phase, want, st.LastError)
		case time.Now().After(deadline):
			t.Fatalf("move %s is still %s after %s, waiting for %s (last error: %s)", id, st.Phase, timeout, want, st.LastError)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// eventAt is the time of the first event of phase p at or after from (zero
// if none).
func eventAt(evs []reshard.Event, p reshard.Phase) time.Time {
	for _, e := range evs {
		if e.Phase == p {
			return e.At
		}
	}
	return time.Time{}
}

// measureMove moves interval of kv to shard to with an automatic
// cutover, following the initial copy on the target tgt, and returns the
// timings once the move is cut over.
func measureMove(ctx context.Context, t *testing.T, client *metarpc.Client, tgt *pgcluster.Server, proxies []*testproxy.Proxy, id, interval, to string) *moveRun {
	t.Helper()
	r := &moveRun{cutoverRun: cutoverRun{what: "cutover"}}
	held0, secs0, to0 := holdMetrics(proxies)
	poll, stopPoll := context.WithCancel(ctx)
	defer stopPoll() // also when waitPhase fails the test
	polled := make(chan error, 1)
	go func() { polled <- r.followCopy(poll, tgt, reshard.NamesFor(id, false).Subscription) }()
	r.start = time.Now()
	if _, err := client.StartMove(ctx, metarpc.MoveRequest{ID: id, Distribution: "kv", Interval: interval, To: to, Cutover: string(reshard.CutoverAuto)}); err != nil {
		stopPoll()
		t.Fatal(err)
	}
	st := waitPhase(ctx, t, client, id, reshard.PhaseCutOver, 5*time.Minute)
	stopPoll()
	if err := <-polled; err != nil {
		t.Fatal(err)
	}
	held1, secs1, to1 := holdMetrics(proxies)
	r.held, r.holdSeconds, r.holdTimeouts = held1-held0, secs1-secs0, to1-to0
	r.rowsTotal, r.events, r.first, r.last = st.Progress.RowsTotal, st.Events, reshard.PhaseHold, reshard.PhaseCutOver
	r.copied = eventAt(st.Events, reshard.PhaseCopied)
	r.cutStart, r.cutEnd = eventAt(st.Events, reshard.PhaseHold), eventAt(st.Events, reshard.PhaseCutOver)
	if r.cutStart.IsZero() || r.cutEnd.IsZero() || r.copyEnd.IsZero() || r.ready.IsZero() {
		t.Fatalf("move %s: missing times (hold %v, cutover %v, copy end %v, ready %v); events %+v", id, r.cutStart, r.cutEnd, r.copyEnd, r.ready, st.Events)
	}
	return r
}

// followCopy polls the target's pg_subscription_rel for subscription sub
// until ctx ends, and records when the copy started, ended and the table
// became ready.
func (r *moveRun) followCopy(ctx context.Context, tgt *pgcluster.Server, sub string) error {
	conn, err := pgx.Connect(ctx, tgt.SuperDSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for ctx.Err() == nil {
		var states string
		err := conn.QueryRow(ctx, `SELECT coalesce(string_agg(r.srsubstate::text, ''), '') FROM pg_subscription_rel r
			JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = $1`, sub).Scan(&states)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("follow the copy on %s: %w", tgt.Name, err)
		}
		now := time.Now()
		switch {
		case states == "":
		case strings.Contains(states, "d") || strings.Contains(states, "i"):
			if r.copyStart.IsZero() && strings.Contains(states, "d") {
				r.copyStart = now
			}
		default:
			if r.copyEnd.IsZero() {
				r.copyEnd = now
				if r.copyStart.IsZero() {
					r.copyStart = now // the copy ran between two polls
				}
			}
			if strings.Trim(states, "r") == "" && r.ready.IsZero() {
				r.ready = now
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// measureRollback rolls move id back and returns the rollback's
// timings.
func measureRollback(ctx context.Context, t *testing.T, client *metarpc.Client, proxies []*testproxy.Proxy, id string) *cutoverRun {
	t.Helper()
	c := &cutoverRun{what: "rollback"}
	held0, secs0, to0 := holdMetrics(proxies)
	if _, err := client.ReshardAction(ctx, metarpc.MoveRef{ID: id}, reshard.ActionRollback, false); err != nil {
		t.Fatal(err)
	}
	st := waitPhase(ctx, t, client, id, reshard.PhaseRolledBack, 2*time.Minute)
	held1, secs1, to1 := holdMetrics(proxies)
	c.held, c.holdSeconds, c.holdTimeouts = held1-held0, secs1-secs0, to1-to0
	c.events, c.first, c.last = st.Events, reshard.PhaseRollbackHold, reshard.PhaseRollbackDropped
	c.cutStart, c.cutEnd = eventAt(st.Events, reshard.PhaseRollbackHold), eventAt(st.Events, reshard.PhaseRollbackDropped)
	if c.cutStart.IsZero() || c.cutEnd.IsZero() {
		t.Fatalf("rollback of %s: missing times (hold %v, dropped %v); events %+v", id, c.cutStart, c.cutEnd, st.Events)
	}
	return c
}

type reportInput struct {
	rows, smallRows int64
	plain           []copyRun
	big             *moveRun
	switches        []*cutoverRun
	writers         []*ledger.Writer
	took            time.Duration
}

// codes formats SQLSTATE counts: "PS001×3, 08006×1", "none".
func codes(m map[string]int) string {
	var out []string
	for c, n := range m {
		out = append(out, fmt.Sprintf("%s×%d", c, n))
	}
	if len(out) == 0 {
		return "none"
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// quantiles returns the median and the maximum of ds.
func quantiles(ds []time.Duration) (time.Duration, time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)/2], s[len(s)-1]
}

// steps lists the time each phase of evs took to reach from the one
// before, from phase first to phase last.
func steps(evs []reshard.Event, first, last reshard.Phase) string {
	var out []string
	var prev time.Time
	for _, e := range evs {
		switch {
		case e.Phase == first:
			prev = e.At
		case !prev.IsZero():
			out = append(out, fmt.Sprintf("%s %s", e.Phase, ms(e.At.Sub(prev))))
			prev = e.At
		}
		if e.Phase == last && !prev.IsZero() {
			break
		}
	}
	return strings.Join(out, ", ")
}

func report(in reportInput) string {
	var b strings.Builder
	big := in.big
	bytes := in.plain[0].bytes
	rate := func(rows int64, d time.Duration) string {
		return fmt.Sprintf("%.0f rows/s, %.1f MB/s (%s)", float64(rows)/d.Seconds(), float64(bytes)/1e6/d.Seconds(), ms(d))
	}
	best := min(in.plain[0].took, in.plain[1].took)
	copyPhase := big.copyEnd.Sub(big.copyStart)
	copyAll := big.copyEnd.Sub(big.start)
	var copyWrites int
	for _, w := range in.writers {
		if strings.HasPrefix(w.Name, "big-") {
			for _, a := range w.Acks {
				if a >= big.start.UnixNano() && a < big.copyEnd.UnixNano() {
					copyWrites++
				}
			}
		}
	}
	fmt.Fprintf(&b, "\n## Online resharding (make bench-reshard, %s, busy machine)\n\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "Three PostgreSQL 15 servers, one `pgshard meta run` member driving the moves, two proxies (in the load generator's process, heartbeat %s) and six writers (one autocommit INSERT/UPDATE/DELETE at a time each, through the proxies): two in each moving interval, one elsewhere on the source, one on another shard; %d cores, shared; run took %s.\n\n",
		proxyHeartbeat, runtime.NumCPU(), in.took.Round(time.Second))
	fmt.Fprintf(&b, "Copy: interval [%d, %d) of `kv` (`id bigint PRIMARY KEY, n int, body text(100), at timestamptz`), %d rows, %.0f MB of COPY text, s0 → s2, while the writers run.\n\n", bigLo, bigHi, big.rowsTotal, float64(bytes)/1e6)
	b.WriteString("| measurement | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| plain `COPY (SELECT … WHERE interval) TO STDOUT \\| COPY … FROM STDIN`, before the move | %s |\n", rate(in.plain[0].rows, in.plain[0].took))
	fmt.Fprintf(&b, "| the same, after the move | %s |\n", rate(in.plain[1].rows, in.plain[1].took))
	fmt.Fprintf(&b, "| move: initial copy (table sync worker's COPY) | %s — **%.2f×** the best plain copy |\n", rate(big.rowsTotal, copyPhase), best.Seconds()/copyPhase.Seconds())
	fmt.Fprintf(&b, "| move: from `reshard move` to the copy's end (target's schema, publication, slot, workers, copy) | %s — **%.2f×** |\n", rate(big.rowsTotal, copyAll), best.Seconds()/copyAll.Seconds())
	fmt.Fprintf(&b, "| catch-up: copy's end → table ready (streamed by the apply worker); %d writes in the interval during the copy | %s |\n", copyWrites, ms(big.ready.Sub(big.copyEnd)))
	fmt.Fprintf(&b, "| catch-up: copy's end → workflow copied → cutover starts (hold epoch) | %s → %s |\n", ms(big.copied.Sub(big.copyEnd)), ms(big.cutStart.Sub(big.copyEnd)))
	fmt.Fprintf(&b, "| cutover of the big interval: hold epoch → new owner acknowledged | %s |\n", ms(big.cutEnd.Sub(big.cutStart)))
	fmt.Fprintf(&b, "| cutover of the big interval, its steps (time to reach each phase) | %s |\n", steps(big.events, big.first, big.last))
	fmt.Fprintf(&b, "| cutover of the big interval: longest gap inside / outside the interval; statements held | %s / %s; %.0f held |\n", ms(big.inside), ms(big.outside), big.held)

	var fwIn, fwOut, fwDur, rbIn, rbOut, rbDur []time.Duration
	var heldFw, heldRb float64
	timeouts := big.holdTimeouts
	var nFw, nRb int
	for _, c := range in.switches {
		timeouts += c.holdTimeouts
		if c.what == "cutover" {
			fwIn, fwOut, fwDur = append(fwIn, c.inside), append(fwOut, c.outside), append(fwDur, c.cutEnd.Sub(c.cutStart))
			heldFw += c.held
			nFw++
		} else {
			rbIn, rbOut, rbDur = append(rbIn, c.inside), append(rbOut, c.outside), append(rbDur, c.cutEnd.Sub(c.cutStart))
			heldRb += c.held
			nRb++
		}
	}
	pm := func(ds []time.Duration) string {
		p50, mx := quantiles(ds)
		return ms(p50) + " / " + ms(mx)
	}
	fmt.Fprintf(&b, "| %d cutovers of [%d, %d) (%d rows) s0 → s1: pause in the interval, p50 / max | **%s** |\n", nFw, smallLo, smallHi, in.smallRows, pm(fwIn))
	fmt.Fprintf(&b, "| … pause seen by the other intervals, p50 / max | %s |\n", pm(fwOut))
	var median *cutoverRun // the cutover of the median pause
	if p50, _ := quantiles(fwIn); len(fwIn) > 0 {
		for _, c := range in.switches {
			if c.what == "cutover" && c.inside == p50 {
				median = c
			}
		}
		fmt.Fprintf(&b, "| … steps of the median cutover (time to reach each phase) | %s |\n", steps(median.events, median.first, median.last))
	}
	fmt.Fprintf(&b, "| … hold epoch → new owner acknowledged, p50 / max | %s |\n", pm(fwDur))
	fmt.Fprintf(&b, "| … statements held (pgshard_interval_hold_statements_total), per cutover | %.0f |\n", heldFw/float64(max(nFw, 1)))
	fmt.Fprintf(&b, "| %d rollbacks (`reshard rollback`, s1 → s0): pause in the interval, p50 / max | **%s** |\n", nRb, pm(rbIn))
	fmt.Fprintf(&b, "| … pause seen by the other intervals, p50 / max | %s |\n", pm(rbOut))
	fmt.Fprintf(&b, "| … hold epoch → old owner acknowledged, p50 / max | %s |\n", pm(rbDur))
	fmt.Fprintf(&b, "| … statements held, per rollback | %.0f |\n", heldRb/float64(max(nRb, 1)))
	fmt.Fprintf(&b, "| held statements that timed out (pgshard_interval_hold_timeouts_total) | %.0f |\n", timeouts)
	var acks int
	var retry []string
	for _, w := range in.writers {
		acks += len(w.Acks)
		for code, n := range w.Retryable {
			retry = append(retry, fmt.Sprintf("%s %s×%d", w.Name, code, n))
		}
	}
	sort.Strings(retry)
	if len(retry) == 0 {
		retry = []string{"none"}
	}
	fmt.Fprintf(&b, "| acknowledged writes (ledger checked on the servers: none lost) / retryable errors | %d / %s |\n", acks, strings.Join(retry, ", "))

	b.WriteString("\nEach cutover and rollback:\n\n| # | step | hold → acknowledged | its longest step | pause in the interval | pause elsewhere | held | held seconds (sum) | retryable errors in the interval |\n|---|---|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| 0 | cutover (big) | %s | %s | %s | %s | %.0f | %.3f | %s |\n", ms(big.cutEnd.Sub(big.cutStart)), big.slowest(), ms(big.inside), ms(big.outside), big.held, big.holdSeconds, codes(big.errors))
	for i, c := range in.switches {
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %.0f | %.3f | %s |\n", i/2+1, c.what, ms(c.cutEnd.Sub(c.cutStart)), c.slowest(), ms(c.inside), ms(c.outside), c.held, c.holdSeconds, codes(c.errors))
	}
	return b.String()
}
