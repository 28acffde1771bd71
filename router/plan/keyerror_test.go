package plan

import (
	"strings"
	"testing"
)

// TestUnreadableKeyScatters: a key value that is not a bigint literal
// (185.0 compares as numeric) makes the statement run on every shard,
// with the same shard SQL (hidden columns for the merge) as a statement
// without a key condition.
func TestUnreadableKeyScatters(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []struct{ sql, want string }{
		{"SELECT sum(id) AS c1 FROM users WHERE id = 185.0", "current_setting('extra_float_digits')"},
		{"SELECT avg(id) FROM users WHERE id = 185.0 ORDER BY 1", "count("},
		{"SELECT user_id, avg(amount) FROM orders WHERE user_id IN (17.0, 18) GROUP BY user_id", "count("},
		{"SELECT name FROM users WHERE id = 185.0 ORDER BY score LIMIT 3", "score"},
	} {
		for i := 0; i < 2; i++ { // fresh, then cached
			pl, err := p.Route(c.sql, nil, nil, nil)
			if err != nil || pl.Kind != All || pl.Merge == nil {
				t.Fatalf("%s: %v %v %+v", c.sql, pl.Kind, err, pl.Err)
			}
			if !strings.Contains(pl.ShardSQL, c.want) {
				t.Errorf("%s: shard SQL %q lacks %q", c.sql, pl.ShardSQL, c.want)
			}
		}
	}
	// A parameter that is not a bigint likewise.
	pl, err := p.Route("SELECT sum(id) FROM users WHERE id = $1", [][]byte{[]byte("185.5")}, nil, nil)
	if err != nil || pl.Kind != All || !strings.Contains(pl.ShardSQL, "extra_float_digits") {
		t.Errorf("parameter 185.5: %v %v shard SQL %q", pl.Kind, err, pl.ShardSQL)
	}
}

// TestNegativeLiteralKeepsPrecedence: a rewritten statement splices a
// negative literal back before a cast as (-3)::text (-3::text would cast
// 3 and then negate text).
func TestNegativeLiteralKeepsPrecedence(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []struct{ sql, want string }{
		{"SELECT (-3)::text, name FROM users ORDER BY 1, score LIMIT 2 OFFSET 1", "(-3)::text"},
		{"SELECT name FROM users ORDER BY score - 3, (-3.5)::int LIMIT 2", "(-3.5)::int"},
		{"SELECT id - 3 FROM users ORDER BY score LIMIT 1", "id - 3"},
	} {
		pl, err := p.Route(c.sql, nil, nil, nil)
		if err != nil || pl.Kind != All {
			t.Fatalf("%s: %v %v", c.sql, pl.Kind, err)
		}
		if !strings.Contains(pl.ShardSQL, c.want) {
			t.Errorf("%s: shard SQL %q lacks %q", c.sql, pl.ShardSQL, c.want)
		}
	}
}
