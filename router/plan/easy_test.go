package plan

import "testing"

// TestKeyPartitioned: GROUP BY, DISTINCT ON and window partitions on the
// sharding key have each group on one shard, so the shards' rows are
// concatenated (and ordered) without merging groups; count(DISTINCT key)
// sums the shards' counts.
func TestKeyPartitioned(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []routeCase{
		// GROUP BY the key: HAVING, any aggregate, aggregates in expressions.
		{sql: "SELECT id, count(*) FROM users GROUP BY id HAVING count(*) > 1", want: "all ro"},
		{sql: "SELECT id, string_agg(name, ',' ORDER BY name), count(*)::int, round(avg(age), 2) FROM users GROUP BY id", want: "all ro"},
		{sql: "SELECT u.id, count(o.*) FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.id ORDER BY count(o.*) DESC, u.id LIMIT 5",
			want: "all ro merge{combine=[0 0] final=[{0 0 0  false} {0 1 0  false}] distinct=false order=[{1 true true false} {0 false false false}] offset=0 limit=5}"},
		{sql: "SELECT u.id FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.id ORDER BY count(o.*) DESC, u.id LIMIT 5",
			want: "all ro merge{combine=[0 0] final=[{0 0 0  false} {0 1 0  true}] distinct=false order=[{1 true true false} {0 false false false}] offset=0 limit=5} sql=[SELECT u.id, count(o.*) FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.id ORDER BY count(o.*) DESC, u.id LIMIT 5]"},
		{sql: "SELECT o.user_id, max(amount) - min(amount) FROM orders o GROUP BY 1", want: "all ro"},
		{sql: "SELECT * FROM users GROUP BY id ORDER BY id LIMIT 2", want: "~tail=1 sql=[SELECT *, id FROM users GROUP BY id ORDER BY id LIMIT 2]"},
		// Not the key, or the key on the nullable side of an outer join.
		{sql: "SELECT name, count(*) FROM users GROUP BY name HAVING count(*) > 1", want: "~HAVING with an aggregate"},
		{sql: "SELECT o.user_id, count(*) FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY o.user_id HAVING count(*) > 1", want: "~HAVING with an aggregate"},
		{sql: "SELECT user_id, count(*) FROM orders o(user_id) GROUP BY user_id HAVING count(*) > 1", want: "~HAVING"},
		// Window functions.
		{sql: "SELECT id, row_number() OVER (PARTITION BY id ORDER BY name) FROM users", want: "all ro"},
		{sql: "SELECT user_id, id, sum(amount) OVER w FROM orders WINDOW w AS (PARTITION BY user_id ORDER BY id) ORDER BY user_id, id LIMIT 3", want: "~order=[{0 false false false} {1 false false false}] offset=0 limit=3}"},
		{sql: "SELECT user_id, rank() OVER (w ORDER BY id) FROM orders WINDOW w AS (PARTITION BY user_id)", want: "all ro"},
		{sql: "SELECT id, row_number() OVER (PARTITION BY name) FROM users", want: "~window function not partitioned by the sharding key"},
		{sql: "SELECT id, row_number() OVER (PARTITION BY id), sum(1) OVER () FROM users", want: "~window function not partitioned"},
		{sql: "SELECT name, count(*), rank() OVER (PARTITION BY name ORDER BY count(*)) FROM users GROUP BY name", want: "~window function not partitioned"},
		{sql: "SELECT id, count(*), sum(count(*)) OVER (PARTITION BY id) FROM users GROUP BY id", want: "all ro"},
		{sql: "SELECT o.user_id, row_number() OVER (PARTITION BY o.user_id) FROM users u LEFT JOIN orders o ON o.user_id = u.id", want: "~window function not partitioned"},
		// DISTINCT ON.
		{sql: "SELECT DISTINCT ON (user_id) user_id, id, amount FROM orders ORDER BY user_id, amount DESC, id", want: "all ro merge{combine=[0 0 0] final=[{0 0 0  false} {0 1 0  false} {0 2 0  false}] distinct=false order=[{0 false false false} {2 true true false} {1 false false false}]"},
		{sql: "SELECT DISTINCT ON (1) user_id, id FROM orders ORDER BY 1, 2", want: "~distinct=false"},
		{sql: "SELECT DISTINCT ON (status) status, id FROM orders ORDER BY status, id", want: "~DISTINCT ON without the sharding key"},
		{sql: "SELECT DISTINCT ON (user_id) 0 AS user_id, id FROM orders", want: "~DISTINCT ON without the sharding key"},
		// DISTINCT aggregates over the key.
		{sql: "SELECT count(DISTINCT user_id), count(DISTINCT o.user_id) FILTER (WHERE amount > 5) FROM orders o", want: "all ro merge{combine=[1 1]"},
		{sql: "SELECT status, count(DISTINCT user_id), avg(DISTINCT user_id) FROM orders GROUP BY status", want: "~sql=[SELECT status, count(DISTINCT user_id), sum(DISTINCT user_id), count(DISTINCT user_id), avg(DISTINCT user_id)"},
		{sql: "SELECT count(DISTINCT status) FROM orders", want: "~count(DISTINCT ...)"},
		{sql: "SELECT count(DISTINCT user_id + 0) FROM orders", want: "~count(DISTINCT ...)"},
		{sql: "SELECT bool_and(DISTINCT id > 5) FROM users", want: "~bool_and(DISTINCT"},
	} {
		check(t, p, c)
		check(t, p, c)
	}
}

