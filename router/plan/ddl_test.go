package plan

import (
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// TestUtilityDDL: DDL that names no table of the map runs on every shard
// of the map (so that the shards' schemas never diverge), DDL on tables
// of the map where they are, temporary objects and other utility
// statements on the default shard.
func TestUtilityDDL(t *testing.T) {
	p := New(testMap(t), Options{})
	const every = "all s1,s2,s3,s4 broadcast"
	for _, c := range []struct{ sql, want string }{
		// Objects named without their table: every shard.
		{"DROP INDEX users_email_ix", every},
		{"DROP INDEX IF EXISTS public.users_email_ix, users_name_ix", every},
		{"ALTER INDEX users_email_ix RENAME TO users_mail_ix", every},
		{"ALTER INDEX users_email_ix SET (fillfactor = 80)", every},
		{"ALTER TABLE users_email_ix RENAME TO users_mail_ix", every}, // an index renamed as a table
		{"CREATE SEQUENCE order_no", every},
		{"ALTER SEQUENCE order_no RESTART WITH 10", every},
		{"DROP SEQUENCE order_no", every},
		{"CREATE VIEW v AS SELECT 1 AS one", every},
		{"DROP VIEW v", every},
		{"CREATE FUNCTION f(int) RETURNS int LANGUAGE sql AS 'SELECT $1'", every},
		{"ALTER FUNCTION f(int) RENAME TO g", every},
		{"DROP FUNCTION f(int)", every},
		{"CREATE TYPE mood AS ENUM ('sad', 'ok')", every},
		{"ALTER TYPE mood ADD VALUE 'happy'", every},
		{"CREATE TYPE pair AS (a int, b int)", every},
		{"DROP TYPE mood", every},
		{"CREATE DOMAIN posint AS int CHECK (VALUE > 0)", every},
		{"CREATE SCHEMA app", every},
		{"DROP SCHEMA app CASCADE", every},
		{"CREATE EXTENSION IF NOT EXISTS pgcrypto", every},
		{"COMMENT ON INDEX users_email_ix IS 'mail'", every},
		{"COMMENT ON FUNCTION f(int) IS 'f'", every},
		{"GRANT EXECUTE ON FUNCTION f(int) TO PUBLIC", every},
		// Tables not in the map exist on every shard.
		{"CREATE TABLE t (a int)", every},
		{"ALTER TABLE t ADD COLUMN b int", every},
		{"CREATE INDEX t_a_ix ON t (a)", every},
		{"DROP TABLE t", every},
		// Objects of tables of the map: where the table is.
		{"CREATE INDEX users_email_ix ON users (email)", "all broadcast"},
		{"DROP TRIGGER trg ON users", "all broadcast"},
		{"CREATE POLICY p ON users USING (true)", "all broadcast"},
		{"DROP POLICY p ON public.users", "all broadcast"},
		{"COMMENT ON TABLE users IS 'people'", "all broadcast"},
		{"COMMENT ON COLUMN users.name IS 'name'", "all broadcast"},
		{"DROP TABLE users", "all broadcast"},
		{"DROP TRIGGER trg ON settings", "default s1"},
		{"COMMENT ON TABLE plans IS 'plans'", "default s2"},
		{"CREATE INDEX ON plans (name)", "default s2"},
		{"DROP VIEW settings", "default s1"},
		{"DROP TABLE users, accounts", "refused"},
		// A script of such DDL: all of it on every shard.
		{"CREATE TABLE a (x int); CREATE INDEX a_x ON a (x); DROP SEQUENCE s", every},
		{"CREATE INDEX ON users (name); ALTER TABLE orders ADD COLUMN z int", "all broadcast"},
		{"CREATE INDEX ON users (name); CREATE INDEX ON accounts (name)", every}, // the same shards
		{"CREATE INDEX ON users (name); CREATE INDEX ON plans (name)", "refused"},
		{"CREATE TABLE a (x int); INSERT INTO a VALUES (1)", "refused"},
		{"CREATE TABLE a (x int); CREATE INDEX ON users (name)", every},
		{"CREATE TABLE a (x int); CREATE TEMP TABLE b (y int)", "refused"},
		// Temporary objects: the session's server.
		{"CREATE TEMP TABLE tmp (a int)", "default s1"},
		{"CREATE TEMPORARY VIEW tv AS SELECT 1", "default s1"},
		{"DROP TABLE pg_temp.tmp", "default s1"},
		{"CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "default s1"},
		// Other utility statements: the default shard.
		{"VACUUM", "default s1"},
		{"ANALYZE", "default s1"},
		{"LISTEN ch", "default s1"},
		{"CREATE ROLE r", "default s1"},
		{"CHECKPOINT", "default s1"},
	} {
		got, err := p.Route(c.sql, nil, nil, nil)
		s := ""
		if err != nil {
			s = "error " + err.Error()
		} else {
			s = summary(got)
			if got.Decision() == "all" && strings.HasPrefix(c.want, "all s") {
				s = "all " + strings.Join(got.Shards, ",") + strings.TrimPrefix(s, "all")
			}
		}
		if !strings.HasPrefix(s, c.want) {
			t.Errorf("%s\n got  %s\n want %s", c.sql, s, c.want)
		}
	}
	// A DROP of such objects drops them where they exist: the default
	// shard as written, the others with IF EXISTS.
	got, err := p.Route("DROP INDEX users_email_ix, public.ix2 CASCADE", nil, nil, nil)
	if err != nil || got.PerShardSQL["s1"] != "" || got.PerShardSQL["s2"] != "DROP INDEX IF EXISTS users_email_ix, public.ix2 CASCADE" || len(got.PerShardSQL) != 3 {
		t.Errorf("DROP INDEX per shard: %q, %v", got.PerShardSQL, err)
	}
	if got, _ := p.Route("DROP SEQUENCE IF EXISTS s", nil, nil, nil); got.PerShardSQL != nil {
		t.Errorf("DROP IF EXISTS per shard: %q", got.PerShardSQL)
	}
	if got, _ := p.Route("DROP INDEX users_email_ix", nil, nil, nil); len(got.PerShardSQL) != 3 {
		t.Errorf("cached DROP INDEX per shard: %q", got.PerShardSQL)
	}
	// A hint routes such DDL to one shard (an object that exists there only).
	got, err = p.Route("/* pgshard: shard=s3 */ DROP INDEX ix", nil, nil, nil)
	if err != nil || summary(got) != "default s3 hinted" {
		t.Errorf("hinted DROP INDEX: %s, %v", summary(got), err)
	}
	// With one shard in the map, DDL simply goes there.
	one := New(oneShardMap(t), Options{})
	if got, err := one.Route("DROP INDEX ix", nil, nil, nil); err != nil || summary(got) != "default s1" {
		t.Errorf("one shard: DROP INDEX: %s, %v", summary(got), err)
	}
}

func oneShardMap(t *testing.T) *shardmap.Map {
	return shardmaptest.New().Shard("s1", "10.0.0.1:5432").Hash("users").Table("public.users", "id").Map(t)
}
