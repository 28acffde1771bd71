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
	if s.mode != PoolTransaction || info.Class&(router.ClassBegin|router.ClassCommit|router.ClassRollback) == 0 ||
		strings.Contains(strings.TrimRight(sql, "; \t\r\n"), ";") {
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.be != nil || s.state == statePinned {
		return false, nil
	}
	switch {
	case info.Has(router.ClassBegin):
		if s.pendingBegin != "" {
			return false, nil // let the server warn about the nested BEGIN
		}
		s.pendingBegin = strings.Clone(sql)
		s.beginFailed = false
		s.out = wire.AppendString(s.out, 'C', "BEGIN")
		s.out = wire.AppendReadyForQuery(s.out, 'T')
		return true, nil
	case s.pendingBegin == "" || containsFoldASCII(sql, "chain"):
		return false, nil
	case info.Has(router.ClassCommit) && !s.beginFailed:
		s.out = wire.AppendString(s.out, 'C', "COMMIT")
	default:
		s.out = wire.AppendString(s.out, 'C', "ROLLBACK")
	}
	s.pendingBegin = ""
	s.beginFailed = false
	s.out = wire.AppendReadyForQuery(s.out, 'I')
	return true, nil
}

func containsFoldASCII(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), sub)
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
