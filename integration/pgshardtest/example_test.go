package pgshardtest_test

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration/pgshardtest"
)

func TestMain(m *testing.M) { os.Exit(pgshardtest.VerifyNoLeaks(m)) }

// TestExample is the README's example: a test of an application that
// talks to pgshard, with a cluster of two shards (a primary and a replica
// each) where users are range-sharded by id at 1000.
func TestExample(t *testing.T) {
	c := pgshardtest.Start(t,
		pgshardtest.Shards(2), pgshardtest.Replicas(1),
		pgshardtest.RangeSharded([]int64{1000}, pgshardtest.Table{Name: "users", Key: "id"}))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	// The application's side: everything through the proxy.
	db, err := pgx.Connect(ctx, c.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	for _, sql := range []string{
		"CREATE TABLE users (id bigint PRIMARY KEY, name text)",                              // on every shard
		"INSERT INTO users VALUES (7, 'Ada'), (999, 'Alan'), (1000, 'Grace'), (1500, 'Ken')", // split by the proxy
	} {
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(ctx, "INSERT INTO users VALUES ($1, $2)", 2000, "Barbara"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil || n != 5 {
		t.Fatalf("count(*) through the proxy: %d, %v; want 5", n, err)
	}

	// Where the rows landed: on each shard's primary, directly.
	want := map[string][]int64{"shard0": {7, 999}, "shard1": {1000, 1500, 2000}}
	for _, s := range c.Shards {
		if got := ids(t, ctx, s.Primary); !slices.Equal(got, want[s.Name]) {
			t.Errorf("%s holds users %v, want %v", s.Name, got, want[s.Name])
		}
	}
	if s, err := c.ShardFor("users", 1500); err != nil || s.Name != "shard1" {
		t.Errorf("ShardFor(users, 1500) = %s, %v; want shard1", s.Name, err)
	}
}

// ids returns the ids in users on the server at dsn, in order.
func ids(t *testing.T, ctx context.Context, dsn string) []int64 {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT id FROM users ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return got
}
