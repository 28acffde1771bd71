package proxy_test

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
)

func TestPgxAllExecModes(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, baseConfig(t, pg))
	modes := []pgx.QueryExecMode{
		pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol,
	}
	setup := connect(t, p.dsn(""))
	ctx := ctxT(t)
	if _, err := setup.Exec(ctx, `CREATE TABLE users (id bigint PRIMARY KEY, name text)`); err != nil {
		t.Fatal(err)
	}
	for mi, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			c := connect(t, p.dsn("default_query_exec_mode="+queryModeName(m)))
			for i := 0; i < 20; i++ {
				id := int64(mi*1000 + i)
				if _, err := c.Exec(ctx, `INSERT INTO users (id, name) VALUES ($1, $2)`, id, "n"); err != nil {
					t.Fatalf("insert %d: %v", i, err)
				}
				var name string
				if err := c.QueryRow(ctx, `SELECT name FROM users WHERE id = $1`, id).Scan(&name); err != nil {
					t.Fatalf("select %d: %v", i, err)
				}
				if name != "n" {
					t.Fatalf("got %q", name)
				}
			}
		})
	}
}

func queryModeName(m pgx.QueryExecMode) string {
	switch m {
	case pgx.QueryExecModeCacheStatement:
		return "cache_statement"
	case pgx.QueryExecModeCacheDescribe:
		return "cache_describe"
	case pgx.QueryExecModeDescribeExec:
		return "describe_exec"
	case pgx.QueryExecModeExec:
		return "exec"
	default:
		return "simple_protocol"
	}
}
