package proxy_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/proxy"
)

// TestDDLObjectsOnEveryShard: DDL naming an index, a sequence, a function
// or a table not in the map (no table of the map) runs on every shard,
// in the simple protocol and in pgx's extended modes, so that creating
// and then dropping an object leaves it on no shard; a failure on one
// shard changes none; inside a transaction it is refused.
func TestDDLObjectsOnEveryShard(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	p := startProxy(t, kvMapConfig(t, c))
	ctx := ctxT(t)
	createKV(t, ctx, c.Shards)
	var direct [2]*pgx.Conn
	for i, srv := range c.Shards {
		direct[i] = connect(t, srv.SuperDSN("postgres"))
	}
	// on returns on which shards query (a count) finds something.
	on := func(query string, args ...any) [2]bool {
		t.Helper()
		var r [2]bool
		for i, d := range direct {
			var n int
			if err := d.QueryRow(ctx, query, args...).Scan(&n); err != nil {
				t.Fatal(err)
			}
			r[i] = n > 0
		}
		return r
	}
	const (
		index = `SELECT count(*) FROM pg_indexes WHERE indexname = $1`
		seq   = `SELECT count(*) FROM pg_class WHERE relname = $1 AND relkind = 'S'`
		fn    = `SELECT count(*) FROM pg_proc WHERE proname = $1`
		table = `SELECT count(*) FROM pg_class WHERE relname = $1 AND relkind = 'r'`
	)
	both, none := [2]bool{true, true}, [2]bool{}
	for _, mode := range []string{"simple_protocol", "exec", "describe_exec", "cache_describe", "cache_statement"} {
		conn := connect(t, p.dsn("default_query_exec_mode="+mode))
		m := strings.ReplaceAll(mode, "_", "")
		steps := []struct {
			sql, check, name string
			want             [2]bool
		}{
			{`CREATE INDEX kv_v_` + m + ` ON kv (v)`, index, "kv_v_" + m, both},
			{`ALTER INDEX kv_v_` + m + ` RENAME TO kv_w_` + m, index, "kv_w_" + m, both},
			{`DROP INDEX kv_w_` + m, index, "kv_w_" + m, none},
			{`CREATE SEQUENCE seq_` + m, seq, "seq_" + m, both},
			{`ALTER SEQUENCE seq_` + m + ` RESTART WITH 5`, seq, "seq_" + m, both},
			{`DROP SEQUENCE seq_` + m, seq, "seq_" + m, none},
			{`CREATE FUNCTION fn_` + m + `(int) RETURNS int LANGUAGE sql AS 'SELECT $1 + 1'`, fn, "fn_" + m, both},
			{`DROP FUNCTION fn_` + m + `(int)`, fn, "fn_" + m, none},
			{`CREATE TABLE other_` + m + ` (a int)`, table, "other_" + m, both},
			{`DROP TABLE other_` + m, table, "other_" + m, none},
		}
		for _, st := range steps {
			if _, err := conn.Exec(ctx, st.sql); err != nil {
				t.Fatalf("%s: %s: %v", mode, st.sql, err)
			}
			if got := on(st.check, st.name); got != st.want {
				t.Fatalf("%s: after %s: %s on shards %v, want %v", mode, st.sql, st.name, got, st.want)
			}
		}
		// All or none: a sequence already on s1 only fails the CREATE,
		// naming s1, and s0 gets none; dropping an index that is on s0
		// only fails on s1 and s0 keeps it.
		if _, err := direct[1].Exec(ctx, `CREATE SEQUENCE dup_`+m); err != nil {
			t.Fatal(err)
		}
		_, err := conn.Exec(ctx, `CREATE SEQUENCE dup_`+m)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42P07" || !strings.Contains(pgErr.Message, "shard s1") {
			t.Fatalf("%s: want 42P07 naming shard s1, got %v", mode, err)
		}
		if got := on(seq, "dup_"+m); got != [2]bool{false, true} {
			t.Fatalf("%s: dup_%s on shards %v after the failed CREATE", mode, m, got)
		}
		// A DROP removes the object where it exists (an index of the
		// default shard only: dropped), and fails as on PostgreSQL when the
		// default shard lacks it (an index of s1 only: kept, with a hint).
		if _, err := direct[0].Exec(ctx, `CREATE INDEX only0_`+m+` ON kv (v)`); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `DROP INDEX only0_`+m); err != nil {
			t.Fatalf("%s: DROP INDEX of the default shard's index: %v", mode, err)
		}
		if got := on(index, "only0_"+m); got != none {
			t.Fatalf("%s: only0_%s on shards %v after the DROP", mode, m, got)
		}
		if _, err := direct[1].Exec(ctx, `CREATE INDEX only1_`+m+` ON kv (v)`); err != nil {
			t.Fatal(err)
		}
		_, err = conn.Exec(ctx, `DROP INDEX only1_`+m)
		if !errors.As(err, &pgErr) || pgErr.Code != "42704" || !strings.Contains(pgErr.Message, "shard s0") || !strings.Contains(pgErr.Hint, "pgshard: shard=") {
			t.Fatalf("%s: want 42704 naming shard s0 with a hint, got %v", mode, err)
		}
		if got := on(index, "only1_"+m); got != [2]bool{false, true} {
			t.Fatalf("%s: only1_%s on shards %v after the failed DROP", mode, m, got)
		}
		// A hint drops it where it is.
		if _, err := conn.Exec(ctx, `/* pgshard: shard=s1 */ DROP INDEX only1_`+m); err != nil {
			t.Fatalf("%s: hinted DROP INDEX: %v", mode, err)
		}
		if got := on(index, "only1_"+m); got != none {
			t.Fatalf("%s: only1_%s on shards %v after the hinted DROP", mode, m, got)
		}
		// Inside a transaction: refused, nothing changed.
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `SELECT k FROM kv WHERE k = 1`); err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, `CREATE SEQUENCE intx_`+m)
		if !errors.As(err, &pgErr) || pgErr.Code != "0A000" {
			t.Fatalf("%s: DDL in a transaction: want 0A000, got %v", mode, err)
		}
		_ = tx.Rollback(ctx)
		if got := on(seq, "intx_"+m); got != none {
			t.Fatalf("%s: intx_%s on shards %v", mode, m, got)
		}
		// The session still works.
		var one int
		if err := conn.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil || one != 1 {
			t.Fatalf("%s: after: %d %v", mode, one, err)
		}
		_ = conn.Close(ctx)
	}
	// A migration script in one simple query: all of it on every shard,
	// or none of it.
	conn := connect(t, p.dsn("default_query_exec_mode=simple_protocol"))
	if _, err := conn.Exec(ctx, `CREATE TABLE script_t (a int); CREATE INDEX script_ix ON script_t (a); CREATE SEQUENCE script_seq`); err != nil {
		t.Fatalf("script: %v", err)
	}
	if on(table, "script_t") != both || on(index, "script_ix") != both || on(seq, "script_seq") != both {
		t.Fatal("the script is not on every shard")
	}
	if _, err := direct[1].Exec(ctx, `CREATE SEQUENCE script_seq2`); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, `DROP INDEX script_ix; CREATE SEQUENCE script_seq2`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42P07" || !strings.Contains(pgErr.Message, "shard s1") {
		t.Fatalf("failing script: want 42P07 naming shard s1, got %v", err)
	}
	if on(index, "script_ix") != both || on(seq, "script_seq2") != [2]bool{false, true} {
		t.Fatal("the failing script changed a shard")
	}
}

