package plan

import (
	"slices"
	"testing"
)

// TestAnywhere: statements that name no table of the map and change
// nothing of it are marked as running alike on every shard; others are
// not.
func TestAnywhere(t *testing.T) {
	p := New(testMap(t), Options{})
	for sql, want := range map[string]bool{
		"SELECT 1":              true,
		"SELECT now(), $1::int": true,
		"SELECT count(*) FROM pg_catalog.pg_class":                                        true,
		"SELECT pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute": true,
		"SELECT nextval('unmapped_seq')":                                                  true,  // a built-in: the sequence is the server's
		"SELECT my_func(150)":                                                             false, // may write a table of the map
		"SELECT public.my_func(150)":                                                      false,
		"WITH x AS (INSERT INTO unknown_tab VALUES (1) RETURNING *) SELECT * FROM x":      false,
		"SELECT 1; SELECT now()":                                                          true,
		"NOTIFY ch, 'x'":                                                                  true,
		"":                                                                                true,
		"EXPLAIN SELECT 1":                                                                true,
		"SELECT * FROM settings":                                                          false, // unsharded: one shard only
		"SELECT * FROM users WHERE id = 5":                                                false,
		"SELECT 1 INTO newtab":                                                            false, // creates a table
		"INSERT INTO unknown_tab VALUES (1)":                                              false,
		"CREATE TABLE unknown_tab (a int)":                                                false,
		"DO $$ BEGIN END $$":                                                              false,
		"SELECT 1; CREATE TABLE x (a int)":                                                false,
		"/* pgshard: shard=s3 */ SELECT 1":                                                false, // the hint names the shard
		"BEGIN":                                                                           false, // an Any plan already
	} {
		plan, err := p.Route(sql, nil, nil, nil)
		if err != nil {
			t.Fatalf("%q: %v", sql, err)
		}
		if plan.Anywhere != want {
			t.Errorf("%q: Anywhere %v, want %v (plan %s)", sql, plan.Anywhere, want, summary(plan))
		}
	}
}

// TestDescribeShards: a statement can be described by any shard holding
// its tables, the default shard first.
func TestDescribeShards(t *testing.T) {
	all := []string{"s1", "s2", "s3", "s4"}
	cases := []struct {
		def, sql string
		want     []string
	}{
		{"", "SELECT * FROM users WHERE id = $1", all},
		{"", "INSERT INTO users (id, v) VALUES ($1, $2)", all},
		{"", "SELECT * FROM accounts WHERE name = $1", all},
		{"s3", "UPDATE users SET v = $2 WHERE id = $1", []string{"s3", "s1", "s2", "s4"}},
		{"s3", "SELECT $1::int", []string{"s3", "s1", "s2", "s4"}},
		{"", "SELECT my_func($1)", all},                                                             // it may not run anywhere, but any shard describes it
		{"", "SELECT * FROM plans", []string{"s2"}},                                                 // unsharded, on s2
		{"", "SELECT * FROM users u JOIN settings s ON s.k = u.id WHERE u.id = $1", []string{"s1"}}, // settings is on s1
		{"", "SELEC 1", []string{"s1"}},                                                             // the default shard reports the error
		{"", "CREATE TABLE t (a int)", []string{"s1"}},
	}
	for _, c := range cases {
		p := New(testMap(t), Options{DefaultShard: c.def})
		for range 2 { // parsed, then cached
			if got := p.DescribeShards(c.sql); !slices.Equal(got, c.want) {
				t.Errorf("default %q, %q: %v, want %v", c.def, c.sql, got, c.want)
			}
		}
	}
}
