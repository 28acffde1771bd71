package proxy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
)

// kvShards starts two shards with the kv map (k < 100 on s0), creates kv
// with a few column types on both and in a reference database "ref" on
// the first server holding every row, and loads the same rows into both.
func kvShards(t *testing.T) (*pgcluster.Cluster, [2]*pgx.Conn, *pgx.Conn) {
	t.Helper()
	c := integration.NewCluster(t, integration.Shards(2))
	ctx := ctxT(t)
	const ddl = `CREATE TABLE kv (k bigint PRIMARY KEY, v text, n numeric, f float8, ts timestamptz)`
	const load = `INSERT INTO kv SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'v' || (g % 5) END,
		CASE WHEN g % 11 = 0 THEN NULL ELSE g * 1.25 END, g / 3.0, '2026-01-01'::timestamptz + g * interval '1 hour'
		FROM generate_series(-20, 300) g`
	var direct [2]*pgx.Conn
	for i, srv := range c.Shards {
		direct[i] = connect(t, srv.SuperDSN("postgres"))
		if _, err := direct[i].Exec(ctx, ddl); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := direct[0].Exec(ctx, `CREATE DATABASE ref`); err != nil {
		t.Fatal(err)
	}
	ref := connect(t, c.Shards[0].SuperDSN("ref"))
	for _, sql := range []string{ddl, load} {
		if _, err := ref.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := direct[0].Exec(ctx, load+` WHERE g < 100`); err != nil {
		t.Fatal(err)
	}
	if _, err := direct[1].Exec(ctx, load+` WHERE g >= 100`); err != nil {
		t.Fatal(err)
	}
	return c, direct, ref
}

// rawResult is a result as the client library received it: column
// descriptions and raw values, in the wire format the client asked for.
type rawResult struct {
	cols []string
	rows []string
}

func queryRaw(ctx context.Context, c *pgx.Conn, sql string, args ...any) (rawResult, error) {
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		return rawResult{}, err
	}
	defer rows.Close()
	var r rawResult
	for _, fd := range rows.FieldDescriptions() {
		r.cols = append(r.cols, fmt.Sprintf("%s:%d:%d", fd.Name, fd.DataTypeOID, fd.Format))
	}
	for rows.Next() {
		var row []string
		for _, v := range rows.RawValues() {
			if v == nil {
				row = append(row, "NULL")
			} else {
				row = append(row, fmt.Sprintf("%x", v))
			}
		}
		r.rows = append(r.rows, strings.Join(row, ","))
	}
	return r, rows.Err()
}

// TestScatterExtendedProtocol: reads over several shards through the
// extended protocol (pgx's default and other modes: binary and text
// result formats chosen per column, parameters in LIMIT/OFFSET, = ANY,
// aggregates rewritten for merging) return exactly what one server
// holding all rows returns, byte for byte in the client's formats.
func TestScatterExtendedProtocol(t *testing.T) {
	c, _, _ := kvShards(t)
	p := startProxy(t, kvMapConfig(t, c))
	ctx := ctxT(t)
	queries := []struct {
		sql  string
		args []any
	}{
		{`SELECT k, v, n, f, ts FROM kv ORDER BY k LIMIT $1 OFFSET $2`, []any{7, 95}},
		{`SELECT k, v FROM kv ORDER BY k DESC LIMIT $1`, []any{5}},
		{`SELECT count(*), sum(n), avg(n), min(v), max(f), avg(f), sum(k), avg(k) FROM kv`, nil},
		{`SELECT v, count(*), avg(n), max(ts) FROM kv GROUP BY v ORDER BY v NULLS FIRST`, nil},
		{`SELECT k, n FROM kv WHERE k = ANY($1) ORDER BY k DESC`, []any{[]int64{-3, 5, 99, 100, 101, 250, 400}}},
		{`SELECT DISTINCT v FROM kv WHERE k > $1 ORDER BY v`, []any{50}},
		{`SELECT k, n FROM kv WHERE n > $1 ORDER BY n NULLS FIRST, k LIMIT 10`, []any{120}},
		{`SELECT avg(n) AS a, v FROM kv WHERE k BETWEEN $1 AND $2 GROUP BY v ORDER BY a DESC, v`, []any{10, 200}},
		{`SELECT k FROM kv WHERE v = $1 ORDER BY f LIMIT 3`, []any{"v2"}},
		{`SELECT v FROM kv GROUP BY v ORDER BY v`, nil},
		{`SELECT v FROM kv GROUP BY v ORDER BY v COLLATE "C" DESC`, nil},
		{`SELECT v, max(k) FROM kv GROUP BY v, k % 2 ORDER BY 2, 1 LIMIT $1`, []any{4}},
	}
	for _, mode := range []string{"simple_protocol", "cache_statement", "cache_describe", "describe_exec", "exec"} {
		conn := connect(t, p.dsn("default_query_exec_mode="+mode))
		refConn := connect(t, c.Shards[0].SuperDSN("ref")+"&default_query_exec_mode="+mode)
		for _, q := range queries {
			for round := range 2 { // the second run uses cached statements
				want, err := queryRaw(ctx, refConn, q.sql, q.args...)
				if err != nil {
					t.Fatalf("%s: reference %s: %v", mode, q.sql, err)
				}
				got, err := queryRaw(ctx, conn, q.sql, q.args...)
				if err != nil {
					t.Fatalf("%s (run %d): %s: %v", mode, round, q.sql, err)
				}
				if !slices.Equal(got.cols, want.cols) || !slices.Equal(got.rows, want.rows) {
					t.Fatalf("%s (run %d): %s\n got  %v %v\n want %v %v", mode, round, q.sql, got.cols, got.rows, want.cols, want.rows)
				}
				if len(want.rows) == 0 {
					t.Fatalf("%s: %s: the reference returned no rows; the test is vacuous", mode, q.sql)
				}
			}
		}
		// A shard's error reaches the client with its SQLSTATE, and the
		// session goes on.
		var x int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM kv WHERE 1 / (k - $1) > 0`, 150).Scan(&x)
		if pgCode(err) != "22012" || !strings.Contains(err.Error(), "s1") {
			t.Fatalf("%s: division by zero on one shard: %v", mode, err)
		}
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM kv WHERE k > $1`, 0).Scan(&x); err != nil || x != 300 {
			t.Fatalf("%s: after a shard error: %d %v", mode, x, err)
		}
		// A batch: a read over several shards between single-shard
		// statements, each with its own sync point.
		if mode != "simple_protocol" {
			b := &pgx.Batch{}
			b.Queue(`SELECT count(*) FROM kv WHERE k < $1`, 1000)
			var n int
			b.Queue(`SELECT count(*) FROM kv`).QueryRow(func(r pgx.Row) error { return r.Scan(&n) })
			if err := conn.SendBatch(ctx, b).Close(); err != nil || n != 321 {
				t.Fatalf("%s: batch of two reads over several shards: %d %v", mode, n, err)
			}
		}
	}
}