// TestStarOrderBy: SELECT * with ORDER BY sorts by hidden columns after
// the star's, which the merge finds from the end of the RowDescription.
func TestStarOrderBy(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []routeCase{
		{sql: "SELECT * FROM users ORDER BY id LIMIT 3", want: "all ro merge{combine=[] final=[] distinct=false order=[tail{0 false false false}] offset=0 limit=3} tail=1 sql=[SELECT *, id FROM users ORDER BY id LIMIT 3]"},
		{sql: "SELECT * FROM users ORDER BY name DESC, id LIMIT 3 OFFSET 2", want: "~order=[tail{0 true true false} tail{1 false false false}] offset=2 limit=3} tail=2 sql=[SELECT *, name, id FROM users ORDER BY name DESC, id LIMIT 3::bigint + 2::bigint]"},
		{sql: `SELECT u.* FROM users u ORDER BY u.name COLLATE "C"`, want: "~order=[tail{0 false false true}]"},
		{sql: "SELECT u.*, o.id FROM users u JOIN orders o ON o.user_id = u.id ORDER BY u.id, o.id", want: "~tail=2"},
		{sql: "SELECT * FROM users ORDER BY 1", want: "all ro merge{combine=[] final=[] distinct=false order=[{0 false false false}] offset=0 limit=-1}"},
		{sql: "SELECT * FROM users ORDER BY 3 DESC, id LIMIT 2", want: "~order=[{2 true true false} tail{0 false false false}] offset=0 limit=2} tail=1 sql=[SELECT *, id FROM users ORDER BY 3 DESC, id LIMIT 2]"},
		{sql: "SELECT * FROM users ORDER BY 2", want: "~order=[{1 false false false}]"},
		{sql: "SELECT * FROM users ORDER BY 'x'", want: "~ORDER BY this constant with SELECT *"},
		{sql: "SELECT *, lower(name) AS n FROM users ORDER BY n", want: "~the name of a select-list item next to *"},
		{sql: "SELECT u.* FROM users u JOIN orders o ON o.user_id = u.id ORDER BY id", want: "~qualified *"},
		{sql: "SELECT DISTINCT * FROM users ORDER BY id", want: "~SELECT DISTINCT * with ORDER BY"},
		{sql: `SELECT * FROM users ORDER BY name COLLATE "de-x-icu"`, want: "~collation"},
		{sql: "SELECT * FROM users WHERE id = 5 ORDER BY 1", want: "single s1 ro"},
	} {
		check(t, p, c)
		check(t, p, c)
	}
}

