package plan

import (
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// FuzzRoute checks that any text is planned, refused or reported as a
// parse error, without panicking, and that a cached plan agrees with a
// fresh one.
func FuzzRoute(f *testing.F) {
	f.Add("SELECT * FROM users WHERE id = 5")
	for _, s := range []string{
		"SELECT * FROM users ORDER BY 2 DESC, name LIMIT 3 OFFSET 1",
		"SELECT round(avg(age), 2), count(*)::numeric(10,2), max(x) - min(x) / 3 FROM users GROUP BY name ORDER BY 1",
		"SELECT id, count(*) FROM users GROUP BY id HAVING count(*) > 1 ORDER BY count DESC LIMIT 5",
		"SELECT DISTINCT ON (user_id) user_id, rank() OVER (PARTITION BY user_id ORDER BY id) FROM orders ORDER BY user_id",
		"SELECT id FROM users WHERE id = 1 UNION ALL SELECT user_id FROM orders WHERE user_id = 150",
		"SELECT u.id FROM users u WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.user_id = 5)",
		"INSERT INTO users VALUES (5, 'a')",
	} {
		f.Add(s)
	}
	m := testMap(f)
	cached := New(m, Options{})
	fresh := New(m, Options{CacheSize: -1})
	f.Fuzz(func(t *testing.T, sql string) {
		for i := 0; i < 2; i++ {
			p, err := cached.Route(sql, nil, nil, nil)
			q, err2 := fresh.Route(sql, nil, nil, nil)
			if (err == nil) != (err2 == nil) {
				t.Fatalf("cached error %v, fresh %v", err, err2)
			}
			if err != nil {
				if p.Kind != 0 {
					t.Fatalf("error with a plan: %v", err)
				}
				continue
			}
			if p.Kind == 0 {
				t.Fatalf("no plan kind for %q", sql)
			}
			if p.Kind == Refused && p.Err == nil {
				t.Fatalf("refused without a reason: %q", sql)
			}
			if summary(p) != summary(q) {
				t.Fatalf("cached plan %s differs from fresh %s for %q", summary(p), summary(q), sql)
			}
		}
	})
}

// FuzzRouteStale checks that with stale-rows markers any text is planned
// or refused without panicking, and that every statement rewritten for a
// shard holding stale rows parses.
func FuzzRouteStale(f *testing.F) {
	for _, s := range []string{
		"SELECT count(*) FROM users",
		"SELECT u.id FROM users u JOIN orders o ON o.user_id = u.id ORDER BY 1 LIMIT 3",
		"SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)",
		"UPDATE users SET n = 1 FROM orders WHERE orders.user_id = users.id",
		"DELETE FROM users USING orders o WHERE o.user_id = users.id",
		"COPY users (id, n) TO STDOUT",
		"COPY (SELECT * FROM accounts) TO STDOUT",
		"SELECT id FROM users WHERE id = 1 UNION ALL SELECT user_id FROM orders WHERE user_id = 250",
	} {
		f.Add(s)
	}
	p := stalePlanner(f)
	f.Fuzz(func(t *testing.T, sql string) {
		pl, err := p.Route(sql, nil, nil, nil)
		if err != nil {
			return
		}
		if pl.Kind == Refused && pl.Err == nil {
			t.Fatalf("refused without a reason: %q", sql)
		}
		for s, q := range pl.PerShardSQL {
			if _, err := pg.Parse(q); err != nil {
				t.Fatalf("%q: shard %s gets %q, which does not parse: %v", sql, s, q, err)
			}
		}
	})
}
