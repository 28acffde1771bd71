package difffuzz

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration/difftest"
)

// The fuzzer's dataset: difftest's tables and rows, smaller (so that
// scatter queries and joins stay cheap), plus edge rows.
const (
	Users  = 1000
	Orders = 4000
	// DataSeed generates the rows.
	DataSeed = 16
)

// Size is the generated part of the dataset.
var Size = difftest.Size{Users: Users, Orders: Orders}

// EdgeRows are inserted after the generated rows, one statement each
// (single-row INSERTs with a column list, routed by key through pgshard):
// the smallest and largest bigint keys, 0 and a negative key, names that
// repeat across shards, NaN, infinite and -0 values, infinite timestamps,
// and orders of those users.
var EdgeRows = []string{
	`INSERT INTO users (id, name, email, country, city, score, active, created_at) VALUES (-9223372036854775808, 'dup', NULL, 'DE', 'Oslo', 'NaN', true, '2024-03-01 00:00:00+00')`,
	`INSERT INTO users (id, name, email, country, city, score, active, created_at) VALUES (9223372036854775807, 'dup', 'max@example.com', NULL, 'oslo', 99999999.99, false, '2024-03-01 00:00:00+00')`,
	`INSERT INTO users (id, name, email, country, city, score, active, created_at) VALUES (0, 'dup', '', '', '', -0.01, true, '2024-12-31 23:59:59+00')`,
	`INSERT INTO users (id, name, email, country, city, score, active, created_at) VALUES (-1, 'name-00001-a', NULL, NULL, NULL, NULL, false, '2024-01-01 00:00:00+00')`,
	`INSERT INTO orders (id, user_id, amount, quantity, weight, status, note, created_at) VALUES (100001, -9223372036854775808, 0.01, 1, 'NaN', 'paid', NULL, '2024-03-02 00:00:00+00')`,
	`INSERT INTO orders (id, user_id, amount, quantity, weight, status, note, created_at) VALUES (100002, 9223372036854775807, 9999999999.99, 9, 'Infinity', 'new', 'max', '2024-03-02 00:00:00+00')`,
	`INSERT INTO orders (id, user_id, amount, quantity, weight, status, note, created_at) VALUES (100003, 9223372036854775807, 0, 1, '-Infinity', 'new', '', '2024-03-03 00:00:00+00')`,
	`INSERT INTO orders (id, user_id, amount, quantity, weight, status, note, created_at) VALUES (100004, 0, 1.50, 2, -0.0, 'cancelled', NULL, '2024-03-03 00:00:00+00')`,
	`INSERT INTO orders (id, user_id, amount, quantity, weight, status, note, created_at) VALUES (100005, -1, 2.25, 3, NULL, 'shipped', 'dup', '2024-03-04 00:00:00+00')`,
	`INSERT INTO orders (id, user_id, amount, quantity, weight, status, note, created_at) VALUES (100006, 0, 3.00, 4, 1.5, 'paid', NULL, 'infinity')`,
	`INSERT INTO orders (id, user_id, amount, quantity, weight, status, note, created_at) VALUES (100007, 500, 4.00, 5, 2.5, 'paid', 'x', '-infinity')`,
}

// LoadReference loads the dataset into a plain server through c.
func LoadReference(ctx context.Context, c *pgx.Conn) error {
	if err := difftest.Load(ctx, c, Size, DataSeed); err != nil {
		return err
	}
	return finish(ctx, c)
}

// LoadThroughProxy loads the dataset through pgshard on c, whose shard
// map names shards.
func LoadThroughProxy(ctx context.Context, c *pgx.Conn, shards []string) error {
	if err := difftest.LoadThroughProxy(ctx, c, shards, Size, DataSeed); err != nil {
		return err
	}
	return finish(ctx, c)
}

func finish(ctx context.Context, c *pgx.Conn) error {
	for _, s := range EdgeRows {
		if _, err := c.Exec(ctx, s); err != nil {
			return fmt.Errorf("edge rows: %s: %w", s, err)
		}
	}
	return difftest.Analyze(ctx, c)
}