// TestOrderByOutputName: ORDER BY a name PostgreSQL gives an unnamed
// select-list item (count, lower, ...) sorts by that item.
func TestOrderByOutputName(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []routeCase{
		{sql: "SELECT status, count(*) FROM orders GROUP BY status ORDER BY count DESC", want: "all ro merge{combine=[0 1] final=[{0 0 0  false} {0 1 0  false}] distinct=false order=[{1 true true false}] offset=0 limit=-1}"},
		{sql: "SELECT lower(name), id FROM users ORDER BY lower LIMIT 2", want: "all ro merge{combine=[0 0] final=[{0 0 0  false} {0 1 0  false}] distinct=false order=[{0 false false false}] offset=0 limit=2}"},
		{sql: "SELECT coalesce(name, 'x'), id FROM users ORDER BY coalesce", want: "~order=[{0 false false false}]"},
		{sql: "SELECT count(*)::int, status FROM orders GROUP BY status ORDER BY count", want: "all ro merge{combine=[1 0 8] final=[{2 0 (::int4 $2) count false} {0 1 0  false} {0 0 0  true}] distinct=false order=[{0 false false false}]"},
		{sql: "SELECT u.id, o.id FROM users u JOIN orders o ON o.user_id = u.id ORDER BY id", want: "~several output columns have"},
		{sql: "SELECT name AS n, name FROM users ORDER BY name", want: "~order=[{1 false false false}]"},
		{sql: `SELECT "Lower"(name), id FROM users ORDER BY lower`, want: "~sql=[SELECT \"Lower\"(name), id, lower FROM users ORDER BY lower]"},
		{sql: "SELECT (SELECT 1 UNION SELECT 2), id FROM users ORDER BY x", want: "~or that a scalar subquery's column may have"},
		{sql: "SELECT (SELECT max(g) FROM generate_series(1, 3) g), id FROM users ORDER BY max", want: "~order=[{0 false false false}]"},
		{sql: "SELECT DISTINCT count(*)::int FROM users GROUP BY name", want: "~SELECT DISTINCT with an expression of aggregates"},
	} {
		check(t, p, c)
		check(t, p, c)
	}
}

// TestSubqueriesOnOneShard: key conditions inside subqueries, CTEs and
// UNION ALL parts route the statement when they all name one shard; a
// subquery correlated on the key runs on every shard; set operations over
// unsharded data do not count.
func TestSubqueriesOnOneShard(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []routeCase{
		{sql: "SELECT * FROM users WHERE id = 5 AND name IN (SELECT status FROM orders WHERE user_id = 6)", want: "single s1 ro"},
		{sql: "SELECT * FROM users WHERE id = 5 AND name IN (SELECT status FROM orders WHERE user_id = 150)", want: "~different shards"},
		{sql: "SELECT EXISTS (SELECT 1 FROM orders WHERE user_id = 250)", want: "single s3 ro"},
		{sql: "SELECT (SELECT count(*) FROM orders WHERE user_id = 250), (SELECT name FROM users WHERE id = 260)", want: "single s3 ro"},
		{sql: "SELECT * FROM (SELECT * FROM users WHERE id = 150) s", want: "single s2 ro"},
		{sql: "WITH x AS (SELECT * FROM orders WHERE user_id = 350) SELECT count(*) FROM x", want: "single s4 ro"},
		{sql: "SELECT id FROM users WHERE id = 1 UNION ALL SELECT user_id FROM orders WHERE user_id = 2", want: "single s1 ro"},
		{sql: "SELECT id FROM users WHERE id = 1 UNION SELECT user_id FROM orders WHERE user_id IN (2, 3)", want: "single s1 ro"},
		{sql: "SELECT id FROM users WHERE id = 1 UNION ALL SELECT user_id FROM orders", want: "refused"},
		// A condition in a subquery on an outer table does not route it.
		{sql: "SELECT count(*) FROM users u WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.user_id = 5)", want: "all ro merge"},
		{sql: "SELECT count(*) FROM users u WHERE NOT EXISTS (SELECT 1 WHERE u.id = 5)", want: "all ro merge"},
		// Correlated on the key: every shard answers for its rows.
		{sql: "SELECT u.id FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.amount > 499) ORDER BY u.id", want: "all ro merge"},
		{sql: "SELECT count(*) FROM users u WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)", want: "all ro merge"},
		{sql: "SELECT u.id, (SELECT count(*) FROM orders o WHERE o.user_id = u.id) FROM users u", want: "all ro"},
		{sql: "SELECT u.id, s.n FROM users u, LATERAL (SELECT count(*) AS n FROM orders o WHERE o.user_id = u.id) s", want: "all ro"},
		// ... but not through an outer join's ON, nor without a link.
		{sql: "SELECT u.id, (SELECT count(*) FROM orders o LEFT JOIN (SELECT 1) x ON o.user_id = u.id) FROM users u", want: "~refused"},
		{sql: "SELECT u.id, (SELECT count(*) FROM orders o WHERE o.user_id = u.id OR o.id = 1) FROM users u", want: "~refused"},
		{sql: "SELECT (SELECT count(*) FROM orders) FROM users u", want: "~refused"},
		// Recursive CTEs and set operations over constants or unsharded data.
		{sql: "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT u.id FROM users u JOIN r ON u.id = r.n", want: "all ro"},
		{sql: "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT count(*) FROM users u WHERE u.id IN (SELECT n FROM r)", want: "all ro merge"},
		{sql: "WITH RECURSIVE t AS (SELECT k FROM settings UNION ALL SELECT k FROM t) SELECT * FROM t", want: "default s1 ro"},
		{sql: "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM users u JOIN r ON u.id = r.n WHERE u.id = 150", want: "single s2 ro"},
		{sql: "SELECT * FROM users WHERE x IN (SELECT 1 UNION SELECT 2)", want: "all ro"},
	} {
		check(t, p, c)
		check(t, p, c)
	}
}

