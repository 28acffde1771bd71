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
		{"SELECT status, avg(amount) FROM orders WHERE user_id IN (17.0, 18) GROUP BY status", "count("},
		{"SELECT name FROM users WHERE id = 185.0 ORDER BY score LIMIT 3", "score"},
	} {
		for i := 0; i < 2; i++ { // fresh, then cached
			pl, err := p.Route(c.sql, nil, nil, nil)
			if err != nil || pl.Decision() != "all" || pl.Merge == nil {
				t.Fatalf("%s: %v %v %+v", c.sql, pl.Kind, err, pl.Err)
			}
			if !strings.Contains(pl.ShardSQL, c.want) {
				t.Errorf("%s: shard SQL %q lacks %q", c.sql, pl.ShardSQL, c.want)
			}
		}
	}
	// A parameter that is not a bigint likewise.
	pl, err := p.Route("SELECT sum(id) FROM users WHERE id = $1", [][]byte{[]byte("185.5")}, nil, nil)
	if err != nil || pl.Decision() != "all" || !strings.Contains(pl.ShardSQL, "extra_float_digits") {
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
		{"SELECT CAST(-3 AS text), name FROM users ORDER BY 1, score LIMIT 2", "(-3)::text"},
		// Written so in the statement, -3::text is -(3::text) (an error in
		// PostgreSQL), also when a cached plan of 3::text is reused.
		{"SELECT 3::text, name FROM users ORDER BY 1, score LIMIT 2", "3::text"},
		{"SELECT -3::text, name FROM users ORDER BY 1, score LIMIT 2", "3::text"},
		{"SELECT 5::bigint, name FROM users ORDER BY 1, score LIMIT 2", "5::bigint"},
		{"SELECT -9223372036854775808::bigint, name FROM users ORDER BY 1, score LIMIT 2", "9223372036854775808::bigint"},
		{"SELECT v.tag FROM (VALUES (5::bigint, 'a'), (150::bigint, 'b')) v(vid, tag) JOIN orders o ON o.user_id = v.vid ORDER BY 1 LIMIT 3 OFFSET 1", "5::bigint"},
		{"SELECT v.tag FROM (VALUES (5::bigint, 'a'), (-9223372036854775808::bigint, 'b')) v(vid, tag) JOIN orders o ON o.user_id = v.vid ORDER BY 1 LIMIT 3 OFFSET 1", "9223372036854775808::bigint"},
	} {
		pl, err := p.Route(c.sql, nil, nil, nil)
		if err != nil || pl.Decision() != "all" {
			t.Fatalf("%s: %v %v", c.sql, pl.Kind, err)
		}
		if !strings.Contains(pl.ShardSQL, c.want) {
			t.Errorf("%s: shard SQL %q lacks %q", c.sql, pl.ShardSQL, c.want)
		}
		if !strings.Contains(c.sql, "(-") && !strings.Contains(c.sql, "(-3 AS") && strings.Contains(pl.ShardSQL, "(-") {
			t.Errorf("%s: shard SQL %q puts a negative literal in parentheses", c.sql, pl.ShardSQL)
		}
	}
}
