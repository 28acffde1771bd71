package proxy

import (
	"strings"

	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/wire"
)

// Transactions the proxy defers: BEGIN is acknowledged by the proxy and
// sent to the shard of the transaction's first statement.

// deferredTransaction handles transaction control while no backend is
// attached, in transaction pooling: BEGIN is acknowledged by the proxy and
// sent later to the shard of the transaction's first statement; COMMIT or
// ROLLBACK of a transaction that never reached a shard is answered by the
// proxy. It reports whether it answered the statement.
func (s *session) deferredTransaction(info router.Info, sql string) (bool, error) {
	if !s.canDeferTx(info, sql) {
		return false, nil
	}
	tag := s.applyDeferredTx(info, sql)
	s.out = wire.AppendString(s.out, 'C', tag)
	s.out = wire.AppendReadyForQuery(s.out, s.idleStatus())
	return true, nil
}

// canDeferTx reports whether the proxy answers the transaction-control
// statement sql itself (see deferredTransaction).
func (s *session) canDeferTx(info router.Info, sql string) bool {
	if s.mode != PoolTransaction || info.Class&(router.ClassBegin|router.ClassCommit|router.ClassRollback) == 0 ||
		strings.Contains(strings.TrimRight(sql, "; \t\r\n"), ";") {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.be != nil || s.state == statePinned {
		return false
	}
	if info.Has(router.ClassBegin) {
		return s.pendingBegin == "" // else let the server warn about the nested BEGIN
	}
	return s.pendingBegin != "" && !containsFoldASCII(sql, "chain")
}

// applyDeferredTx does what a statement canDeferTx accepted does to the
// session, and returns its command tag.
func (s *session) applyDeferredTx(info router.Info, sql string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	tag := "ROLLBACK"
	switch {
	case info.Has(router.ClassBegin):
		s.pendingBegin = strings.Clone(sql)
		s.beginFailed = false
		s.txRouter = s.srv.router() // the transaction's map
		return "BEGIN"
	case info.Has(router.ClassCommit) && !s.beginFailed:
		tag = "COMMIT"
	}
	s.pendingBegin = ""
	s.beginFailed = false
	return tag
}

func containsFoldASCII(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), sub)
}

// syncOverrideLocked is the ReadyForQuery status to show the client for a
// Sync sent now: on an attachment made outside the client's transaction
// (outsideTx) the status of that transaction, counted in s.overrides for
// the relay; otherwise 0, the server's own. s.mu must be held.
func (s *session) syncOverrideLocked() byte {
	if !s.outsideTx {
		return 0
	}
	s.overrides.Add(1)
	if s.beginFailed {
		return 'E'
	}
	return 'T'
}

// idleStatus is the transaction status to report while no backend is
// attached: in a transaction the proxy acknowledged but did not send yet,
// or idle.
func (s *session) idleStatus() byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.pendingBegin == "":
		return 'I'
	case s.beginFailed:
		return 'E'
	default:
		return 'T'
	}
}
