package demo

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/internal/pgcluster"
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

// schemaSQL creates the sample tables on a shard.
const schemaSQL = `CREATE TABLE users (
	id         bigint PRIMARY KEY,
	name       text NOT NULL,
	email      text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	balance    numeric(12,2) NOT NULL DEFAULT 100
);
CREATE TABLE orders (
	id      bigint NOT NULL,
	user_id bigint NOT NULL,
	amount  numeric(10,2) NOT NULL,
	PRIMARY KEY (user_id, id)
);`

// fillSQL fills a shard with the users whose ids are in [lo, hi] and two
// orders each.
func fillSQL(lo, hi int) string {
	return fmt.Sprintf(`INSERT INTO users (id, name, email, created_at)
SELECT i,
       (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Frances','Ken'])[1 + i %% 8] || ' ' || i,
       'user' || i || '@example.com',
       timestamptz '2025-01-01 00:00:00+00' + i * interval '1 hour'
FROM generate_series(%[1]d, %[2]d) AS i;
INSERT INTO orders (id, user_id, amount)
SELECT 2 * i + k, i, ((i * 37 + k * 11) %% 500) + 0.99
FROM generate_series(%[1]d, %[2]d) AS i, generate_series(0, 1) AS k;
ANALYZE users; ANALYZE orders;`, lo, hi)
}

// The transfer the banner shows: money moves between a user on each data
// shard, in one transaction that two-phase commit makes atomic.
const (
	// TransferFrom and TransferTo are the users (on the first and the
	// second shard).
	TransferFrom = 42
	TransferTo   = SampleRows - 58
)

// TransferSQL moves 10 from TransferFrom's balance to TransferTo's.
var TransferSQL = fmt.Sprintf("BEGIN; UPDATE users SET balance = balance - 10 WHERE id = %d; UPDATE users SET balance = balance + 10 WHERE id = %d; COMMIT;",
	TransferFrom, TransferTo)

// LoadSampleData creates the users and orders tables on each shard (the
// spare's stay empty) and fills each data shard with its part of the
// [SampleRows] users (the bulk load goes to the shards directly), then checks through the proxy at proxyAddr, as
// the demo user, that a merged count over both shards and a point query
// answer correctly, and waits until every replica has replayed the data.
// When it returns nil the proxy works end to end.
func LoadSampleData(ctx context.Context, c *pgcluster.Cluster, proxyAddr string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, loadTimeout)
		defer cancel()
	}
	ranges := [][2]int{{1, SplitID - 1}, {SplitID, SampleRows}}
	for i, s := range c.Shards {
		sc, err := pgx.Connect(ctx, s.SuperDSN(Database))
		if err != nil {
			return fmt.Errorf("load sample data: connect to %s: %w", s.Name, err)
		}
		sql := schemaSQL
		if i < len(ranges) {
			sql += "\n" + fillSQL(ranges[i][0], ranges[i][1])
		}
		_, err = sc.PgConn().Exec(ctx, sql).ReadAll()
		_ = sc.Close(context.WithoutCancel(ctx))
		if err != nil {
			return fmt.Errorf("load sample data on %s: %w", s.Name, err)
		}
	}
	// Reads through the proxy may go to the replicas: they must have the
	// rows first.
	for _, s := range c.Shards {
		if err := s.WaitReplayed(ctx); err != nil {
			return fmt.Errorf("load sample data: %w", err)
		}
	}
	cfg, err := pgx.ParseConfig(ConnString(proxyAddr) + "?sslmode=disable&application_name=pgshard-demo")
	if err != nil {
		return fmt.Errorf("load sample data: %w", err)
	}
	// psql's protocol: statements over several shards are merged in it.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("load sample data: connect to the proxy at %s: %w", proxyAddr, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+SampleTable).Scan(&n); err != nil {
		return fmt.Errorf("load sample data: count rows through the proxy: %w", err)
	}
	if n != SampleRows {
		return fmt.Errorf("load sample data: %s has %d rows through the proxy, want %d", SampleTable, n, SampleRows)
	}
	var name string
	if err := conn.QueryRow(ctx, "SELECT name FROM users WHERE id = $1", SampleRows).Scan(&name); err != nil {
		return fmt.Errorf("load sample data: point query through the proxy: %w", err)
	}
	return nil
}
