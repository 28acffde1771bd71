package proxy_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
)

// BenchmarkSelectPath runs pgbench -S's statement through the proxy (one
// server, transaction pooling) in the simple protocol and in the extended
// one as pgbench -M extended sends it (unnamed Parse, Bind, Describe
// portal, Execute, Sync). Allocations per operation count the whole test
// process, client included: compare them between builds, not modes.
func BenchmarkSelectPath(b *testing.B) {
	pg := integration.StartPostgres(b)
	p := startProxy(b, baseConfig(b, pg))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := pgconn.Connect(ctx, p.dsn(""))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close(context.Background()) }()
	if err := c.Exec(ctx, `CREATE TABLE bench_accounts (aid int PRIMARY KEY, abalance int); INSERT INTO bench_accounts SELECT g, 0 FROM generate_series(1, 1000) g`).Close(); err != nil {
		b.Fatal(err)
	}
	const sql = `SELECT abalance FROM bench_accounts WHERE aid = $1;`
	b.Run("simple", func(b *testing.B) {
		for b.Loop() {
			res, err := c.Exec(ctx, `SELECT abalance FROM bench_accounts WHERE aid = 42;`).ReadAll()
			if err != nil || len(res) != 1 || len(res[0].Rows) != 1 {
				b.Fatalf("select: %v (%d results)", err, len(res))
			}
		}
	})
	b.Run("extended", func(b *testing.B) {
		params := [][]byte{[]byte("42")}
		for b.Loop() {
			res := c.ExecParams(ctx, sql, params, nil, nil, nil).Read()
			if res.Err != nil || len(res.Rows) != 1 {
				b.Fatalf("select: %v (%d rows)", res.Err, len(res.Rows))
			}
		}
	})
}
