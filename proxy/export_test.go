package proxy

// WatchedTransactions returns how many sessions' transactions over
// several shards the deadlock detector watches (deadlock_detect.go).
func (s *Server) WatchedTransactions() int {
	s.dl.mu.Lock()
	defer s.dl.mu.Unlock()
	return len(s.dl.txs)
}
