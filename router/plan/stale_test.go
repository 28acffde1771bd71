package plan

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// stalePlanner plans with testMap plus a copy of users [150, 180) (owned
// by s2) on s3, as while a move to s3 copies it, and a copy of the
// accounts hash interval [0, 2^62) (owned by s3) on s1.
func stalePlanner(t testing.TB) *Planner {
	t.Helper()
	m := testMap(t)
	m, err := m.WithStale("users", shardmap.StaleRows{ID: "mv1", Lo: shardmap.Int64Bound(150), Hi: shardmap.Int64Bound(180), Shard: "s3"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if m, err = m.WithStale("accounts", shardmap.StaleRows{ID: "mv2", Lo: shardmap.Int64Bound(0), Hi: shardmap.Int64Bound(1 << 62), Shard: "s1"}, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return New(m, Options{})
}

const (
	usersLive    = `(id >= 150::int8 AND id < 180::int8) IS NOT TRUE`
	ordersLive   = `(user_id >= 150::int8 AND user_id < 180::int8) IS NOT TRUE`
	accountsLive = `(hashtextextended(name::text COLLATE "C", 8099569346997806113) >= 0::int8 AND hashtextextended(name::text COLLATE "C", 8099569346997806113) < (4611686018427387904)::int8) IS NOT TRUE`
)

func TestPlanStaleRows(t *testing.T) {
	p := stalePlanner(t)
	cases := []struct {
		sql    string
		params [][]byte
		shard  string // the shard with stale rows, "" for none rewritten
		want   string // its statement
	}{
		{"SELECT count(*) FROM users", nil, "s3",
			"SELECT count(*) FROM (SELECT * FROM users WHERE " + usersLive + ") users"},
		{"SELECT u.id, o.n FROM users u JOIN orders AS o ON o.user_id = u.id WHERE o.n > 3 ORDER BY u.id LIMIT 5", nil, "s3",
			"SELECT u.id, o.n FROM (SELECT * FROM users WHERE " + usersLive + ") u JOIN (SELECT * FROM orders WHERE " +
				ordersLive + ") o ON o.user_id = u.id WHERE o.n > 3 ORDER BY u.id LIMIT 5"},
		// Any depth, settings (unsharded) untouched, public. kept.
		{"SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)", nil, "s3",
			"SELECT * FROM (SELECT * FROM users WHERE " + usersLive + ") u WHERE EXISTS (SELECT 1 FROM (SELECT * FROM orders WHERE " + ordersLive + ") o WHERE o.user_id = u.id)"},
		{"SELECT count(*) FROM ONLY public.users", nil, "s3",
			"SELECT count(*) FROM (SELECT * FROM ONLY public.users WHERE " + usersLive + ") users"},
		{"SELECT count(*) FROM users AS u(a, b)", nil, "s3",
			"SELECT count(*) FROM (SELECT * FROM users WHERE " + usersLive + ") u(a, b)"},
		// The merge's statement is the one rewritten.
		{"SELECT avg(n) FROM users", nil, "s3",
			"SELECT sum(n), count(n), avg(n), pg_catalog.current_setting('extra_float_digits') FROM (SELECT * FROM users WHERE " + usersLive + ") users"},
		{"SELECT id FROM users WHERE n = $1 ORDER BY id LIMIT 3", [][]byte{[]byte("7")}, "s3",
			"SELECT id FROM (SELECT * FROM users WHERE " + usersLive + ") users WHERE n = $1 ORDER BY id LIMIT 3"},
		{"COPY users TO STDOUT", nil, "s3",
			"COPY (SELECT * FROM users WHERE " + usersLive + ") TO STDOUT"},
		{"COPY users (id, n) TO STDOUT WITH (FORMAT csv)", nil, "s3",
			"COPY (SELECT id, n FROM users WHERE " + usersLive + ") TO STDOUT CSV"},
		{"COPY (SELECT id FROM users) TO STDOUT", nil, "s3",
			"COPY (SELECT id FROM (SELECT * FROM users WHERE " + usersLive + ") users) TO STDOUT"},
		{"UPDATE users SET n = n + 1", nil, "s3",
			"UPDATE users SET n = n + 1 WHERE " + `(users.id >= 150::int8 AND users.id < 180::int8) IS NOT TRUE`},
		{"DELETE FROM users AS u WHERE n = 3", nil, "s3",
			"DELETE FROM users u WHERE n = 3 AND " + `(u.id >= 150::int8 AND u.id < 180::int8) IS NOT TRUE`},
		{"UPDATE users SET n = 0 FROM orders WHERE orders.user_id = users.id", nil, "s3",
			"UPDATE users SET n = 0 FROM (SELECT * FROM orders WHERE " + ordersLive +
				`) orders WHERE orders.user_id = users.id AND (users.id >= 150::int8 AND users.id < 180::int8) IS NOT TRUE`},
		// Hash.
		{"SELECT count(*) FROM accounts", nil, "s1",
			"SELECT count(*) FROM (SELECT * FROM accounts WHERE " + accountsLive + ") accounts"},
		// A key list over several shards: each shard's keys, and the
		// stale rows left out on s3.
		{"SELECT * FROM users WHERE id IN (10, 250, 150)", nil, "s3",
			"SELECT * FROM (SELECT * FROM users WHERE " + usersLive + ") users WHERE id IN (250)"},
		// Keyed statements go to the key's owner: nothing to leave out.
		{"SELECT * FROM users WHERE id = 160", nil, "", ""},
		{"UPDATE users SET n = 1 WHERE id = 250", nil, "", ""},
		{"SELECT * FROM accounts WHERE name = 'bob'", nil, "", ""},
		{"SELECT * FROM settings", nil, "", ""},
		{"INSERT INTO users (id, n) VALUES (160, 1), (250, 2)", nil, "", ""},
		{"COPY users (id, n) FROM STDIN", nil, "", ""},
		// A hint names the shard: what is there.
		{"/* pgshard: shard=s3 */ SELECT count(*) FROM users", nil, "", ""},
	}
	for _, c := range cases {
		pl, err := p.Route(c.sql, c.params, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.sql, err)
		}
		if pl.Kind == Refused {
			t.Errorf("%s: refused: %v", c.sql, pl.Err)
			continue
		}
		if c.shard == "" {
			if pl.PerShardStale {
				t.Errorf("%s: rewritten: %q", c.sql, pl.PerShardSQL)
			}
			continue
		}
		if !pl.PerShardStale {
			t.Errorf("%s: PerShardStale not set (plan %s)", c.sql, summary(pl))
			continue
		}
		if got := pl.PerShardSQL[c.shard]; got != c.want {
			t.Errorf("%s: shard %s gets\n  %s\nwant\n  %s", c.sql, c.shard, got, c.want)
		}
		for s, q := range pl.PerShardSQL {
			if s != c.shard && !pl.PerShardKeys {
				t.Errorf("%s: shard %s rewritten too: %s", c.sql, s, q)
			}
		}
	}
}

// A UNION ALL's parts for each shard keep their own statements, rewritten
// on the shard with stale rows.
func TestPlanStaleUnion(t *testing.T) {
	p := stalePlanner(t)
	pl, err := p.Route("SELECT id FROM users WHERE id = 5 UNION ALL SELECT user_id FROM orders WHERE user_id = 250", nil, nil, nil)
	if err != nil || pl.Kind == Refused {
		t.Fatalf("plan %s: %v", summary(pl), err)
	}
	if pl.PerShardStale {
		t.Error("PerShardStale set on a UNION ALL's parts")
	}
	if got, want := pl.PerShardSQL["s1"], "(SELECT id FROM users WHERE id = 5 LIMIT ALL) UNION ALL (SELECT user_id FROM orders WHERE user_id = 250 LIMIT 0)"; got != want {
		t.Errorf("s1 gets %s, want %s", got, want)
	}
	if got, want := pl.PerShardSQL["s3"], "(SELECT id FROM (SELECT * FROM users WHERE "+usersLive+") users WHERE id = 5 LIMIT 0) UNION ALL (SELECT user_id FROM (SELECT * FROM orders WHERE "+ordersLive+") orders WHERE user_id = 250 LIMIT ALL)"; got != want {
		t.Errorf("s3 gets %s, want %s", got, want)
	}
}

func TestPlanStaleRefused(t *testing.T) {
	p := stalePlanner(t)
	for _, sql := range []string{
		"WITH users AS (SELECT 1 AS id) SELECT count(*) FROM users, orders",
		"SELECT public.users.id FROM public.users",
	} {
		pl, _ := p.Route(sql, nil, nil, nil)
		if pl.Kind != Refused || pl.Err == nil || pl.Err.Code != "0A000" {
			t.Errorf("%s: plan %s, want refused with 0A000", sql, summary(pl))
			continue
		}
		for _, w := range []string{"shard s3", "users [150, 180) of move mv1", "until reshard cleanup"} {
			if !strings.Contains(pl.Err.Message, w) {
				t.Errorf("%s: message %q lacks %q", sql, pl.Err.Message, w)
			}
		}
	}
}

// A marker on another distribution, or none, costs planning nothing: the
// keyed fast path allocates as without markers.
func TestPlanStaleNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts under the race detector are not the code's own")
	}
	plain := New(testMap(t), Options{})
	params := [][]byte{[]byte("160")}
	sql := "SELECT * FROM users WHERE id = $1"
	if _, err := plain.Route(sql, params, nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = plain.Route(sql, params, nil, nil) }); n > 1 {
		t.Errorf("Route allocates %v times per run", n)
	}
	stale := stalePlanner(t)
	if n := testing.AllocsPerRun(100, func() { _, _ = stale.Route(sql, params, nil, nil) }); n > 1 {
		t.Errorf("with markers, a keyed Route allocates %v times per run", n)
	}
}

