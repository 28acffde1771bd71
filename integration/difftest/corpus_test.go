package difftest

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

func TestParseCorpus(t *testing.T) {
	qs, err := ParseCorpus(strings.NewReader(`-- c
SELECT 1;

-- ordered
SELECT 2
FROM x;

-- refused 0A000 a window function
SELECT 3;

-- write
-- in-transaction
DELETE FROM t;

-- known-bug: wrong order
-- refused-like comment kept
SELECT 4;

-- comments only

-- refused 42P01
SELECT 5;

-- steps
-- known-bug(extended): pins
BEGIN;
-- a comment
COMMIT;
SELECT 6;
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Query{
		{SQL: "-- c\nSELECT 1", Line: 1},
		{SQL: "SELECT 2\nFROM x", Line: 5, Ordered: true},
		{SQL: "SELECT 3", Line: 9, Refused: "0A000", RefusedMessage: "a window function"},
		{SQL: "DELETE FROM t", Line: 13, Write: true, InTransaction: true},
		{SQL: "-- refused-like comment kept\nSELECT 4", Line: 16, KnownBug: "wrong order"},
		{SQL: "SELECT 5", Line: 22, Refused: "42P01"},
		{SQL: "BEGIN;\n-- a comment\nCOMMIT;\nSELECT 6", Line: 26, KnownBug: "pins", KnownBugIn: "extended",
			Steps: []string{"BEGIN", "-- a comment\nCOMMIT", "SELECT 6"}},
	}
	if !reflect.DeepEqual(qs, want) {
		t.Fatalf("got  %+v\nwant %+v", qs, want)
	}
	for _, bad := range []string{
		"SELECT 1\n",                                     // no ';'
		"-- refused 0A0\nSELECT 1;\n",                    // not a SQLSTATE
		"-- refused\nSELECT 1;\n",                        // no SQLSTATE
		"-- known-bug:\nSELECT 1;\n",                     // no description
		"-- known-bug x\nSELECT 1;\n",                    // no colon
		"-- refused 0A000\n-- known-bug: x\nSELECT 1;\n", // both
		"-- ordered\n\nSELECT 1;\n",                      // directive without a statement
		"SELECT 1\n-- ordered\n;\n",                      // directive inside a statement
	} {
		if _, err := ParseCorpus(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestOneLine(t *testing.T) {
	if got := OneLine("-- c\nSELECT  a,\n\tb\nFROM t"); got != "SELECT a, b FROM t" {
		t.Errorf("%q", got)
	}
}

func row(vals ...string) [][]byte {
	out := make([][]byte, len(vals))
	for i, v := range vals {
		if v != "NULL" {
			out[i] = []byte(v)
		}
	}
	return out
}

func TestDiff(t *testing.T) {
	f := []Field{{Name: "x", TypeOID: 20, TypeSize: 8, TypeModifier: -1}}
	a := Result{Fields: f, Rows: [][][]byte{row("1"), row("2")}, Tag: "SELECT 2"}
	b := Result{Fields: f, Rows: [][][]byte{row("2"), row("1")}, Tag: "SELECT 2"}
	if d := Diff(a, b, false); d != "" {
		t.Errorf("unordered: %s", d)
	}
	if d := Diff(a, b, true); d == "" {
		t.Error("ordered comparison missed a difference")
	}
	for name, c := range map[string]Result{
		"NULL vs value":          {Fields: f, Rows: [][][]byte{row("1"), row("NULL")}, Tag: "SELECT 2"},
		"empty vs NULL":          {Fields: f, Rows: [][][]byte{row("1"), {[]byte{}}}, Tag: "SELECT 2"},
		"type":                   {Fields: []Field{{Name: "x", TypeOID: 1700, TypeSize: -1, TypeModifier: -1}}, Rows: a.Rows, Tag: "SELECT 2"},
		"format":                 {Fields: []Field{{Name: "x", TypeOID: 20, TypeSize: 8, TypeModifier: -1, Format: 1}}, Rows: a.Rows, Tag: "SELECT 2"},
		"tag":                    {Fields: f, Rows: a.Rows, Tag: "SELECT 3"},
		"error":                  {Code: "0A000"},
		"row count":              {Fields: f, Rows: a.Rows[:1], Tag: "SELECT 2"},
		"values that join alike": {Fields: f, Rows: [][][]byte{row("1\x1f", ""), row("2")}, Tag: "SELECT 2"},
		"transaction end":        {Fields: f, Rows: a.Rows, Tag: "SELECT 2", EndTag: "ROLLBACK"},
	} {
		ref := a
		if name == "values that join alike" {
			ref = Result{Fields: f, Rows: [][][]byte{row("1", "\x1f"), row("2")}, Tag: "SELECT 2"}
		}
		if name == "empty vs NULL" {
			ref = Result{Fields: f, Rows: [][][]byte{row("1"), row("NULL")}, Tag: "SELECT 2"}
		}
		if d := Diff(ref, c, false); d == "" {
			t.Errorf("%s: difference not reported", name)
		}
	}
	if d := Diff(Result{Code: "23505", Message: "a"}, Result{Code: "23505", Message: "shard s1: a"}, false); d != "" {
		t.Errorf("same error: %s", d)
	}
}

func TestRunnerJudges(t *testing.T) {
	r := &Runner{Sharded: true}
	refused := Query{Refused: "0A000", RefusedMessage: "window"}
	simple, cached := pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement
	for _, c := range []struct {
		name string
		q    Query
		mode pgx.QueryExecMode
		got  Result
		want Outcome
		ok   bool
	}{
		{"expected refusal", refused, simple, Result{Code: "0A000", Message: "a window function cannot be merged"}, RefusedAsExpected, true},
		{"other message", refused, simple, Result{Code: "0A000", Message: "HAVING"}, Failed, true},
		{"rows instead", refused, simple, Result{Tag: "SELECT 1"}, Failed, true},
		{"refused in a transaction", Query{Refused: "0A000", InTransaction: true}, simple, Result{Code: "0A000", EndTag: "ROLLBACK"}, RefusedAsExpected, true},
		{"transaction not aborted", Query{Refused: "0A000", InTransaction: true}, simple, Result{Code: "0A000", EndTag: "COMMIT"}, Failed, true},
		{"no expectation", Query{}, simple, Result{Code: "0A000"}, 0, false},
	} {
		o, _, ok := r.refusal(c.q, c.mode, c.got)
		if o != c.want || ok != c.ok {
			t.Errorf("%s: got %v %v, want %v %v", c.name, o, ok, c.want, c.ok)
		}
	}
	same, other := Result{Tag: "SELECT 0"}, Result{Tag: "SELECT 1"}
	for _, c := range []struct {
		name string
		r    *Runner
		q    Query
		mode pgx.QueryExecMode
		got  Result
		want Outcome
	}{
		{"known bug fixed", r, Query{KnownBug: "x"}, simple, same, Failed},
		{"known bug", r, Query{KnownBug: "x"}, simple, other, KnownBug},
		{"extended bug in extended", r, Query{KnownBug: "x", KnownBugIn: "extended"}, cached, other, KnownBug},
		{"extended bug fixed", r, Query{KnownBug: "x", KnownBugIn: "extended"}, cached, same, Failed},
		{"extended bug in simple", r, Query{KnownBug: "x", KnownBugIn: "extended"}, simple, same, Identical},
		{"extended bug in simple, differing", r, Query{KnownBug: "x", KnownBugIn: "extended"}, simple, other, Failed},
		{"simple bug in extended", r, Query{KnownBug: "x", KnownBugIn: "simple"}, cached, other, Failed},
		{"without a shard map", &Runner{}, Query{KnownBug: "x"}, simple, same, Identical},
		{"without a shard map, differing", &Runner{}, Query{KnownBug: "x"}, simple, other, Failed},
	} {
		if o, _ := c.r.compare(c.q, c.mode, same, c.got); o != c.want {
			t.Errorf("%s: %v, want %v", c.name, o, c.want)
		}
	}
	unsharded := &Runner{}
	if _, _, ok := unsharded.refusal(refused, simple, Result{Code: "0A000", Message: "window"}); ok {
		t.Error("without a shard map a refusal must be compared with the reference")
	}
}

func TestMisplaced(t *testing.T) {
	m := shardmaptest.New().Shard("a", "127.0.0.1:1").Shard("b", "127.0.0.1:2").Range("d", 10).Table("public.t", "k").Map(t)
	bad, err := Misplaced(m.Distribution("d"), "a", []int64{-5, 9, 10, 3, 11})
	if err != nil || !slices.Equal(bad, []int64{10, 11}) {
		t.Errorf("got %v, %v", bad, err)
	}
}

func TestMultisetDiff(t *testing.T) {
	missing, extra := MultisetDiff([]string{"a", "b", "b", "c"}, []string{"c", "b", "d", "a", "a"})
	if !slices.Equal(missing, []string{"b"}) || !slices.Equal(extra, []string{"a", "d"}) {
		t.Errorf("missing %q, extra %q", missing, extra)
	}
	if m, e := MultisetDiff([]string{"x", "y"}, []string{"y", "x"}); len(m)+len(e) != 0 {
		t.Errorf("equal multisets: %q %q", m, e)
	}
}

func TestMapYAML(t *testing.T) {
	for _, c := range []struct {
		strategy string
		bounds   []int64
		key      int64
		want     string
	}{
		{"range", []int64{250, 500, 750}, 249, "s0"},
		{"range", []int64{250, 500, 750}, 250, "s1"},
		{"range", []int64{250, 500, 750}, -9223372036854775808, "s0"},
		{"range", []int64{250, 500, 750}, 9223372036854775807, "s3"},
		{"hash", nil, 1, ""},
	} {
		text, err := MapYAML([]string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"}, c.strategy, c.bounds)
		if err != nil {
			t.Fatal(err)
		}
		m, err := shardmap.ParseYAML([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("%s: %v\n%s", c.strategy, err, text)
		}
		if m.Table("public.orders") == nil || m.Distribution("users") == nil {
			t.Fatalf("%s: tables or distribution missing:\n%s", c.strategy, text)
		}
		got, err := m.Distribution("users").ShardForInt64(c.key)
		if err != nil || c.want != "" && got != c.want {
			t.Errorf("%s: key %d on %q (%v), want %q", c.strategy, c.key, got, err, c.want)
		}
	}
	if _, err := MapYAML([]string{"a:1", "b:2"}, "range", nil); err == nil {
		t.Error("a range map without bounds was accepted")
	}
}