// TestSplitInsert: a multi-row INSERT with rows for several shards is
// split, each shard gets its rows, RETURNING comes back in the client's
// order, and a failure on one shard leaves no row on any (one
// transaction per shard, all committed or none).
func TestSplitInsert(t *testing.T) {
	c, direct, _ := kvShards(t)
	p := startProxy(t, kvMapConfig(t, c))
	ctx := ctxT(t)
	for i, mode := range []string{"simple_protocol", "cache_statement", "exec"} {
		conn := connect(t, p.dsn("default_query_exec_mode="+mode))
		base := int64(1000 * (i + 1))
		keys := []int64{base + 150, -base, base + 7, -base - 1}
		rows, err := conn.Query(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'a'), ($2, $5), ($3, 'c'), ($4, 'd') RETURNING k, v`,
			keys[0], keys[1], keys[2], keys[3], "b")
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		var got []string
		for rows.Next() {
			var k int64
			var v string
			if err := rows.Scan(&k, &v); err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%d:%s", k, v))
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		want := []string{fmt.Sprint(keys[0], ":a"), fmt.Sprint(keys[1], ":b"), fmt.Sprint(keys[2], ":c"), fmt.Sprint(keys[3], ":d")}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: RETURNING order: got %v, want %v", mode, got, want)
		}
		tag, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'x'), ($2, 'y')`, base+500, -base-500)
		if err != nil || tag.String() != "INSERT 0 2" {
			t.Fatalf("%s: split insert: %v %v", mode, tag, err)
		}
		for _, k := range append(keys, base+500, -base-500) {
			shard := 0
			if k >= 100 {
				shard = 1
			}
			var n int
			if err := direct[shard].QueryRow(ctx, `SELECT count(*) FROM kv WHERE k = $1`, k).Scan(&n); err != nil || n != 1 {
				t.Fatalf("%s: key %d not on s%d (%d %v)", mode, k, shard, n, err)
			}
		}
		// All or none: the second row exists on s1 already.
		_, err = conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'new'), ($2, 'dup')`, -base-900, base+150)
		if pgCode(err) != "23505" || !strings.Contains(err.Error(), "s1") {
			t.Fatalf("%s: duplicate key on one shard: %v", mode, err)
		}
		var n int
		if err := direct[0].QueryRow(ctx, `SELECT count(*) FROM kv WHERE k = $1`, -base-900).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%s: the other shard kept its row (%d %v)", mode, n, err)
		}
		// Inside a transaction it is refused: it would span shards.
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'p'), ($2, 'q')`, -base-901, base+901); pgCode(err) != "0A000" {
			t.Fatalf("%s: split insert in a transaction: %v", mode, err)
		}
		_ = tx.Rollback(ctx)
	}
}

