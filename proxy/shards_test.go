package proxy_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/proxy"
)

// twoShards starts two servers and a proxy routing by hint comments.
func twoShards(t *testing.T) (*testProxy, [2]*pgx.Conn) {
	t.Helper()
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := baseConfig(t, c.Shards[0])
	cfg.Users = append(cfg.Users, proxy.UserConfig{Name: "tr", Auth: "trust"})
	cfg.Shards = []proxy.ShardConfig{
		{Name: "s0", Host: c.Shards[0].Host, Port: c.Shards[0].Port},
		{Name: "s1", Host: c.Shards[1].Host, Port: c.Shards[1].Port},
	}
	p := startProxy(t, cfg)
	var direct [2]*pgx.Conn
	for i, srv := range c.Shards {
		direct[i] = connect(t, srv.SuperDSN("postgres"))
		if _, err := direct[i].Exec(context.Background(), `CREATE TABLE kv (k int PRIMARY KEY, v text)`); err != nil {
			t.Fatal(err)
		}
	}
	return p, direct
}

func rowsOn(t *testing.T, c *pgx.Conn) []int {
	t.Helper()
	rows, err := c.Query(context.Background(), `SELECT k FROM kv ORDER BY k`)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

const onS1 = "/* pgshard: shard=s1 */ "

// TestHintRouting checks rows land on the shard the hint names, in both
// protocols, and that the default shard gets the rest.
func TestHintRouting(t *testing.T) {
	p, direct := twoShards(t)
	ctx := ctxT(t)
	for _, mode := range []string{"simple_protocol", "cache_statement", "describe_exec"} {
		c := connect(t, p.dsn("default_query_exec_mode="+mode))
		base := map[string]int{"simple_protocol": 0, "cache_statement": 10, "describe_exec": 20}[mode]
		if _, err := c.Exec(ctx, `INSERT INTO kv VALUES ($1, 'default')`, base+1); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, onS1+`INSERT INTO kv VALUES ($1, 'hinted')`, base+2); err != nil {
			t.Fatal(err)
		}
		var v string
		if err := c.QueryRow(ctx, onS1+`SELECT v FROM kv WHERE k = $1`, base+2).Scan(&v); err != nil || v != "hinted" {
			t.Fatalf("%s: read back on s1: %q %v", mode, v, err)
		}
	}
	if got := rowsOn(t, direct[0]); len(got) != 3 || got[0] != 1 || got[1] != 11 || got[2] != 21 {
		t.Fatalf("s0 has %v", got)
	}
	if got := rowsOn(t, direct[1]); len(got) != 3 || got[0] != 2 || got[1] != 12 || got[2] != 22 {
		t.Fatalf("s1 has %v", got)
	}
	c := connect(t, p.dsn(""))
	if _, err := c.Exec(ctx, "/* pgshard: shard=s9 */ SELECT 1"); pgCode(err) != "22023" {
		t.Fatalf("unknown shard: %v", err)
	}
}

