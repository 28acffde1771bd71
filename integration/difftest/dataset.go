package difftest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// Schema creates the dataset's tables: users, keyed by id, and orders,
// keyed by user_id (colocated with users when sharded).
const Schema = `
CREATE TABLE users (
	id         bigint PRIMARY KEY,
	name       text NOT NULL,
	email      text,
	country    text,
	score      numeric(10,2),
	active     boolean NOT NULL,
	created_at timestamptz NOT NULL
);
CREATE TABLE orders (
	id         bigint NOT NULL,
	user_id    bigint NOT NULL,
	amount     numeric(12,2) NOT NULL,
	quantity   int NOT NULL,
	status     text NOT NULL,
	note       text,
	created_at timestamptz NOT NULL,
	PRIMARY KEY (user_id, id)
);
`

// Size is how many rows Load generates.
type Size struct {
	Users, Orders int
}

// DefaultSize is the size the sharding issue asks for.
var DefaultSize = Size{Users: 10000, Orders: 50000}

var (
	countries = []string{"DE", "FR", "US", "BR", "JP", "IN", "ZA", "NZ"}
	statuses  = []string{"new", "paid", "shipped", "cancelled"}
	epoch     = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Rows generates the dataset deterministically from seed.
func Rows(size Size, seed uint64) (users, orders [][]any) {
	r := rand.New(rand.NewPCG(seed, 1))
	users = make([][]any, size.Users)
	for i := range users {
		id := int64(i + 1)
		var email, country, score any
		if r.IntN(10) != 0 {
			email = fmt.Sprintf("user%d@example.com", id)
		}
		if r.IntN(8) != 0 {
			country = countries[r.IntN(len(countries))]
		}
		if r.IntN(6) != 0 {
			score = fmt.Sprintf("%d.%02d", r.IntN(1000), r.IntN(100))
		}
		users[i] = []any{id, fmt.Sprintf("name-%05d-%s", id, string(rune('a'+r.IntN(26)))), email, country, score,
			r.IntN(3) != 0, epoch.Add(time.Duration(r.IntN(365*24)) * time.Hour)}
	}
	orders = make([][]any, size.Orders)
	for i := range orders {
		var note any
		if r.IntN(4) == 0 {
			note = fmt.Sprintf("note %d ünïcødé", r.IntN(100))
		}
		orders[i] = []any{int64(i + 1), int64(r.IntN(size.Users) + 1), fmt.Sprintf("%d.%02d", r.IntN(500), r.IntN(100)),
			r.IntN(9) + 1, statuses[r.IntN(len(statuses))], note, epoch.Add(time.Duration(r.IntN(365*24*60)) * time.Minute)}
	}
	return users, orders
}

// Load creates the schema through c and copies the dataset in.
func Load(ctx context.Context, c *pgx.Conn, size Size, seed uint64) error {
	if _, err := c.Exec(ctx, Schema); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	users, orders := Rows(size, seed)
	if _, err := c.CopyFrom(ctx, pgx.Identifier{"users"}, []string{"id", "name", "email", "country", "score", "active", "created_at"}, pgx.CopyFromRows(users)); err != nil {
		return fmt.Errorf("copy users: %w", err)
	}
	if _, err := c.CopyFrom(ctx, pgx.Identifier{"orders"}, []string{"id", "user_id", "amount", "quantity", "status", "note", "created_at"}, pgx.CopyFromRows(orders)); err != nil {
		return fmt.Errorf("copy orders: %w", err)
	}
	if _, err := c.Exec(ctx, "ANALYZE users; ANALYZE orders"); err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	return nil
}
