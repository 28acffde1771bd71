package router_test

import (
	"strings"
	"testing"

	"github.com/pgshard/pgshard/router"
)

func set(param string) router.Info { return router.Info{Class: router.ClassSet, Param: param} }
func reset(param string) router.Info {
	return router.Info{Class: router.ClassReset, Param: param}
}
func pinned(reason string) router.Info {
	return router.Info{Class: router.ClassPin, PinReason: reason}
}

const (
	tempTable   = "temporary table"
	sqlPrepare  = "SQL-level prepared statement"
	holdCursor  = "WITH HOLD cursor"
	advisory    = "session advisory lock"
	multi       = router.ClassMulti
	classSet    = router.ClassSet
	classResetA = router.ClassResetAll
)

var none = router.Info{}

var classifyTests = []struct {
	sql  string
	want router.Info
}{
	// SET and its special forms.
	{"SET x = 1", set("x")},
	{"set  x to 'a'", set("x")},
	{"SeT\tX\nTO 1", set("x")},
	{"SET LOCAL x = 1", none},
	{"set local statement_timeout = 0", none},
	{"SET SESSION x = 1", set("x")},
	{"SET SESSION statement_timeout TO 0", set("statement_timeout")},
	{"SET TIME ZONE 'UTC'", set("timezone")},
	{"SET timezone = 'UTC'", set("timezone")},
	{"SET SESSION TIME ZONE LOCAL", set("timezone")},
	{"SET NAMES 'UTF8'", set("client_encoding")},
	{"SET SCHEMA 'a'", set("search_path")},
	{"SET search_path = a, b", set("search_path")},
	{"SET search_path TO \"$user\", public", set("search_path")},
	{`SET "MixedCase" = 1`, set("mixedcase")},
	{"SET my.custom = 1", set("my.custom")},
	{"SET My.Custom.Deep = 'x'", set("my.custom.deep")},
	{`SET my."Quoted" = 1`, set("my.quoted")},
	{"SET ROLE admin", set("role")},
	{"SET XML OPTION DOCUMENT", set("xmloption")},
	{"SET SESSION AUTHORIZATION alice", set("session_authorization")},
	{"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", set("default_transaction_characteristics")},
	{"SET x = DEFAULT", set("x")},
	{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", none},
	{"set transaction read only", none},
	{"SET CONSTRAINTS ALL DEFERRED", none},
	{"SET", none},
	{"SET ;", none},
	{"SETTINGS", none},
	{"SET_x = 1", none},

	// RESET, DISCARD, DEALLOCATE.
	{"RESET x", reset("x")},
	{"reset Statement_Timeout", reset("statement_timeout")},
	{"RESET TIME ZONE", reset("timezone")},
	{"RESET my.custom", reset("my.custom")},
	{"RESET ROLE", reset("role")},
	{"RESET ALL", router.Info{Class: router.ClassResetAll}},
	{"reset all;", router.Info{Class: router.ClassResetAll}},
	{"RESET", none},
	{"DISCARD ALL", router.Info{Class: router.ClassDiscardAll}},
	{"DISCARD PLANS", none},
	{"DISCARD SEQUENCES", none},
	{"DISCARD TEMP", none},
	{"DEALLOCATE ALL", router.Info{Class: router.ClassDeallocateAll}},
	{"DEALLOCATE PREPARE ALL", router.Info{Class: router.ClassDeallocateAll}},
	{"deallocate prepare all", router.Info{Class: router.ClassDeallocateAll}},
	{"DEALLOCATE foo", router.Info{Class: router.ClassDeallocate, Param: "foo"}},
	{"DEALLOCATE PREPARE Foo", router.Info{Class: router.ClassDeallocate, Param: "foo"}},
	{`deallocate "Foo"`, router.Info{Class: router.ClassDeallocate, Param: "Foo"}},
	{`DEALLOCATE "all"`, router.Info{Class: router.ClassDeallocate, Param: "all"}},

	// Pinning statements.
	{"PREPARE foo AS SELECT 1", pinned(sqlPrepare)},
	{"PREPARE foo(int) AS SELECT $1", pinned(sqlPrepare)},
	{"PREPARE TRANSACTION 'x'", none},
	{"LISTEN ch", pinned("LISTEN")},
	{`listen "Chan"`, pinned("LISTEN")},
	{"LOAD 'auto_explain'", pinned("LOAD")},
	{"UNLISTEN *", none},
	{"CREATE TEMP TABLE t (a int)", pinned(tempTable)},
	{"create temporary table t (a int)", pinned(tempTable)},
	{"CREATE GLOBAL TEMPORARY TABLE t (a int)", pinned(tempTable)},
	{"CREATE LOCAL TEMP TABLE t (a int)", pinned(tempTable)},
	{"CREATE OR REPLACE TEMP VIEW v AS SELECT 1", pinned(tempTable)},
	{"CREATE TEMP SEQUENCE s", pinned(tempTable)},
	{"CREATE TABLE t (a int)", none},
	{"CREATE UNLOGGED TABLE t (a int)", none},
	{"CREATE OR REPLACE VIEW v AS SELECT 1", none},
	{"CREATE OR REPLACE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql", none},
	{"CREATE TABLE temp (a int)", none},
	{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", pinned(holdCursor)},
	{"declare c scroll cursor with hold for select 1", pinned(holdCursor)},
	{"DECLARE c CURSOR FOR SELECT 1", none},
	{"DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", none},
	{"SELECT pg_advisory_lock(1)", pinned(advisory)},
	{"SELECT PG_ADVISORY_LOCK_SHARED(1, 2)", pinned(advisory)},
	{"SELECT pg_try_advisory_lock_shared(1)", pinned(advisory)},
	{"SELECT pg_try_advisory_lock(1)", pinned(advisory)},
	{"select pg_catalog.pg_advisory_lock(42)", pinned(advisory)},
	{"SELECT pg_advisory_xact_lock(1)", none},
	{"SELECT pg_try_advisory_xact_lock_shared(1)", none},
	{"SELECT pg_advisory_unlock(1)", none},
	{"SELECT pg_advisory_unlock_all()", none},
	{"SELECT * INTO TEMP t FROM x", pinned(tempTable)},
	{"select a into temporary t from x", pinned(tempTable)},
	{"SELECT * INTO t FROM x", none},
	{"SELECT 1", none},
	{"INSERT INTO t VALUES (1)", none},

	// Comments and white space before the keyword.
	{"-- c\nSET x=1", set("x")},
	{"--\n--\n  SET x=1", set("x")},
	{"/* a /* nested */ */ SET x = 1", set("x")},
	{"/**/SET/**/x/**/=1", set("x")},
	{"/* SET x = 1 */ SELECT 1", none},
	{"-- SET x = 1", none},
	{"\r\n\t\f\vRESET ALL", router.Info{Class: router.ClassResetAll}},
	{"/* unterminated SET x = 1", none},

	// Several statements in one string.
	{"SET a=1; SELECT 1", router.Info{Class: classSet | multi, Param: "a"}},
	{"SET a=1;SET b=2", router.Info{Class: classSet | multi, Param: "a"}},
	{"RESET ALL; SELECT 1", router.Info{Class: classResetA | multi}},
	{"DISCARD ALL; SELECT 1", router.Info{Class: router.ClassDiscardAll | multi}},
	// Every statement counts: the flags of all of them are merged.
	{"DEALLOCATE ALL; PREPARE p AS SELECT 1", router.Info{Class: router.ClassDeallocateAll | router.ClassPin | multi, PinReason: "SQL-level prepared statement"}},
	{"SET a=1; SELECT pg_advisory_lock(1)", router.Info{Class: classSet | router.ClassPin | multi, Param: "a", PinReason: "session advisory lock"}},
	{"SET a=1;", set("a")},
	{"SET a=1 ; ; ;", set("a")},
	{"SET a=1; -- trailing comment", set("a")},
	{"SET a=1; /* trailing */ \n", set("a")},
	{"SET a = ';'", set("a")},
	{"SET a = 'it''s; fine'", set("a")},
	{`SET "a;b" = 1`, set("a;b")},
	{"SET a = $$;$$", set("a")},
	{"SET a = $tag$ ; $$ ; $tag$", set("a")},
	{"SET a = 1 -- ; SELECT 1", set("a")},
	{"SET a = 1 /* ; SELECT 1 */", set("a")},
	{"SET a = 'unterminated; SELECT 1", set("a")},

	// Nothing to see.
	{"", none},
	{"   ", none},
	{"-- only a comment", none},
	{"/* only */ /* comments */", none},
	{";", none},
	{"\"", none},
	{"\"unterminated", none},
}

func TestClassify(t *testing.T) {
	for _, tt := range classifyTests {
		if got := router.Classify(tt.sql); got != tt.want {
			t.Errorf("Classify(%q) = %+v, want %+v", tt.sql, got, tt.want)
		}
	}
}

func TestInfoHas(t *testing.T) {
	i := router.Info{Class: router.ClassSet | router.ClassMulti}
	if !i.Has(router.ClassSet) || !i.Has(router.ClassSet|router.ClassMulti) || i.Has(router.ClassSet|router.ClassPin) || i.Has(router.ClassPin) {
		t.Errorf("Has on %b", i.Class)
	}
	if !(router.Info{}).Has(0) {
		t.Error("Has(0) is trivially true")
	}
}

// changesSession reports whether the proxy would notice the statement:
// the session loop tracks or pins on any non-zero Class.
func changesSession(i router.Info) bool { return i.Class != 0 }

// TestClassifyLaterStatements: in a multi-statement query string, session
// state changed by a statement after the first must still be noticed
// (the session loop pins on ClassMulti); otherwise the backend goes back
// to the pool carrying this client's SET, temp table or lock.
func TestClassifyLaterStatements(t *testing.T) {
	for _, sql := range []string{
		"SELECT 1; SET search_path = evil",
		"SELECT 1; SET ROLE admin",
		"SELECT 1; CREATE TEMP TABLE t (a int)",
		"SELECT 1; LISTEN ch",
		"SELECT 1; PREPARE p AS SELECT 1",
		"SELECT 1; DECLARE c CURSOR WITH HOLD FOR SELECT 1",
		"BEGIN; SET x = 1; COMMIT",
		"COMMIT; SET x = 1",
		"/* c */ SELECT 1 ; RESET ALL",
		"SELECT 1; DISCARD ALL",
	} {
		if got := router.Classify(sql); !changesSession(got) {
			t.Errorf("Classify(%q) = %+v: the session change goes unnoticed", sql, got)
		}
	}
}

// TestClassifyKeywordSpacing: PostgreSQL accepts any white space or
// comment between keywords; a pin must not depend on a single space.
func TestClassifyKeywordSpacing(t *testing.T) {
	for _, sql := range []string{
		"DECLARE c CURSOR WITH  HOLD FOR SELECT 1",
		"DECLARE c CURSOR WITH\nHOLD FOR SELECT 1",
		"DECLARE c CURSOR WITH/**/HOLD FOR SELECT 1",
		"SELECT * INTO\tTEMP t FROM x",
		"SELECT * INTO  TEMPORARY t FROM x",
		"WITH q AS (SELECT 1) SELECT * INTO TEMP t FROM q",
	} {
		if got := router.Classify(sql); !got.Has(router.ClassPin) {
			t.Errorf("Classify(%q) = %+v, want a pin", sql, got)
		}
	}
}

// TestClassifyMultiLexing: multiStatement must split statements the way
// PostgreSQL's lexer does, or a SET followed by a pinning statement is
// tracked (and replayed on other backends) as a plain SET.
func TestClassifyMultiLexing(t *testing.T) {
	for _, sql := range []string{
		// "a$b$" is an identifier, not the start of a dollar quote.
		"SET search_path = a$b$; SELECT pg_advisory_lock(1)",
		// In E'...' a backslash escapes the quote.
		`SET application_name = E'\''; SELECT pg_advisory_lock(1); SELECT ''`,
	} {
		if got := router.Classify(sql); !got.Has(router.ClassMulti) {
			t.Errorf("Classify(%q) = %+v, want ClassMulti", sql, got)
		}
	}
}

// TestClassifyResetSessionAuthorization: RESET SESSION AUTHORIZATION must
// remove the tracked SET SESSION AUTHORIZATION, which has Param
// "session_authorization", or the proxy keeps replaying it.
func TestClassifyResetSessionAuthorization(t *testing.T) {
	if got, want := router.Classify("RESET SESSION AUTHORIZATION"), reset("session_authorization"); got != want {
		t.Errorf("Classify = %+v, want %+v", got, want)
	}
}

func TestClassifyLongInput(t *testing.T) {
	long := "SET x = '" + strings.Repeat("a;", 1<<16) + "'"
	if got := router.Classify(long); got != set("x") {
		t.Errorf("long literal: %+v", got)
	}
	deep := strings.Repeat("/*", 1<<14) + strings.Repeat("*/", 1<<14) + "SET x = 1"
	if got := router.Classify(deep); got != set("x") {
		t.Errorf("deeply nested comment: %+v", got)
	}
}

func BenchmarkClassify(b *testing.B) {
	for _, sql := range []string{"SELECT * FROM t WHERE id = $1", "SET search_path = a, b; SELECT 1"} {
		b.Run(sql[:6], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				router.Classify(sql)
			}
		})
	}
}