// TestAggregateExpressions: the shards compute the aggregates of an
// expression, the merge the expression (merge.Expr); what the merger does
// not evaluate is refused.
func TestAggregateExpressions(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []routeCase{
		{sql: "SELECT count(*)::int FROM users", want: "all ro merge{combine=[1 8] final=[{2 0 (::int4 $1) count false} {0 0 0  true}]"},
		{sql: "SELECT round(avg(age), 2) AS a FROM users", want: "all ro merge{combine=[2 1 7 8] final=[{2 0 (round $1 2) a false} {1 0 1  true}] distinct=false order=[] offset=0 limit=-1} sql=[SELECT sum(age), count(age), avg(age), pg_catalog.current_setting('extra_float_digits') FROM users]"},
		{sql: "SELECT status, max(x) - min(x), sum(x) * 2.5 FROM orders GROUP BY status ORDER BY 2 DESC",
			want: "all ro merge{combine=[0 4 3 2 8] final=[{0 0 0  false} {2 1 (- $3 $4) ?column? false} {2 3 (* $5 2.5) ?column? false} {0 1 0  true} {0 2 0  true} {0 3 0  true}] distinct=false order=[{1 true true false}]"},
		{sql: "SELECT sum(amount)::numeric(12,1), count(*)::bigint + 1 FROM orders", want: "~final=[{2 0 (::numeric(786437) $2) sum false} {2 1 (+ (::int8 $3) 1) ?column? false}"},
		{sql: "SELECT count(*)::int FROM users WHERE id = 5", want: "single s1 ro"},
		{sql: "SELECT sum(x) / count(*) FROM orders", want: "~final=[{2 0 (/ $1 $2) ?column? false}"},
		{sql: "SELECT sum(x) ^ 2 FROM orders", want: "~operator ^"},
		{sql: "SELECT coalesce(max(x), 0) FROM orders", want: "~this expression"},
		{sql: "SELECT max(x)::date FROM orders", want: "~a cast to date"},
		{sql: "SELECT round(avg(x), $1) FROM orders", params: []string{"2"}, want: "~not an integer constant"},
		{sql: "SELECT count(DISTINCT name)::int FROM users", want: "~count(DISTINCT ...)"},
		{sql: "SELECT string_agg(name, ',')::text FROM users", want: "~string_agg"},
	} {
		check(t, p, c)
		check(t, p, c)
	}
	// The constants are part of the plan: another literal, another plan.
	check(t, p, routeCase{sql: "SELECT round(avg(age), 3) AS a FROM users", want: "~(round $1 3)"})
	check(t, p, routeCase{sql: "SELECT sum(amount)::numeric(10,2) FROM orders", want: "~(::numeric(655366) $1) sum false}"})
}

