package proxy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/router"
)

// change classifies sql the way the session loop does.
func change(t *testing.T, sql string) *settingChange {
	t.Helper()
	info := router.Classify(sql)
	if info.Class == 0 || info.Has(router.ClassPin) || info.Has(router.ClassMulti) {
		t.Fatalf("%q is not a tracked setting change: %+v", sql, info)
	}
	return &settingChange{info: info, sql: sql}
}

func setSQLs(st *settings) []string {
	var out []string
	for _, s := range st.sets {
		out = append(out, s.param+"|"+s.sql)
	}
	return out
}

func TestNewSettings(t *testing.T) {
	st := newSettings(map[string]string{
		"user": "bob", "database": "app", "replication": "database",
		"options":          `-c a=b --c-d=e -c search_path=x,\ y`,
		"application_name": "psql", "DateStyle": "ISO, MDY",
	})
	want := [][2]string{{"DateStyle", "ISO, MDY"}, {"a", "b"}, {"application_name", "psql"}, {"c_d", "e"}, {"search_path", "x, y"}}
	if !slices.Equal(st.startup, want) {
		t.Fatalf("startup = %q, want %q", st.startup, want)
	}
	if len(st.sets) != 0 {
		t.Fatalf("sets = %v", st.sets)
	}
	if want := "DateStyle=ISO, MDY\x00a=b\x00application_name=psql\x00c_d=e\x00search_path=x, y\x00"; st.key != want {
		t.Errorf("key = %q, want %q", st.key, want)
	}

	for _, params := range []map[string]string{nil, {}, {"user": "u", "database": "d", "options": ""}, {"options": "-B 100 -e"}} {
		if st := newSettings(params); st.key != "" || len(st.startup) != 0 {
			t.Errorf("newSettings(%q) = %+v, want no settings", params, st)
		}
	}
}