// TestDDLExtendedProtocolFrames sends DDL over several shards as raw
// Parse/Bind/(Describe)/Execute/Sync, as JDBC does: the answers are those
// of PostgreSQL, the DDL lands on every shard, and a failure is reported
// at Execute and skips to the Sync.
func TestDDLExtendedProtocolFrames(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.Users = append(cfg.Users, proxy.UserConfig{Name: "tr", Auth: "trust"})
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	createKV(t, ctx, c.Shards)
	for _, srv := range c.Shards {
		if err := srv.Exec(ctx, `CREATE ROLE tr LOGIN SUPERUSER`); err != nil {
			t.Fatal(err)
		}
	}
	conn, fe := trustedSession(t, p.addr)
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	expect := func(want ...pgproto3.BackendMessage) []pgproto3.BackendMessage {
		t.Helper()
		var got []pgproto3.BackendMessage
		for _, w := range want {
			m, err := fe.Receive()
			if err != nil {
				t.Fatalf("waiting for %T: %v", w, err)
			}
			if fmt.Sprintf("%T", m) != fmt.Sprintf("%T", w) {
				t.Fatalf("got %T %+v, want %T", m, m, w)
			}
			got = append(got, m)
		}
		return got
	}
	send := func(msgs ...pgproto3.FrontendMessage) {
		t.Helper()
		for _, m := range msgs {
			fe.Send(m)
		}
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	indexes := func(name string) int {
		n := 0
		for _, srv := range c.Shards {
			d := connect(t, srv.SuperDSN("postgres"))
			var k int
			if err := d.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE indexname = $1`, name).Scan(&k); err != nil {
				t.Fatal(err)
			}
			n += k
			_ = d.Close(ctx)
		}
		return n
	}
	// Parse/Bind/Execute/Sync, unnamed statement.
	send(&pgproto3.Parse{Query: "CREATE INDEX raw_ix ON kv (v)"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	got := expect(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.CommandComplete{}, &pgproto3.ReadyForQuery{})
	if tag := string(got[2].(*pgproto3.CommandComplete).CommandTag); tag != "CREATE INDEX" {
		t.Fatalf("tag %q", tag)
	}
	if rfq := got[3].(*pgproto3.ReadyForQuery); rfq.TxStatus != 'I' {
		t.Fatalf("status %c", rfq.TxStatus)
	}
	if n := indexes("raw_ix"); n != 2 {
		t.Fatalf("raw_ix on %d shards after CREATE", n)
	}
	// Named statement, described first (Parse/Describe/Sync), then
	// Bind/Describe portal/Execute/Sync: what JDBC sends.
	send(&pgproto3.Parse{Name: "s1", Query: "DROP INDEX raw_ix"}, &pgproto3.Describe{ObjectType: 'S', Name: "s1"}, &pgproto3.Sync{})
	expect(&pgproto3.ParseComplete{}, &pgproto3.ParameterDescription{}, &pgproto3.NoData{}, &pgproto3.ReadyForQuery{})
	send(&pgproto3.Bind{PreparedStatement: "s1"}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
	got = expect(&pgproto3.BindComplete{}, &pgproto3.NoData{}, &pgproto3.CommandComplete{}, &pgproto3.ReadyForQuery{})
	if tag := string(got[2].(*pgproto3.CommandComplete).CommandTag); tag != "DROP INDEX" {
		t.Fatalf("tag %q", tag)
	}
	if n := indexes("raw_ix"); n != 0 {
		t.Fatalf("raw_ix on %d shards after DROP", n)
	}
	// Executing the statement again: the index is gone, so the error is
	// reported at Execute, the rest of the batch is skipped and the Sync
	// answered.
	send(&pgproto3.Bind{PreparedStatement: "s1"}, &pgproto3.Execute{}, &pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	got = expect(&pgproto3.BindComplete{}, &pgproto3.ErrorResponse{}, &pgproto3.ReadyForQuery{})
	if e := got[1].(*pgproto3.ErrorResponse); e.Code != "42704" {
		t.Fatalf("error %+v", e)
	}
	// Two DDL statements before one Sync (a JDBC batch).
	send(&pgproto3.Parse{Query: "CREATE SEQUENCE batch_a"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Parse{Query: "CREATE SEQUENCE batch_b"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	expect(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.CommandComplete{},
		&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.CommandComplete{}, &pgproto3.ReadyForQuery{})
	for _, srv := range c.Shards {
		d := connect(t, srv.SuperDSN("postgres"))
		var k int
		if err := d.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname IN ('batch_a', 'batch_b')`).Scan(&k); err != nil || k != 2 {
			t.Fatalf("batch sequences on %s: %d %v", srv.Addr(), k, err)
		}
		_ = d.Close(ctx)
	}
	// A parameter given to DDL is a protocol error, as on PostgreSQL.
	send(&pgproto3.Parse{Query: "CREATE SEQUENCE raw_seq"}, &pgproto3.Bind{Parameters: [][]byte{[]byte("1")}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	got = expect(&pgproto3.ParseComplete{}, &pgproto3.ErrorResponse{}, &pgproto3.ReadyForQuery{})
	if e := got[1].(*pgproto3.ErrorResponse); e.Code != "08P01" {
		t.Fatalf("error %+v", e)
	}
	// The session still works.
	send(&pgproto3.Query{String: "SELECT 1"})
	expect(&pgproto3.RowDescription{}, &pgproto3.DataRow{}, &pgproto3.CommandComplete{}, &pgproto3.ReadyForQuery{})
}

// TestDDLTemporaryObjects: temporary objects stay on the session's
// server connection (which they pin); DDL naming them as pg_temp.name
// runs there, and DDL that could name an object of every shard is
// refused in the pinned session rather than run on one shard.
func TestDDLTemporaryObjects(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	p := startProxy(t, kvMapConfig(t, c))
	ctx := ctxT(t)
	createKV(t, ctx, c.Shards)
	conn := connect(t, p.dsn("default_query_exec_mode=simple_protocol"))
	for _, sql := range []string{
		`CREATE TEMP TABLE tmp (a int)`,
		`CREATE INDEX tmp_a ON pg_temp.tmp (a)`,
		`INSERT INTO tmp VALUES (1)`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	_, err := conn.Exec(ctx, `DROP TABLE tmp`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "0A000" || !strings.Contains(pgErr.Hint, "pg_temp") {
		t.Fatalf("unqualified DROP in a pinned session: want 0A000 with a hint, got %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM tmp`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("tmp after the refusal: %d %v", n, err)
	}
	if _, err := conn.Exec(ctx, `DROP TABLE pg_temp.tmp`); err != nil {
		t.Fatalf("DROP TABLE pg_temp.tmp: %v", err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname = 'tmp'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("tmp still there: %d %v", n, err)
	}
}
