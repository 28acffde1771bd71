package proxy

import (
	"strings"
	"testing"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/wire"
)

// lifeLog records the life-cycle changes a sessionState reports.
type lifeLog []string

func (l *lifeLog) sessionState(from, to state) { *l = append(*l, from.String()+">"+to.String()) }

// Transition table of sessionState: each case starts from a fresh state,
// applies steps and checks what the state says afterwards. No server:
// the connections are distinct pointers that are never used.
func TestSessionStateTransitions(t *testing.T) {
	a, b := &pool.Conn{}, &pool.Conn{}
	idle := pipeline{}
	unsynced := pipeline{unsynced: true}
	answering := pipeline{syncs: 1}
	type want struct {
		life         state
		conn         *pool.Conn
		shard        string
		client       byte // clientStatus
		override     byte // syncOverride
		inTx         bool
		label        string
		deferred     string
		changes      string // life-cycle changes, in order
		idleForKick  bool   // idle(pipeline{})
		boundUnsyncd bool   // bound(unsynced)
	}
	cases := []struct {
		name  string
		steps func(t *testing.T, st *sessionState)
		want  want
	}{
		{"new session", func(*testing.T, *sessionState) {},
			want{life: stateIdle, client: 'I', label: "idle", idleForKick: true}},
		{"attach for a statement", func(t *testing.T, st *sessionState) {
			if begin := st.attach(a, "s1", false, false, false); begin != "" {
				t.Errorf("begin = %q, want none", begin)
			}
		}, want{life: stateActive, conn: a, shard: "s1", client: 'I', label: "idle", changes: "idle>active", idleForKick: true, boundUnsyncd: true}},
		{"session pooling pins at attach", func(t *testing.T, st *sessionState) {
			st.attach(a, "s1", false, false, true)
		}, want{life: statePinned, conn: a, shard: "s1", client: 'I', label: "idle", changes: "idle>pinned", idleForKick: true, boundUnsyncd: true}},
		{"server opens a transaction", func(t *testing.T, st *sessionState) {
			st.attach(a, "s1", false, false, false)
			if prev, detach := st.ready(a, 'T', idle, false); prev != 'I' || detach {
				t.Errorf("ready(T) = %c, %v; want I, false", prev, detach)
			}
		}, want{life: stateActive, conn: a, shard: "s1", client: 'I', inTx: true, label: "in transaction", changes: "idle>active", boundUnsyncd: true}},
		{"transaction fails on the server", func(t *testing.T, st *sessionState) {
			st.attach(a, "s1", false, false, false)
			st.ready(a, 'T', idle, false)
			st.ready(a, 'E', idle, false)
		}, want{life: stateActive, conn: a, shard: "s1", client: 'I', inTx: true, label: "failed transaction", changes: "idle>active", boundUnsyncd: true}},
		{"transaction ends: connection let go", func(t *testing.T, st *sessionState) {
			st.attach(a, "s1", false, false, false)
			st.ready(a, 'T', idle, false)
			if prev, detach := st.ready(a, 'I', idle, false); prev != 'T' || !detach {
				t.Errorf("ready(I) = %c, %v; want T, true", prev, detach)
			}
		}, want{life: stateIdle, client: 'I', label: "idle", changes: "idle>active active>idle", idleForKick: true}},
		{"idle with requests in flight: kept", func(t *testing.T, st *sessionState) {
			st.attach(a, "s1", false, false, false)
			if _, detach := st.ready(a, 'I', answering, false); detach {
				t.Error("detached with a sync point unanswered")
			}
			if _, detach := st.ready(a, 'I', unsynced, false); detach {
				t.Error("detached with messages sent since the last sync point")
			}
		}, want{life: stateActive, conn: a, shard: "s1", client: 'I', label: "idle", changes: "idle>active", idleForKick: true, boundUnsyncd: true}},
		{"closing session keeps its connection", func(t *testing.T, st *sessionState) {
			st.attach(a, "s1", false, false, false)
			if _, detach := st.ready(a, 'I', idle, true); detach {
				t.Error("detached while closing")
			}
		}, want{life: stateActive, conn: a, shard: "s1", client: 'I', label: "idle", changes: "idle>active", idleForKick: true, boundUnsyncd: true}},
		{"pinned: kept at idle", func(t *testing.T, st *sessionState) {
			st.attach(a, "s1", false, false, false)
			if st.pin() {
				t.Error("pin: already pinned")
			}
			if !st.pin() {
				t.Error("second pin: not already pinned")
			}
			if _, detach := st.ready(a, 'I', idle, false); detach {
				t.Error("pinned session detached")
			}
		}, want{life: statePinned, conn: a, shard: "s1", client: 'I', label: "idle", changes: "idle>active active>pinned", idleForKick: true, boundUnsyncd: true}},
		{"deferred BEGIN", func(t *testing.T, st *sessionState) {
			st.openDeferred("BEGIN")
		}, want{life: stateIdle, client: 'T', inTx: true, label: "in transaction (not sent yet)", deferred: "BEGIN"}},
		{"deferred BEGIN, then COMMIT", func(t *testing.T, st *sessionState) {
			st.openDeferred("BEGIN")
			if tag := st.endDeferred(true); tag != "COMMIT" {
				t.Errorf("tag %q, want COMMIT", tag)
			}
		}, want{life: stateIdle, client: 'I', label: "idle", idleForKick: true}},
		{"deferred transaction fails, COMMIT rolls back", func(t *testing.T, st *sessionState) {
			st.openDeferred("BEGIN")
			if status := st.failDeferred(); status != 'E' {
				t.Errorf("failDeferred = %c, want E", status)
			}
			if st.clientStatus() != 'E' {
				t.Errorf("clientStatus = %c, want E", st.clientStatus())
			}
			if tag := st.endDeferred(true); tag != "ROLLBACK" {
				t.Errorf("tag %q, want ROLLBACK", tag)
			}
		}, want{life: stateIdle, client: 'I', label: "idle", idleForKick: true}},
		{"error outside a transaction", func(t *testing.T, st *sessionState) {
			if status := st.failDeferred(); status != 'I' {
				t.Errorf("failDeferred = %c, want I", status)
			}
		}, want{life: stateIdle, client: 'I', label: "idle", idleForKick: true}},
		{"deferred BEGIN sent with the first statement", func(t *testing.T, st *sessionState) {
			st.openDeferred("BEGIN ISOLATION LEVEL SERIALIZABLE")
			if begin := st.attach(a, "s2", false, false, false); begin != "BEGIN ISOLATION LEVEL SERIALIZABLE" {
				t.Errorf("begin = %q", begin)
			}
			st.beginSent()
			st.ready(a, 'T', idle, false)
		}, want{life: stateActive, conn: a, shard: "s2", client: 'I', inTx: true, label: "in transaction", changes: "idle>active", boundUnsyncd: true}},
		{"server refuses the deferred BEGIN", func(t *testing.T, st *sessionState) {
			st.openDeferred("BEGIN READ WRITE")
			st.attach(a, "s2", true, false, false)
			st.beginSent()
			st.ready(a, 'I', idle, false)
			st.beginRefused("BEGIN READ WRITE")
		}, want{life: stateIdle, client: 'E', inTx: true, label: "in transaction (not sent yet)", deferred: "BEGIN READ WRITE", changes: "idle>active active>idle"}},
		{"describing outside the deferred transaction", func(t *testing.T, st *sessionState) {
			st.openDeferred("BEGIN")
			if begin := st.attach(a, "s1", false, true, false); begin != "" {
				t.Errorf("begin = %q, want none on a describing attachment", begin)
			}
			if !st.cur().outsideTx {
				t.Error("attachment not marked outside the transaction")
			}
		}, want{life: stateActive, conn: a, shard: "s1", client: 'T', override: 'T', inTx: true, label: "idle", deferred: "BEGIN", changes: "idle>active", idleForKick: true, boundUnsyncd: true}},
		{"connection lost", func(t *testing.T, st *sessionState) {
			st.attach(a, "s1", false, false, false)
			st.ready(a, 'T', idle, false)
			if st.detach(b) {
				t.Error("detach of a connection the session does not hold")
			}
			if !st.detach(a) {
				t.Error("detach: not the session's")
			}
		}, want{life: stateIdle, client: 'I', label: "idle", changes: "idle>active active>idle", idleForKick: true}},
		{"session ends", func(t *testing.T, st *sessionState) {
			st.attach(a, "s1", false, false, false)
			atts := st.close()
			if len(atts) != 1 || atts[0].conn != a {
				t.Errorf("close gave back %v, want the connection", atts)
			}
		}, want{life: stateClosed, client: 'I', label: "idle", changes: "idle>active active>closed", idleForKick: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var log lifeLog
			st := sessionState{obs: &log}
			c.steps(t, &st)
			w := c.want
			if st.life != w.life {
				t.Errorf("life %v, want %v", st.life, w.life)
			}
			if st.conn() != w.conn {
				t.Errorf("conn %p, want %p", st.conn(), w.conn)
			}
			if a := st.cur(); a != nil && a.shard != w.shard {
				t.Errorf("shard %q, want %q", a.shard, w.shard)
			}
			if got := st.clientStatus(); got != w.client {
				t.Errorf("clientStatus %c, want %c", got, w.client)
			}
			if got := st.syncOverride(); got != w.override {
				t.Errorf("syncOverride %q, want %q", got, w.override)
			}
			if st.inTx() != w.inTx {
				t.Errorf("inTx %v, want %v", st.inTx(), w.inTx)
			}
			if got := st.txLabel(); got != w.label {
				t.Errorf("txLabel %q, want %q", got, w.label)
			}
			if st.deferredBegin != w.deferred {
				t.Errorf("deferred BEGIN %q, want %q", st.deferredBegin, w.deferred)
			}
			if got := strings.Join(log, " "); got != w.changes {
				t.Errorf("life-cycle changes %q, want %q", got, w.changes)
			}
			if got := st.idle(idle); got != w.idleForKick {
				t.Errorf("idle %v, want %v", got, w.idleForKick)
			}
			if got := st.bound(unsynced); got != w.boundUnsyncd {
				t.Errorf("bound(unsynced) %v, want %v", got, w.boundUnsyncd)
			}
		})
	}
}