// TestCopyOutOverShards: COPY of a sharded table TO STDOUT concatenates
// the shards' data: every row once, one CSV header, one binary header and
// trailer.
func TestCopyOutOverShards(t *testing.T) {
	c, _, ref := kvShards(t)
	p := startProxy(t, kvMapConfig(t, c))
	ctx := ctxT(t)
	conn := connect(t, p.dsn(""))
	copyOut := func(conn *pgx.Conn, sql string) []byte {
		t.Helper()
		var buf bytes.Buffer
		tag, err := conn.PgConn().CopyTo(ctx, &buf, sql)
		if err != nil || tag.RowsAffected() != 321 {
			t.Fatalf("%s: %v %v", sql, tag, err)
		}
		return buf.Bytes()
	}
	for _, sql := range []string{
		`COPY kv TO STDOUT`,
		`COPY kv (k, v) TO STDOUT WITH (FORMAT csv, HEADER)`,
		`COPY (SELECT k, n FROM kv WHERE k > 50) TO STDOUT`,
	} {
		if strings.Contains(sql, "k > 50") {
			var buf bytes.Buffer
			if _, err := conn.PgConn().CopyTo(ctx, &buf, sql); err != nil {
				t.Fatal(err)
			}
			var want bytes.Buffer
			if _, err := ref.PgConn().CopyTo(ctx, &want, sql); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sortedLines(buf.Bytes()), sortedLines(want.Bytes())) {
				t.Fatalf("%s: rows differ", sql)
			}
			continue
		}
		got, want := copyOut(conn, sql), copyOut(ref, sql)
		gl, wl := sortedLines(got), sortedLines(want)
		if !slices.Equal(gl, wl) {
			t.Fatalf("%s: lines differ: got %d, want %d", sql, len(gl), len(wl))
		}
		if strings.Contains(sql, "HEADER") && !bytes.HasPrefix(got, []byte("k,v\n")) {
			t.Fatalf("%s: the header is not first: %q", sql, got[:20])
		}
	}
	// Binary: one header, one trailer, every tuple.
	got := copyOut(conn, `COPY kv (k) TO STDOUT (FORMAT binary)`)
	const header = "PGCOPY\n\xff\r\n\x00"
	if !bytes.HasPrefix(got, []byte(header)) || bytes.Count(got, []byte(header)) != 1 {
		t.Fatalf("binary copy: header missing or repeated")
	}
	body := got[19:]
	var keys []int64
	for len(body) >= 2 {
		nf := int16(binary.BigEndian.Uint16(body))
		if nf == -1 {
			body = body[2:]
			break
		}
		if nf != 1 || len(body) < 14 {
			t.Fatalf("binary copy: bad tuple at %d", len(got)-len(body))
		}
		keys = append(keys, int64(binary.BigEndian.Uint64(body[6:])))
		body = body[14:]
	}
	if len(keys) != 321 || len(body) != 0 {
		t.Fatalf("binary copy: %d tuples, %d bytes after the trailer", len(keys), len(body))
	}
}

