package proxy_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
)

// protocols are the two ways the tests below send a statement: a simple
// Query, or the extended protocol's Parse, Bind, Describe, Execute and
// Sync of the unnamed statement (pgx would use the simple protocol for a
// statement without arguments).
var protocols = []string{"simple", "extended"}

// runSQL runs sql on c in protocol proto and returns its rows as text.
func runSQL(ctx context.Context, c *pgx.Conn, proto, sql string) ([][]string, error) {
	var rows [][][]byte
	if proto == "simple" {
		res, err := c.PgConn().Exec(ctx, sql).ReadAll()
		if err != nil {
			return nil, err
		}
		if len(res) > 0 {
			rows = res[len(res)-1].Rows
		}
	} else {
		res := c.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read()
		if res.Err != nil {
			return nil, res.Err
		}
		rows = res.Rows
	}
	out := make([][]string, len(rows))
	for i, r := range rows {
		for _, v := range r {
			out[i] = append(out[i], string(v))
		}
	}
	return out, nil
}

// mustRun runs sql and fails the test on error.
func mustRun(t *testing.T, ctx context.Context, c *pgx.Conn, proto, sql string) [][]string {
	t.Helper()
	rows, err := runSQL(ctx, c, proto, sql)
	if err != nil {
		t.Fatalf("%s (%s): %v", sql, proto, err)
	}
	return rows
}

// one returns the single value of a one-row, one-column result.
func one(t *testing.T, ctx context.Context, c *pgx.Conn, proto, sql string) string {
	t.Helper()
	rows := mustRun(t, ctx, c, proto, sql)
	if len(rows) != 1 || len(rows[0]) != 1 {
		t.Fatalf("%s (%s): want one value, got %v", sql, proto, rows)
	}
	return rows[0][0]
}

// TestSessionStateNotLent lends a server connection (pool size 1) to a
// client that leaves session-level objects on it — a prepared statement
// (SQL PREPARE), a WITH HOLD cursor, a temporary table, a setting (SET and
// set_config), a session advisory lock, a LISTEN — and then, when it has
// gone, to a second client: the second client gets the same server
// connection and sees none of them.
func TestSessionStateNotLent(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	cfg.Pool.Size = 1
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	type kind struct {
		name   string
		create []string
		check  string // must answer "0" (or "off") on the next client
		want   string
	}
	kinds := []kind{
		{"prepare", []string{`PREPARE leak_q(int) AS SELECT $1 + 1`, `EXECUTE leak_q(1)`},
			`SELECT count(*) FROM pg_prepared_statements`, "0"},
		{"cursor", []string{`DECLARE leak_c CURSOR WITH HOLD FOR SELECT generate_series(1, 3)`},
			`SELECT count(*) FROM pg_cursors WHERE name = 'leak_c'`, "0"},
		{"temp", []string{`CREATE TEMP TABLE leak_t AS SELECT 1 AS a`},
			`SELECT count(*) FROM pg_class WHERE relname = 'leak_t' AND relpersistence = 't'`, "0"},
		{"set", []string{`SET application_name = 'leak'`},
			`SELECT count(*) FROM pg_stat_activity WHERE pid = pg_backend_pid() AND application_name = 'leak'`, "0"},
		{"set_config", []string{`SELECT set_config('app.leak', 'leak', false)`},
			`SELECT coalesce(current_setting('app.leak', true), '')`, ""},
		{"advisory", []string{`SELECT pg_advisory_lock(4242)`},
			`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()`, "0"},
		{"do", []string{`DO $$ BEGIN CREATE TEMP TABLE leak_do (a int); PERFORM set_config('app.leak_do', 'leak', false); END $$`},
			`SELECT count(*) FROM pg_class WHERE relname = 'leak_do' AND relpersistence = 't'`, "0"},
		{"listen", []string{`LISTEN leak_channel`},
			`SELECT count(*) FROM pg_listening_channels()`, "0"},
	}
	for _, proto := range protocols {
		for _, k := range kinds {
			t.Run(proto+"/"+k.name, func(t *testing.T) {
				a := connect(t, p.dsn(""))
				pidA := one(t, ctx, a, proto, `SELECT pg_backend_pid()`)
				for _, sql := range k.create {
					mustRun(t, ctx, a, proto, sql)
				}
				// The object is there for its own client.
				if got := one(t, ctx, a, proto, k.check); got == k.want {
					t.Fatalf("%s: the object is not there for its own client", k.check)
				}
				if err := a.Close(ctx); err != nil {
					t.Fatal(err)
				}
				b := connect(t, p.dsn(""))
				if pidB := one(t, ctx, b, proto, `SELECT pg_backend_pid()`); pidB != pidA {
					t.Fatalf("the second client got server %s, not %s: the test needs the same connection", pidB, pidA)
				}
				if got := one(t, ctx, b, proto, k.check); got != k.want {
					t.Fatalf("%s: %q on the next client, want %q: %s leaked", k.check, got, k.want, k.name)
				}
			})
		}
	}
}

