package proxy

import (
	"fmt"
	"strings"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/wire"
)

// The session's state and every transition of it. A session holds a set
// of attachments, one per shard it uses: a server connection with the
// transaction state the session has there. Which statements may use
// which shard, and when the session must stay where it is, is decided by
// the rules below (canUse, canScatter), not by the data structure: a
// pipeline and a pinned session stay on one shard; a transaction stays on
// one shard too, unless transactions.cross_shard is two_phase: then it
// opens a transaction on every shard it touches (multitx.go). The first
// attachment is the current one, whose answers the relay passes on; the
// others are parked, idle in the client's transaction, without a
// handler.
//
// The fields of sessionState are read anywhere (callers hold session.mu,
// except where a field says otherwise) but changed only by the methods in
// this file.

// state is a session's life cycle: idle while it holds no server
// connection, active while it holds one for a transaction or a pipeline,
// pinned while it holds one for the rest of the session, closed at the
// end. It is what the sessions gauge and SHOW CLIENTS report.
type state uint8

const (
	stateIdle   state = iota // no backend attached
	stateActive              // backend attached, transaction or pipeline in progress
	statePinned              // backend attached for the rest of the session
	stateClosed
)

func (s state) String() string {
	switch s {
	case stateIdle:
		return "idle"
	case stateActive:
		return "active"
	case statePinned:
		return "pinned"
	default:
		return "closed"
	}
}

// attachment is the session's server connection on one shard and the
// state of the session's transaction there.
type attachment struct {
	conn  *pool.Conn
	shard string
	// replica says conn is a replica of shard (read splitting);
	// readOnlyTx that it runs the session's READ ONLY transaction, whose
	// statements all stay there (the server refuses writes in it).
	replica, readOnlyTx bool
	// txStatus is the status of conn's last ReadyForQuery: 'I' idle, 'T'
	// in a transaction, 'E' in a failed transaction.
	txStatus byte
	// outsideTx marks an attachment made while a deferred BEGIN waits (to
	// describe statements): its ReadyForQuery must show the client's
	// transaction status, and statements must not run on it.
	outsideTx bool
	// wrote says a statement that may write ran in the transaction here
	// (a transaction over several shards commits it with two-phase
	// commit); lost that its protocol state is unknown: it is closed when
	// the transaction ends.
	wrote, lost bool
}

// inTx reports whether the server runs a transaction of the session.
func (a *attachment) inTx() bool { return a.txStatus != 'I' }

// pipeline is what the response queue says about the session's requests
// in flight: whether messages were sent since the last sync point
// (unsynced), and how many sync points are not answered yet.
type pipeline struct {
	unsynced bool
	syncs    int
}

// lifeObserver is told every life-cycle change (the metrics).
type lifeObserver interface {
	sessionState(from, to state)
}

// sessionState is a session's state: its life cycle, its attachments,
// the transaction the proxy acknowledged but has not sent to a shard yet
// (a deferred BEGIN) and whether it failed, an error that skips the rest
// of the client's batch, and COPY progress.
//
// Fields are ordered so that the small ones share words (an idle client
// keeps its session: TestSessionSize).
type sessionState struct {
	atts []attachment  // the current one first; more only in a transaction over several shards
	one  [1]attachment // atts' storage while it holds one
	// deferredBegin is a BEGIN the proxy acknowledged itself and sends to
	// the shard of the transaction's first statement ("" when none);
	// deferredFailed says that transaction failed before reaching a
	// shard: it ends with ROLLBACK (or COMMIT, answered ROLLBACK).
	deferredBegin string
	// txBegin is the BEGIN the transaction started with on its first
	// shard, sent to every further shard it touches ("" outside one, or
	// when it was not deferred); crossShard says transactions may span
	// shards (transactions.cross_shard: two_phase); savepoint that the
	// transaction set a savepoint, which stays on one shard.
	txBegin string
	// replay are the SAVEPOINTs and SET LOCALs of the deferred
	// transaction the proxy answered, oldest first, sent after its BEGIN
	// (deferredSavepoint, deferredSetLocal).
	replay []replayStmt
	obs    lifeObserver // nil in tests
	// copyEnds counts the CopyDone and CopyFail messages the client sent,
	// copyStarts the CopyInResponses the relay passed on (see
	// respQueue.dropCopySyncs).
	copyEnds, copyStarts uint32

	life           state
	deferredFailed bool
	crossShard     bool
	savepoint      bool
	// txAborted says the proxy reported an error in the transaction over
	// several shards (a statement over several shards that failed): it
	// has failed, as on PostgreSQL.
	txAborted bool
	// skipToSync says an error was reported mid-batch: serve drops the
	// client's messages until its Sync. Serve's alone (no lock).
	skipToSync bool
}