func sortedLines(b []byte) []string {
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	slices.Sort(lines)
	return lines
}

// TestExplainRoute: EXPLAIN (pgshard) says where a statement goes
// without running it, also inside a transaction; SHOW pgshard.route shows
// the session's hints.
func TestExplainRoute(t *testing.T) {
	c, direct, _ := kvShards(t)
	p := startProxy(t, kvMapConfig(t, c))
	ctx := ctxT(t)
	conn := connect(t, p.dsn("default_query_exec_mode=simple_protocol"))
	explain := func(hint, sql string) []string {
		t.Helper()
		rows, err := conn.Query(ctx, hint+"EXPLAIN (pgshard) "+sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		var out []string
		for rows.Next() {
			var shard, route, stmt, detail *string
			if err := rows.Scan(&shard, &route, &stmt, &detail); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%s|%s|%s|%s", deref1(shard), deref1(route), deref1(stmt), deref1(detail)))
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return out
	}
	for _, tc := range []struct{ hint, sql, want string }{
		{``, `SELECT * FROM kv WHERE k = 150`, "s1|single|SELECT * FROM kv WHERE k = 150|"},
		{``, `DELETE FROM kv WHERE k = 5`, "s0|single|DELETE FROM kv WHERE k = 5|"},
		{``, `SELECT count(*) FROM kv`, "s0|scatter|SELECT count(*) FROM kv|aggregates combined per group;s1|scatter|SELECT count(*) FROM kv|aggregates combined per group"},
		{``, `SELECT k FROM kv ORDER BY k DESC LIMIT 3 OFFSET 2`, "s0|scatter|SELECT k FROM kv ORDER BY k DESC LIMIT 3::bigint + 2::bigint|merged in order of column 1 DESC NULLS FIRST; offset 2; limit 3;s1|scatter|SELECT k FROM kv ORDER BY k DESC LIMIT 3::bigint + 2::bigint|merged in order of column 1 DESC NULLS FIRST; offset 2; limit 3"},
		{``, `INSERT INTO kv (k) VALUES (1), (200)`, "s0|multi|INSERT INTO kv (k) VALUES (1)|rows of this shard, one transaction per shard, all committed or none;s1|multi|INSERT INTO kv (k) VALUES (200)|rows of this shard, one transaction per shard, all committed or none"},
		{`/* pgshard: shard=s1 */ `, `SELECT count(*) FROM kv`, "s1|single|SELECT count(*) FROM kv|chosen by a pgshard hint"},
		{``, `SELECT 1`, "s0|default|SELECT 1|"},
		// DDL (PostgreSQL's EXPLAIN takes none): where it runs, not run.
		{``, `CREATE INDEX kv_v_ix ON kv (v)`, "s0|utility|CREATE INDEX kv_v_ix ON kv (v)|on every shard, all or none (shard by shard when it cannot run in a transaction block);" +
			"s1|utility|CREATE INDEX kv_v_ix ON kv (v)|on every shard, all or none (shard by shard when it cannot run in a transaction block)"},
		{`/* pgshard: shard=s1 */ `, `ALTER TABLE kv ADD COLUMN extra int`, "s1|single|ALTER TABLE kv ADD COLUMN extra int|chosen by a pgshard hint"},
	} {
		if got := strings.Join(explain(tc.hint, tc.sql), ";"); got != tc.want {
			t.Errorf("EXPLAIN (pgshard) %s\n got  %s\n want %s", tc.sql, got, tc.want)
		}
	}
	for i, d := range direct {
		var n int
		if err := d.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE indexname = 'kv_v_ix'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("s%d: EXPLAIN (pgshard) ran the DDL (%d, %v)", i, n, err)
		}
	}
	got := explain("", `SELECT k, row_number() OVER () FROM kv`)
	if len(got) != 1 || !strings.HasPrefix(got[0], "|refused|") || !strings.Contains(got[0], "SQLSTATE 0A000") {
		t.Fatalf("refused statement: %v", got)
	}
	// Nothing ran: the DELETE and INSERT above were only explained.
	var n int
	if err := direct[0].QueryRow(ctx, `SELECT count(*) FROM kv WHERE k = 5`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("explained DELETE ran: %d %v", n, err)
	}
	// Inside a transaction on s1 it is answered there, and the
	// transaction goes on.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE kv SET v = 'tx' WHERE k = 150`); err != nil {
		t.Fatal(err)
	}
	if got := explain("", `SELECT v FROM kv WHERE k = 3`); len(got) != 1 || !strings.HasPrefix(got[0], "s0|single") {
		t.Fatalf("in a transaction: %v", got)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SET pgshard.key = '150'`); err != nil {
		t.Fatal(err)
	}
	var key string
	if err := conn.QueryRow(ctx, `SELECT value FROM (SHOW pgshard.route) r WHERE setting = 'pgshard.key'`).Scan(&key); err == nil {
		t.Fatal("SHOW is not a subquery; this statement should fail")
	}
	rows, err := conn.Query(ctx, `SHOW pgshard.route`)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for rows.Next() {
		var setting, value string
		if err := rows.Scan(&setting, &value); err != nil {
			t.Fatal(err)
		}
		found = found || setting == "pgshard.key" && value == "150"
	}
	if rows.Err() != nil || !found {
		t.Fatalf("SHOW pgshard.route: key hint not shown (%v)", rows.Err())
	}
}

func deref1(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// TestCopyInSplit: COPY ... FROM STDIN into a sharded table sends every
// row to its shard (binary, text and CSV), and is all or none: a bad
// row, a shard's error or the client's CopyFail leaves no row anywhere.
func TestCopyInSplit(t *testing.T) {
	c, direct, _ := kvShards(t)
	p := startProxy(t, kvMapConfig(t, c))
	ctx := ctxT(t)
	conn := connect(t, p.dsn(""))
	countOn := func(shard int, where string) int {
		t.Helper()
		var n int
		if err := direct[shard].QueryRow(ctx, `SELECT count(*) FROM kv WHERE `+where).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Binary, through pgx's CopyFrom.
	var rows [][]any
	for k := int64(10000); k < 12000; k++ {
		key := k
		if k%2 == 0 {
			key = -k
		}
		var v any = fmt.Sprintf("row %d\t\\ é", k)
		if k%10 == 0 {
			v = nil
		}
		rows = append(rows, []any{key, v})
	}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"kv"}, []string{"k", "v"}, pgx.CopyFromRows(rows))
	if err != nil || n != 2000 {
		t.Fatalf("binary COPY: %d %v", n, err)
	}
	if a, b := countOn(0, "k <= -10000"), countOn(1, "k >= 10000"); a != 1000 || b != 1000 {
		t.Fatalf("binary COPY: %d rows on s0, %d on s1", a, b)
	}
	var v *string
	if err := direct[1].QueryRow(ctx, `SELECT v FROM kv WHERE k = 10001`).Scan(&v); err != nil || v == nil || *v != "row 10001\t\\ é" {
		t.Fatalf("binary COPY: value %v %v", v, err)
	}
	// Text with escapes and NULLs, sent in small pieces.
	text := "20001\tone\\ttab\n-20001\t\\N\n20002\tback\\\\slash\n-20002\tnew\\nline\n"
	tag, err := conn.PgConn().CopyFrom(ctx, &chunkReader{data: []byte(text), size: 3}, `COPY kv (k, v) FROM STDIN`)
	if err != nil || tag.RowsAffected() != 4 {
		t.Fatalf("text COPY: %v %v", tag, err)
	}
	if err := direct[0].QueryRow(ctx, `SELECT v FROM kv WHERE k = -20002`).Scan(&v); err != nil || v == nil || *v != "new\nline" {
		t.Fatalf("text COPY: value %v %v", v, err)
	}
	// CSV with a header and a quoted field across lines.
	csv := "v,k\n\"multi\nline, \"\"quoted\"\"\",30001\nplain,-30001\n"
	tag, err = conn.PgConn().CopyFrom(ctx, strings.NewReader(csv), `COPY kv (v, k) FROM STDIN WITH (FORMAT csv, HEADER)`)
	if err != nil || tag.RowsAffected() != 2 {
		t.Fatalf("csv COPY: %v %v", tag, err)
	}
	if err := direct[1].QueryRow(ctx, `SELECT v FROM kv WHERE k = 30001`).Scan(&v); err != nil || v == nil || *v != "multi\nline, \"quoted\"" {
		t.Fatalf("csv COPY: value %v %v", v, err)
	}
	// All or none.
	for _, tc := range []struct {
		name, data, code, msg string
	}{
		{"bad key", "40001\ta\n-40001\tb\nxyz\tc\n", "22P02", `"xyz"`},
		{"duplicate on one shard", "40002\ta\n-40002\tb\n20001\tdup\n", "23505", "shard s1: duplicate key"},
		{"missing column", "40003\ta\n-40003\n", "22P04", `missing data for column "v"`},
	} {
		_, err := conn.PgConn().CopyFrom(ctx, strings.NewReader(tc.data), `COPY kv (k, v) FROM STDIN`)
		if pgCode(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Fatalf("%s: want %s, got %v", tc.name, tc.code, err)
		}
		if a, b := countOn(0, "k <= -40000 AND k > -50000"), countOn(1, "k >= 40000 AND k < 50000"); a+b != 0 {
			t.Fatalf("%s: %d rows on s0 and %d on s1 after a failed COPY", tc.name, a, b)
		}
	}
	_, err = conn.PgConn().CopyFrom(ctx, &chunkReader{data: []byte("40004\ta\n-40004\tb\n"), size: 9, fail: true}, `COPY kv (k, v) FROM STDIN`)
	if pgCode(err) != "57014" {
		t.Fatalf("client CopyFail: %v", err)
	}
	if a, b := countOn(0, "k = -40004"), countOn(1, "k = 40004"); a+b != 0 {
		t.Fatalf("CopyFail left rows: %d %d", a, b)
	}
	// A client encoding whose characters can hold ASCII bytes cannot be
	// split safely: refused, as is COPY's own ENCODING option.
	sjis := connect(t, p.dsn("client_encoding=SJIS"))
	if _, err := sjis.PgConn().CopyFrom(ctx, strings.NewReader("50001\ta\n"), `COPY kv (k, v) FROM STDIN`); pgCode(err) != "0A000" {
		t.Fatalf("COPY in SJIS: %v", err)
	}
	if _, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("50001\ta\n"), `COPY kv (k, v) FROM STDIN (ENCODING 'LATIN1')`); pgCode(err) != "0A000" {
		t.Fatalf("COPY with ENCODING: %v", err)
	}
	// The session and the pools are fine afterwards.
	var total int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM kv`).Scan(&total); err != nil || total != 321+2000+4+2 {
		t.Fatalf("after the COPYs: %d %v", total, err)
	}
}

