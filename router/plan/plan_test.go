package plan

import (
	"fmt"

	"github.com/pgshard/pgshard/router/merge"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

const testMapYAML = `
epoch: 1
shards:
  - {name: s1, primary: "10.0.0.1:5432"}
  - {name: s2, primary: "10.0.0.2:5432"}
  - {name: s3, primary: "10.0.0.3:5432"}
  - {name: s4, primary: "10.0.0.4:5432"}
distributions:
  - name: users
    key_type: bigint
    strategy: range
    default_shard: s1
    intervals:
      - {lo: -inf, hi: 100, shard: s1}
      - {lo: 100, hi: 200, shard: s2}
      - {lo: 200, hi: 300, shard: s3}
      - {lo: 300, hi: +inf, shard: s4}
  - name: accounts
    key_type: text
    strategy: hash
    default_shard: s2
    shards_even: [s1, s2, s3, s4]
tables:
  - {name: public.users, distribution: users, key: id}
  - {name: public.orders, distribution: users, key: user_id}
  - {name: public.settings, unsharded: true, distribution: users}
  - {name: public.accounts, distribution: accounts, key: name}
  - {name: public.plans, unsharded: true, distribution: accounts}
`

func testMap(t testing.TB) *shardmap.Map {
	m, err := shardmap.ParseYAML([]byte(testMapYAML))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return m
}

// summary renders the parts of a plan tests compare.
func summary(p Plan) string {
	var b strings.Builder
	d := p.Decision()
	b.WriteString(d)
	if len(p.Shards) > 0 && d != "all" && d != "copy-in" {
		b.WriteString(" " + strings.Join(p.Shards, ","))
	}
	if p.ReadOnly {
		b.WriteString(" ro")
	}
	if p.Broadcast {
		b.WriteString(" broadcast")
	}
	if p.Hinted {
		b.WriteString(" hinted")
	}
	if p.Tx != TxNone {
		fmt.Fprintf(&b, " tx=%d", p.Tx)
	}
	if p.Hint != nil {
		fmt.Fprintf(&b, " hint=%s:%q reset=%v", p.Hint.Name, p.Hint.Value, p.Hint.Reset)
	}
	if p.Copy != nil {
		fmt.Fprintf(&b, " key=%d/%d %s", p.Copy.KeyColumn, p.Copy.Columns, p.Copy.Format)
	}
	if m := p.Merge; m != nil {
		order := make([]string, len(m.OrderBy))
		for i, k := range m.OrderBy {
			order[i] = fmt.Sprintf("{%d %v %v %v}", k.Column, k.Desc, k.NullsFirst, k.ByteOrder)
			if k.Tail {
				order[i] = "tail" + order[i]
			}
		}
		final := make([]string, len(m.Final))
		for i, f := range m.Final {
			final[i] = fmt.Sprintf("{%d %d %d %s %v}", f.Kind, f.Source, f.CountSource, f.Name, f.Hidden)
			if f.Expr != nil {
				final[i] = fmt.Sprintf("{%d %d %s %s %v}", f.Kind, f.Source, exprString(f.Expr), f.Name, f.Hidden)
			}
		}
		fmt.Fprintf(&b, " merge{combine=%v final=[%s] distinct=%v order=[%s] offset=%d limit=%d}", m.Combine, strings.Join(final, " "), m.Distinct, strings.Join(order, " "), m.Offset, m.Limit)
		if m.HiddenTail > 0 {
			fmt.Fprintf(&b, " tail=%d", m.HiddenTail)
		}
	}
	if p.ShardSQL != "" {
		b.WriteString(" sql=[" + p.ShardSQL + "]")
	}
	if p.PerShardSQL != nil {
		keys := make([]string, 0, len(p.PerShardSQL))
		for k := range p.PerShardSQL {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b.WriteString(" " + k + "=[" + p.PerShardSQL[k] + "]")
		}
	}
	if p.Err != nil {
		b.WriteString(" err=" + p.Err.Error())
	}
	return b.String()
}

type routeCase struct {
	sql    string
	params []string // text parameters
	want   string   // prefix of summary, or substring with "~"
}

func check(t *testing.T, p *Planner, c routeCase) {
	t.Helper()
	var params [][]byte
	for _, s := range c.params {
		params = append(params, []byte(s))
	}
	got, err := p.Route(c.sql, params, nil, nil)
	var s string
	if err != nil {
		s = "error " + err.Error()
	} else {
		s = summary(got)
	}
	if w, ok := strings.CutPrefix(c.want, "~"); ok {
		if !strings.Contains(s, w) {
			t.Errorf("%s\n got  %s\n want containing %s", c.sql, s, w)
		}
	} else if !strings.HasPrefix(s, c.want) {
		t.Errorf("%s\n got  %s\n want %s", c.sql, s, c.want)
	}
}

func TestRoute(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []routeCase{
		// Key extraction.
		{sql: "SELECT * FROM users WHERE id = 5", want: "single s1 ro"},
		{sql: "SELECT * FROM users WHERE id = 150", want: "single s2 ro"},
		{sql: "select name from users where id = 250 and name like 'a%'", want: "single s3 ro"},
		{sql: "SELECT * FROM users WHERE 350 = id", want: "single s4 ro"},
		{sql: "SELECT * FROM users WHERE id = '120'::bigint", want: "single s2 ro"},
		{sql: "SELECT * FROM users u WHERE u.id = $1::int8", params: []string{"260"}, want: "single s3 ro"},
		{sql: "SELECT * FROM public.users WHERE public.users.id = -5", want: "single s1 ro"},
		{sql: "SELECT * FROM users WHERE id IN (1, 2, 3)", want: "single s1 ro"},
		{sql: "SELECT * FROM users WHERE id IN (1, 150, 399)", want: "multi s1,s2,s4 ro"},
		{sql: "SELECT * FROM users WHERE id = ANY($1)", params: []string{"{1,101,201}"}, want: "multi s1,s2,s3 ro"},
		{sql: "SELECT * FROM users WHERE id = ANY('{5,6}')", want: "single s1 ro"},
		{sql: "SELECT * FROM users WHERE id = 1 OR id = 301", want: "multi s1,s4 ro"},
		{sql: "SELECT * FROM users WHERE (id = 1 AND x > 2) OR id = 2", want: "single s1 ro"},
		{sql: "SELECT * FROM users WHERE id = 1 OR name = 'x'", want: "all ro"},
		{sql: "SELECT * FROM users WHERE id > 5", want: "all ro"},
		{sql: "SELECT * FROM users WHERE id = 5 FOR UPDATE", want: "single s1"},
		{sql: "SELECT nextval('s') FROM users WHERE id = 5", want: "single s1"},
		{sql: "SELECT * FROM accounts WHERE name = 'alice'", want: "single"},
		// Joins.
		{sql: "SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = 150", want: "single s2 ro"},
		{sql: "SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE o.user_id = 150", want: "single s2 ro"},
		{sql: "SELECT * FROM users u JOIN orders o USING (id) WHERE u.id = 150", want: "~refused"},
		{sql: "SELECT * FROM users u, orders o WHERE o.user_id = u.id", want: "all ro"},
		{sql: "SELECT * FROM users u JOIN orders o ON o.id = u.id", want: "~without an equality between their sharding keys"},
		{sql: "SELECT * FROM users u WHERE u.id = 5 AND EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)", want: "single s1 ro"},
		{sql: "SELECT * FROM users u WHERE u.id = 5 AND u.x IN (SELECT x FROM orders)", want: "~refused"},
		{sql: "SELECT * FROM users u JOIN settings s ON s.k = u.k WHERE u.id = 5", want: "single s1 ro"},
		{sql: "SELECT * FROM users u JOIN settings s ON s.k = u.k WHERE u.id = 105", want: "~unsharded table on shard s1"},
		{sql: "SELECT * FROM users u JOIN accounts a ON a.name = u.name", want: "~different distributions"},
		// Default.
		{sql: "SELECT 1", want: "default s1 ro"},
		{sql: "SELECT now()", want: "default s1 ro"},
		{sql: "SELECT * FROM settings", want: "default s1 ro"},
		{sql: "SELECT * FROM plans", want: "default s2 ro"},
		{sql: "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(users)$'", want: "default s1 ro"},
		{sql: "BEGIN", want: "default s1 ro tx=1"},
		{sql: "COMMIT", want: "default s1 ro tx=2"},
		{sql: "SAVEPOINT a", want: "default s1 ro tx=4"},
		{sql: "SET search_path = 'x'", want: "default s1 ro"},
		{sql: "SHOW work_mem", want: "default s1 ro"},
		{sql: "SELECT 1; SELECT 2", want: "default s1 ro"},
		{sql: "BEGIN; UPDATE users SET x = 1 WHERE id = 5; COMMIT", want: "single s1"},
		{sql: "INSERT INTO users (id, name) VALUES (105, 'a'); INSERT INTO users (id, name) VALUES (106, 'b')", want: "single s2"},
		{sql: "INSERT INTO users (id, name) VALUES (5, 'a'); INSERT INTO users (id, name) VALUES (106, 'b')", want: "~several statements"},
		{sql: "SELECT 1; UPDATE users SET x = 1 WHERE id = 150; SET LOCAL work_mem = '1MB'", want: "single s2"},
		{sql: "SELECT * FROM plans; SELECT * FROM users WHERE id = 150", want: "single s2 ro"},
		{sql: "SELECT * FROM settings; SELECT * FROM users WHERE id = 150", want: "~several statements"},
		{sql: "SELECT * FROM users WHERE id IN (1, 150); SELECT 1", want: "~several statements"},
		{sql: "SELECT * FROM users WHERE id IS NULL; SELECT 1", want: "~several statements"},
		{sql: "SELECT * FROM users; SELECT 1", want: "~several statements"},
		{sql: "SELECT * FROM plans; SELECT 1", want: "default s2 ro"},
		{sql: "SELECT * FROM plans; SELECT * FROM settings", want: "~several statements"},
		{sql: "SELECT * FROM users WHERE id = 5; SELECT * FROM accounts WHERE name = 'alice'", want: "~several statements"},
		{sql: "SELECT * FROM users WHERE id = 5; SET pgshard.shard = 's2'", want: "~several statements"},
		{sql: "SELECT * FROM users WHERE id = 5; CREATE TABLE t (a int)", want: "~several statements"},
		// Hints.
		{sql: "SET pgshard.shard = 's2'", want: `set-hint ro hint=shard:"s2" reset=false`},
		{sql: "SET pgshard.key = '42'", want: `set-hint ro hint=key:"42" reset=false`},
		{sql: "SET pgshard.key = 43", want: `set-hint ro hint=key:"43" reset=false`},
		{sql: "RESET pgshard.shard", want: `set-hint ro hint=shard:"" reset=true`},
		{sql: "SHOW pgshard.route", want: "show-route"},
		{sql: "/* pgshard: shard=s3 */ SELECT * FROM users WHERE x = 1", want: "single s3 ro hinted"},
		{sql: "/* pgshard: key=250 */ SELECT * FROM users WHERE x = 1", want: "single s3 ro hinted"},
		{sql: "/* pgshard: shard=s9 */ SELECT 1", want: "~unknown shard"},
		// INSERT.
		{sql: "INSERT INTO users (id, name) VALUES (5, 'a')", want: "single s1"},
		{sql: "INSERT INTO users (name, id) VALUES ($1, $2) RETURNING id", params: []string{"a", "205"}, want: "single s3"},
		{sql: "INSERT INTO users (id, name) VALUES (5, 'a') ON CONFLICT (id) DO UPDATE SET name = excluded.name", want: "single s1"},
		{sql: "INSERT INTO users (id, name) VALUES (5, 'a'), (6, 'b')", want: "single s1"},
		{sql: "INSERT INTO users (id, name) VALUES (5, 'a'), (105, 'b'), (6, 'c') RETURNING *",
			want: "multi s1,s2 s1=[INSERT INTO users (id, name) VALUES (5, 'a'), (6, 'c') RETURNING *] s2=[INSERT INTO users (id, name) VALUES (105, 'b') RETURNING *]"},
		{sql: "INSERT INTO users (name) VALUES ('a')", want: "~does not give its sharding key column id"},
		{sql: "INSERT INTO users VALUES (1, 'a')", want: "~needs a column list"},
		{sql: "INSERT INTO users (id) VALUES (nextval('s'))", want: "~as a constant or a parameter"},
		{sql: "INSERT INTO users (id, name) SELECT id, name FROM users WHERE id = 5", want: "single s1"},
		{sql: "INSERT INTO orders (user_id, n) SELECT u.id, 1 FROM users u WHERE u.id = 5", want: "single s1"},
		{sql: "INSERT INTO users (id, name) SELECT id, name FROM users", want: "~INSERT ... SELECT"},
		{sql: "INSERT INTO settings (k, v) VALUES ('a', 'b')", want: "default s1"},
		{sql: "INSERT INTO users (id, name) VALUES (5, 'a') ON CONFLICT (name) DO UPDATE SET id = 6", want: "~changes its sharding key"},
		// UPDATE / DELETE.
		{sql: "UPDATE users SET name = 'x' WHERE id = 5", want: "single s1"},
		{sql: "UPDATE users SET name = 'x' WHERE name = 'y'", want: "all broadcast"},
		{sql: "UPDATE users SET id = 7 WHERE id = 5", want: "~changes its sharding key id"},
		{sql: "DELETE FROM users WHERE id IN (5, 105) RETURNING *", want: "multi s1,s2"},
		{sql: "DELETE FROM orders", want: "all broadcast"},
		{sql: "UPDATE orders o SET n = 1 FROM users u WHERE u.id = o.user_id AND u.id = 205", want: "single s3"},
		// COPY.
		{sql: "COPY users (name, id) FROM STDIN", want: "copy-in key=1/2 text"},
		{sql: "COPY users (id, name) FROM STDIN WITH (FORMAT csv, HEADER true)", want: "copy-in key=0/2 csv"},
		{sql: "COPY users FROM STDIN", want: "~needs an explicit column list"},
		{sql: "COPY users TO STDOUT", want: "all ro"},
		{sql: "COPY (SELECT * FROM users WHERE id = 5) TO STDOUT", want: "single s1 ro"},
		{sql: "COPY settings FROM STDIN", want: "default s1"},
		// Scatter SELECT merging.
		{sql: "SELECT id, name FROM users", want: "all ro"},
		{sql: "SELECT id, name FROM users ORDER BY name DESC", want: "all ro merge{combine=[0 0] final=[{0 0 0  false} {0 1 0  false}] distinct=false order=[{1 true true false}] offset=0 limit=-1}"},
		{sql: "SELECT id, name FROM users ORDER BY 1 LIMIT 10 OFFSET 5", want: "~offset=5 limit=10} sql=[SELECT id, name FROM users ORDER BY 1 LIMIT 10::bigint + 5::bigint]"},
		{sql: "SELECT id FROM users ORDER BY created_at LIMIT 3", want: "~final=[{0 0 0  false} {0 1 0  true}] distinct=false order=[{1 false false false}] offset=0 limit=3} sql=[SELECT id, created_at FROM users ORDER BY created_at LIMIT 3]"},
		{sql: "SELECT count(*), avg(age), max(age) FROM users WHERE age > 30", want: "~combine=[1 2 1 7 4 8] final=[{0 0 0  false} {1 1 2 avg false} {0 4 0  false}]"},
		{sql: "SELECT count(*), avg(age), max(age) FROM users WHERE age > 30", want: "~sql=[SELECT count(*), sum(age), count(age), avg(age), max(age), pg_catalog.current_setting('extra_float_digits') FROM users WHERE age > 30]"},
		{sql: "SELECT status, count(*) AS n FROM users GROUP BY status ORDER BY n DESC LIMIT 5",
			want: "~combine=[0 1] final=[{0 0 0  false} {0 1 0  false}] distinct=false order=[{1 true true false}] offset=0 limit=5} sql=[SELECT status, count(*) AS n FROM users GROUP BY status]"},
		{sql: "SELECT count(*) FROM users GROUP BY status", want: "~combine=[1 0] final=[{0 0 0  false}]"},
		{sql: "SELECT DISTINCT name FROM users", want: "~distinct=true"},
		{sql: "SELECT * FROM users LIMIT 5", want: "~limit=5}"},
		{sql: "SELECT * FROM users ORDER BY id", want: "all ro merge{combine=[] final=[] distinct=false order=[tail{0 false false false}] offset=0 limit=-1} tail=1 sql=[SELECT *, id FROM users ORDER BY id]"},
		{sql: "SELECT id, row_number() OVER () FROM users", want: "~window function"},
		{sql: "SELECT status FROM users GROUP BY status HAVING count(*) > 1", want: "~HAVING with an aggregate"},
		{sql: "SELECT DISTINCT ON (name) name FROM users", want: "~DISTINCT ON"},
		{sql: "SELECT count(DISTINCT name) FROM users", want: "~count(DISTINCT"},
		{sql: "SELECT string_agg(name, ',') FROM users", want: "~string_agg"},
		{sql: "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY age) FROM users", want: "~percentile_cont"},
		{sql: "SELECT id FROM users WHERE id > 1 UNION SELECT id FROM users", want: "~UNION"},
		{sql: "SELECT id FROM users UNION SELECT user_id FROM orders", want: "refused"},
		{sql: "SELECT * FROM users WHERE x IN (SELECT user_id FROM orders)", want: "refused"},
		{sql: "WITH a AS (SELECT * FROM users) SELECT * FROM a", want: "~subquery or CTE"},
		{sql: "SELECT count(*) + 1 FROM users", want: "all ro merge{combine=[1 8] final=[{2 0 (+ $1 1) ?column? false} {0 0 0  true}]"},
		{sql: "SELECT count(*) / 2 FROM users", want: "~final=[{2 0 (/ $1 2) ?column? false}"},
		{sql: "SELECT count(*) % 2 FROM users", want: "~an aggregate inside operator % cannot be merged"},
		{sql: "SELECT name, count(*) FROM users WHERE id IN (1, 150) GROUP BY name", want: "multi s1,s2 ro merge{combine=[0 1]"},
		{sql: "SELECT name, count(*) FROM users WHERE id IN (1, 2) GROUP BY name", want: "single s1 ro"},
		{sql: "SELECT id FROM users WHERE id = ANY($1) ORDER BY id LIMIT $2 OFFSET $3", params: []string{"{1,150}", "10", "2"}, want: "~offset=2 limit=10} sql=[SELECT id FROM users WHERE id = ANY($1) ORDER BY id LIMIT $2::bigint + $3::bigint]"},
		// DDL.
		{sql: "CREATE TABLE t (a int)", want: "all broadcast"},
		{sql: "ALTER TABLE users ADD COLUMN z int", want: "all broadcast"},
		{sql: "TRUNCATE orders", want: "all broadcast"},
		{sql: "EXPLAIN SELECT * FROM users WHERE id = 105", want: "single s2 ro"},
		// Errors.
		{sql: "SELEC 1", want: "error syntax error"},
		{sql: "", want: "default s1"},
	} {
		check(t, p, c)
		check(t, p, c) // again, from the cache
	}
}

func TestCacheSharesTemplates(t *testing.T) {
	p := New(testMap(t), Options{})
	for i, c := range []routeCase{
		{sql: "SELECT * FROM users WHERE id = 17", want: "single s1"},
		{sql: "SELECT * FROM users WHERE id = 117", want: "single s2"},
		{sql: "SELECT * FROM users  WHERE id = 217 -- comment", want: "single s3"},
		{sql: "SELECT * FROM users WHERE id = '317'", want: "single s4"},
	} {
		check(t, p, c)
		if i < 3 && p.CacheLen() != 1 {
			t.Fatalf("after %q: %d cached statements, want 1", c.sql, p.CacheLen())
		}
	}
	// Pinned literals: ORDER BY position.
	check(t, p, routeCase{sql: "SELECT id, name FROM users ORDER BY 1", want: "~order=[{0 false false false}]"})
	check(t, p, routeCase{sql: "SELECT id, name FROM users ORDER BY 2", want: "~order=[{1 false false false}]"})
	// Scatter rewrites splice this execution's literals.
	check(t, p, routeCase{sql: "SELECT avg(a) FROM users WHERE b = 'x'", want: "~sql=[SELECT sum(a), count(a), avg(a), pg_catalog.current_setting('extra_float_digits') FROM users WHERE b = 'x']"})
	check(t, p, routeCase{sql: "SELECT avg(a) FROM users WHERE b = 'it''s'", want: "~sql=[SELECT sum(a), count(a), avg(a), pg_catalog.current_setting('extra_float_digits') FROM users WHERE b = 'it''s']"})
	// A new map empties the cache.
	m := testMap(t)
	m.Epoch = 2
	p.SetMap(m)
	if p.CacheLen() != 0 || p.Epoch() != 2 {
		t.Fatalf("SetMap kept %d plans, epoch %d", p.CacheLen(), p.Epoch())
	}
}

func TestSessionHint(t *testing.T) {
	p := New(testMap(t), Options{})
	got, _ := p.RouteHint("SELECT * FROM users", Hint{Shard: "s4"}, nil, nil, nil)
	if summary(got) != "single s4 ro hinted" {
		t.Errorf("shard hint: %s", summary(got))
	}
	got, _ = p.RouteHint("UPDATE users SET a = 1", Hint{Key: "150"}, nil, nil, nil)
	if summary(got) != "single s2 hinted" {
		t.Errorf("key hint: %s", summary(got))
	}
	got, _ = p.RouteHint("/* pgshard: shard=s1 */ SELECT * FROM users", Hint{Shard: "s4"}, nil, nil, nil)
	if summary(got) != "single s1 ro hinted" {
		t.Errorf("comment over session hint: %s", summary(got))
	}
	got, _ = p.RouteHint("BEGIN", Hint{Shard: "s3"}, nil, nil, nil)
	if got.Decision() != "default" || got.Shards[0] != "s3" {
		t.Errorf("BEGIN with hint: %s", summary(got))
	}
}

func TestBinaryParams(t *testing.T) {
	p := New(testMap(t), Options{})
	key := []byte{0, 0, 0, 0, 0, 0, 0, 150}
	got, err := p.Route("SELECT * FROM users WHERE id = $1", [][]byte{key}, []int16{1}, nil)
	if err != nil || summary(got) != "single s2 ro" {
		t.Fatalf("binary int8: %s %v", summary(got), err)
	}
	// int8[] {5, 250}
	arr := []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 2, 0, 0, 0, 1,
		0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 250}
	got, err = p.Route("SELECT * FROM users WHERE id = ANY($1)", [][]byte{arr}, []int16{1}, nil)
	if err != nil || summary(got) != "multi s1,s3 ro" {
		t.Fatalf("binary int8[]: %s %v", summary(got), err)
	}
	// NULL key: no shard for it; a read becomes a scatter.
	got, _ = p.Route("SELECT * FROM users WHERE id = $1", [][]byte{nil}, nil, nil)
	if got.Decision() != "all" {
		t.Fatalf("NULL key: %s", summary(got))
	}
	got, _ = p.Route("INSERT INTO users (id) VALUES ($1)", [][]byte{nil}, nil, nil)
	if got.Kind != Refused {
		t.Fatalf("NULL key insert: %s", summary(got))
	}
}

