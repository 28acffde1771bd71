package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
)

// wireSession is a raw protocol session that records what the server
// answers as a transcript ("E 42601", "Z I", "C INSERT 0 1", "D", ...).
type wireSession struct {
	t  *testing.T
	fe *pgproto3.Frontend
}

// openWire opens an authenticated raw session on addr (cleartext, MD5 or
// SCRAM, as pgconn negotiates) and hands over its connection.
func openWire(t *testing.T, ctx context.Context, dsn string) *wireSession {
	t.Helper()
	pc, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	hj, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hj.Conn.Close() })
	_ = hj.Conn.SetDeadline(time.Now().Add(20 * time.Second))
	return &wireSession{t: t, fe: hj.Frontend}
}

// send sends msgs and reads answers up to and including the n-th
// ReadyForQuery, returning the transcript.
func (w *wireSession) send(n int, msgs ...pgproto3.FrontendMessage) []string {
	w.t.Helper()
	for _, m := range msgs {
		w.fe.Send(m)
	}
	if err := w.fe.Flush(); err != nil {
		w.t.Fatal(err)
	}
	var out []string
	for n > 0 {
		m, err := w.fe.Receive()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				w.t.Fatalf("no answer after %q: %v", out, err)
			}
			w.t.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			out = append(out, "E "+m.Code)
		case *pgproto3.NoticeResponse:
			out = append(out, "N "+m.Code)
		case *pgproto3.ReadyForQuery:
			out = append(out, "Z "+string(m.TxStatus))
			n--
		case *pgproto3.CommandComplete:
			out = append(out, "C "+string(m.CommandTag))
		case *pgproto3.DataRow:
			d := "D"
			for _, v := range m.Values {
				d += " " + string(v)
			}
			out = append(out, d)
		case *pgproto3.ParseComplete:
			out = append(out, "1")
		case *pgproto3.BindComplete:
			out = append(out, "2")
		case *pgproto3.CloseComplete:
			out = append(out, "3")
		case *pgproto3.RowDescription:
			out = append(out, "T")
		case *pgproto3.NoData:
			out = append(out, "n")
		case *pgproto3.ParameterStatus:
		default:
			out = append(out, fmt.Sprintf("%T", m))
		}
	}
	return out
}

func q(sql string) *pgproto3.Query { return &pgproto3.Query{String: sql} }

// ext is a statement through the extended protocol (unnamed statement and
// portal), without Sync.
func ext(sql string) []pgproto3.FrontendMessage {
	return []pgproto3.FrontendMessage{&pgproto3.Parse{Query: sql}, &pgproto3.Bind{}, &pgproto3.Execute{}}
}

func msgs(parts ...any) []pgproto3.FrontendMessage {
	var out []pgproto3.FrontendMessage
	for _, p := range parts {
		switch p := p.(type) {
		case pgproto3.FrontendMessage:
			out = append(out, p)
		case []pgproto3.FrontendMessage:
			out = append(out, p...)
		}
	}
	return out
}