// setLife changes the life cycle, telling the observer.
func (st *sessionState) setLife(l state) {
	if st.life == l {
		return
	}
	if st.obs != nil {
		st.obs.sessionState(st.life, l)
	}
	st.life = l
}

// cur returns the attachment the session's statements go to, or nil.
func (st *sessionState) cur() *attachment {
	if len(st.atts) == 0 {
		return nil
	}
	return &st.atts[0]
}

// conn returns the current attachment's server connection, or nil.
func (st *sessionState) conn() *pool.Conn {
	if a := st.cur(); a != nil {
		return a.conn
	}
	return nil
}

// byConn returns the attachment of conn, or nil.
func (st *sessionState) byConn(conn *pool.Conn) *attachment {
	for i := range st.atts {
		if st.atts[i].conn == conn {
			return &st.atts[i]
		}
	}
	return nil
}

// attach adds a freshly lent connection of shard (a replica when replica
// is set) and returns the deferred BEGIN to send on it, if any. noBegin
// says the attachment only describes statements: the transaction is not
// started there (outsideTx). sessionPool pins the session (session
// pooling).
func (st *sessionState) attach(conn *pool.Conn, shard string, replica, noBegin, sessionPool bool) (begin string) {
	a := attachment{conn: conn, shard: shard, replica: replica, txStatus: 'I'}
	a.readOnlyTx = replica && st.deferredBegin != "" && !noBegin
	a.outsideTx = st.deferredBegin != "" && noBegin
	if st.atts == nil {
		st.atts = st.one[:0] // no allocation for the usual single attachment
	}
	st.atts = append(st.atts, a)
	if sessionPool {
		st.setLife(statePinned)
	} else {
		st.setLife(stateActive)
	}
	if a.outsideTx {
		return ""
	}
	return st.deferredBegin
}

// beginSent records that the deferred BEGIN went to the shard: the
// transaction is the attachment's now. It returns the statements that
// recreate the transaction's savepoints and SET LOCALs there, to send
// after the BEGIN ("" when none).
func (st *sessionState) beginSent() (replay string) {
	if st.deferredBegin != "" {
		st.txBegin = st.deferredBegin
	}
	if len(st.replay) > 0 && st.crossShard {
		// Its savepoints and SET LOCALs exist on this shard only.
		st.savepoint = true
	}
	st.deferredBegin = ""
	var b strings.Builder
	for i, r := range st.replay {
		if i > 0 {
			b.WriteString("\n;") // a trailing -- comment must not swallow the rest
		}
		if r.sql != "" {
			b.WriteString(r.sql)
			continue
		}
		b.WriteString("SAVEPOINT ")
		b.WriteString(`"` + strings.ReplaceAll(r.savepoint, `"`, `""`) + `"`)
	}
	st.replay = nil
	return b.String()
}

// replayStmt is a statement of a deferred transaction sent after its
// BEGIN: a savepoint (its name) or a SET LOCAL (sql).
type replayStmt struct {
	savepoint, sql string
}

// deferredSetLocal records a SET LOCAL of the deferred transaction that
// the server accepted (checked outside a transaction).
func (st *sessionState) deferredSetLocal(sql string) {
	st.replay = append(st.replay, replayStmt{sql: strings.TrimRight(strings.TrimSpace(sql), ";")})
}

// savepointOp is a savepoint statement of a deferred transaction.
type savepointOp uint8

const (
	savepointDefine     savepointOp = iota + 1 // SAVEPOINT name
	savepointRelease                           // RELEASE [SAVEPOINT] name
	savepointRollbackTo                        // ROLLBACK TO [SAVEPOINT] name
)