func TestNormalize(t *testing.T) {
	var n normalized
	for _, c := range []struct {
		in, key string
		lits    []string
	}{
		{"SELECT * FROM t WHERE a = 1 AND b = 'x''y'", "SELECT * FROM t WHERE a = ? AND b = ?", []string{"1", "'x''y'"}},
		{"select  a1, $1, -5, x-5, E'a\\'b', $$q$$ /* c */ from\n t", "select a1, $1, ?, x-?, E'a\\'b', $$q$$ from t", []string{"-5", "5"}},
		{"SELECT 0x1F, 1_000, 12abc, .5", "SELECT 0x1F, 1_000, 12abc, ?", []string{".5"}},
		{`/* pgshard: shard=s1 */ SELECT "a1" FROM t LIMIT 1.5e3`, `SELECT "a1" FROM t LIMIT ?`, []string{"1.5e3"}},
	} {
		normalize(c.in, &n)
		key := strings.NewReplacer("\x00n", "?", "\x00s", "?").Replace(string(n.key))
		var lits []string
		for i := range n.lits {
			lits = append(lits, n.text(c.in, i))
		}
		if key != c.key || !slices.Equal(lits, c.lits) {
			t.Errorf("normalize(%q) = %q %q, want %q %q", c.in, key, lits, c.key, c.lits)
		}
	}
}