func TestSettingsParseOptions(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]string
	}{
		{"", map[string]string{}},
		{"-c a=b", map[string]string{"a": "b"}},
		{"-ca=b", map[string]string{"a": "b"}},
		{"--a-b=c", map[string]string{"a_b": "c"}},
		{"-c a-b.c-d=1", map[string]string{"a_b.c_d": "1"}},
		{"-c a=b --c-d=e", map[string]string{"a": "b", "c_d": "e"}},
		{"  -c\tx=1   -c y=2 ", map[string]string{"x": "1", "y": "2"}},
		{`-c search_path=a,\ b`, map[string]string{"search_path": "a, b"}},
		{`-c a=\\`, map[string]string{"a": `\`}},
		{"-c a=b=c", map[string]string{"a": "b=c"}},
		{"-c a=", map[string]string{"a": ""}},
		{"-c a=1 -c a=2", map[string]string{"a": "2"}},
		{"-c noequals", map[string]string{}},
		{"-c", map[string]string{}},
		{"-B 100 -e -F", map[string]string{}},
		{"x=1", map[string]string{}},
	}
	for _, tt := range tests {
		if got := parseOptions(tt.in); !maps.Equal(got, tt.want) {
			t.Errorf("parseOptions(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestNewSettingsDuplicate: a parameter given both directly and in
// options. PostgreSQL (process_startup_options) applies the options
// switches first and the direct parameters after, so the direct value
// wins; the snapshot must say the same, deterministically.
func TestNewSettingsDuplicate(t *testing.T) {
	appValues := func(st *settings) []string {
		var vals []string
		for _, kv := range st.startup {
			if kv[0] == "application_name" {
				vals = append(vals, kv[1])
			}
		}
		return vals
	}
	params := map[string]string{"user": "u", "application_name": "direct", "options": "-c application_name=opt"}
	if got := appValues(newSettings(params)); !slices.Equal(got, []string{"direct"}) {
		t.Errorf("few parameters: application_name values in apply order = %q, want [direct]", got)
	}
	for i := range 12 { // enough entries that sort.Slice is no longer an insertion sort
		params[fmt.Sprintf("p%02d", i)] = "v"
	}
	keys := map[string]bool{}
	orders := map[string]bool{}
	for range 200 {
		st := newSettings(params)
		keys[st.key] = true
		orders[strings.Join(appValues(st), ",")] = true
	}
	if len(keys) != 1 {
		t.Errorf("many parameters: %d different keys for the same parameters; application_name orders seen: %v", len(keys), slices.Sorted(maps.Keys(orders)))
	}
}

func TestSettingsWith(t *testing.T) {
	st0 := newSettings(map[string]string{"user": "u", "application_name": "app"})
	key0 := st0.key

	st := st0.with(change(t, "SET x = 1"))
	st = st.with(change(t, "SET y TO 2"))
	if got, want := setSQLs(st), []string{"x|SET x = 1", "y|SET y TO 2"}; !slices.Equal(got, want) {
		t.Fatalf("after two SETs: %q, want %q", got, want)
	}
	st = st.with(change(t, "set X = 3"))
	if got, want := setSQLs(st), []string{"y|SET y TO 2", "x|set X = 3"}; !slices.Equal(got, want) {
		t.Fatalf("SET of the same parameter: %q, want %q", got, want)
	}
	st = st.with(change(t, "SET TIME ZONE 'UTC'"))
	st = st.with(change(t, "RESET timezone"))
	st = st.with(change(t, "RESET y"))
	if got, want := setSQLs(st), []string{"x|set X = 3"}; !slices.Equal(got, want) {
		t.Fatalf("after RESETs: %q, want %q", got, want)
	}
	st = st.with(change(t, "RESET nothing_set"))
	if got, want := setSQLs(st), []string{"x|set X = 3"}; !slices.Equal(got, want) {
		t.Fatalf("RESET of an unset parameter: %q, want %q", got, want)
	}
	if !slices.Equal(st.startup, st0.startup) {
		t.Fatalf("startup changed: %q", st.startup)
	}
	for _, sql := range []string{"RESET ALL", "DISCARD ALL"} {
		back := st.with(change(t, sql))
		if len(back.sets) != 0 || !slices.Equal(back.startup, st0.startup) || back.key != key0 {
			t.Errorf("%s: %+v, want the startup snapshot (key %q)", sql, back, key0)
		}
	}
	// A change that is neither SET nor RESET keeps the snapshot.
	same := st.with(&settingChange{info: router.Info{Class: router.ClassDeallocateAll}, sql: "DEALLOCATE ALL"})
	if same.key != st.key || !slices.Equal(setSQLs(same), setSQLs(st)) {
		t.Errorf("DEALLOCATE ALL changed the snapshot: %+v", same)
	}
	// Snapshots are immutable: branching from one leaves it alone.
	if st0.key != key0 || len(st0.sets) != 0 {
		t.Fatalf("st0 modified: %+v", st0)
	}
	a := st.with(change(t, "SET a = 1"))
	b := st.with(change(t, "SET b = 1"))
	if got := setSQLs(a); !slices.Equal(got, []string{"x|set X = 3", "a|SET a = 1"}) {
		t.Errorf("branch a = %q", got)
	}
	if got := setSQLs(b); !slices.Equal(got, []string{"x|set X = 3", "b|SET b = 1"}) {
		t.Errorf("branch b = %q", got)
	}
	if got := setSQLs(st); !slices.Equal(got, []string{"x|set X = 3"}) {
		t.Errorf("parent after branching = %q", got)
	}
}

func TestSettingsKey(t *testing.T) {
	build := func(params map[string]string, sqls ...string) *settings {
		st := newSettings(params)
		for _, sql := range sqls {
			st = st.with(change(t, sql))
		}
		return st
	}
	p := func(kv ...string) map[string]string {
		m := map[string]string{"user": "someone"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	equal := [][2]*settings{
		{build(nil), build(p())},
		{build(p("a", "1", "b", "2")), build(p("b", "2", "a", "1"))},
		{build(p("a", "1", "user", "other", "database", "x")), build(p("a", "1"))},
		{build(p("a", "1"), "SET x = 1"), build(p("a", "1"), "SET x = 1")},
		{build(p("a", "1"), "SET x = 1", "RESET x"), build(p("a", "1"))},
		{build(p("a", "1"), "SET x = 2", "SET x = 1"), build(p("a", "1"), "SET x = 1")},
		{build(p("a", "1"), "SET x = 1", "SET y = 1", "RESET ALL"), build(p("a", "1"))},
		{build(p("options", "-c a=1")), build(p("a", "1"))},
	}
	for i, pair := range equal {
		if pair[0].key != pair[1].key {
			t.Errorf("equal[%d]: keys differ: %q vs %q", i, pair[0].key, pair[1].key)
		}
	}
	distinct := []*settings{
		build(nil),
		build(p("a", "1")),
		build(p("a", "2")),
		build(p("a", "1", "b", "1")),
		build(p("A", "1")),
		build(p("a", "1"), "SET a = 1"),
		build(nil, "SET a = 1"),
		build(nil, "SET a = 1", "SET b = 1"),
		build(nil, "SET a = 01"),
		build(p("a", "1=b")),
		build(p("a", ""), "SET b = 1"),
		build(p("a", "\x01SET b = 1")),
	}
	seen := map[string]int{}
	for i, st := range distinct {
		if j, ok := seen[st.key]; ok {
			t.Errorf("distinct[%d] and distinct[%d] share key %q", j, i, st.key)
		}
		seen[st.key] = i
		if st.key == unknownSettings {
			t.Errorf("distinct[%d] has the unknown-settings key", i)
		}
	}
}

func TestSettingsApplySQL(t *testing.T) {
	st := newSettings(map[string]string{
		"user": "u", "application_name": "it's", "search_path": `a\b`, "DateStyle": "ISO",
	})
	st = st.with(change(t, "SET x = 1;"))
	st = st.with(change(t, "  set y to 'a;b'  ;  "))
	st = st.with(change(t, "SET TIME ZONE 'UTC'"))

	const golden = `SELECT set_config('DateStyle','ISO',false),` +
		`set_config('application_name','it''s',false),` +
		`set_config('search_path',E'a\\b',false);` +
		"SET x = 1\n;set y to 'a;b'  \n;SET TIME ZONE 'UTC'\n;" // inner white space before ';' is kept; harmless
	if got := st.applySQL(false); got != golden {
		t.Errorf("applySQL(false) =\n%s\nwant\n%s", got, golden)
	}
	const resetPrefix = "RESET ALL;RESET ROLE;RESET SESSION AUTHORIZATION;"
	if got := st.applySQL(true); got != resetPrefix+golden {
		t.Errorf("applySQL(true) =\n%s\nwant\n%s", got, resetPrefix+golden)
	}
	empty := newSettings(nil)
	if got := empty.applySQL(false); got != "" {
		t.Errorf("empty applySQL(false) = %q", got)
	}
	if got := empty.applySQL(true); got != resetPrefix {
		t.Errorf("empty applySQL(true) = %q", got)
	}
	onlySets := empty.with(change(t, "SET a = 1"))
	if got := onlySets.applySQL(false); got != "SET a = 1\n;" {
		t.Errorf("sets only: %q", got)
	}
}

// TestSettingsApplySQLTrailingComment: a SET the client ended with a line comment
// must not swallow the statements replayed after it.
func TestSettingsApplySQLTrailingComment(t *testing.T) {
	st := newSettings(nil)
	st = st.with(change(t, "SET a = 1 -- why we need this"))
	st = st.with(change(t, "SET b = 2"))
	out := st.applySQL(true)
	i := strings.Index(out, "SET b = 2")
	if i < 0 {
		t.Fatalf("SET b missing from %q", out)
	}
	line := out[strings.LastIndexByte(out[:i], '\n')+1 : i]
	if strings.Contains(line, "--") {
		t.Errorf("SET b = 2 is inside a line comment in %q", out)
	}
}

func TestQuoteLiteral(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "''"},
		{"abc", "'abc'"},
		{"it's", "'it''s'"},
		{"''", "''''''"},
		{`a\b`, `E'a\\b'`},
		{`it's \ ok`, `E'it''s \\ ok'`},
		{`\'`, `E'\\'''`},
		{`\`, `E'\\'`},
		{"ünïcödé", "'ünïcödé'"},
		{"a\nb", "'a\nb'"},
	}
	for _, tt := range tests {
		if got := quoteLiteral(tt.in); got != tt.want {
			t.Errorf("quoteLiteral(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestSettingsChangeFlags(t *testing.T) {
	tests := []struct {
		sql              string
		resets, discards bool
	}{
		{"SET a = 1", false, false},
		{"RESET a", true, false},
		{"RESET ALL", true, false},
		{"DISCARD ALL", true, true},
	}
	for _, tt := range tests {
		c := change(t, tt.sql)
		if c.resets() != tt.resets || c.discardsStatements() != tt.discards {
			t.Errorf("%q: resets %v discards %v", tt.sql, c.resets(), c.discardsStatements())
		}
	}
}