// A statement's rewrite is kept per shard and text, bounded, and the same
// as a fresh one.
func TestPlanStaleCache(t *testing.T) {
	p := stalePlanner(t)
	fresh := stalePlanner(t)
	sql := "SELECT count(*) FROM users WHERE n > $1"
	for i := range staleCacheSize + 10 {
		q := sql
		if i > 0 {
			q = fmt.Sprintf("SELECT count(*) FROM users WHERE n > %d", i)
		}
		if _, err := p.Route(q, nil, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	st := p.st.Load()
	st.staleMu.Lock()
	n := len(st.staleCache)
	st.staleMu.Unlock()
	if n == 0 || n > staleCacheSize {
		t.Fatalf("%d rewrites kept, want 1..%d", n, staleCacheSize)
	}
	for range 2 {
		a, _ := p.Route(sql, [][]byte{[]byte("3")}, nil, nil)
		b, _ := fresh.Route(sql, [][]byte{[]byte("3")}, nil, nil)
		if a.PerShardSQL["s3"] == "" || a.PerShardSQL["s3"] != b.PerShardSQL["s3"] || !a.PerShardStale {
			t.Fatalf("kept rewrite %q, fresh %q", a.PerShardSQL["s3"], b.PerShardSQL["s3"])
		}
	}
	r, _ := p.Route("SELECT public.users.id FROM public.users", nil, nil, nil)
	r2, _ := p.Route("SELECT public.users.id FROM public.users", nil, nil, nil)
	if r.Kind != Refused || r2.Kind != Refused || r2.Err.Message != r.Err.Message {
		t.Fatalf("kept refusal: %s, then %s", summary(r), summary(r2))
	}
}