// TestSessionStatementsOverShards: statements that keep a query's answer
// on the server (SQL PREPARE, DECLARE CURSOR, CREATE TABLE AS, SELECT
// INTO) or whose code pgshard cannot see (DO) run where their rows are or
// are refused with 0A000 — never answered from the wrong shard — and
// nothing they create is left on a pooled connection for another client
// (pool size 1 per shard: the next client gets the same connections).
func TestSessionStatementsOverShards(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.Pool.Size = 1
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	var direct [2]*pgx.Conn
	for i, srv := range c.Shards {
		direct[i] = connect(t, srv.SuperDSN("postgres"))
		if _, err := direct[i].Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text); GRANT ALL ON kv TO PUBLIC; GRANT CREATE ON SCHEMA public TO PUBLIC`); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := direct[0].Exec(ctx, `INSERT INTO kv VALUES (5, 'five'), (50, 'fifty')`); err != nil {
		t.Fatal(err)
	}
	if _, err := direct[1].Exec(ctx, `INSERT INTO kv VALUES (150, 'one fifty'), (900, 'nine hundred')`); err != nil {
		t.Fatal(err)
	}
	refused := func(t *testing.T, c *pgx.Conn, proto, sql, fragment string) {
		t.Helper()
		_, err := runSQL(ctx, c, proto, sql)
		if pgCode(err) != "0A000" || err == nil || !strings.Contains(err.Error(), fragment) {
			t.Fatalf("%s (%s): want 0A000 with %q, got %v", sql, proto, fragment, err)
		}
	}
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			mustRun(t, ctx, direct[1], "simple", `UPDATE kv SET v = CASE k WHEN 150 THEN 'one fifty' ELSE 'nine hundred' END`)
			a := connect(t, p.dsn(""))
			// Over several shards, or with the shard in the parameters:
			// refused, and nothing is left behind.
			refused(t, a, proto, `PREPARE q(bigint) AS SELECT v FROM kv WHERE k = $1`, "PREPARE q cannot be routed to one shard")
			refused(t, a, proto, `DECLARE c CURSOR WITH HOLD FOR SELECT k FROM kv WHERE k > 40 AND k < 600`, "DECLARE c CURSOR WITH HOLD")
			refused(t, a, proto, `CREATE TEMP TABLE tt AS SELECT * FROM kv`, "several shards")
			refused(t, a, proto, `SELECT pg_try_advisory_lock(k) FROM kv`, "")
			refused(t, a, proto, `SELECT set_config('app.leak', v, false) FROM kv`, "")
			refused(t, a, proto, `CREATE TEMP TABLE tt2 (LIKE kv)`, "temporary table")
			refused(t, a, proto, `CREATE TABLE ctas AS SELECT * FROM kv`, "several shards")
			refused(t, a, proto, `CREATE MATERIALIZED VIEW mv AS SELECT count(*) FROM kv`, "several shards")
			refused(t, a, proto, `SELECT * INTO si FROM kv`, "several shards")
			// One shard, but not the one where pgshard will look for the
			// new table (the default shard, s0).
			refused(t, a, proto, `CREATE TABLE ctas AS SELECT * FROM kv WHERE k = 150`, "on shard s1")
			refused(t, a, proto, `SELECT * INTO si FROM kv WHERE k = 900`, "on shard s1")
			refused(t, a, proto, `DO $$ BEGIN UPDATE kv SET v = 'do' WHERE k = 900; END $$`, "DO cannot be routed")
			// Described first (Parse, Describe, Sync), then refused at
			// Bind: describing them does not pin the session.
			if proto == "extended" {
				for _, sql := range []string{`PREPARE q AS SELECT v FROM kv`, `SELECT pg_try_advisory_lock(k) FROM kv`,
					`DECLARE c CURSOR WITH HOLD FOR SELECT k FROM kv`} {
					if _, err := a.PgConn().Prepare(ctx, "", sql, nil); err != nil {
						t.Fatalf("describe %s: %v", sql, err)
					}
					res := a.PgConn().ExecPrepared(ctx, "", nil, nil, nil).Read()
					if pgCode(res.Err) != "0A000" {
						t.Fatalf("%s after describing: want 0A000, got %v", sql, res.Err)
					}
				}
			}
			for _, k := range []string{"5", "150", "50", "900"} {
				mustRun(t, ctx, a, proto, `SELECT v FROM kv WHERE k = `+k)
			}
			if err := a.Close(ctx); err != nil {
				t.Fatal(err)
			}
			for i, d := range direct {
				for _, q := range []string{`SELECT count(*) FROM pg_prepared_statements`, `SELECT count(*) FROM pg_cursors`,
					`SELECT count(*) FROM pg_class WHERE relpersistence = 't'`, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'`,
					`SELECT count(*) FROM pg_class WHERE relname IN ('ctas', 'mv', 'si')`} {
					if got := one(t, ctx, d, "simple", q); got != "0" {
						t.Fatalf("s%d: %s = %s after refusals", i, q, got)
					}
				}
			}

			// One shard: they run there, and the session stays on it.
			b := connect(t, p.dsn(""))
			mustRun(t, ctx, b, proto, `PREPARE q AS SELECT v FROM kv WHERE k = 150`)
			if got := one(t, ctx, b, proto, `EXECUTE q`); got != "one fifty" {
				t.Fatalf("EXECUTE q = %q", got)
			}
			mustRun(t, ctx, b, proto, `DECLARE c CURSOR WITH HOLD FOR SELECT v FROM kv WHERE k = 900`)
			if got := one(t, ctx, b, proto, `FETCH ALL FROM c`); got != "nine hundred" {
				t.Fatalf("FETCH = %q", got)
			}
			mustRun(t, ctx, b, proto, `CREATE TEMP TABLE tt AS SELECT * FROM kv WHERE k = 150`)
			if got := one(t, ctx, b, proto, `SELECT v FROM tt`); got != "one fifty" {
				t.Fatalf("temp table = %q", got)
			}
			// The session is pinned to s1: s0 is refused, not answered.
			refused(t, b, proto, `SELECT v FROM kv WHERE k = 5`, "cross-shard statement refused")
			// A DO block in a transaction on s1 runs there.
			mustRun(t, ctx, b, proto, `/* pgshard: shard=s1 */ DO $$ BEGIN UPDATE kv SET v = 'do' WHERE k = 900; END $$`)
			if got := one(t, ctx, direct[1], "simple", `SELECT v FROM kv WHERE k = 900`); got != "do" {
				t.Fatalf("hinted DO: v = %q", got)
			}
			if err := b.Close(ctx); err != nil {
				t.Fatal(err)
			}
			// The next client gets the same connections, clean, and may
			// use the same names.
			n := connect(t, p.dsn(""))
			for i, hint := range []string{"/* pgshard: shard=s0 */ ", "/* pgshard: shard=s1 */ "} {
				for _, q := range []string{`SELECT count(*) FROM pg_prepared_statements`, `SELECT count(*) FROM pg_cursors WHERE name = 'c'`,
					`SELECT count(*) FROM pg_class WHERE relname = 'tt' AND relpersistence = 't'`} {
					if got := one(t, ctx, n, proto, hint+q); got != "0" {
						t.Fatalf("s%d: %s = %s on the next client", i, q, got)
					}
				}
			}
			if err := n.Close(ctx); err != nil {
				t.Fatal(err)
			}
			n = connect(t, p.dsn(""))
			mustRun(t, ctx, n, proto, `PREPARE q AS SELECT v FROM kv WHERE k = 900`)
			if got := one(t, ctx, n, proto, `EXECUTE q`); got != "do" {
				t.Fatalf("EXECUTE q on the next client = %q", got)
			}
			if err := n.Close(ctx); err != nil {
				t.Fatal(err)
			}

			// DO inside a transaction already on a shard runs there;
			// CREATE TABLE AS from the default shard's rows is answered.
			d := connect(t, p.dsn(""))
			mustRun(t, ctx, d, "simple", `BEGIN`)
			mustRun(t, ctx, d, proto, `UPDATE kv SET v = 'tx' WHERE k = 150`)
			mustRun(t, ctx, d, proto, `DO $$ BEGIN UPDATE kv SET v = 'tx do' WHERE k = 900; END $$`)
			mustRun(t, ctx, d, "simple", `COMMIT`)
			if got := one(t, ctx, direct[1], "simple", `SELECT v FROM kv WHERE k = 900`); got != "tx do" {
				t.Fatalf("DO in a transaction on s1: v = %q", got)
			}
			mustRun(t, ctx, direct[1], "simple", `UPDATE kv SET v = 'nine hundred' WHERE k = 900`)
			table := "ctas_" + proto
			mustRun(t, ctx, d, proto, fmt.Sprintf(`CREATE TABLE %s AS SELECT * FROM kv WHERE k = 5`, table))
			if got := one(t, ctx, d, proto, `SELECT v FROM `+table); got != "five" {
				t.Fatalf("%s: %q", table, got)
			}
			if got := one(t, ctx, direct[0], "simple", `SELECT count(*) FROM `+table); got != "1" {
				t.Fatalf("%s on s0: %s rows", table, got)
			}
		})
	}
}
