package demo

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration/pgcluster"
)

// SampleTable and SampleRows describe the sample data: a users table with
// this many rows.
const (
	SampleTable = "users"
	SampleRows  = 1000
)

// loadTimeout bounds loading the sample data when the caller's context has
// no deadline.
const loadTimeout = time.Minute

// sampleSQL creates and fills the users table. It runs as one simple-query
// message, so it is one implicit transaction: either all of it or nothing.
var sampleSQL = `CREATE TABLE ` + SampleTable + ` (
	id         bigint PRIMARY KEY,
	name       text NOT NULL,
	email      text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ` + SampleTable + ` (id, name, email, created_at)
SELECT i,
       (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Frances','Ken'])[1 + i % 8] || ' ' || i,
       'user' || i || '@example.com',
       timestamptz '2025-01-01 00:00:00+00' + i * interval '1 hour'
FROM generate_series(1, ` + strconv.Itoa(SampleRows) + `) AS i;
ANALYZE ` + SampleTable + `;`

// LoadSampleData creates the users table with [SampleRows] rows through
// the proxy at proxyAddr, as the demo user, checks the row count through the
// proxy, and waits until every replica of c has replayed it. It is the
// demo's smoke test: when it returns nil, the proxy works end to end.
func LoadSampleData(ctx context.Context, c *pgcluster.Cluster, proxyAddr string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, loadTimeout)
		defer cancel()
	}
	cfg, err := pgx.ParseConfig(ConnString(proxyAddr) + "?sslmode=disable&application_name=pgshard-demo")
	if err != nil {
		return fmt.Errorf("load sample data: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("load sample data: connect to the proxy at %s: %w", proxyAddr, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.PgConn().Exec(ctx, sampleSQL).ReadAll(); err != nil {
		return fmt.Errorf("load sample data: create table %s: %w", SampleTable, err)
	}
	var n int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+SampleTable).Scan(&n); err != nil {
		return fmt.Errorf("load sample data: count rows through the proxy: %w", err)
	}
	if n != SampleRows {
		return fmt.Errorf("load sample data: %s has %d rows through the proxy, want %d", SampleTable, n, SampleRows)
	}
	for _, s := range c.Shards {
		if err := s.WaitReplayed(ctx); err != nil {
			return fmt.Errorf("load sample data: %w", err)
		}
	}
	return nil
}