// deferredSavepoint answers a savepoint statement of the deferred
// transaction as PostgreSQL would (xact.c): its command tag, or its
// error. A savepoint is searched from the newest; RELEASE drops it and
// the newer ones, ROLLBACK TO keeps it, drops the newer ones and ends a
// failed state; in a failed transaction SAVEPOINT and RELEASE get 25P02.
func (st *sessionState) deferredSavepoint(op savepointOp, name string) (string, *wire.Error) {
	if st.deferredFailed && op != savepointRollbackTo {
		return "", wire.Errorf(wire.SQLStateInFailedTransaction, "current transaction is aborted, commands ignored until end of transaction block")
	}
	if op == savepointDefine {
		st.replay = append(st.replay, replayStmt{savepoint: name})
		return "SAVEPOINT", nil
	}
	i := len(st.replay) - 1
	for i >= 0 && (st.replay[i].sql != "" || st.replay[i].savepoint != name) {
		i--
	}
	if i < 0 {
		return "", wire.Errorf(wire.SQLStateInvalidSavepoint, "savepoint \"%s\" does not exist", name)
	}
	if op == savepointRelease {
		// The savepoint and the newer ones go; what ran after them stays.
		kept := st.replay[:i]
		for _, r := range st.replay[i:] {
			if r.sql != "" {
				kept = append(kept, r)
			}
		}
		st.replay = kept
		return "RELEASE", nil
	}
	st.replay = st.replay[:i+1] // undoes the newer SET LOCALs too
	st.deferredFailed = false
	return "ROLLBACK", nil
}

// detach removes conn's attachment (it goes back to the pool or is
// discarded) and reports whether the session had it. Without
// attachments the session is idle.
func (st *sessionState) detach(conn *pool.Conn) bool {
	for i := range st.atts {
		if st.atts[i].conn == conn {
			last := len(st.atts) - 1
			copy(st.atts[i:], st.atts[i+1:])
			st.atts[last] = attachment{} // keep no pointer to the connection
			st.atts = st.atts[:last]
			if len(st.atts) == 0 {
				st.txBegin, st.savepoint, st.txAborted = "", false, false
				if st.life != stateClosed {
					st.setLife(stateIdle)
				}
			}
			return true
		}
	}
	return false
}

// ready records conn's ReadyForQuery with status, the pipeline as it is
// after it, and reports the status before it and whether the connection
// is let go: outside a transaction, with every request answered, unless
// the session is pinned or ending (closing).
func (st *sessionState) ready(conn *pool.Conn, status byte, p pipeline, closing bool) (prev byte, detach bool) {
	prev = 'I'
	if a := st.byConn(conn); a != nil {
		prev, a.txStatus = a.txStatus, status
	}
	detach = p.syncs == 0 && !p.unsynced && status == 'I' && st.life == stateActive && !closing
	if detach {
		st.detach(conn)
	}
	return prev, detach
}

// pin keeps the session's connection for the rest of the session, and
// reports whether it was pinned already.
func (st *sessionState) pin() (already bool) {
	already = st.life == statePinned
	st.setLife(statePinned)
	return already
}

// close ends the session: its attachments are the caller's to give back.
func (st *sessionState) close() []attachment {
	atts := st.atts
	st.atts = st.atts[len(st.atts):]
	st.setLife(stateClosed)
	return atts
}

// openDeferred records a BEGIN the proxy acknowledged (see
// deferredTransaction).
func (st *sessionState) openDeferred(begin string) {
	st.deferredBegin = begin
	st.deferredFailed = false
	st.replay = nil
}

// endDeferred ends the deferred transaction with COMMIT (commit) or
// ROLLBACK and returns the command tag: a failed transaction rolls back.
func (st *sessionState) endDeferred(commit bool) string {
	tag := "ROLLBACK"
	if commit && !st.deferredFailed {
		tag = "COMMIT"
	}
	st.deferredBegin = ""
	st.deferredFailed = false
	st.replay = nil
	return tag
}

// failDeferred records an error the proxy reported itself: a deferred
// transaction fails. It returns the transaction status to show.
func (st *sessionState) failDeferred() byte {
	if st.deferredBegin == "" && st.crossShard && st.txBegin != "" && len(st.atts) > 0 {
		st.txAborted = true
		return 'E'
	}
	if st.deferredBegin == "" {
		return 'I'
	}
	st.deferredFailed = true
	return 'E' // the transaction the client opened has failed
}

