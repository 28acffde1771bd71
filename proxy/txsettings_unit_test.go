package proxy

import (
	"testing"

	"github.com/pgshard/pgshard/router"
)

// TestTxSettingsLog: each participant gets, once, the changes it has not
// run, in order; the one a change ran on does not get it again.
func TestTxSettingsLog(t *testing.T) {
	var ts txSettings
	if got := ts.take("s0"); got != "" {
		t.Fatalf("empty log gave %q", got)
	}
	ts.record("s0", "SET a = 1;")
	ts.record("s0", "SET LOCAL b = 2")
	if got := ts.take("s0"); got != "" {
		t.Fatalf("s0 ran them: got %q", got)
	}
	if got := ts.take("s1"); got != "SET a = 1\n;SET LOCAL b = 2" {
		t.Fatalf("s1: %q", got)
	}
	if got := ts.take("s1"); got != "" {
		t.Fatalf("s1 twice: %q", got)
	}
	ts.record("s1", "RESET a")
	if got := ts.take("s0"); got != "RESET a" {
		t.Fatalf("s0 after s1's change: %q", got)
	}
	ts.reset()
	if got := ts.take("s2"); got != "" || len(ts.log) != 0 {
		t.Fatalf("after reset: %q", got)
	}
}

// TestTxSettingSQL: which statements are replayed on the other
// participants.
func TestTxSettingSQL(t *testing.T) {
	for sql, want := range map[string]bool{
		"SET search_path = a":                   true,
		"set local statement_timeout = '1s'":    true,
		"RESET work_mem":                        true,
		"RESET ALL":                             true,
		"SELECT set_config('app.x', 'v', true)": true,
		"select pg_catalog.set_config('a.b', 'v', true), set_config('a.c', '1'::text, true)": true,
		"SELECT set_config('app.x', $1, true)":                                               false, // bound value
		"SELECT set_config('app.x', v, true) FROM kv":                                        false, // computed, with a FROM
		"SELECT set_config('app.x', 'v', true), 1":                                           false, // something else too
		"SELECT 1": false,
		"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE": false,
		"UPDATE kv SET n = 1":                          false,
		"SET pgshard.shard = 's0'":                     false,
		"SET LOCAL pgshard.shard = 's0'":               false, // a routing hint
	} {
		if got := txSettingSQL(router.Classify(sql), sql); got != want {
			t.Errorf("txSettingSQL(%q) = %v, want %v", sql, got, want)
		}
	}
}