// TestInsertKeyPosition: an INSERT without a column list is refused until
// the key column's position is known (the proxy asks the catalog), then
// routed by the value at that position.
func TestInsertKeyPosition(t *testing.T) {
	p := New(testMap(t), Options{})
	sql := "INSERT INTO orders VALUES (1, 150, 'x')"
	got, _ := p.Route(sql, nil, nil, nil)
	if got.Kind != Refused || got.NeedKeyPosition != "public.orders" || got.NeedKeyColumn != "user_id" || len(got.Shards) != 1 {
		t.Fatalf("before: %s need=%q/%q shards=%v", summary(got), got.NeedKeyPosition, got.NeedKeyColumn, got.Shards)
	}
	p.SetKeyPosition("public.orders", 1)
	for _, c := range []routeCase{
		{sql: sql, want: "single s2"},
		{sql: "INSERT INTO orders VALUES (1, 350, 'x')", want: "single s4"},
		{sql: "INSERT INTO orders VALUES ($1, $2, $3)", params: []string{"1", "5", "x"}, want: "single s1"},
		{sql: "INSERT INTO orders VALUES (1, 5, 'a'), (2, 105, 'b') RETURNING *",
			want: "multi s1,s2 s1=[INSERT INTO orders VALUES (1, 5, 'a') RETURNING *] s2=[INSERT INTO orders VALUES (2, 105, 'b') RETURNING *]"},
		{sql: "INSERT INTO orders VALUES (1)", want: "~fewer values than columns"},
		{sql: "INSERT INTO orders VALUES (1, DEFAULT, 'x')", want: "~as a constant or a parameter"},
		{sql: "INSERT INTO orders SELECT * FROM orders WHERE user_id = 5", want: "~INSERT ... SELECT"},
		{sql: "INSERT INTO users VALUES (5, 'a')", want: "~needs a column list"},
		{sql: "/* pgshard: shard=s3 */ INSERT INTO users VALUES (5, 'a')", want: "default s3 hinted"},
	} {
		check(t, p, c)
	}
	p.ForgetKeyPositions()
	if got, _ := p.Route(sql, nil, nil, nil); got.Kind != Refused || got.NeedKeyPosition == "" {
		t.Errorf("after ForgetKeyPositions: %s", summary(got))
	}
}