// beginRefused records that the server refused the deferred BEGIN begin
// (probeBegin): the client's transaction is failed.
func (st *sessionState) beginRefused(begin string) {
	st.deferredBegin = begin
	st.deferredFailed = true
}

// skipBatch makes serve drop the client's messages up to its Sync.
func (st *sessionState) skipBatch() { st.skipToSync = true }

// synced ends skipping at the client's Sync.
func (st *sessionState) synced() { st.skipToSync = false }

// copyEnded counts a CopyDone or CopyFail the client sent.
func (st *sessionState) copyEnded() { st.copyEnds++ }

// copyStarted counts a CopyInResponse passed on, and returns the count.
func (st *sessionState) copyStarted() uint32 {
	st.copyStarts++
	return st.copyStarts
}

// inCopy reports whether copy data from the client goes to the server:
// a sync point (the COPY's) is open, or a copy-in started by an
// extended-protocol Execute (whose early Sync was dropped) has not ended.
func (st *sessionState) inCopy(p pipeline) bool {
	return st.cur() != nil && (p.syncs > 0 || st.copyStarts > st.copyEnds)
}

// clientStatus is the transaction status to report while no connection
// is attached: in a transaction the proxy acknowledged but did not send
// yet ('T', or 'E' failed), or idle.
func (st *sessionState) clientStatus() byte {
	switch {
	case st.deferredBegin == "" && st.crossShard && st.txBegin != "" && len(st.atts) > 0:
		if st.txFailed() {
			return 'E'
		}
		return 'T'
	case st.deferredBegin == "":
		return 'I'
	case st.deferredFailed:
		return 'E'
	default:
		return 'T'
	}
}

// syncOverride is the ReadyForQuery status to show the client for a Sync
// sent now: on an attachment outside the client's transaction the status
// of that transaction; otherwise 0, the server's own.
func (st *sessionState) syncOverride() byte {
	if st.txAborted && st.cur() != nil {
		return 'E' // failed by the proxy; the server does not know yet
	}
	if a := st.cur(); a == nil || !a.outsideTx {
		return 0
	}
	if st.deferredFailed {
		return 'E'
	}
	return 'T'
}

// inTx reports whether the client is in a transaction: deferred, or on
// an attachment.
func (st *sessionState) inTx() bool {
	a := st.cur()
	return st.deferredBegin != "" || (a != nil && a.inTx())
}

// bound reports whether the session must stay on its attachment: its
// pipeline is not synced, it is pinned, or it runs a transaction there
// (with every request answered, so the status is current).
func (st *sessionState) bound(p pipeline) bool {
	a := st.cur()
	return a != nil && (p.unsynced || st.life == statePinned || (p.syncs == 0 && a.inTx()))
}

// betweenRequests reports whether the attachment is kept only for the
// answers of earlier requests: the client has sent a Sync since its last
// message there, outside a pinned session.
func (st *sessionState) betweenRequests(p pipeline) bool {
	return st.cur() != nil && !p.unsynced && p.syncs > 0 && st.life != statePinned
}

// txShard returns the shard of the session's open transaction, when the
// attachment runs one with every request answered.
func (st *sessionState) txShard(p pipeline) (string, bool) {
	a := st.cur()
	if a == nil || a.outsideTx || !a.inTx() || p.syncs != 0 {
		return "", false
	}
	return a.shard, true
}

// waitsForDescribe reports whether a statement must wait for an
// attachment made only to describe statements (outsideTx) to go back:
// the client's transaction then starts for real.
func (st *sessionState) waitsForDescribe(p pipeline) bool {
	a := st.cur()
	return a != nil && a.outsideTx && !p.unsynced && p.syncs > 0
}

// idle reports whether the session is between transactions, with
// nothing in flight (a shutting-down server says goodbye to it).
func (st *sessionState) idle(p pipeline) bool {
	a := st.cur()
	if a == nil {
		return st.deferredBegin == ""
	}
	return p.syncs == 0 && !p.unsynced && !a.inTx()
}

// use is what a statement does with the session's attachments.
type use uint8