func countRows(t *testing.T, ctx context.Context, pg *pgcluster.Server, sql string) int {
	t.Helper()
	c := connect(t, pg.SuperDSN("postgres"))
	var n int
	if err := c.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFailedBeginSyntax: a BEGIN PostgreSQL refuses at parse time gets
// the error itself, through the simple and the extended protocol, and
// pgx's Begin fails; the next statement runs once, in autocommit, exactly
// as on a direct connection.
func TestFailedBeginSyntax(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, baseConfig(t, pg))
	pm := startProxy(t, oneShardMapConfig(t, pg)) // Parse held back until Bind
	ctx := ctxT(t)
	if err := pg.Exec(ctx, `CREATE TABLE bt (x int)`); err != nil {
		t.Fatal(err)
	}
	sync := &pgproto3.Sync{}
	scripts := []struct {
		name  string
		steps [][]pgproto3.FrontendMessage
	}{
		{"simple", [][]pgproto3.FrontendMessage{
			msgs(q(`BEGIN ISOLATION LEVEL foo;`)),
			msgs(q(`INSERT INTO bt VALUES (1)`)),
			msgs(q(`ROLLBACK`)),
			msgs(q(`SELECT 1`)),
		}},
		{"simple bad mode", [][]pgproto3.FrontendMessage{
			msgs(q(`start transaction read sideways`)),
			msgs(q(`INSERT INTO bt VALUES (1)`)),
			msgs(q(`COMMIT`)),
		}},
		{"extended", [][]pgproto3.FrontendMessage{
			msgs(ext(`BEGIN ISOLATION LEVEL foo`), sync),
			msgs(ext(`INSERT INTO bt VALUES (1)`), sync),
			msgs(ext(`ROLLBACK`), sync),
		}},
		{"extended pipeline", [][]pgproto3.FrontendMessage{
			msgs(ext(`BEGIN ISOLATION LEVEL foo`), ext(`INSERT INTO bt VALUES (1)`), sync),
			msgs(ext(`INSERT INTO bt VALUES (1)`), sync),
			msgs(q(`ROLLBACK`)),
		}},
	}
	for _, sc := range scripts {
		t.Run(sc.name, func(t *testing.T) {
			var got [3][]string
			var rows [3]int
			for i, dsn := range []string{pg.SuperDSN("postgres"), p.dsn(""), pm.dsn("")} {
				if err := pg.Exec(ctx, `TRUNCATE bt`); err != nil {
					t.Fatal(err)
				}
				w := openWire(t, ctx, dsn)
				for _, step := range sc.steps {
					n := 0
					for _, m := range step {
						if _, ok := m.(*pgproto3.Sync); ok {
							n++
						} else if _, ok := m.(*pgproto3.Query); ok {
							n++
						}
					}
					got[i] = append(got[i], w.send(n, step...)...)
					got[i] = append(got[i], "|")
				}
				rows[i] = countRows(t, ctx, pg, `SELECT count(*) FROM bt`)
			}
			for i, via := range []string{"", "the proxy", "the proxy with a shard map"} {
				if i == 0 {
					continue
				}
				if !slices.Equal(got[0], got[i]) {
					t.Errorf("through %s:\n%q\ndirectly:\n%q", via, got[i], got[0])
				}
				if !slices.Contains(got[i], "E 42601") {
					t.Errorf("no syntax error through %s: %q", via, got[i])
				}
				if rows[0] != rows[i] {
					t.Errorf("rows after the script: %d through %s, %d directly", rows[i], via, rows[0])
				}
			}
		})
	}

	// pgx: a failed Begin returns the error and leaves the connection
	// out of any transaction.
	c := connect(t, p.dsn(""))
	if err := pg.Exec(ctx, `TRUNCATE bt`); err != nil {
		t.Fatal(err)
	}
	_, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: "foo"})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42601" {
		t.Fatalf("pgx Begin with a bad isolation level: want 42601, got %v", err)
	}
	if c.PgConn().TxStatus() != 'I' {
		t.Fatalf("after a failed Begin the status is %c, want I", c.PgConn().TxStatus())
	}
	if _, err := c.Exec(ctx, `INSERT INTO bt VALUES ($1)`, 7); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, ctx, pg, `SELECT count(*) FROM bt WHERE x = 7`); n != 1 {
		t.Fatalf("the autocommit INSERT after the failed Begin: %d rows, want 1", n)
	}
	// A valid BEGIN with options still works, and rolls back.
	tx, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadWrite})
	if err != nil {
		t.Fatal(err)
	}
	var iso string
	if err := tx.QueryRow(ctx, `INSERT INTO bt VALUES (8) RETURNING current_setting('transaction_isolation')`).Scan(&iso); err != nil || iso != "repeatable read" {
		t.Fatalf("isolation in the transaction: %q %v", iso, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, ctx, pg, `SELECT count(*) FROM bt WHERE x = 8`); n != 0 {
		t.Fatalf("rolled back INSERT: %d rows, want 0", n)
	}
}