func TestClassifyTransactionControl(t *testing.T) {
	for sql, want := range map[string]router.Class{
		"BEGIN":                              router.ClassBegin,
		"begin isolation level serializable": router.ClassBegin,
		"START TRANSACTION READ ONLY":        router.ClassBegin,
		"COMMIT":                             router.ClassCommit,
		"end":                                router.ClassCommit,
		"COMMIT PREPARED 'x'":                0,
		"ROLLBACK":                           router.ClassRollback,
		"abort":                              router.ClassRollback,
		"ROLLBACK TO SAVEPOINT a":            0,
		"ROLLBACK PREPARED 'x'":              0,
		"BEGIN; SELECT 1":                    router.ClassBegin,
		"/* c */ begin":                      router.ClassBegin,
		"START":                              0,
		"COMMIT AND CHAIN":                   router.ClassCommit,
	} {
		if got := router.Classify(sql).Class; got != want {
			t.Errorf("Classify(%q) = %b, want %b", sql, got, want)
		}
	}
}

func TestClassifyDottedParamSpacing(t *testing.T) {
	for _, sql := range []string{"SET my.custom = 1", "SET my . custom = 1", "SET my /* c */ .custom TO 1", "RESET my. custom"} {
		if got := router.Classify(sql).Param; got != "my.custom" {
			t.Errorf("Classify(%q).Param = %q", sql, got)
		}
	}
}