const (
	useAttached use = iota // run on the current attachment
	useNew                 // lend a connection of the shard and attach it
	useWait                // wait for the attachment's earlier requests, then decide again
	useRefused             // refused: the session must stay where it is
	useSwitch              // park the current attachment; run on shard's (attached now if new) in the transaction
	useTx                  // over several shards: on the session's attachments, in its transaction
)

// canUse is the rule for a statement for shard. fits says the current
// attachment can run it (its shard, or any shard, on a server that may).
// Without an attachment a connection of shard is lent, unless the
// transaction the proxy acknowledged has failed (25P02). A session that
// must stay on its attachment (bound) refuses another shard with 0A000;
// otherwise it waits for its earlier requests and switches. With
// cross-shard transactions, a transaction whose requests are all answered
// switches to shard (useSwitch) instead, unless it has failed (25P02) or
// set a savepoint (0A000).
func (st *sessionState) canUse(shard string, fits bool, p pipeline) (use, *wire.Error) {
	a := st.cur()
	switch {
	case a == nil && st.deferredFailed:
		return useRefused, errTxAborted()
	case a == nil:
		return useNew, nil
	case st.txAborted:
		return useRefused, errTxAborted()
	case fits:
		return useAttached, nil
	case !st.bound(p):
		return useWait, nil
	case st.spansShards(p) && st.txFailed():
		return useRefused, errTxAborted()
	case st.spansShards(p) && st.savepoint && st.byShard(shard) == nil:
		return useRefused, errSavepointOverShards()
	case st.spansShards(p):
		return useSwitch, nil
	case a.shard == shard:
		return useRefused, replicaPipelineError(shard)
	}
	return useRefused, st.crossShardError(a.shard, shard, p)
}

// canScatter is the rule for a statement over several shards: it runs
// (useNew: on connections of its own) when the session has no attachment
// and no deferred transaction, waits while the attachment only answers
// earlier requests, and is refused otherwise (the caller says why).
func (st *sessionState) canScatter(p pipeline) use {
	switch {
	case st.cur() == nil && st.deferredBegin == "":
		return useNew
	case st.betweenRequests(p):
		return useWait
	case st.crossShard && !st.deferredFailed && !st.savepoint && len(st.replay) == 0 && (st.cur() == nil || st.spansShards(p) && !st.txFailed()):
		return useTx
	}
	return useRefused
}

// spansShards reports whether the session's transaction may take its
// next statement to another shard: cross-shard transactions are on, the
// transaction started with a deferred BEGIN (sent to each shard), every
// request is answered, and the session is not pinned.
func (st *sessionState) spansShards(p pipeline) bool {
	a := st.cur()
	return st.crossShard && a != nil && st.txBegin != "" && !a.outsideTx && a.inTx() &&
		!p.unsynced && p.syncs == 0 && st.life != statePinned
}

// txFailed reports whether the transaction failed on one of its shards.
func (st *sessionState) txFailed() bool {
	if st.txAborted {
		return true
	}
	for i := range st.atts {
		if st.atts[i].txStatus == 'E' {
			return true
		}
	}
	return false
}

// byShard returns the attachment of shard, or nil.
func (st *sessionState) byShard(shard string) *attachment {
	for i := range st.atts {
		if st.atts[i].shard == shard {
			return &st.atts[i]
		}
	}
	return nil
}

// switchTo makes shard's attachment the current one, parking the one
// before it, and returns it (nil when the session has none of shard).
func (st *sessionState) switchTo(shard string) *attachment {
	for i := range st.atts {
		if st.atts[i].shard == shard {
			st.atts[0], st.atts[i] = st.atts[i], st.atts[0]
			return &st.atts[0]
		}
	}
	return nil
}

// attachMore adds a freshly lent connection of shard to the transaction
// as the current attachment (parking the one before it) and returns the
// BEGIN to open the transaction there with.
func (st *sessionState) attachMore(conn *pool.Conn, shard string, replica bool) (begin string) {
	st.atts = append(st.atts, attachment{conn: conn, shard: shard, replica: replica, readOnlyTx: replica, txStatus: 'I'})
	last := len(st.atts) - 1
	st.atts[0], st.atts[last] = st.atts[last], st.atts[0]
	return st.txBegin
}

