package proxy_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestPipelinedBeginGoesToItsFirstStatementsShard: a BEGIN pipelined
// after a request still answered on one shard's server connection opens
// a transaction on the shard of its own first statement, as the same
// BEGIN does after the answer (node-postgres' pipeline mode; the simple
// protocol as libpq's pipelining of queries).
func TestPipelinedBeginGoesToItsFirstStatementsShard(t *testing.T) {
	p, direct, _ := kvShardsTr(t)
	conn, fe := trustedSession(t, p.addr)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))

	ins := `INSERT INTO kv (k, v) VALUES ($1, 'x')`
	// Extended protocol: a write on s1, then BEGIN, a write on s0, COMMIT,
	// each request with its own Sync, in one write.
	sendPipeline(t, fe, []pipeStep{
		{sql: ins, params: []string{"150"}},
		{sql: `BEGIN`},
		{sql: ins, params: []string{"9"}},
		{sql: `COMMIT`},
	})
	got := readTxPipeline(t, fe, 4)
	for i, want := range []string{"INSERT 0 1 I", "BEGIN T", "INSERT 0 1 T", "COMMIT I"} {
		if got[i] != want {
			t.Errorf("extended request %d: %q, want %q", i, got[i], want)
		}
	}
	// The simple protocol: the same, as Query messages in one write.
	for _, q := range []string{`INSERT INTO kv (k, v) VALUES (151, 'x')`, `BEGIN`, `INSERT INTO kv (k, v) VALUES (10, 'x')`, `COMMIT`} {
		fe.Send(&pgproto3.Query{String: q})
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	got = readTxPipeline(t, fe, 4)
	for i, want := range []string{"INSERT 0 1 I", "BEGIN T", "INSERT 0 1 T", "COMMIT I"} {
		if got[i] != want {
			t.Errorf("simple query %d: %q, want %q", i, got[i], want)
		}
	}
	if !rowOn(t, direct[1], 150) || !rowOn(t, direct[0], 9) || !rowOn(t, direct[1], 151) || !rowOn(t, direct[0], 10) {
		t.Error("rows are not on their shards")
	}
}

// readTxPipeline reads n requests' answers up to each one's
// ReadyForQuery: "TAG STATUS", or "SQLSTATE message STATUS" for an error.
func readTxPipeline(t *testing.T, fe *pgproto3.Frontend, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := 0; i < n; {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		switch m := m.(type) {
		case *pgproto3.CommandComplete:
			out[i] = string(m.CommandTag)
		case *pgproto3.ErrorResponse:
			out[i] = m.Code + " " + m.Message
		case *pgproto3.ReadyForQuery:
			out[i] += " " + string(m.TxStatus)
			i++
		}
	}
	return out
}