// TestTransactionStaysOnOneShard: BEGIN waits for the first statement,
// the transaction is pinned to its shard, a statement for another shard
// is refused with 0A000 and aborts the transaction.
func TestTransactionStaysOnOneShard(t *testing.T) {
	p, direct := twoShards(t)
	ctx := ctxT(t)
	c := connect(t, p.dsn(""))

	// A transaction on s1 commits there only.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, onS1+`INSERT INTO kv VALUES (1, 'a')`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, onS1+`INSERT INTO kv VALUES (2, 'b')`); err != nil {
		t.Fatal(err)
	}
	if got := rowsOn(t, direct[1]); len(got) != 0 {
		t.Fatalf("uncommitted rows visible on s1: %v", got)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rowsOn(t, direct[1]); len(got) != 2 || len(rowsOn(t, direct[0])) != 0 {
		t.Fatalf("after commit: s1 %v s0 %v", got, rowsOn(t, direct[0]))
	}

	// Cross-shard statement inside a transaction.
	tx, _ = c.Begin(ctx)
	if _, err := tx.Exec(ctx, onS1+`INSERT INTO kv VALUES (3, 'c')`); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO kv VALUES (4, 'd')`) // default shard s0
	if pgCode(err) != "0A000" {
		t.Fatalf("cross-shard statement: want 0A000, got %v", err)
	}
	if _, err := tx.Exec(ctx, onS1+`SELECT 1`); pgCode(err) != "25P02" {
		t.Fatalf("after the refusal the transaction must be aborted: %v", err)
	}
	_ = tx.Rollback(ctx)
	if got := rowsOn(t, direct[1]); len(got) != 2 {
		t.Fatalf("rolled back row kept: %v", got)
	}
	if got := rowsOn(t, direct[0]); len(got) != 0 {
		t.Fatalf("refused row written: %v", got)
	}

	// Savepoints inside a pinned transaction.
	tx, _ = c.Begin(ctx)
	for _, q := range []string{onS1 + `INSERT INTO kv VALUES (5, 'e')`, onS1 + `SAVEPOINT sp`} {
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Exec(ctx, onS1+`INSERT INTO kv VALUES (5, 'dup')`); pgCode(err) != "23505" {
		t.Fatalf("duplicate: %v", err)
	}
	for _, q := range []string{onS1 + `ROLLBACK TO SAVEPOINT sp`, onS1 + `INSERT INTO kv VALUES (6, 'f')`} {
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rowsOn(t, direct[1]); len(got) != 4 {
		t.Fatalf("after savepoints: %v", got)
	}

	// A transaction that never reaches a shard.
	tx, _ = c.Begin(ctx)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The connection goes on on either shard.
	var n int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM kv`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("s0 count %d %v", n, err)
	}
	if err := c.QueryRow(ctx, onS1+`SELECT count(*) FROM kv`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("s1 count %d %v", n, err)
	}
}

// TestPipelinesAcrossShards: pipelined autocommit queries for different
// shards run in order; an extended-protocol batch (one implicit
// transaction) that mixes shards is refused.
func TestPipelinesAcrossShards(t *testing.T) {
	p, direct := twoShards(t)
	ctx := ctxT(t)
	if _, err := direct[1].Exec(ctx, `INSERT INTO kv VALUES (1, 'on-s1')`); err != nil {
		t.Fatal(err)
	}
	if _, err := direct[0].Exec(ctx, `INSERT INTO kv VALUES (1, 'on-s0')`); err != nil {
		t.Fatal(err)
	}
	c, fe := trustedSessionFor(t, p)
	defer c.Close()
	fe.Send(&pgproto3.Query{String: onS1 + `SELECT v FROM kv`})
	fe.Send(&pgproto3.Query{String: `SELECT v FROM kv`})
	fe.Send(&pgproto3.Query{String: onS1 + `SELECT v FROM kv`})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 3 {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			got = append(got, string(m.Values[0]))
		case *pgproto3.ErrorResponse:
			t.Fatalf("error: %s", m.Message)
		}
	}
	if got[0] != "on-s1" || got[1] != "on-s0" || got[2] != "on-s1" {
		t.Fatalf("pipelined results %v", got)
	}

	conn := connect(t, p.dsn(""))
	b := &pgx.Batch{}
	b.Queue(onS1 + `SELECT v FROM kv`)
	b.Queue(`SELECT v FROM kv`)
	err := conn.SendBatch(ctx, b).Close()
	if pgCode(err) != "0A000" {
		t.Fatalf("mixed batch: want 0A000, got %v", err)
	}
	var v string
	if err := conn.QueryRow(ctx, `SELECT v FROM kv`).Scan(&v); err != nil || v != "on-s0" {
		t.Fatalf("after the refused batch: %q %v", v, err)
	}
}

// trustedSessionFor opens a raw protocol session on p as a trust user.
func trustedSessionFor(t *testing.T, p *testProxy) (interface{ Close() error }, *pgproto3.Frontend) {
	t.Helper()
	c, fe := trustedSession(t, p.addr)
	return c, fe
}
