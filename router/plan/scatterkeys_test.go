package plan

import "testing"

// TestKeyListPruned: a key IN list or = ANY(ARRAY[...]) of literals over
// several shards gives each shard only its own keys, also in a statement
// rewritten for the merge; the cached plan of the same statement with
// other keys prunes by those keys.
func TestKeyListPruned(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []routeCase{
		{sql: "SELECT * FROM users WHERE id IN (7, 150)",
			want: "multi s1,s2 ro s1=[SELECT * FROM users WHERE id IN (7)] s2=[SELECT * FROM users WHERE id IN (150)]"},
		{sql: "SELECT * FROM users WHERE id IN (7, 250, 150, 8, 9)",
			want: "multi s1,s2,s3 ro s1=[SELECT * FROM users WHERE id IN (7, 8, 9)] s2=[SELECT * FROM users WHERE id IN (150)] s3=[SELECT * FROM users WHERE id IN (250)]"},
		{sql: "SELECT * FROM users WHERE id IN (7, 8, 9, 10, 350)",
			want: "multi s1,s4 ro s1=[SELECT * FROM users WHERE id IN (7, 8, 9, 10)] s4=[SELECT * FROM users WHERE id IN (350)]"},
		{sql: "SELECT * FROM users WHERE id IN (7, 8)", want: "single s1 ro"},
		{sql: "SELECT name FROM users WHERE id = ANY(ARRAY[7, 150]) AND name <> 'x'",
			want: "multi s1,s2 ro s1=[SELECT name FROM users WHERE id = ANY(ARRAY[7]) AND name <> 'x'] s2=[SELECT name FROM users WHERE id = ANY(ARRAY[150]) AND name <> 'x']"},
		{sql: "SELECT * FROM users WHERE id = ANY(ARRAY[7, 150]::bigint[])",
			want: "multi s1,s2 ro s1=[SELECT * FROM users WHERE id = ANY(ARRAY[7]::bigint[])] s2=[SELECT * FROM users WHERE id = ANY(ARRAY[150]::bigint[])]"},
		// Casts and negative numbers keep their meaning.
		{sql: "SELECT * FROM users WHERE id IN ('7'::int8, CAST(-5 AS bigint), 150::bigint)",
			want: "multi s1,s2 ro s1=[SELECT * FROM users WHERE id IN ('7'::int8, (-5)::bigint)] s2=[SELECT * FROM users WHERE id IN (150::bigint)]"},
		// Other parameters stay where they are.
		{sql: "SELECT * FROM users WHERE name = $1 AND id IN (7, -3, 150)", params: []string{"x"},
			want: "multi s1,s2 ro s1=[SELECT * FROM users WHERE name = $1 AND id IN (7, -3)] s2=[SELECT * FROM users WHERE name = $1 AND id IN (150)]"},
		// Merged: the rewritten statement (avg as sum and count), pruned.
		{sql: "SELECT avg(age) FROM users WHERE id IN (7, 150) AND age > 2",
			want: "multi s1,s2 ro merge{combine=[2 1 7 8] final=[{1 0 1 avg false}] distinct=false order=[] offset=0 limit=-1} " +
				"sql=[SELECT sum(age), count(age), avg(age), pg_catalog.current_setting('extra_float_digits') FROM users WHERE id IN (7, 150) AND age > 2] " +
				"s1=[SELECT sum(age), count(age), avg(age), pg_catalog.current_setting('extra_float_digits') FROM users WHERE id IN (7) AND age > 2] " +
				"s2=[SELECT sum(age), count(age), avg(age), pg_catalog.current_setting('extra_float_digits') FROM users WHERE id IN (150) AND age > 2]"},
		{sql: "SELECT id, name FROM users WHERE id IN (7, 150, 9) ORDER BY name LIMIT 2 OFFSET 1",
			want: "~sql=[SELECT id, name FROM users WHERE id IN (7, 150, 9) ORDER BY name LIMIT 2::bigint + 1::bigint] " +
				"s1=[SELECT id, name FROM users WHERE id IN (7, 9) ORDER BY name LIMIT 2::bigint + 1::bigint] " +
				"s2=[SELECT id, name FROM users WHERE id IN (150) ORDER BY name LIMIT 2::bigint + 1::bigint]"},
		// Joined on the key: the list of the joined table's key.
		{sql: "SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id IN (7, 150)",
			want: "multi s1,s2 ro s1=[SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id IN (7)] s2=[SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id IN (150)]"},
		// The cached template prunes by the keys of each execution.
		{sql: "SELECT * FROM users WHERE id IN (250, 7)",
			want: "multi s1,s3 ro s1=[SELECT * FROM users WHERE id IN (7)] s3=[SELECT * FROM users WHERE id IN (250)]"},
	} {
		check(t, p, c)
		check(t, p, c)
	}
}

// TestKeyListNotPruned: where the pruned list could mean something else,
// or nothing says which shard an item is on, every shard gets the whole
// statement.
func TestKeyListNotPruned(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, sql := range []string{
		"SELECT * FROM users WHERE id IN (7, 150) OR name = 'x'",
		"SELECT * FROM users WHERE NOT (id IN (7, 150))",
		"SELECT * FROM users WHERE id NOT IN (7, 150)",
		"SELECT * FROM users WHERE id IN (7, $1)",
		"SELECT * FROM users WHERE id = ANY($1)",
		"SELECT * FROM users WHERE id = ANY('{7,150}')",
		"SELECT * FROM users WHERE id IN (SELECT user_id FROM orders WHERE user_id IN (7, 150))",
		"SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.user_id IN (7, 150))",
		"SELECT * FROM users WHERE id IN (7, 150, NULL)",
		"EXPLAIN SELECT * FROM users WHERE id IN (7, 150)",
		"COPY (SELECT * FROM users WHERE id IN (7, 150)) TO STDOUT",
		"/* pgshard: shard=s3 */ SELECT * FROM users WHERE id IN (7, 150)",
		"UPDATE users SET name = 'x' WHERE id IN (7, 150)",
		"DELETE FROM users WHERE id IN (7, 150)",
	} {
		for range 2 {
			got, err := p.Route(sql, [][]byte{[]byte("{7,150}")}, nil, nil)
			if err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
			if got.PerShardSQL != nil || got.PerShardKeys {
				t.Errorf("%s: pruned: %s", sql, summary(got))
			}
		}
	}
}
