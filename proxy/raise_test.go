package proxy_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TestRefusalHasNoPLpgSQLContext: a refusal the proxy has the current
// server raise carries its SQLSTATE, message and hint, but not the
// server's "PL/pgSQL function inline_code_block" context.
func TestRefusalHasNoPLpgSQLContext(t *testing.T) {
	p, _, _ := kvShardsTr(t)
	for _, mode := range []string{"simple_protocol", "cache_statement"} {
		t.Run(mode, func(t *testing.T) {
			ctx := ctxT(t)
			c := connect(t, p.dsn("default_query_exec_mode="+mode))
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			if _, err := tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'x')`, 160); err != nil {
				t.Fatal(err)
			}
			_, err = tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'x')`, 6)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				t.Fatalf("want a refusal, got %v", err)
			}
			if pe.Code != "0A000" || !strings.HasPrefix(pe.Message, "cross-shard statement refused: this transaction runs on shard \"s1\"") ||
				pe.Hint == "" || pe.Where != "" || pe.Severity != "ERROR" {
				t.Fatalf("refusal: code %s severity %s message %q hint %q where %q", pe.Code, pe.Severity, pe.Message, pe.Hint, pe.Where)
			}
			// A client's own DO block keeps its context.
			if _, err := c.Exec(ctx, `ROLLBACK`); err != nil {
				t.Fatal(err)
			}
			_, err = c.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'mine'; END $$`)
			if !errors.As(err, &pe) || pe.Message != "mine" || !strings.Contains(pe.Where, "inline_code_block") {
				t.Fatalf("client's DO block: %v (where %q)", err, pe.Where)
			}
		})
	}
}

// TestErrorInTransactionThenOtherShardNoHang: after an error inside a
// transaction, an extended-protocol statement for another shard gets the
// server's answer (the transaction is aborted) and the session goes on:
// the proxy's refusal must not be sent to a server that skips to Sync,
// nor the client's Sync dropped. Raw protocol, every read with a
// deadline.
func TestErrorInTransactionThenOtherShardNoHang(t *testing.T) {
	p, direct, _ := kvShardsTr(t)
	cases := []struct {
		name    string
		prelude []string // simple queries after BEGIN
		sql     string   // extended-protocol statement, key on s1
		params  [][]byte
		want    []string // SQLSTATEs of the extended batch
		status  byte     // transaction status after it
	}{
		{"after a failed statement", []string{`SELECT 1 FROM kv WHERE k = 5`, `SELECT 1/0`},
			`SELECT $1::int FROM kv WHERE k = $2`, [][]byte{[]byte("1"), []byte("150")}, []string{"25P02"}, 'E'},
		{"failed Parse", []string{`SELECT 1 FROM kv WHERE k = 5`},
			`SELECT nosuchcol FROM kv WHERE k = $1`, [][]byte{[]byte("150")}, []string{"42703"}, 'E'},
		{"refused Bind", []string{`INSERT INTO kv (k, v) VALUES (7, 'x')`},
			`INSERT INTO kv (k, v) VALUES ($1, 'y')`, [][]byte{[]byte("170")}, []string{"0A000"}, 'E'},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, fe := trustedSession(t, p.addr)
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			for _, q := range append([]string{"BEGIN"}, tc.prelude...) {
				fe.Send(&pgproto3.Query{String: q})
			}
			fe.SendParse(&pgproto3.Parse{Query: tc.sql})
			fe.SendBind(&pgproto3.Bind{Parameters: tc.params})
			fe.SendDescribe(&pgproto3.Describe{ObjectType: 'P'})
			fe.SendExecute(&pgproto3.Execute{})
			fe.SendSync(&pgproto3.Sync{})
			fe.Send(&pgproto3.Query{String: "ROLLBACK"})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			// ReadyForQuery of BEGIN and of each prelude query, then the
			// extended batch's, then ROLLBACK's.
			var codes []string
			var bindCompletes int
			var statuses []byte
			var where string
			for len(statuses) < len(tc.prelude)+3 {
				m, err := fe.Receive()
				if err != nil {
					t.Fatalf("after %d ReadyForQuery %q, errors %v: %v", len(statuses), statuses, codes, err)
				}
				switch m := m.(type) {
				case *pgproto3.ErrorResponse:
					if len(statuses) == len(tc.prelude)+1 {
						codes = append(codes, m.Code)
						where = m.Where
					}
				case *pgproto3.BindComplete:
					bindCompletes++
				case *pgproto3.ReadyForQuery:
					statuses = append(statuses, m.TxStatus)
				}
			}
			if fmt.Sprint(codes) != fmt.Sprint(tc.want) || bindCompletes != 0 || where != "" {
				t.Fatalf("extended batch: errors %v (want %v), %d BindComplete, where %q", codes, tc.want, bindCompletes, where)
			}
			if got := statuses[len(statuses)-2:]; got[0] != tc.status || got[1] != 'I' {
				t.Fatalf("statuses %q: want %c then I", statuses, tc.status)
			}
			// The session goes on, on either shard.
			fe.Send(&pgproto3.Query{String: `INSERT INTO kv (k, v) VALUES (180, 'after')`})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			for {
				m, err := fe.Receive()
				if err != nil {
					t.Fatal(err)
				}
				if e, ok := m.(*pgproto3.ErrorResponse); ok {
					t.Fatalf("after ROLLBACK: %s %s", e.Code, e.Message)
				}
				if _, ok := m.(*pgproto3.ReadyForQuery); ok {
					break
				}
			}
			if !rowOn(t, direct[1], 180) || rowOn(t, direct[0], 7) || rowOn(t, direct[1], 170) {
				t.Fatal("rows: want only 180 on s1")
			}
			if _, err := direct[1].Exec(ctxT(t), `DELETE FROM kv WHERE k = 180`); err != nil {
				t.Fatal(err)
			}
		})
	}
}