// TestUnionAllAcrossShards: UNION ALL parts with keys on different
// shards run there, each shard getting the statement with the other
// shards' parts limited to no rows.
func TestUnionAllAcrossShards(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []routeCase{
		{sql: "SELECT id FROM users WHERE id = 1 UNION ALL SELECT user_id FROM orders WHERE user_id = 150 UNION ALL SELECT id FROM users WHERE id = 2",
			want: "multi s1,s2 ro s1=[((SELECT id FROM users WHERE id = 1 LIMIT ALL) UNION ALL (SELECT user_id FROM orders WHERE user_id = 150 LIMIT 0)) UNION ALL (SELECT id FROM users WHERE id = 2 LIMIT ALL)] s2=[((SELECT id FROM users WHERE id = 1 LIMIT 0) UNION ALL (SELECT user_id FROM orders WHERE user_id = 150 LIMIT ALL)) UNION ALL (SELECT id FROM users WHERE id = 2 LIMIT 0)]"},
		{sql: "SELECT id FROM users WHERE id = 5 UNION ALL SELECT user_id FROM orders WHERE user_id = $1", params: []string{"350"},
			want: "multi s1,s4 ro s1=[(SELECT id FROM users WHERE id = 5 LIMIT ALL) UNION ALL (SELECT user_id FROM orders WHERE user_id = $1 LIMIT 0)]"},
		{sql: "SELECT id FROM users WHERE id = 5 UNION ALL SELECT user_id FROM orders WHERE user_id = 6", want: "single s1 ro"},
		{sql: "SELECT id FROM users WHERE id = 5 UNION ALL SELECT user_id FROM orders WHERE user_id IN (6, 150)", want: "~a UNION ALL part reads rows of several shards"},
		{sql: "SELECT id FROM users WHERE id = 5 UNION ALL SELECT 7", want: "single s1 ro"},
		{sql: "SELECT id FROM users WHERE id = 5 UNION ALL SELECT 7 UNION ALL SELECT id FROM users WHERE id = 150", want: "~different shards"},
		{sql: "SELECT id FROM users WHERE id = 5 UNION SELECT user_id FROM orders WHERE user_id = 150", want: "~different shards"},
		{sql: "SELECT id FROM users WHERE id = 5 UNION ALL SELECT user_id FROM orders WHERE user_id = 150 ORDER BY 1", want: "~different shards"},
		{sql: "SELECT u.id FROM users u WHERE u.id = 5 AND EXISTS (SELECT 1 FROM orders o WHERE o.user_id = 150) UNION ALL SELECT 1 FROM users WHERE id = 150", want: "~a UNION ALL part reads rows of several shards"},
		{sql: "SELECT id FROM users WHERE id = NULL UNION ALL SELECT user_id FROM orders WHERE user_id = 150", want: "~refused"},
		// A wrapper keeps the statement whole: not split.
		{sql: "EXPLAIN SELECT id FROM users WHERE id = 1 UNION ALL SELECT user_id FROM orders WHERE user_id = 150", want: "~different shards"},
		{sql: "EXPLAIN SELECT id FROM users WHERE id = 1 UNION ALL SELECT user_id FROM orders WHERE user_id = 2", want: "single s1 ro"},
		{sql: "COPY (SELECT id FROM users WHERE id = 1 UNION ALL SELECT user_id FROM orders WHERE user_id = 150) TO STDOUT", want: "~different shards"},
		{sql: "PREPARE x AS SELECT id FROM users WHERE id = 1 UNION ALL SELECT user_id FROM orders WHERE user_id = 150", want: "~different shards"},
		{sql: "DECLARE c CURSOR FOR SELECT id FROM users WHERE id = 1 UNION ALL SELECT user_id FROM orders WHERE user_id = 150", want: "~different shards"},
		{sql: "PREPARE x AS SELECT id FROM users WHERE id = 1 UNION ALL SELECT user_id FROM orders WHERE user_id = 2", want: "single s1"},
		{sql: "EXPLAIN SELECT id FROM users WHERE id IN (1, 150) UNION ALL SELECT user_id FROM orders WHERE user_id IN (1, 150)", want: "~refused"},
	} {
		check(t, p, c)
		check(t, p, c)
	}
}

// TestCachePinsNewDecisions: literals that decide these plans (positions
// in ORDER BY under SELECT *, GROUP BY and DISTINCT ON, type modifiers
// and constants of merged expressions) are part of the cached plan: a
// statement differing only in them gets its own plan.
func TestCachePinsNewDecisions(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []routeCase{
		{sql: "SELECT * FROM users ORDER BY 0", want: "~ORDER BY this constant"},
		{sql: "SELECT * FROM users ORDER BY 1", want: "all ro merge"},
		{sql: "SELECT id, name, count(*) FROM users GROUP BY 2, name HAVING count(*) > 1", want: "~HAVING"},
		{sql: "SELECT id, name, count(*) FROM users GROUP BY 1, name HAVING count(*) > 1", want: "all ro"},
		{sql: "SELECT DISTINCT ON (2) id, name FROM users", want: "~DISTINCT ON without the sharding key"},
		{sql: "SELECT DISTINCT ON (1) id, name FROM users", want: "all ro"},
		{sql: "SELECT count(*)::numeric(10.5, 2) FROM users", want: "~a cast with a type modifier"},
		{sql: "SELECT count(*)::numeric(10, 2) FROM users", want: "~(::numeric(655366) $1)"},
		{sql: "SELECT count(*) + '5' FROM users", want: "~this constant"},
		{sql: "SELECT count(*) + 5 FROM users", want: "~(+ $1 5)"},
		{sql: "SELECT round(avg(age), 1.5) FROM users", want: "~not an integer constant"},
		{sql: "SELECT round(avg(age), 1) FROM users", want: "~(round $1 1)"},
	} {
		check(t, p, c)
	}
}
