package plan

import (
	"testing"

	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// TestSessionObjects: statements that keep a query's answer (PREPARE,
// DECLARE, CREATE TABLE AS, SELECT INTO) run only where their query runs
// on one shard, and where the new object will be looked for; DO and CALL
// only where the client says.
func TestSessionObjects(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []routeCase{
		// PREPARE: the shard of its statement, when the statement names it.
		{sql: "PREPARE q(bigint) AS SELECT * FROM users WHERE id = $1", want: "refused err=PREPARE q cannot be routed to one shard from the statement alone: the statement has parameters"},
		{sql: "PREPARE q AS SELECT * FROM users WHERE id = 150", want: "single s2"},
		{sql: "PREPARE q AS SELECT * FROM users", want: "refused err=PREPARE q would run on several shards"},
		{sql: "PREPARE q AS SELECT count(*) FROM users WHERE id IN (5, 150)", want: "refused"},
		{sql: "PREPARE q(text) AS INSERT INTO users (id, name) VALUES (250, $1)", want: "single s3"},
		{sql: "PREPARE q(bigint) AS UPDATE users SET name = 'x' WHERE id = $1", want: "refused"},
		{sql: "PREPARE q AS SELECT 1", want: "default s1"},
		{sql: "PREPARE q AS SELECT * FROM settings", want: "default s1"},
		{sql: "/* pgshard: shard=s3 */ PREPARE q(bigint) AS SELECT * FROM users WHERE id = $1", want: "single s3 hinted"},
		// The statements using them run where the session is.
		{sql: "EXECUTE q(900)", want: "default s1"},
		{sql: "FETCH ALL FROM c", want: "default s1"},
		// Cursors.
		{sql: "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM users WHERE id > 40 AND id < 160", want: "refused err=DECLARE c CURSOR WITH HOLD would run"},
		{sql: "DECLARE c CURSOR FOR SELECT * FROM users", want: "refused err=DECLARE c CURSOR would run"},
		{sql: "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM users WHERE id = 250", want: "single s3"},
		{sql: "DECLARE c CURSOR FOR SELECT 1", want: "default s1"},
		// New tables: one shard, and the one where pgshard looks for them.
		{sql: "CREATE TABLE t AS SELECT * FROM users", want: "refused err=CREATE TABLE AS public.t would run"},
		{sql: "CREATE TABLE t AS SELECT * FROM users WHERE id = 5", want: "single s1"},
		{sql: "CREATE TABLE t AS SELECT * FROM users WHERE id = 150", want: "refused err=creating public.t on shard s2"},
		{sql: "CREATE TABLE t AS SELECT 1", want: "default s1"},
		{sql: "CREATE TEMP TABLE t AS SELECT * FROM users WHERE id = 150", want: "single s2"},
		{sql: "CREATE TEMP TABLE t AS SELECT * FROM users", want: "refused"},
		{sql: "CREATE MATERIALIZED VIEW mv AS SELECT count(*) FROM users", want: "refused err=CREATE MATERIALIZED VIEW AS public.mv"},
		{sql: "CREATE MATERIALIZED VIEW mv AS SELECT * FROM users WHERE id = 5", want: "single s1"},
		{sql: "CREATE TABLE plans AS SELECT * FROM users WHERE id = 5", want: "refused err=creating public.plans on shard s1, where the query's rows are, but pgshard looks for public.plans on shard s2"},
		{sql: "CREATE TABLE orders AS SELECT * FROM users WHERE id = 5", want: "refused err=CREATE TABLE AS into sharded table public.orders"},
		{sql: "/* pgshard: shard=s2 */ CREATE TABLE t AS SELECT * FROM users", want: "refused err=creating public.t on shard s2"},
		{sql: "/* pgshard: shard=s1 */ CREATE TABLE t AS SELECT * FROM users", want: "single s1 hinted"},
		{sql: "CREATE TABLE t AS EXECUTE q", want: "refused"},
		{sql: "SELECT * INTO t FROM users", want: "refused err=SELECT INTO public.t would run"},
		{sql: "SELECT * INTO t FROM users WHERE id = 5", want: "single s1"},
		{sql: "SELECT * INTO t FROM users WHERE id = 150", want: "refused err=creating public.t on shard s2"},
		{sql: "SELECT * INTO TEMP t FROM users WHERE id = 150", want: "single s2"},
		{sql: "SELECT * INTO t FROM plans", want: "refused err=creating public.t on shard s2"},
		{sql: "EXPLAIN ANALYZE CREATE TABLE t AS SELECT * FROM users", want: "refused"},
		// DO and CALL: only with a hint.
		{sql: "DO $$ BEGIN UPDATE users SET name = 'x' WHERE id = 900; END $$", want: "refused err=DO cannot be routed"},
		{sql: "CALL p(1)", want: "refused err=CALL cannot be routed"},
		{sql: "/* pgshard: shard=s4 */ DO $$ BEGIN UPDATE users SET name = 'x' WHERE id = 900; END $$", want: "default s4 hinted"},
		{sql: "/* pgshard: shard=s2 */ CALL p(1)", want: "default s2 hinted"},
	} {
		check(t, p, c)
	}
	// The same key literal, another value: the cached plan decides per
	// execution.
	check(t, p, routeCase{sql: "CREATE TABLE t AS SELECT * FROM users WHERE id = 6", want: "single s1"})
	check(t, p, routeCase{sql: "CREATE TABLE t AS SELECT * FROM users WHERE id = 160", want: "refused"})
	if pl, _ := p.Route("DO $$ BEGIN END $$", nil, nil, nil); !pl.InTx {
		t.Errorf("DO: InTx not set: %+v", pl)
	}
	// One shard: nothing to choose.
	m := shardmaptest.New().Shard("s1", "10.0.0.1:5432").Range("users").Table("public.users", "id").Map(t)
	one := New(m, Options{})
	for _, c := range []routeCase{
		{sql: "DO $$ BEGIN UPDATE users SET name = 'x' WHERE id = 900; END $$", want: "default s1"},
		{sql: "CALL p(1)", want: "default s1"},
		{sql: "PREPARE q(bigint) AS SELECT * FROM users WHERE id = $1", want: "single s1"},
		{sql: "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM users", want: "single s1"},
		{sql: "CREATE TABLE t AS SELECT * FROM users", want: "single s1"},
	} {
		check(t, one, c)
	}
}

// TestViewOverShardedTable: a view over a sharded table would hold each
// shard's rows on each shard, and reads of it would go to one shard:
// refused. A view over no sharded table is DDL like any other (every
// shard).
func TestViewOverShardedTable(t *testing.T) {
	p := New(testMap(t), Options{})
	for _, c := range []routeCase{
		{sql: "CREATE VIEW v AS SELECT id, name FROM users", want: "refused err=view public.v over sharded table public.users would hold each shard's own rows"},
		{sql: "CREATE OR REPLACE VIEW v AS SELECT u.id FROM users u JOIN orders o ON o.user_id = u.id", want: "refused"},
		{sql: "CREATE VIEW v AS SELECT 1 AS x WHERE EXISTS (SELECT 1 FROM orders)", want: "refused"},
		{sql: "CREATE VIEW v AS SELECT 1 AS x", want: "all broadcast"},
		{sql: "CREATE VIEW v AS SELECT * FROM settings", want: "default s1"},
	} {
		check(t, p, c)
	}
}