func BenchmarkRouteCached(b *testing.B) {
	p := New(testMap(b), Options{})
	sql := "SELECT id, name, email FROM users WHERE id = 12345 AND deleted_at IS NULL"
	if _, err := p.Route(sql, nil, nil, nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		pl, _ := p.Route(sql, nil, nil, nil)
		if pl.Kind != Single {
			b.Fatal(pl.Kind)
		}
	}
}

func BenchmarkRouteCachedParam(b *testing.B) {
	p := New(testMap(b), Options{})
	sql := "SELECT id, name, email FROM users WHERE id = $1"
	params := [][]byte{[]byte("12345")}
	b.ReportAllocs()
	for b.Loop() {
		pl, _ := p.Route(sql, params, nil, nil)
		if pl.Kind != Single {
			b.Fatal(pl.Kind)
		}
	}
}

func BenchmarkRouteMiss(b *testing.B) {
	p := New(testMap(b), Options{CacheSize: -1})
	sql := "SELECT id, name, email FROM users WHERE id = 12345 AND deleted_at IS NULL"
	b.ReportAllocs()
	for b.Loop() {
		pl, _ := p.Route(sql, nil, nil, nil)
		if pl.Kind != Single {
			b.Fatal(pl.Kind)
		}
	}
}

// TestReplicaSafe: only reads that call nothing but built-in read-only
// functions may go to a replica.
func TestReplicaSafe(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []struct {
		sql  string
		want bool
	}{
		{"SELECT * FROM users WHERE id = 5", true},
		{"SELECT count(*), max(name), lower(name) FROM users WHERE id = 5 GROUP BY 3", true},
		{"SELECT pg_catalog.now(), coalesce(name, 'x') FROM users WHERE id = 5", true},
		{"SELECT * FROM users WHERE id > 5", true},
		{"SELECT 1", true},
		{"SELECT my_func(id) FROM users WHERE id = 5", false},
		{"SELECT public.lower(name) FROM users WHERE id = 5", false},
		{"SELECT * FROM users WHERE id = 5 AND audit_read(id)", false},
		{"SELECT nextval('s') FROM users WHERE id = 5", false},
		{"SELECT * FROM users WHERE id = 5 FOR SHARE", false},
		{"WITH d AS (DELETE FROM orders WHERE user_id = 5 RETURNING *) SELECT * FROM d", false},
		{"SELECT * FROM users WHERE id IN (SELECT f(user_id) FROM orders WHERE user_id = 5) AND id = 5", false},
	} {
		pl, err := p.Route(c.sql, nil, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.sql, err)
		}
		if pl.ReplicaSafe != c.want {
			t.Errorf("%s: ReplicaSafe = %v, want %v", c.sql, pl.ReplicaSafe, c.want)
		}
		if pl.ReplicaSafe && !pl.ReadOnly {
			t.Errorf("%s: replica-safe but not read-only", c.sql)
		}
	}
}