func TestClassifySetConfig(t *testing.T) {
	for sql, want := range map[string]bool{
		"SELECT set_config('search_path', 'x', false)":                          true,
		"SELECT set_config('search_path', 'x', $1)":                             true,
		"select SET_CONFIG('a.b', 'x,y', true)":                                 false,
		"SELECT set_config('a.b', f(1, 2), true), set_config('c.d', '', false)": true,
		"SELECT 'set_config(1,2,false)'":                                        false,
		"SELECT my_set_config(1, 2, false)":                                     false,
		"SELECT current_setting('a.b')":                                         false,
	} {
		if got := router.Classify(sql).Has(router.ClassPin); got != want {
			t.Errorf("%s: pin %v, want %v", sql, got, want)
		}
	}
}

func TestClassifyDo(t *testing.T) {
	for sql, want := range map[string]bool{
		"DO $$ BEGIN UPDATE users SET name = 'x' WHERE id = 900; END $$":                               false,
		"DO $$ BEGIN RAISE NOTICE 'hello'; END $$":                                                     false,
		"DO $$ BEGIN SET search_path = foo; END $$":                                                    true,
		"do $x$ begin update t set a = 1; reset role; end $x$":                                         true,
		"DO $$ BEGIN CREATE TEMP TABLE t (a int); END $$":                                              true,
		"DO $$ BEGIN PERFORM set_config('a.b', 'c', false); END $$":                                    true,
		"DO $$ BEGIN PERFORM pg_advisory_lock(1); END $$":                                              true,
		"DO 'BEGIN LISTEN ch; END'":                                                                    true,
		"DO $$ DECLARE r record; BEGIN FOR r IN SELECT 1 LOOP PREPARE q AS SELECT 1; END LOOP; END $$": true,
	} {
		if got := router.Classify(sql).Has(router.ClassPin); got != want {
			t.Errorf("%s: pin %v, want %v", sql, got, want)
		}
	}
}