// inTxOverShards reports whether a statement over several shards runs in
// the session's transaction (canScatter's useTx): cross-shard
// transactions are on and the session is in a transaction, deferred or
// opened with a deferred BEGIN.
func (st *sessionState) inTxOverShards() bool {
	return st.crossShard && (st.deferredBegin != "" && len(st.atts) == 0 || st.txBegin != "" && len(st.atts) > 0)
}

// attachParked adds conn, idle in the transaction on shard, as a parked
// attachment (the current one when it is the first).
func (st *sessionState) attachParked(conn *pool.Conn, shard string) {
	if st.atts == nil {
		st.atts = st.one[:0]
	}
	st.atts = append(st.atts, attachment{conn: conn, shard: shard, txStatus: 'T'})
	if st.life == stateIdle {
		st.setLife(stateActive)
	}
}

// endAll ends the transaction over several shards: the attachments are
// the caller's to give back, and the session is idle.
func (st *sessionState) endAll() []attachment {
	atts := append([]attachment(nil), st.atts...)
	for i := range st.atts {
		st.atts[i] = attachment{}
	}
	st.atts = st.atts[:0]
	st.txBegin, st.savepoint, st.txAborted = "", false, false
	st.deferredBegin, st.deferredFailed = "", false
	if st.life != stateClosed {
		st.setLife(stateIdle)
	}
	return atts
}

// errTxAborted is PostgreSQL's refusal of a statement in a failed
// transaction.
func errTxAborted() *wire.Error {
	return wire.Errorf(wire.SQLStateInFailedTransaction, "current transaction is aborted, commands ignored until end of transaction block")
}

// errSavepointOverShards refuses a savepoint in a transaction over
// several shards.
func errSavepointOverShards() *wire.Error {
	return &wire.Error{Code: wire.SQLStateFeatureNotSupported,
		Message: "savepoints are not supported in a transaction over several shards (a savepoint or SET LOCAL keeps a transaction on its shard)",
		Hint:    "Use savepoints and SET LOCAL in transactions that stay on one shard, or drop them."}
}

// crossShardError is the refusal of a statement for shard to while the
// session must stay on shard from.
func (st *sessionState) crossShardError(from, to string, p pipeline) *wire.Error {
	why := fmt.Sprintf("this transaction runs on shard %q; the statement targets shard %q", from, to)
	hint := "Keep each transaction on one shard (one sharding key), or end the transaction first."
	a := st.cur()
	switch {
	case st.crossShard && a.inTx() && p.unsynced && st.life != statePinned:
		why = fmt.Sprintf("this transaction's pipeline runs on shard %q; the statement targets shard %q", from, to)
		hint = "Send a Sync (end the batch) before a statement for another shard."
	case st.life == statePinned && !a.inTx() && p.syncs == 0 && !p.unsynced:
		why = fmt.Sprintf("this session is pinned to shard %q (session pooling or session state); the statement targets shard %q", from, to)
		hint = "Use a separate connection for the other shard."
	case !a.inTx():
		why = fmt.Sprintf("this pipeline runs on shard %q; the statement targets shard %q", from, to)
		hint = "The statements up to a Sync run as one implicit transaction, on one shard: send a Sync (end the batch) before using another shard. With JDBC, run one executeBatch per shard, or set reWriteBatchedInserts=true for a batch of INSERTs."
	}
	return &wire.Error{Code: wire.SQLStateFeatureNotSupported, Message: "cross-shard statement refused: " + why, Hint: hint}
}

// replicaPipelineError is the refusal of a statement that needs the
// primary of shard while the session's unsynced pipeline runs on one of
// its replicas.
func replicaPipelineError(shard string) *wire.Error {
	return &wire.Error{Code: wire.SQLStateFeatureNotSupported,
		Message: fmt.Sprintf("statement refused: this pipeline reads from a replica of shard %q and the statement needs its primary", shard),
		Hint:    "Send a Sync (end the batch) before the write, put the write first, or set reads.read_from: primary for this user."}
}

// txLabel describes the client's transaction for SHOW CLIENTS.
func (st *sessionState) txLabel() string {
	a := st.cur()
	switch {
	case a != nil && a.txStatus == 'T':
		return "in transaction"
	case a != nil && a.txStatus == 'E':
		return "failed transaction"
	case a == nil && st.deferredBegin != "":
		return "in transaction (not sent yet)"
	}
	return "idle"
}