// TestFailedBeginOnServer: a BEGIN only the server can refuse (READ
// WRITE on a hot standby) was acknowledged by the proxy (deferred), so
// the client's next statement gets the server's error instead of
// running, the transaction is failed until ROLLBACK, and the session
// then works.
func TestFailedBeginOnServer(t *testing.T) {
	pg := integration.StartPostgres(t, integration.Replicas(1))
	standby := pg.Replicas[0]
	p := startProxy(t, baseConfig(t, standby))
	ctx := ctxT(t)

	direct := openWire(t, ctx, standby.SuperDSN("postgres"))
	if got := direct.send(1, q(`BEGIN READ WRITE`)); !slices.Equal(got, []string{"E 0A000", "Z I"}) {
		t.Fatalf("directly: %q", got)
	}

	w := openWire(t, ctx, p.dsn(""))
	for _, step := range []struct {
		msgs []pgproto3.FrontendMessage
		n    int
		want []string
	}{
		{msgs(q(`BEGIN READ WRITE`)), 1, []string{"C BEGIN", "Z T"}},
		{msgs(q(`SELECT 1`)), 1, []string{"E 0A000", "Z E"}},
		{msgs(q(`SELECT 1`)), 1, []string{"E 25P02", "Z E"}},
		{msgs(q(`ROLLBACK`)), 1, []string{"C ROLLBACK", "Z I"}},
		{msgs(q(`BEGIN READ WRITE`)), 1, []string{"C BEGIN", "Z T"}},
		{msgs(ext(`SELECT 1`), ext(`SELECT 2`), &pgproto3.Sync{}), 1, []string{"E 0A000", "Z E"}},
		{msgs(ext(`COMMIT`), &pgproto3.Sync{}), 1, []string{"1", "2", "C ROLLBACK", "Z I"}},
		{msgs(q(`BEGIN READ ONLY`)), 1, []string{"C BEGIN", "Z T"}},
		{msgs(q(`SELECT 1`)), 1, []string{"D 1", "C SELECT 1", "Z T"}},
		{msgs(q(`COMMIT`)), 1, []string{"C COMMIT", "Z I"}},
		{msgs(q(`SELECT 1`)), 1, []string{"D 1", "C SELECT 1", "Z I"}},
	} {
		got := w.send(step.n, step.msgs...)
		// Row descriptions are not the point here.
		got = slices.DeleteFunc(got, func(s string) bool { return s == "T" })
		if !slices.Equal(got, step.want) {
			t.Fatalf("after %T...: got %q, want %q", step.msgs[0], got, step.want)
		}
	}
}

// TestPreparedNameReuse: a Parse of a statement name in use gets 42P05
// and the rest of its batch is skipped, as on PostgreSQL; a name whose
// Parse failed, or that Close, DEALLOCATE ALL or DISCARD ALL dropped, can
// be parsed again. The same script runs directly and through the proxy in
// both pool modes, with the same answers.
func TestPreparedNameReuse(t *testing.T) {
	pg := integration.StartPostgres(t)
	ctx := ctxT(t)
	sync := &pgproto3.Sync{}
	parse := func(name, sql string) *pgproto3.Parse { return &pgproto3.Parse{Name: name, Query: sql} }
	run := func(name string) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{&pgproto3.Bind{PreparedStatement: name}, &pgproto3.Execute{}}
	}
	steps := [][]pgproto3.FrontendMessage{
		msgs(parse("x", `SELECT 1`), sync),
		msgs(parse("x", `SELECT 2`), run("x"), sync),
		msgs(run("x"), sync),
		msgs(&pgproto3.Close{ObjectType: 'S', Name: "x"}, parse("x", `SELECT 2`), run("x"), sync),
		msgs(parse("y", `SELECT nosuchcol`), sync),
		msgs(parse("y", `SELECT 3`), run("y"), sync),
		msgs(parse("w", `SELECT 1/0`), parse("w2", `SELECT 4`), run("w"), sync),
		msgs(parse("w2", `SELECT 5`), run("w2"), sync),
		msgs(q(`DEALLOCATE ALL`)),
		msgs(parse("x", `SELECT 6`), run("x"), sync),
		msgs(parse("z", `SELECT 7`), parse("z", `SELECT 8`), run("z"), sync),
		msgs(run("z"), sync),
		msgs(q(`BEGIN`)),
		msgs(run("z"), sync),
		msgs(parse("z", `SELECT 9`), run("z"), sync),
		msgs(q(`ROLLBACK`)),
		msgs(q(`DISCARD ALL`)),
		msgs(run("x"), sync),
		msgs(parse("x", `SELECT 10`), run("x"), sync),
	}
	script := func(dsn string) []string {
		w := openWire(t, ctx, dsn)
		var got []string
		for _, step := range steps {
			n := 0
			for _, m := range step {
				switch m.(type) {
				case *pgproto3.Sync, *pgproto3.Query:
					n++
				}
			}
			got = append(got, w.send(n, step...)...)
			got = append(got, "|")
		}
		return got
	}
	direct := script(pg.SuperDSN("postgres"))
	if !slices.Contains(direct, "E 42P05") {
		t.Fatalf("PostgreSQL itself: %q", direct)
	}
	for _, mode := range []string{"transaction", "session", "shard map"} {
		t.Run(mode, func(t *testing.T) {
			cfg := baseConfig(t, pg)
			switch mode {
			case "session":
				cfg.PoolMode = proxy.PoolSession
			case "shard map":
				// Parse messages are held back until Bind.
				cfg = oneShardMapConfig(t, pg)
			}
			p := startProxy(t, cfg)
			if got := script(p.dsn("")); !slices.Equal(got, direct) {
				t.Errorf("through the proxy:\n%q\ndirectly:\n%q", got, direct)
			}
		})
	}
}
