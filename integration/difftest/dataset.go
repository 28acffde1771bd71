package difftest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// Schema creates the dataset's tables, one statement each (pgshard routes
// a query string as a whole, and runs DDL on a sharded table on every
// shard): users, keyed by id, and orders, keyed by user_id (colocated
// with users when sharded).
var Schema = []string{`
CREATE TABLE users (
	id         bigint PRIMARY KEY,
	name       text NOT NULL,
	email      text,
	country    text,
	city       text,
	score      numeric(10,2),
	active     boolean NOT NULL,
	created_at timestamptz NOT NULL
)`, `
CREATE TABLE orders (
	id         bigint NOT NULL,
	user_id    bigint NOT NULL,
	amount     numeric(12,2) NOT NULL,
	quantity   int NOT NULL,
	weight     double precision,
	status     text NOT NULL,
	note       text,
	created_at timestamptz NOT NULL,
	PRIMARY KEY (user_id, id)
)`}

// Functions are objects the corpus uses besides the tables; they name no
// table, so pgshard would create them on its default shard only: they are
// created on every shard one by one.
var Functions = []string{
	`CREATE AGGREGATE int_total(int) (SFUNC = int4pl, STYPE = int, INITCOND = '0')`,
}

// Column lists of the tables, in Rows order.
var (
	UserColumns  = []string{"id", "name", "email", "country", "city", "score", "active", "created_at"}
	OrderColumns = []string{"id", "user_id", "amount", "quantity", "weight", "status", "note", "created_at"}
)

// Size is how many rows Rows generates.
type Size struct {
	Users, Orders int
}

// DefaultSize is the size the sharding issue asks for.
var DefaultSize = Size{Users: 10000, Orders: 50000}

var (
	countries = []string{"DE", "FR", "US", "BR", "JP", "IN", "ZA", "NZ"}
	// Cities: non-ASCII, case variants and the empty string, so that
	// bytewise (COLLATE "C") order differs from linguistic order.
	cities   = []string{"Zürich", "zagreb", "Århus", "Łódź", "São Paulo", "Москва", "東京", "München", "munich", "Ängelholm", "Oslo", "oslo", ""}
	statuses = []string{"new", "paid", "shipped", "cancelled"}
	epoch    = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Rows generates the dataset deterministically from seed. Users have ids
// 1..size.Users, orders ids 1..size.Orders and a random user. Every
// nullable column has NULLs. Weights are multiples of 1/64, so their sums
// are exact in any order of addition.
func Rows(size Size, seed uint64) (users, orders [][]any) {
	r := rand.New(rand.NewPCG(seed, 1))
	users = make([][]any, size.Users)
	for i := range users {
		id := int64(i + 1)
		var email, country, city, score any
		if r.IntN(10) != 0 {
			email = fmt.Sprintf("user%d@example.com", id)
		}
		if r.IntN(8) != 0 {
			country = countries[r.IntN(len(countries))]
		}
		if r.IntN(7) != 0 {
			city = cities[r.IntN(len(cities))]
		}
		if r.IntN(6) != 0 {
			score = fmt.Sprintf("%d.%02d", r.IntN(1000), r.IntN(100))
		}
		users[i] = []any{id, fmt.Sprintf("name-%05d-%s", id, string(rune('a'+r.IntN(26)))), email, country, city, score,
			r.IntN(3) != 0, epoch.Add(time.Duration(r.IntN(365*24)) * time.Hour)}
	}
	orders = make([][]any, size.Orders)
	for i := range orders {
		var note, weight any
		if r.IntN(4) == 0 {
			note = fmt.Sprintf("note %d ünïcødé", r.IntN(100))
		}
		if r.IntN(10) != 0 {
			weight = float64(r.IntN(1<<16)-(1<<14)) / 64
		}
		orders[i] = []any{int64(i + 1), int64(r.IntN(size.Users) + 1), fmt.Sprintf("%d.%02d", r.IntN(500), r.IntN(100)),
			r.IntN(9) + 1, weight, statuses[r.IntN(len(statuses))], note, epoch.Add(time.Duration(r.IntN(365*24*60)) * time.Minute)}
	}
	return users, orders
}

// CreateSchema creates the tables through c, one statement at a time.
func CreateSchema(ctx context.Context, c *pgx.Conn) error {
	for _, s := range Schema {
		if _, err := c.Exec(ctx, s); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
	}
	return nil
}

// CopyRows copies users and orders in through c with binary COPY and an
// explicit column list (which pgshard needs to find the key).
func CopyRows(ctx context.Context, c *pgx.Conn, users, orders [][]any) error {
	n, err := c.CopyFrom(ctx, pgx.Identifier{"users"}, UserColumns, pgx.CopyFromRows(users))
	if err != nil {
		return fmt.Errorf("copy users: %w", err)
	}
	if n != int64(len(users)) {
		return fmt.Errorf("copy users: %d rows copied, want %d", n, len(users))
	}
	if n, err = c.CopyFrom(ctx, pgx.Identifier{"orders"}, OrderColumns, pgx.CopyFromRows(orders)); err != nil {
		return fmt.Errorf("copy orders: %w", err)
	}
	if n != int64(len(orders)) {
		return fmt.Errorf("copy orders: %d rows copied, want %d", n, len(orders))
	}
	return nil
}

// Analyze updates the planner statistics of the tables through c, one
// statement at a time.
func Analyze(ctx context.Context, c *pgx.Conn) error {
	for _, t := range []string{"users", "orders"} {
		if _, err := c.Exec(ctx, "ANALYZE "+t); err != nil {
			return fmt.Errorf("analyze %s: %w", t, err)
		}
	}
	return nil
}

// Load creates the schema and the functions through c, copies the
// dataset in and analyzes it.
func Load(ctx context.Context, c *pgx.Conn, size Size, seed uint64) error {
	if err := CreateSchema(ctx, c); err != nil {
		return err
	}
	for _, f := range Functions {
		if _, err := c.Exec(ctx, f); err != nil {
			return fmt.Errorf("create function: %w", err)
		}
	}
	users, orders := Rows(size, seed)
	if err := CopyRows(ctx, c, users, orders); err != nil {
		return err
	}
	return Analyze(ctx, c)
}