// The one-shard rule: which statements the session runs where, waits
// for, or refuses, and with which SQLSTATE and message.
func TestSessionStateCanUse(t *testing.T) {
	conn := &pool.Conn{}
	idle := pipeline{}
	unsynced := pipeline{unsynced: true}
	answering := pipeline{syncs: 1}
	const (
		noSetup = iota
		attached
		inTx
		pinned
		deferredFailed
	)
	setup := func(kind int) *sessionState {
		st := &sessionState{}
		switch kind {
		case attached:
			st.attach(conn, "s1", false, false, false)
		case inTx:
			st.attach(conn, "s1", false, false, false)
			st.ready(conn, 'T', idle, false)
		case pinned:
			st.attach(conn, "s1", false, false, false)
			st.pin()
		case deferredFailed:
			st.openDeferred("BEGIN")
			st.failDeferred()
		}
		return st
	}
	cases := []struct {
		name  string
		setup int
		shard string
		fits  bool
		p     pipeline
		use   use
		code  string
		msg   string // part of the refusal's message
	}{
		{"no attachment: lend one", noSetup, "s2", false, idle, useNew, "", ""},
		{"failed deferred transaction", deferredFailed, "s2", false, idle, useRefused, wire.SQLStateInFailedTransaction, "current transaction is aborted"},
		{"attachment fits", inTx, "s1", true, idle, useAttached, "", ""},
		{"other shard after the answers: wait and switch", attached, "s2", false, answering, useWait, "", ""},
		{"other shard in the transaction", inTx, "s2", false, idle, useRefused, wire.SQLStateFeatureNotSupported, `this transaction runs on shard "s1"; the statement targets shard "s2"`},
		{"other shard in the unsynced pipeline", attached, "s2", false, unsynced, useRefused, wire.SQLStateFeatureNotSupported, `this pipeline runs on shard "s1"`},
		{"other shard in the pinned session", pinned, "s2", false, idle, useRefused, wire.SQLStateFeatureNotSupported, `this session is pinned to shard "s1"`},
		{"pinned session waits for nothing", pinned, "s2", false, answering, useRefused, wire.SQLStateFeatureNotSupported, `this pipeline runs on shard "s1"`},
		{"the primary while the pipeline reads a replica", attached, "s1", false, unsynced, useRefused, wire.SQLStateFeatureNotSupported, `reads from a replica of shard "s1"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := setup(c.setup)
			use, e := st.canUse(c.shard, c.fits, c.p)
			if use != c.use {
				t.Errorf("use %d, want %d", use, c.use)
			}
			switch {
			case c.code == "" && e != nil:
				t.Errorf("refusal %v, want none", e)
			case c.code != "" && e == nil:
				t.Errorf("no refusal, want %s", c.code)
			case c.code != "" && (e.Code != c.code || !strings.Contains(e.Message, c.msg)):
				t.Errorf("refusal %s %q, want %s containing %q", e.Code, e.Message, c.code, c.msg)
			}
		})
	}
}

// The rule for statements over several shards, and for statements
// allowed only in the open transaction.
func TestSessionStateScatterAndTxShard(t *testing.T) {
	conn := &pool.Conn{}
	st := &sessionState{}
	if got := st.canScatter(pipeline{}); got != useNew {
		t.Errorf("idle session: canScatter %d, want useNew", got)
	}
	st.openDeferred("BEGIN")
	if got := st.canScatter(pipeline{}); got != useRefused {
		t.Errorf("deferred transaction: canScatter %d, want useRefused", got)
	}
	st.endDeferred(false)
	st.attach(conn, "s1", false, false, false)
	if got := st.canScatter(pipeline{syncs: 1}); got != useWait {
		t.Errorf("between requests: canScatter %d, want useWait", got)
	}
	if got := st.canScatter(pipeline{unsynced: true}); got != useRefused {
		t.Errorf("in a pipeline: canScatter %d, want useRefused", got)
	}
	if _, ok := st.txShard(pipeline{}); ok {
		t.Error("txShard outside a transaction")
	}
	st.ready(conn, 'T', pipeline{}, false)
	if sh, ok := st.txShard(pipeline{}); !ok || sh != "s1" {
		t.Errorf("txShard = %q, %v; want s1", sh, ok)
	}
	if _, ok := st.txShard(pipeline{syncs: 1}); ok {
		t.Error("txShard with answers outstanding")
	}
	if got := st.canScatter(pipeline{}); got != useRefused {
		t.Errorf("in a transaction: canScatter %d, want useRefused", got)
	}
	st.pin()
	if got := st.canScatter(pipeline{syncs: 1}); got != useRefused {
		t.Errorf("pinned: canScatter %d, want useRefused", got)
	}
}

// Copy progress and the skip-to-Sync flag.
func TestSessionStateCopyAndSkip(t *testing.T) {
	conn := &pool.Conn{}
	st := &sessionState{}
	if st.inCopy(pipeline{syncs: 1}) {
		t.Error("inCopy without an attachment")
	}
	st.attach(conn, "s1", false, false, false)
	if st.inCopy(pipeline{}) {
		t.Error("inCopy before any copy")
	}
	if n := st.copyStarted(); n != 1 {
		t.Errorf("copyStarted = %d, want 1", n)
	}
	if !st.inCopy(pipeline{}) {
		t.Error("not inCopy after CopyInResponse")
	}
	st.copyEnded()
	if st.inCopy(pipeline{}) {
		t.Error("inCopy after CopyDone")
	}
	if !st.inCopy(pipeline{syncs: 1}) {
		t.Error("not inCopy with the COPY's sync point open")
	}
	st.skipBatch()
	if !st.skipToSync {
		t.Error("skipBatch did not skip")
	}
	st.synced()
	if st.skipToSync {
		t.Error("Sync did not end skipping")
	}
}

// A session's usual transaction attaches and detaches without
// allocating.
func TestSessionStateNoAllocation(t *testing.T) {
	conn := &pool.Conn{}
	st := &sessionState{}
	n := testing.AllocsPerRun(100, func() {
		st.attach(conn, "s1", false, false, false)
		st.ready(conn, 'T', pipeline{}, false)
		if u, _ := st.canUse("s1", true, pipeline{unsynced: true}); u != useAttached {
			t.Fatal("not attached")
		}
		st.ready(conn, 'I', pipeline{}, false)
	})
	if n != 0 {
		t.Errorf("%v allocations per transaction, want 0", n)
	}
}
