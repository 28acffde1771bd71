package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/proxy/scatter"
	"github.com/pgshard/pgshard/router/merge"
	"github.com/pgshard/pgshard/wire"
)

// This file is an internal test (it calls the unexported scatter), so it
// cannot import package integration (which imports proxy): it starts the
// servers with pgcluster directly, as integration.NewCluster does.

// scatterEnv is a three-shard cluster with a proxy Server (not serving;
// scatter is called directly), connections to each shard, and a
// reference table holding every row on shard s0.
type scatterEnv struct {
	srv    *Server
	user   *userState
	shards []*pgx.Conn // s0, s1, s2
	ref    *pgx.Conn   // s0; the reference tables are named ref_*
}

func newScatterEnv(t *testing.T) *scatterEnv {
	t.Helper()
	if _, err := pgcluster.FindBinDir(); err != nil {
		if os.Getenv("PGSHARD_ALLOW_SKIP") == "1" {
			t.Skipf("%v (skipping: PGSHARD_ALLOW_SKIP=1)", err)
		}
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := pgcluster.StartCluster(ctx, 3, pgcluster.Options{Name: "scatter"})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if t.Failed() {
			for _, s := range cl.Servers() {
				t.Logf("--- %s ---\n%s", s.Name, s.LogTail(20))
			}
		}
		if err := cl.Stop(ctx); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	cfg := &Config{
		Listen: "127.0.0.1:0",
		Users:  []UserConfig{{Name: "app", Auth: "trust"}},
		Backend: BackendConfig{User: pgcluster.SuperuserName, Password: pgcluster.SuperuserPassword,
			SSLMode: "disable", PasswordEnv: "PGSHARD_TEST_UNSET_ENV"},
		Pool: PoolConfig{Size: 10, WaitTimeout: Duration(2 * time.Second)},
	}
	for i, s := range cl.Shards {
		cfg.Shards = append(cfg.Shards, ShardConfig{Name: fmt.Sprintf("s%d", i), Host: s.Host, Port: s.Port})
	}
	if err := cfg.Complete(); err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	env := &scatterEnv{srv: srv, user: srv.runtime().users["app"]}
	for _, s := range cl.Shards {
		c, err := pgx.Connect(ctx, s.SuperDSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		env.shards = append(env.shards, c)
	}
	env.ref = env.shards[0]
	return env
}

// exec runs sql on every shard.
func (e *scatterEnv) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	for i, c := range e.shards {
		if _, err := c.Exec(context.Background(), sql, args...); err != nil {
			t.Fatalf("s%d: %s: %v", i, sql, err)
		}
	}
}

// run calls scatter on all three shards.
func (e *scatterEnv) run(t *testing.T, req scatter.Request) ([]byte, error) {
	t.Helper()
	if req.Shards == nil {
		req.Shards = []string{"s0", "s1", "s2"}
	}
	req.TextByteOrder = true // the harness's databases are initialized with locale C
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return e.srv.scatter(ctx, e.user, "postgres", req)
}

// checkIdle checks that every pool connection is back and idle.
func (e *scatterEnv) checkIdle(t *testing.T) []pool.Stats {
	t.Helper()
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	var all []pool.Stats
	for k, p := range e.srv.pools {
		st := p.Stats()
		if st.Open != st.Idle || st.Waiting != 0 {
			t.Errorf("pool %s: %d open, %d idle, %d waiting", k.shard, st.Open, st.Idle, st.Waiting)
		}
		all = append(all, st)
	}
	return all
}

// discards sums the pools' discarded connections.
func (e *scatterEnv) discards() uint64 {
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	var n uint64
	for _, p := range e.srv.pools {
		n += p.Stats().Discarded
	}
	return n
}

// result is a decoded answer: column names and types, rows as text (NULL
// as nil), command tag.
type result struct {
	cols []string
	oids []uint32
	rows [][]*string
	tag  string
}

func (r result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cols=%v oids=%v tag=%q\n", r.cols, r.oids, r.tag)
	for _, row := range r.rows {
		for i, v := range row {
			if i > 0 {
				b.WriteString(" | ")
			}
			if v == nil {
				b.WriteString("NULL")
			} else {
				b.WriteString(*v)
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// decodeFrames decodes scatter's output, checking the message sequence.
func decodeFrames(t *testing.T, b []byte) result {
	t.Helper()
	var r result
	seenT, seenC := false, false
	for len(b) > 0 {
		if len(b) < 5 {
			t.Fatalf("truncated frame")
		}
		n := int(binary.BigEndian.Uint32(b[1:])) + 1
		typ, body := b[0], b[5:n]
		b = b[n:]
		if seenC {
			t.Fatalf("frame %q after CommandComplete", typ)
		}
		switch typ {
		case 'T':
			var rd pgproto3.RowDescription
			if err := rd.Decode(body); err != nil {
				t.Fatal(err)
			}
			seenT = true
			for _, f := range rd.Fields {
				r.cols = append(r.cols, string(f.Name))
				r.oids = append(r.oids, f.DataTypeOID)
			}
		case 'D':
			if !seenT {
				t.Fatalf("DataRow before RowDescription")
			}
			var dr pgproto3.DataRow
			if err := dr.Decode(body); err != nil {
				t.Fatal(err)
			}
			r.rows = append(r.rows, textRow(dr.Values))
		case 'C':
			var cc pgproto3.CommandComplete
			if err := cc.Decode(body); err != nil {
				t.Fatal(err)
			}
			r.tag = string(cc.CommandTag)
			seenC = true
		default:
			t.Fatalf("unexpected frame %q", typ)
		}
	}
	if !seenC {
		t.Fatalf("no CommandComplete")
	}
	return r
}

func textRow(vals [][]byte) []*string {
	row := make([]*string, len(vals))
	for i, v := range vals {
		if v != nil {
			s := string(v)
			row[i] = &s
		}
	}
	return row
}

// reference runs sql on the reference server as a simple query.
func (e *scatterEnv) reference(t *testing.T, sql string) result {
	t.Helper()
	res, err := e.ref.PgConn().Exec(context.Background(), sql).ReadAll()
	if err != nil {
		t.Fatalf("reference %s: %v", sql, err)
	}
	if len(res) != 1 {
		t.Fatalf("reference %s: %d results", sql, len(res))
	}
	var r result
	for _, f := range res[0].FieldDescriptions {
		r.cols = append(r.cols, f.Name)
		r.oids = append(r.oids, f.DataTypeOID)
	}
	for _, row := range res[0].Rows {
		r.rows = append(r.rows, textRow(row))
	}
	r.tag = res[0].CommandTag.String()
	return r
}

func sortedRows(r result) result {
	r.rows = slices.Clone(r.rows)
	slices.SortFunc(r.rows, func(a, b []*string) int { return strings.Compare(fmt.Sprint(deref(a)), fmt.Sprint(deref(b))) })
	return r
}

func deref(row []*string) []string {
	out := make([]string, len(row))
	for i, v := range row {
		if v == nil {
			out[i] = "\x00NULL"
		} else {
			out[i] = *v
		}
	}
	return out
}

func wireErr(t *testing.T, err error) *wire.Error {
	t.Helper()
	var we *wire.Error
	if !errors.As(err, &we) {
		t.Fatalf("error %v (%T) is not a *wire.Error", err, err)
	}
	return we
}

func TestScatter(t *testing.T) {
	env := newScatterEnv(t)
	const rows = 600
	env.exec(t, `CREATE TABLE items (id int PRIMARY KEY, grp int, val numeric, f float8, name text)`)
	for i, c := range env.shards {
		if _, err := c.Exec(context.Background(), `INSERT INTO items
			SELECT g, g % 7, CASE WHEN g % 13 = 0 THEN NULL ELSE (g * 37 % 101) / 4.0 END, g / 3.0, 'n' || g
			FROM generate_series(1, $1) g WHERE g % 3 = $2`, rows, i); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.ref.Exec(context.Background(), `CREATE TABLE ref_items AS
		SELECT g AS id, g % 7 AS grp, CASE WHEN g % 13 = 0 THEN NULL ELSE (g * 37 % 101) / 4.0 END AS val, g / 3.0::float8 AS f, 'n' || g AS name
		FROM generate_series(1, $1) g`, rows); err != nil {
		t.Fatal(err)
	}

	// Each case: the client's statement (on table {t}), what the shards run
	// (on table items) and the spec the planner would build.
	cases := []struct {
		name      string
		client    string
		shard     string
		spec      *merge.Spec
		unordered bool // compare as multisets
	}{
		{
			name:   "order by limit",
			client: `SELECT id, name FROM {t} ORDER BY id LIMIT 5`,
			shard:  `SELECT id, name FROM items ORDER BY id LIMIT 5`,
			spec:   &merge.Spec{OrderBy: []merge.SortKey{{Column: 0}}, Limit: 5},
		},
		{
			name:   "order by desc nulls first offset",
			client: `SELECT id, val FROM {t} ORDER BY val DESC, id LIMIT 7 OFFSET 3`,
			shard:  `SELECT id, val FROM items ORDER BY val DESC, id LIMIT 10`,
			spec:   &merge.Spec{OrderBy: []merge.SortKey{{Column: 1, Desc: true, NullsFirst: true}, {Column: 0}}, Offset: 3, Limit: 7},
		},
		{
			name:   "order by without limit",
			client: `SELECT id, f FROM {t} ORDER BY f DESC, id`,
			shard:  `SELECT id, f FROM items ORDER BY f DESC, id`,
			spec:   &merge.Spec{OrderBy: []merge.SortKey{{Column: 1, Desc: true, NullsFirst: true}, {Column: 0}}, Limit: -1},
		},
		{
			name:   "group by count sum avg",
			client: `SELECT grp, count(*), sum(val), avg(val), min(name), max(f) FROM {t} GROUP BY grp ORDER BY grp`,
			shard:  `SELECT grp, count(*), sum(val) AS avg, count(val), sum(val), min(name), max(f) FROM items GROUP BY grp ORDER BY grp`,
			spec: &merge.Spec{
				Combine: []merge.Combine{merge.CombineNone, merge.CombineCount, merge.CombineSum, merge.CombineCount, merge.CombineSum, merge.CombineMin, merge.CombineMax},
				Final: []merge.FinalColumn{{Source: 0}, {Source: 1}, {Source: 4, Name: "sum"},
					{Kind: merge.FinalAvg, Source: 2, CountSource: 3, Name: "avg"}, {Source: 5}, {Source: 6}},
				OrderBy: []merge.SortKey{{Column: 0}}, Limit: -1,
			},
		},
		{
			name:   "count without group",
			client: `SELECT count(*) FROM {t}`,
			shard:  `SELECT count(*) FROM items`,
			spec:   &merge.Spec{Combine: []merge.Combine{merge.CombineCount}, Limit: -1},
		},
		{
			name:      "concatenation",
			client:    `SELECT id, name FROM {t} WHERE id % 10 = 0`,
			shard:     `SELECT id, name FROM items WHERE id % 10 = 0`,
			unordered: true,
		},
		{
			name:   "big result streams",
			client: `SELECT id, name, f FROM {t} ORDER BY id`,
			shard:  `SELECT id, name, f FROM items ORDER BY id`,
			spec:   &merge.Spec{OrderBy: []merge.SortKey{{Column: 0}}, Limit: -1},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := env.run(t, scatter.Request{SQL: tc.shard, Spec: tc.spec})
			if err != nil {
				t.Fatal(err)
			}
			got := decodeFrames(t, out)
			want := env.reference(t, strings.ReplaceAll(tc.client, "{t}", "ref_items"))
			if tc.unordered {
				got, want = sortedRows(got), sortedRows(want)
			}
			if got.String() != want.String() {
				t.Errorf("scatter:\n%s\nreference:\n%s", got, want)
			}
			env.checkIdle(t)
		})
	}

	t.Run("flush streams output", func(t *testing.T) {
		var flushed []byte
		calls := 0
		out, err := env.run(t, scatter.Request{SQL: `SELECT id, repeat(name, 40) AS r, f FROM items`,
			Flush: func(b []byte) error { calls++; flushed = append(flushed, b...); return nil }})
		if err != nil {
			t.Fatal(err)
		}
		if calls == 0 {
			t.Errorf("Flush was not called for a %d-byte result", len(flushed)+len(out))
		}
		got := sortedRows(decodeFrames(t, append(flushed, out...)))
		want := sortedRows(env.reference(t, `SELECT id, repeat(name, 40) AS r, f FROM ref_items`))
		if got.String() != want.String() {
			t.Errorf("scatter:\n%s\nreference:\n%s", got, want)
		}
		env.checkIdle(t)
	})

	t.Run("writes sum counts", func(t *testing.T) {
		out, err := env.run(t, scatter.Request{SQL: `UPDATE items SET name = name WHERE id <= 30`})
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeFrames(t, out).tag; got != "UPDATE 30" {
			t.Errorf("tag %q, want UPDATE 30", got)
		}
		env.exec(t, `CREATE TABLE scratch (x int)`)
		out, err = env.run(t, scatter.Request{SQL: `INSERT INTO scratch VALUES (1), (2)`})
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeFrames(t, out).tag; got != "INSERT 0 6" {
			t.Errorf("tag %q, want INSERT 0 6", got)
		}
		out, err = env.run(t, scatter.Request{SQL: `DELETE FROM scratch RETURNING x`})
		if err != nil {
			t.Fatal(err)
		}
		if r := decodeFrames(t, out); r.tag != "DELETE 6" || len(r.rows) != 6 {
			t.Errorf("DELETE RETURNING: tag %q, %d rows; want DELETE 6, 6 rows", r.tag, len(r.rows))
		}
		env.checkIdle(t)
	})

	t.Run("prepare runs on each backend", func(t *testing.T) {
		prepared := 0
		out, err := env.run(t, scatter.Request{
			SQL: `SELECT current_setting('application_name') AS app`,
			Prepare: func(ctx context.Context, be *pool.Conn) error {
				prepared++
				return be.Exec(ctx, "SET application_name = 'scatter-test'")
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		r := decodeFrames(t, out)
		if prepared != 3 || len(r.rows) != 3 {
			t.Fatalf("prepare called %d times, %d rows", prepared, len(r.rows))
		}
		for _, row := range r.rows {
			if *row[0] != "scatter-test" {
				t.Errorf("application_name %q", *row[0])
			}
		}
		// put the backends back to the defaults for the other tests
		if _, err := env.run(t, scatter.Request{SQL: `RESET application_name`}); err != nil {
			t.Fatal(err)
		}
		env.checkIdle(t)
	})

	t.Run("error on one shard", func(t *testing.T) {
		for _, i := range []int{0, 2} {
			if _, err := env.shards[i].Exec(context.Background(), `CREATE TABLE only_some (x int)`); err != nil {
				t.Fatal(err)
			}
		}
		before := env.discards()
		_, err := env.run(t, scatter.Request{SQL: `SELECT x FROM only_some ORDER BY x`,
			Spec: &merge.Spec{OrderBy: []merge.SortKey{{Column: 0}}, Limit: -1}})
		we := wireErr(t, err)
		if we.Code != "42P01" || !strings.HasPrefix(we.Message, "shard s1: ") {
			t.Errorf("error %q (%s), want 42P01 naming shard s1", we.Message, we.Code)
		}
		env.checkIdle(t)
		if d := env.discards() - before; d != 0 {
			t.Errorf("%d connections discarded after a plain error", d)
		}
		// The backends still work.
		out, err := env.run(t, scatter.Request{SQL: `SELECT 1 AS one`})
		if err != nil {
			t.Fatal(err)
		}
		if r := decodeFrames(t, out); len(r.rows) != 3 || r.tag != "SELECT 3" {
			t.Errorf("after error: %s", r)
		}
	})

	t.Run("merge errors are 0A000", func(t *testing.T) {
		_, err := env.run(t, scatter.Request{SQL: `SELECT point(id, id) AS p FROM items LIMIT 3`,
			Spec: &merge.Spec{OrderBy: []merge.SortKey{{Column: 0}}, Limit: 3}})
		if we := wireErr(t, err); we.Code != wire.SQLStateFeatureNotSupported || !strings.Contains(we.Message, `"p"`) {
			t.Errorf("unsupported sort: %q (%s)", we.Message, we.Code)
		}
		env.exec(t, `CREATE TABLE drift (x int)`)
		if _, err := env.shards[1].Exec(context.Background(), `ALTER TABLE drift ALTER x TYPE bigint`); err != nil {
			t.Fatal(err)
		}
		_, err = env.run(t, scatter.Request{SQL: `SELECT x FROM drift`})
		if we := wireErr(t, err); we.Code != wire.SQLStateFeatureNotSupported || !strings.Contains(we.Message, "different row descriptions") {
			t.Errorf("schema drift: %q (%s)", we.Message, we.Code)
		}
		env.checkIdle(t)
	})

	t.Run("early limit drains", func(t *testing.T) {
		// Far more rows than the bounded queues hold: the readers block
		// until the merge stops, then drain.
		env.exec(t, `CREATE TABLE big AS SELECT g AS id, repeat('x', 50) AS pad FROM generate_series(1, 50000) g`)
		// Draining 3 MB a shard takes longer than the production bound
		// on a loaded machine with the race detector; what is tested
		// here is that a drained connection is kept.
		before := env.discards()
		out, err := env.run(t, scatter.Request{SQL: `SELECT id, pad FROM big`, Spec: &merge.Spec{Limit: 5}, DrainTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		r := decodeFrames(t, out)
		if len(r.rows) != 5 || r.tag != "SELECT 5" {
			t.Fatalf("got %d rows, tag %q", len(r.rows), r.tag)
		}
		for i, row := range r.rows {
			if *row[0] != fmt.Sprint(i+1) {
				t.Errorf("row %d: id %s, want shard s0's rows in order", i, *row[0])
			}
		}
		env.checkIdle(t)
		if d := env.discards() - before; d != 0 {
			t.Errorf("%d connections discarded; draining should have kept them", d)
		}
		// LIMIT 0 reads nothing; everything is drained.
		out, err = env.run(t, scatter.Request{SQL: `SELECT id, pad FROM big`, Spec: &merge.Spec{Limit: 0}, DrainTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if r := decodeFrames(t, out); len(r.rows) != 0 || r.tag != "SELECT 0" {
			t.Errorf("LIMIT 0: %s", r)
		}
		env.checkIdle(t)
	})

	t.Run("early limit cancels a busy shard", func(t *testing.T) {
		// s1 sends enough rows to flush its output buffer, then sleeps.
		env.exec(t, `CREATE TABLE slow (id int, d float8)`)
		for i, c := range env.shards {
			n, d := 10, 0.0
			if i == 1 {
				n, d = 5000, 60
			}
			if _, err := c.Exec(context.Background(), `INSERT INTO slow SELECT g, CASE WHEN g = $1 THEN $2 ELSE 0 END FROM generate_series(1, $1) g`, n, d); err != nil {
				t.Fatal(err)
			}
		}
		const sql = `SELECT id, pg_sleep(d)::text AS z FROM slow`
		before := env.discards()
		start := time.Now()
		out, err := env.run(t, scatter.Request{SQL: sql, Spec: &merge.Spec{Limit: 5}})
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el > 10*time.Second {
			t.Errorf("took %s: the busy shard was not cancelled", el)
		}
		if r := decodeFrames(t, out); len(r.rows) != 5 {
			t.Errorf("got %d rows", len(r.rows))
		}
		env.checkIdle(t)
		if d := env.discards() - before; d != 1 {
			t.Errorf("%d connections discarded, want the cancelled one", d)
		}
		var active int
		if err := env.shards[1].QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'`, sql).Scan(&active); err != nil {
			t.Fatal(err)
		}
		if active != 0 {
			t.Errorf("the query still runs on s1")
		}
	})

	t.Run("an error on one shard stops the others", func(t *testing.T) {
		// s1 fails at once; s0 and s2 would sleep for a minute.
		before := env.discards()
		start := time.Now()
		_, err := env.run(t, scatter.Request{
			SQL: `SELECT CASE WHEN current_setting('port')::int = ` + fmt.Sprint(env.srv.runtime().cfg.Shards[1].Port) +
				` THEN 1/(random()*0)::int ELSE (SELECT 1 FROM pg_sleep(60)) END AS x`})
		we := wireErr(t, err)
		if we.Code != "22012" || !strings.HasPrefix(we.Message, "shard s1: ") {
			t.Errorf("error %q (%s), want 22012 from s1", we.Message, we.Code)
		}
		if el := time.Since(start); el > 10*time.Second {
			t.Errorf("took %s", el)
		}
		env.checkIdle(t)
		if d := env.discards() - before; d != 2 {
			t.Errorf("%d connections discarded, want the 2 cancelled ones", d)
		}
	})

	t.Run("context canceled", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := env.srv.scatter(ctx, env.user, "postgres", scatter.Request{Shards: []string{"s0", "s1", "s2"},
			SQL: `SELECT pg_sleep(60)::text AS z`})
		if we := wireErr(t, err); we.Code != wire.SQLStateQueryCanceled {
			t.Errorf("error %q (%s), want 57014", we.Message, we.Code)
		}
		env.checkIdle(t)
	})

	t.Run("multi-statement refused", func(t *testing.T) {
		_, err := env.run(t, scatter.Request{SQL: `SELECT 1 AS a; SELECT 2 AS b`})
		if we := wireErr(t, err); we.Code != wire.SQLStateFeatureNotSupported {
			t.Errorf("error %q (%s), want 0A000", we.Message, we.Code)
		}
		_, err = env.run(t, scatter.Request{SQL: `BEGIN`})
		if we := wireErr(t, err); we.Code != wire.SQLStateFeatureNotSupported {
			t.Errorf("BEGIN: error %v, want 0A000", err)
		}
		env.checkIdle(t)
	})
}
