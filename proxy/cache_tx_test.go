package proxy

import "testing"

// TestTxChars: which transactions the cache may answer (READ ONLY at READ
// COMMITTED), from the session's parameters, the BEGIN and the
// statements after it.
func TestTxChars(t *testing.T) {
	cases := []struct {
		session []setStmt
		startup [][2]string
		begin   string
		after   []string
		want    bool
	}{
		{begin: "BEGIN READ ONLY", want: true},
		{begin: "begin transaction read only;", want: true},
		{begin: "START TRANSACTION ISOLATION LEVEL READ COMMITTED, READ ONLY", want: true},
		{begin: "BEGIN ISOLATION LEVEL READ UNCOMMITTED READ ONLY", want: true},
		{begin: "BEGIN READ ONLY DEFERRABLE", want: true},
		{begin: "BEGIN"},
		{begin: "BEGIN READ WRITE"},
		{begin: "BEGIN READ ONLY, READ WRITE"},
		{begin: "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"},
		{begin: "BEGIN READ ONLY ISOLATION LEVEL SERIALIZABLE"},
		{begin: "BEGIN", after: []string{"SET TRANSACTION READ ONLY"}, want: true},
		{begin: "BEGIN", after: []string{"SET LOCAL transaction_read_only = on"}, want: true},
		{begin: "BEGIN READ ONLY", after: []string{"SET TRANSACTION READ WRITE"}},
		{begin: "BEGIN READ ONLY", after: []string{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"}},
		{begin: "BEGIN READ ONLY", after: []string{"SET LOCAL transaction_isolation = 'repeatable read'"}},
		{begin: "BEGIN READ ONLY", after: []string{"SET LOCAL search_path = other"}},
		{begin: "BEGIN READ ONLY", after: []string{"SET LOCAL default_transaction_read_only = off"}},
		{session: []setStmt{{"default_transaction_read_only", "SET default_transaction_read_only = on"}}, begin: "BEGIN", want: true},
		{session: []setStmt{{"default_transaction_read_only", "SET default_transaction_read_only TO true"}}, begin: "BEGIN", want: true},
		{session: []setStmt{{"default_transaction_read_only", "RESET default_transaction_read_only"}}, begin: "BEGIN"},
		{session: []setStmt{{"default_transaction_characteristics", "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"}}, begin: "BEGIN", want: true},
		{session: []setStmt{{"default_transaction_characteristics", "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE"}}, begin: "BEGIN READ ONLY"},
		{session: []setStmt{{"default_transaction_isolation", "SET default_transaction_isolation = 'repeatable read'"}}, begin: "BEGIN READ ONLY"},
		{session: []setStmt{{"default_transaction_isolation", "SET default_transaction_isolation = 'repeatable read'"}}, begin: "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY", want: true},
		{startup: [][2]string{{"default_transaction_read_only", "on"}}, begin: "BEGIN", want: true},
		{startup: [][2]string{{"default_transaction_isolation", "serializable"}}, begin: "BEGIN READ ONLY"},
	}
	for _, tc := range cases {
		c, ok := sessionTxChars(&settings{startup: tc.startup, sets: tc.session})
		ok = ok && c.applySQL(tc.begin, false)
		for _, s := range tc.after {
			ok = ok && c.applySQL(s, false)
		}
		if got := ok && c.readOnly && c.readCommitted; got != tc.want {
			t.Errorf("%v %v; %q %q: cacheable %v, want %v", tc.startup, tc.session, tc.begin, tc.after, got, tc.want)
		}
	}
	for sql, want := range map[string]bool{
		"SET TRANSACTION READ ONLY": true, "set transaction isolation level serializable": true,
		"SET TRANSACTION SNAPSHOT '00000003-0000001B-1'": false, "SET LOCAL x = 1": false, "SET TRANSACTION": false,
	} {
		if got := parseSetTransaction(sql); got != want {
			t.Errorf("parseSetTransaction(%q) = %v, want %v", sql, got, want)
		}
	}
}