// TestReplicaSafeConfigured: functions the configuration names as
// read-only keep a read replica-safe; others still do not.
func TestReplicaSafeConfigured(t *testing.T) {
	p := New(testMap(t), Options{ReplicaSafeFuncs: []string{"my_func", "App.Safe_Fn", "public.pub_fn"}})
	for _, c := range []struct {
		sql  string
		want bool
	}{
		{"SELECT my_func(id) FROM users WHERE id = 5", true},
		{"SELECT app.safe_fn(id) FROM users WHERE id = 5", true},
		{"SELECT pub_fn(id), public.pub_fn(id) FROM users WHERE id = 5", true},
		{"SELECT other.my_func(id) FROM users WHERE id = 5", false},
		{"SELECT safe_fn(id) FROM users WHERE id = 5", false},
		{"SELECT my_func(id), writer(id) FROM users WHERE id = 5", false},
	} {
		pl, err := p.Route(c.sql, nil, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.sql, err)
		}
		if pl.ReplicaSafe != c.want {
			t.Errorf("%s: ReplicaSafe = %v, want %v", c.sql, pl.ReplicaSafe, c.want)
		}
	}
}

// TestNoSilentlyWrongScatter: statements whose scatter would answer
// differently from PostgreSQL without an error are refused, or routed
// so that the answer is PostgreSQL's.
func TestNoSilentlyWrongScatter(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []routeCase{
		// A per-shard value next to an aggregate, in DISTINCT, GROUP BY
		// or ORDER BY, or anywhere in a merged select list.
		{sql: "SELECT count(*), now() FROM users", want: "~refused err=now() (a value that differs from shard to shard"},
		{sql: "SELECT count(*), inet_server_port() FROM users", want: "~inet_server_port()"},
		{sql: "SELECT DISTINCT name, now() FROM users", want: "~now()"},
		{sql: "SELECT count(*), CURRENT_TIMESTAMP FROM users", want: "~CURRENT_TIMESTAMP"},
		{sql: "SELECT name, count(*) FROM users GROUP BY name, pg_catalog.now()", want: "~now()"},
		{sql: "SELECT id, current_setting('work_mem') FROM users", want: "~current_setting()"},
		{sql: "SELECT count(*), random() FROM users", want: "~random()"},
		{sql: "SELECT max(txid_current()) FROM users", want: "~txid_current()"},
		{sql: "SELECT id FROM users ORDER BY pg_backend_pid(), id", want: "~pg_backend_pid()"},
		{sql: "SELECT tableoid, count(*) FROM users GROUP BY tableoid", want: "~system column tableoid"},
		{sql: "SELECT id FROM users WHERE ctid = '(0,1)'", want: "~system column ctid"},
		{sql: "SELECT DISTINCT u.xmin FROM users u", want: "~system column xmin"},
		{sql: "SELECT ctid, name FROM users WHERE id = 5", want: "single s1"},
		{sql: "SELECT count(*), x FROM users, (SELECT now() AS x) s GROUP BY x", want: "~now()"},
		{sql: "SELECT count(*), p FROM users, current_setting('port') AS p GROUP BY p", want: "~current_setting()"},
		{sql: "WITH t AS (SELECT inet_server_port() AS p) SELECT u.id, t.p FROM users u, t", want: "~inet_server_port()"},
		{sql: "SELECT count(*), r FROM users LEFT JOIN LATERAL (SELECT random() AS r) s ON true GROUP BY r", want: "~random()"},
		{sql: "SELECT count(*), g FROM users, generate_series(1, 2) g GROUP BY g", want: "all ro merge"},
		{sql: "SELECT count(*), now() FROM users WHERE id = 5", want: "single s1"},
		{sql: "SELECT sum(random()), count(*) FROM users", want: "all ro merge"},
		{sql: "SELECT id, random() FROM users", want: "all ro"},
		{sql: "SELECT count(*) FROM users WHERE created_at > now() - interval '1 day'", want: "all ro merge"},
		// Outer joins whose preserved side reads no sharded table.
		{sql: "SELECT count(*) FROM generate_series(1, 5) g LEFT JOIN users u ON u.id = g", want: "~LEFT JOIN whose preserved side reads no sharded table"},
		{sql: "SELECT * FROM (VALUES (1), (2)) v(x) LEFT JOIN users u ON u.id = v.x", want: "~LEFT JOIN whose preserved side"},
		{sql: "SELECT * FROM users u RIGHT JOIN generate_series(1, 5) g ON u.id = g", want: "~RIGHT JOIN whose preserved side"},
		{sql: "SELECT * FROM users u FULL JOIN generate_series(1, 5) g ON u.id = g", want: "~FULL JOIN whose preserved side"},
		{sql: "WITH k AS (SELECT 1 AS x) SELECT * FROM k LEFT JOIN (users u JOIN orders o ON o.user_id = u.id) ON u.id = k.x", want: "~LEFT JOIN whose preserved side"},
		{sql: "SELECT * FROM generate_series(1, 5) g LEFT JOIN users u ON u.id = g WHERE u.id = 5", want: "single s1 ro"},
		{sql: "SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.id", want: "all ro"},
		{sql: "SELECT * FROM users u FULL JOIN orders o ON o.user_id = u.id", want: "all ro"},
		{sql: "SELECT * FROM users u LEFT JOIN generate_series(1, 3) g ON g = u.id", want: "all ro"},
		// A key condition on the nullable side of an outer join does not
		// route the statement.
		{sql: "SELECT count(*) FROM users u LEFT JOIN (orders o JOIN users v ON v.id = o.user_id AND v.id = 5) ON o.user_id = u.id", want: "all ro merge"},
		{sql: "SELECT count(*) FROM (orders o JOIN users v ON v.id = o.user_id AND v.id = 5) RIGHT JOIN users u ON o.user_id = u.id", want: "all ro merge"},
		{sql: "SELECT count(*) FROM users u FULL JOIN orders o ON o.user_id = u.id AND o.user_id = 5", want: "all ro merge"},
		{sql: "SELECT count(*) FROM (orders o JOIN users v ON v.id = o.user_id AND v.id = 5) LEFT JOIN users u ON o.user_id = u.id", want: "single s1 ro"},
		// A key equality inside a subquery does not link two outer tables.
		{sql: "SELECT count(*) FROM users a, users b WHERE NOT EXISTS (SELECT 1 WHERE a.id = b.id)", want: "~without an equality between their sharding keys"},
		{sql: "SELECT count(*) FROM users a, users b WHERE EXISTS (SELECT 1 FROM orders o WHERE a.id = b.id AND o.user_id = a.id)", want: "~without an equality between their sharding keys"},
		{sql: "SELECT count(*) FROM users u WHERE u.id = 150 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)", want: "single s2 ro"},
		// A column alias list renames columns by position: the planner
		// cannot tell which is the key.
		{sql: "SELECT * FROM orders o(user_id, id) WHERE user_id = 600", want: "all ro"},
		{sql: "SELECT * FROM orders o(user_id, id) WHERE o.user_id = 600", want: "all ro"},
		{sql: "SELECT * FROM users u(id) JOIN orders o ON o.user_id = u.id", want: "~without an equality between their sharding keys"},
		{sql: "SELECT * FROM users u(uid) JOIN orders o USING (id)", want: "~without an equality"},
		// GROUP BY a name that is both an output alias and (maybe) an input column.
		{sql: "SELECT lower(name) AS name, count(*) FROM users GROUP BY name", want: "~combine=[0 1 0] final=[{0 0 0  false} {0 1 0  false}]"},
		{sql: "SELECT lower(name) AS name, count(*) FROM users GROUP BY name", want: "~sql=[SELECT lower(name) AS name, count(*), name FROM users GROUP BY name]"},
		{sql: "SELECT 0 AS id, count(*) FROM users GROUP BY id", want: "all ro"}, // grouped by the key column: one shard per group,
		{sql: "SELECT lower(city) AS c, count(*) FROM users GROUP BY c", want: "~GROUP BY c, which names both"},
		// min/max compare text bytewise: an explicit other collation is refused.
		{sql: `SELECT min(name COLLATE "und-x-icu") FROM users`, want: `~min() under collation "und-x-icu"`},
		{sql: `SELECT country, max(name COLLATE "C") FROM users GROUP BY country`, want: "~combine=[0 4] final"},
		{sql: `SELECT country, max(name COLLATE "C"), min(name) FROM users GROUP BY country`, want: "~distinct=false"},
		{sql: `SELECT country FROM users GROUP BY country ORDER BY max(name COLLATE "und-x-icu")`, want: `~max() under collation "und-x-icu"`},
		// A join alias with a column list renames the join's columns.
		{sql: "SELECT count(*) FROM (orders o JOIN users u ON u.id = o.user_id) AS j(id, a2, a3, a4, a5, a6, a7, a8, uid) WHERE id = 600", want: "all ro merge"},
		{sql: "SELECT count(*) FROM (orders o JOIN users u ON u.id = o.user_id) AS j WHERE user_id = 150", want: "single s2 ro"},
		{sql: "SELECT name AS name, count(*) FROM users GROUP BY name", want: "~combine=[0 1] final"},
		{sql: "SELECT u.name AS name, count(*) FROM users u GROUP BY name", want: "~combine=[0 1] final"},
		{sql: "SELECT lower(city) AS c, count(*) FROM users GROUP BY 1", want: "~combine=[0 1] final"},
		{sql: "SELECT lower(name) AS x, count(*) FROM users GROUP BY lower(name) ORDER BY x", want: "~combine=[0 1] final"},
	} {
		check(t, p, c)
		check(t, p, c)
	}
}

