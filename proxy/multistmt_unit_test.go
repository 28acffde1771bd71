package proxy

import (
	"slices"
	"testing"

	"github.com/pgshard/pgshard/wire"
)

func TestMultiStmtFilter(t *testing.T) {
	var m multiStmtState
	var b []byte
	b = wire.AppendString(b, 'C', "UPDATE 1")
	b = wire.AppendReadyForQuery(b, 'T')
	b = wire.AppendErrorResponse(b, wire.Errorf(wire.SQLStateDivisionByZero, "division by zero"))
	b = wire.AppendReadyForQuery(b, 'E')
	want := wire.AppendString(nil, 'C', "UPDATE 1")
	want = wire.AppendErrorResponse(want, wire.Errorf(wire.SQLStateDivisionByZero, "division by zero"))
	if got := m.filter(slices.Clone(b)); !slices.Equal(got, want) {
		t.Fatalf("filter: %q, want %q", got, want)
	}
	if m.status.Load() != 'E' || !m.failed.Load() {
		t.Fatalf("status %c failed %v, want E true", m.status.Load(), m.failed.Load())
	}
	// Muted: only errors and notices pass.
	m.mute.Store(true)
	notice := appendNotice(nil, "WARNING", wire.SQLStateNoActiveSQLTransaction, "there is no transaction in progress")
	in := append(append(wire.AppendString(nil, 'C', "COMMIT"), notice...), wire.AppendReadyForQuery(nil, 'I')...)
	if got := m.filter(in); !slices.Equal(got, notice) {
		t.Fatalf("muted filter: %q, want %q", got, notice)
	}
	if m.status.Load() != 'I' {
		t.Fatalf("status %c, want I", m.status.Load())
	}
	// A partial frame passes as it is.
	part := wire.AppendString(nil, 'C', "SELECT 1")[:4]
	if got := m.filter(slices.Clone(part)); !slices.Equal(got, part) {
		t.Fatalf("partial frame: %q", got)
	}
}

func TestSplitStatements(t *testing.T) {
	parts, ok := splitStatements("BEGIN; UPDATE t SET v = ';' WHERE k = 1 ;\n-- c\nSELECT 1;;  COMMIT")
	var got []string
	for _, p := range parts {
		got = append(got, p.sql)
	}
	if want := []string{"BEGIN", "UPDATE t SET v = ';' WHERE k = 1", "-- c\nSELECT 1", "COMMIT"}; !ok || !slices.Equal(got, want) {
		t.Fatalf("split: %q %v, want %q", got, ok, want)
	}
	for _, sql := range []string{"SELECT 1;", "SELEC 1; SELECT 2", "SELECT 1; COPY t FROM STDIN"} {
		if _, ok := splitStatements(sql); ok {
			t.Errorf("split %q: ok, want not run statement by statement", sql)
		}
	}
}

func TestNotInTxBlock(t *testing.T) {
	for sql, want := range map[string]string{
		"VACUUM t":                             "VACUUM cannot run inside a transaction block",
		"VACUUM (ANALYZE) t":                   "VACUUM cannot run inside a transaction block",
		"ANALYZE t":                            "",
		"CREATE INDEX CONCURRENTLY i ON t (a)": "CREATE INDEX CONCURRENTLY cannot run inside a transaction block",
		"CREATE INDEX i ON t (a)":              "",
		"DROP INDEX CONCURRENTLY i":            "DROP INDEX CONCURRENTLY cannot run inside a transaction block",
		"REINDEX (CONCURRENTLY) TABLE t":       "REINDEX CONCURRENTLY cannot run inside a transaction block",
		"REINDEX TABLE CONCURRENTLY t":         "REINDEX CONCURRENTLY cannot run inside a transaction block",
		"REINDEX TABLE t":                      "",
		"REINDEX SCHEMA s":                     "REINDEX SCHEMA cannot run inside a transaction block",
		"CREATE DATABASE d":                    "CREATE DATABASE cannot run inside a transaction block",
		"DROP DATABASE d":                      "DROP DATABASE cannot run inside a transaction block",
		"ALTER SYSTEM SET work_mem = '1MB'":    "ALTER SYSTEM cannot run inside a transaction block",
		"DISCARD ALL":                          "DISCARD ALL cannot run inside a transaction block",
		"DISCARD PLANS":                        "",
		"CLUSTER":                              "CLUSTER cannot run inside a transaction block",
		"CLUSTER t USING i":                    "",
		"COMMIT PREPARED 'x'":                  "COMMIT PREPARED cannot run inside a transaction block",
		"SELECT 1":                             "",
	} {
		parts, ok := splitStatements(sql + "; SELECT 1")
		if !ok {
			t.Fatalf("%s: does not split", sql)
		}
		got := ""
		if e := notInTxBlock(parts[0].node); e != nil {
			got = e.Message
			if e.Code != wire.SQLStateActiveSQLTransaction {
				t.Errorf("%s: code %s", sql, e.Code)
			}
		}
		if got != want {
			t.Errorf("%s: %q, want %q", sql, got, want)
		}
	}
}