// chunkReader returns data size bytes at a time, then io.EOF (or an
// error when fail is set, which makes pgconn send CopyFail).
type chunkReader struct {
	data []byte
	size int
	fail bool
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		if r.fail {
			return 0, fmt.Errorf("the application gave up")
		}
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.size)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestExtendedTransactionControl: BEGIN, COMMIT and ROLLBACK sent through
// the extended protocol (as JDBC does, in one pipeline with the
// statements) are deferred like simple-protocol ones: the transaction
// runs on the shard of its first statement, and the session is not
// pinned afterwards.
func TestExtendedTransactionControl(t *testing.T) {
	c, direct, _ := kvShards(t)
	p := startProxy(t, kvMapConfig(t, c))
	ctx := ctxT(t)
	conn := connect(t, p.dsn(""))
	pc := conn.PgConn()
	exec := func(sql string, args ...[]byte) (string, error) {
		r := pc.ExecParams(ctx, sql, args, nil, nil, nil).Read()
		return r.CommandTag.String(), r.Err
	}
	for i, key := range []string{"150", "5"} {
		if tag, err := exec("BEGIN"); err != nil || tag != "BEGIN" {
			t.Fatalf("BEGIN: %q %v", tag, err)
		}
		if pc.TxStatus() != 'T' {
			t.Fatalf("status after BEGIN: %c", pc.TxStatus())
		}
		if _, err := exec(`UPDATE kv SET v = 'ext' WHERE k = $1`, []byte(key)); err != nil {
			t.Fatal(err)
		}
		if tag, err := exec("COMMIT"); err != nil || tag != "COMMIT" {
			t.Fatalf("COMMIT: %q %v", tag, err)
		}
		var v string
		if err := direct[1-i].QueryRow(ctx, `SELECT v FROM kv WHERE k = `+key).Scan(&v); err != nil || v != "ext" {
			t.Fatalf("key %s: %q %v", key, v, err)
		}
	}
	// A transaction that never reached a shard.
	for _, end := range []string{"COMMIT", "ROLLBACK"} {
		if _, err := exec("BEGIN"); err != nil {
			t.Fatal(err)
		}
		if tag, err := exec(end); err != nil || tag != end || pc.TxStatus() != 'I' {
			t.Fatalf("%s of an empty transaction: %q %v %c", end, tag, err, pc.TxStatus())
		}
	}
	// One pipeline: BEGIN, a statement, COMMIT, Sync — then a read over
	// both shards still works (the session is not pinned).
	pl := pc.StartPipeline(ctx)
	pl.SendQueryParams("BEGIN", nil, nil, nil, nil)
	pl.SendQueryParams(`INSERT INTO kv (k, v) VALUES ($1, 'pipe')`, [][]byte{[]byte("777")}, nil, nil, nil)
	pl.SendQueryParams("COMMIT", nil, nil, nil, nil)
	if err := pl.Sync(); err != nil {
		t.Fatal(err)
	}
	var tags []string
	for {
		res, err := pl.GetResults()
		if err != nil {
			t.Fatal(err)
		}
		if res == nil {
			break
		}
		if rr, ok := res.(*pgconn.ResultReader); ok {
			r := rr.Read()
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			tags = append(tags, r.CommandTag.String())
		}
		if _, ok := res.(*pgconn.PipelineSync); ok {
			break
		}
	}
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(tags, ",") != "BEGIN,INSERT 0 1,COMMIT" {
		t.Fatalf("pipeline tags: %v", tags)
	}
	var n int
	if err := direct[1].QueryRow(ctx, `SELECT count(*) FROM kv WHERE k = 777`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("pipelined insert: %d %v", n, err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM kv`).Scan(&n); err != nil || n != 322 {
		t.Fatalf("read over both shards after extended transactions: %d %v", n, err)
	}
}

// TestUserAggregateRefused: a user-defined aggregate over several shards
// is refused (its per-shard results cannot be merged), in both protocols;
// on one shard it runs; scalar functions are not affected; an ORDER BY
// under a non-"C" collation over several shards is refused.
func TestUserAggregateRefused(t *testing.T) {
	c, direct, _ := kvShards(t)
	for _, d := range direct {
		if _, err := d.Exec(ctxT(t), `CREATE AGGREGATE my_total(bigint) (SFUNC = int8pl, STYPE = bigint)`); err != nil {
			t.Fatal(err)
		}
	}
	p := startProxy(t, kvMapConfig(t, c))
	ctx := ctxT(t)
	for _, mode := range []string{"simple_protocol", "cache_statement"} {
		conn := connect(t, p.dsn("default_query_exec_mode="+mode))
		var n int64
		for range 2 { // the second time from the cache
			err := conn.QueryRow(ctx, `SELECT my_total(k) FROM kv`).Scan(&n)
			if pgCode(err) != "0A000" || !strings.Contains(err.Error(), "my_total") {
				t.Fatalf("%s: user aggregate over shards: %v", mode, err)
			}
		}
		if err := conn.QueryRow(ctx, `SELECT my_total(k) FROM kv WHERE k = $1`, 150).Scan(&n); err != nil || n != 150 {
			t.Fatalf("%s: user aggregate on one shard: %d %v", mode, n, err)
		}
		var s string
		if err := conn.QueryRow(ctx, `SELECT max(upper(v)) FROM kv`).Scan(&s); err != nil || s != "V4" {
			t.Fatalf("%s: scalar function over shards: %q %v", mode, s, err)
		}
		if err := conn.QueryRow(ctx, `SELECT v FROM kv GROUP BY v ORDER BY v COLLATE "en-x-icu" LIMIT 1`).Scan(&s); pgCode(err) != "0A000" {
			t.Fatalf("%s: ORDER BY under an ICU collation: %v", mode, err)
		}
		if err := conn.QueryRow(ctx, `SELECT v FROM kv GROUP BY v ORDER BY v COLLATE "C" LIMIT 1`).Scan(&s); err != nil || s != "v-1" {
			t.Fatalf("%s: ORDER BY under C: %q %v", mode, s, err)
		}
	}
}

// TestTextOrderUnderDatabaseCollation: in a database whose collation is
// not "C" (ICU here), a read over several shards that sorts by text is
// refused unless the key says COLLATE "C"; in a "C" database it runs.
func TestTextOrderUnderDatabaseCollation(t *testing.T) {
	c, direct, _ := kvShards(t)
	ctx := ctxT(t)
	for _, d := range direct {
		if _, err := d.Exec(ctx, `CREATE DATABASE icudb TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'`); err != nil {
			t.Skipf("no ICU in this PostgreSQL: %v", err)
		}
	}
	for _, srv := range c.Shards {
		ic := connect(t, srv.SuperDSN("icudb"))
		if _, err := ic.Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text); INSERT INTO kv VALUES (1, 'b'), (2, 'a'), (150, 'B'), (151, 'A')`); err != nil {
			t.Fatal(err)
		}
	}
	p := startProxy(t, kvMapConfig(t, c))
	icu := connect(t, strings.Replace(p.dsn(""), "/postgres?", "/icudb?", 1))
	var v string
	if err := icu.QueryRow(ctx, `SELECT v FROM kv ORDER BY v LIMIT 1`).Scan(&v); pgCode(err) != "0A000" || !strings.Contains(err.Error(), `COLLATE "C"`) {
		t.Fatalf("text ORDER BY under ICU: %q %v", v, err)
	}
	if err := icu.QueryRow(ctx, `SELECT v FROM kv ORDER BY v COLLATE "C" LIMIT 1`).Scan(&v); err != nil || v != "A" {
		t.Fatalf("text ORDER BY COLLATE \"C\" under ICU: %q %v", v, err)
	}
	if err := icu.QueryRow(ctx, `SELECT k FROM kv ORDER BY k DESC LIMIT 1`).Scan(new(int64)); err != nil {
		t.Fatalf("ORDER BY a number under ICU: %v", err)
	}
	// min/max of text compare bytes too.
	if err := icu.QueryRow(ctx, `SELECT min(v) FROM kv`).Scan(&v); pgCode(err) != "0A000" || !strings.Contains(err.Error(), "min/max") {
		t.Fatalf("text min under ICU: %q %v", v, err)
	}
	if err := icu.QueryRow(ctx, `SELECT max(v COLLATE "C") FROM kv`).Scan(&v); err != nil || v != "b" {
		t.Fatalf("text max COLLATE \"C\" under ICU: %q %v", v, err)
	}
	if err := icu.QueryRow(ctx, `SELECT max(k) FROM kv`).Scan(new(int64)); err != nil {
		t.Fatalf("max of a number under ICU: %v", err)
	}
	conn := connect(t, p.dsn(""))
	if err := conn.QueryRow(ctx, `SELECT v FROM kv WHERE v IS NOT NULL ORDER BY v LIMIT 1`).Scan(&v); err != nil {
		t.Fatalf("text ORDER BY in a C database: %v", err)
	}
	if err := conn.QueryRow(ctx, `SELECT min(v) FROM kv`).Scan(&v); err != nil {
		t.Fatalf("text min in a C database: %v", err)
	}
}