// TestCachePinsMatchedExpressions: a cached plan that matched an ORDER BY
// or GROUP BY expression to a select-list item applies only to the same
// literals; others get their own plan.
func TestCachePinsMatchedExpressions(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []routeCase{
		{sql: "SELECT id % 7, id FROM users ORDER BY id % 7, id LIMIT 1", want: "~order=[{0 false false false} {1 false false false}]"},
		{sql: "SELECT id % 7, id FROM users ORDER BY id % 5, id LIMIT 1", want: "~order=[{2 false false false} {1 false false false}]"},
		{sql: "SELECT id % 7, id FROM users ORDER BY id % 5, id LIMIT 1", want: "~sql=[SELECT id % 7, id, id % 5 FROM users ORDER BY id % 5, id LIMIT 1]"},
		// A plan with a hidden column applies only to literals that do not
		// match an item either: the cache gives what a fresh parse gives.
		{sql: "SELECT id % 5, id FROM users ORDER BY id % 5, id LIMIT 1", want: "~order=[{0 false false false} {1 false false false}]"},
		{sql: "SELECT id % 5, id FROM users ORDER BY id % 7, id LIMIT 1", want: "~sql=[SELECT id % 5, id, id % 7 FROM users ORDER BY id % 7, id LIMIT 1]"},
		{sql: "SELECT id % 3, count(*) FROM users GROUP BY id % 3", want: "~combine=[0 1] final"},
		{sql: "SELECT id % 3, count(*) FROM users GROUP BY id % 4", want: "~combine=[0 1 0] final"},
	} {
		check(t, p, c)
	}
}

