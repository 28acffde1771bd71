package proxy

import (
	"testing"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/wire"
)

// The rule with transactions.cross_shard: two_phase: a transaction
// opened with a deferred BEGIN switches shards once its requests are
// answered, not in an unsynced pipeline nor pinned; a failed transaction
// refuses with 25P02, a savepoint keeps it on its shard; statements over
// several shards run in it; switching keeps the attachments and the
// BEGIN.
func TestSessionStateCrossShard(t *testing.T) {
	a, b := &pool.Conn{}, &pool.Conn{}
	idle := pipeline{}
	inTx := func() *sessionState {
		st := &sessionState{}
		st.openDeferred("BEGIN ISOLATION LEVEL REPEATABLE READ")
		st.crossShard = true
		if got := st.canScatter(idle); got != useTx {
			t.Errorf("deferred transaction: canScatter %d, want useTx", got)
		}
		if begin := st.attach(a, "s1", false, false, false); begin != "BEGIN ISOLATION LEVEL REPEATABLE READ" {
			t.Fatalf("attach: begin %q", begin)
		}
		st.beginSent()
		st.ready(a, 'T', idle, false)
		return st
	}
	check := func(name string, st *sessionState, p pipeline, want use, code string) {
		t.Helper()
		got, e := st.canUse("s2", false, p)
		switch {
		case got != want:
			t.Errorf("%s: use %d, want %d (%v)", name, got, want, e)
		case code == "" && e != nil, code != "" && (e == nil || e.Code != code):
			t.Errorf("%s: refusal %v, want %q", name, e, code)
		}
	}
	st := inTx()
	check("answered", st, idle, useSwitch, "")
	check("answers outstanding", st, pipeline{syncs: 1}, useWait, "")
	check("unsynced pipeline", st, pipeline{unsynced: true}, useRefused, wire.SQLStateFeatureNotSupported)
	if got := st.canScatter(idle); got != useTx {
		t.Errorf("in the transaction: canScatter %d, want useTx", got)
	}
	if begin := st.attachMore(b, "s2", false); begin != "BEGIN ISOLATION LEVEL REPEATABLE READ" || st.conn() != b {
		t.Fatalf("attachMore: begin %q, current %p (want %p)", begin, st.conn(), b)
	}
	st.ready(b, 'T', idle, false)
	if x := st.switchTo("s1"); x == nil || x.conn != a || len(st.atts) != 2 {
		t.Fatalf("switchTo s1: %+v, %d attachments", x, len(st.atts))
	}
	if st.clientStatus() != 'T' {
		t.Errorf("clientStatus %q, want T", st.clientStatus())
	}
	// An error on s2 (parked) fails the transaction everywhere.
	st.byShard("s2").txStatus = 'E'
	check("failed elsewhere", st, idle, useRefused, wire.SQLStateInFailedTransaction)
	if got := st.canScatter(idle); got != useRefused {
		t.Errorf("failed transaction: canScatter %d, want useRefused", got)
	}
	if st.clientStatus() != 'E' {
		t.Errorf("clientStatus %q, want E", st.clientStatus())
	}
	if atts := st.endAll(); len(atts) != 2 || st.cur() != nil || st.life != stateIdle || st.txBegin != "" {
		t.Errorf("endAll: %d attachments, current %v, life %v, txBegin %q", len(atts), st.cur(), st.life, st.txBegin)
	}

	st = inTx()
	st.failDeferred() // an error the proxy reported (a failed scatter)
	if got, e := st.canUse("s1", true, idle); got != useRefused || e.Code != wire.SQLStateInFailedTransaction {
		t.Errorf("after a proxy-reported error: %d %v, want 25P02", got, e)
	}
	if st.syncOverride() != 'E' {
		t.Errorf("syncOverride %q, want E", st.syncOverride())
	}

	st = inTx()
	st.savepoint = true
	check("savepoint", st, idle, useRefused, wire.SQLStateFeatureNotSupported)

	st = inTx()
	st.pin()
	check("pinned", st, idle, useRefused, wire.SQLStateFeatureNotSupported)

	st = inTx()
	st.crossShard = false
	check("switch off", st, idle, useRefused, wire.SQLStateFeatureNotSupported)
	if got := st.canScatter(idle); got != useRefused {
		t.Errorf("switch off: canScatter %d, want useRefused", got)
	}
}
