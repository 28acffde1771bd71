package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/controlplane"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// dataCheckMap is the demo's layout over shards s0 and s1: users
// range-sharded by id at split, orders colocated by user_id.
func dataCheckMap(s0, s1 string, split int, extra string) string {
	return fmt.Sprintf(`shards:
  - {name: s0, primary: %q}
  - {name: s1, primary: %q}
%sdistributions:
  - name: users
    key_type: bigint
    strategy: range
    intervals:
      - {lo: -inf, hi: %d, shard: s0}
      - {lo: %d, hi: +inf, shard: s1}
tables:
  - {name: public.users, distribution: users, key: id}
  - {name: public.orders, distribution: users, key: user_id}
`, s0, s1, extra, split, split)
}

// TestMapApplyRefusesDataMoves: with real PostgreSQL servers and a real
// meta member (as internal/controlplane assembles it, with the member's
// PostgreSQL role), `pgshard map apply` of the demo's boundary move
// (users from 501 down to 401) is refused with exit 4 and the exact row
// count per table found on the old owner — summed over its databases —
// and -o json prints the same as an error object; nothing is applied.
// Once the rows are copied and deleted on the old owner, the same map is
// applied without a flag. A further move with rows left behind goes
// through with --no-data-check; adding a shard with no interval contacts
// no server; an old owner that is down refuses the map, naming it.
func TestMapApplyRefusesDataMoves(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s0 := integration.StartPostgres(t, integration.Name("s0"))
	s1 := integration.StartPostgres(t, integration.Name("s1"))
	const schema = `CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id int NOT NULL, amount numeric NOT NULL);`
	for _, s := range []*pgcluster.Server{s0, s1} {
		if err := s.Exec(ctx, schema); err != nil {
			t.Fatal(err)
		}
	}
	// s0 holds users 1..500 with two orders each, s1 users 501..1000.
	if err := s0.Exec(ctx, `INSERT INTO users SELECT i, 'u' || i FROM generate_series(1, 500) i;
INSERT INTO orders (user_id, amount) SELECT i % 500 + 1, 10 FROM generate_series(1, 1000) i`); err != nil {
		t.Fatal(err)
	}
	if err := s0.Exec(ctx, "CREATE DATABASE app"); err != nil {
		t.Fatal(err)
	}
	if err := s1.Exec(ctx, `INSERT INTO users SELECT i, 'u' || i FROM generate_series(501, 1000) i`); err != nil {
		t.Fatal(err)
	}
	// A second database on s0 with users in the moving interval too; no
	// orders table there.
	app, err := pgx.Connect(ctx, s0.SuperDSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.Exec(ctx, `CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);
INSERT INTO users SELECT i, 'app' || i FROM generate_series(450, 454) i`); err != nil {
		t.Fatal(err)
	}
	app.Close(ctx)

	seed, err := shardmap.ParseYAMLWithoutEpoch([]byte(dataCheckMap(s0.Addr(), s1.Addr(), 501, "")))
	if err != nil {
		t.Fatal(err)
	}
	seed.Epoch = 1
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	member, err := controlplane.New(ctx, controlplane.Config{
		Node:        meta.Config{ID: "m1", RaftAddr: "127.0.0.1:0", DataDir: t.TempDir(), Bootstrap: true},
		API:         lis,
		Server:      metarpc.ServerOptions{AllowUnauthenticated: true},
		WaitLeader:  time.Minute,
		Seed:        seed,
		SeedComment: "users split at 501",
		PG:          &controlplane.PGLogin{User: pgcluster.SuperuserName, Password: pgcluster.SuperuserPassword, SSLMode: "disable"},
	}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	apply := func(file string, args ...string) ctlResult {
		return runCtl(t, nil, append([]string{"map", "apply", "-f", file, "--meta", member.Addr(), "--timeout", "20s"}, args...)...)
	}
	epoch := func() uint64 { return member.Node().Map().Epoch }

	// The demo's move: [401, 501) from s0 to s1.
	at401 := ctlWriteFile(t, "at401.yaml", dataCheckMap(s0.Addr(), s1.Addr(), 401, ""))
	r := apply(at401).want(t, exitRefused)
	for _, want := range []string{
		"distribution users [401, 501) from s0 to s1: 305 rows on " + s0.Addr() + " (public.orders 200, public.users 105)",
		"nothing was applied", "--no-data-check",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("map apply's message lacks %q:\n%s", want, r.stderr)
		}
	}
	if epoch() != 1 {
		t.Fatalf("a refused map was applied: epoch %d", epoch())
	}
	// -o json: an error object with the counts.
	r = apply(at401, "-o", "json").want(t, exitRefused)
	var je struct {
		Error struct {
			Reason   string              `json:"reason"`
			ExitCode int                 `json:"exit_code"`
			Moves    []metarpc.MovedRows `json:"moves"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &je); err != nil {
		t.Fatalf("map apply -o json printed %q: %v", r.stdout, err)
	}
	wantMove := metarpc.MovedRows{Distribution: "users", Interval: "[401, 501)", From: "s0", To: "s1", Server: s0.Addr(),
		Tables: []metarpc.TableRows{{Table: "public.orders", Rows: 200}, {Table: "public.users", Rows: 105}}}
	if je.Error.Reason != "DATA_NOT_MOVED" || je.Error.ExitCode != exitRefused || len(je.Error.Moves) != 1 || fmt.Sprint(je.Error.Moves[0]) != fmt.Sprint(wantMove) {
		t.Errorf("map apply -o json printed %+v, want reason DATA_NOT_MOVED, exit code 4 and move %+v", je.Error, wantMove)
	}

	// Adding a shard that owns nothing is a plain edit: its server is
	// not even there.
	dead := "127.0.0.1:1"
	withSpare := ctlWriteFile(t, "spare.yaml", dataCheckMap(s0.Addr(), s1.Addr(), 501, fmt.Sprintf("  - {name: spare, primary: %q}\n", dead)))
	apply(withSpare).want(t, exitOK)
	if epoch() != 2 {
		t.Fatalf("after adding a spare shard: epoch %d, want 2", epoch())
	}

	// The DBA copies [401, 501) to s1 and deletes it on s0 (both
	// databases): the interval is empty and the map applies.
	if err := s1.Exec(ctx, `INSERT INTO users SELECT i, 'u' || i FROM generate_series(401, 500) i;
INSERT INTO orders (user_id, amount) SELECT user_id, amount FROM (SELECT i % 500 + 1 AS user_id, 10 AS amount FROM generate_series(1, 1000) i) o WHERE user_id >= 401`); err != nil {
		t.Fatal(err)
	}
	if err := s0.Exec(ctx, "DELETE FROM orders WHERE user_id >= 401; DELETE FROM users WHERE id >= 401"); err != nil {
		t.Fatal(err)
	}
	app, err = pgx.Connect(ctx, s0.SuperDSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.Exec(ctx, "DELETE FROM users WHERE id >= 401"); err != nil {
		t.Fatal(err)
	}
	app.Close(ctx)
	apply(at401, "--comment", "users [401, 501) copied to s1").want(t, exitOK)
	if epoch() != 3 {
		t.Fatalf("after the move of an empty interval: epoch %d, want 3", epoch())
	}

	// [301, 401) still has rows on s0: --no-data-check applies it anyway.
	at301 := ctlWriteFile(t, "at301.yaml", dataCheckMap(s0.Addr(), s1.Addr(), 301, ""))
	r = apply(at301).want(t, exitRefused)
	if want := "[301, 401) from s0 to s1: 300 rows on " + s0.Addr() + " (public.orders 200, public.users 100)"; !strings.Contains(r.stderr, want) {
		t.Errorf("map apply's message lacks %q:\n%s", want, r.stderr)
	}
	apply(at301, "--no-data-check").want(t, exitOK)
	if epoch() != 4 {
		t.Fatalf("after --no-data-check: epoch %d, want 4", epoch())
	}

	// The old owner is down: refused, naming it.
	if err := s0.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	r = apply(ctlWriteFile(t, "at201.yaml", dataCheckMap(s0.Addr(), s1.Addr(), 201, ""))).want(t, exitRefused)
	for _, want := range []string{"distribution users [201, 301) from s0 to s1: cannot count its rows on " + s0.Addr(), "--no-data-check"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("map apply's message lacks %q:\n%s", want, r.stderr)
		}
	}
	if epoch() != 4 {
		t.Fatalf("a map refused for an unreachable owner was applied: epoch %d", epoch())
	}
}