// TestScatterMinMaxByteOrder: min/max of a COLLATE "C" argument are
// marked for byte order; sums ask the shards for extra_float_digits.
func TestScatterMinMaxByteOrder(t *testing.T) {
	p := New(testMap(t), Options{})
	got, err := p.Route(`SELECT country, max(name COLLATE "C"), min(name), sum(w) FROM users GROUP BY country`, nil, nil, nil)
	if err != nil || got.Merge == nil {
		t.Fatalf("%s %v", summary(got), err)
	}
	if want := []bool{false, true, false, false, false}; !slices.Equal(got.Merge.ByteOrder, want) {
		t.Errorf("ByteOrder = %v, want %v", got.Merge.ByteOrder, want)
	}
	if want := "SELECT country, max(name COLLATE \"C\"), min(name), sum(w), pg_catalog.current_setting('extra_float_digits') FROM users GROUP BY country"; got.ShardSQL != want {
		t.Errorf("ShardSQL = %s\nwant %s", got.ShardSQL, want)
	}
	got, _ = p.Route(`SELECT country, max(name) FROM users GROUP BY country`, nil, nil, nil)
	if got.Merge == nil || got.Merge.ByteOrder != nil || !got.Merge.Compares() {
		t.Errorf("no COLLATE: %s", summary(got))
	}
}

// exprString renders a merge expression: $n for final column n.
func exprString(e *merge.Expr) string {
	switch e.Op {
	case merge.ExprColumn:
		return fmt.Sprintf("$%d", e.Column)
	case merge.ExprConst:
		return e.Text
	}
	name := map[merge.ExprOp]string{merge.ExprCast: "::" + e.Type, merge.ExprRound: "round", merge.ExprAdd: "+", merge.ExprSub: "-", merge.ExprMul: "*", merge.ExprDiv: "/"}[e.Op]
	if e.Typmod >= 0 && e.Op == merge.ExprCast {
		name += fmt.Sprintf("(%d)", e.Typmod)
	}
	var args []string
	for _, a := range e.Args {
		args = append(args, exprString(a))
	}
	return "(" + name + " " + strings.Join(args, " ") + ")"
}
