package proxy

import (
	"log/slog"
	"time"

	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/wire"
)

// relay copies the backend's responses to the client for one attachment,
// doing the bookkeeping recorded in the response queue, and detaches the
// backend when the transaction ends (transaction pooling).
func (s *session) relay(be *pool.Conn) {
	defer s.relays.Done()
	out := s.rbuf[:0]
	segFailed := false
	sawFatal := false
	for {
		if len(out) > 0 && be.Reader.Buffered() == 0 {
			if !s.writeClient(out) {
				return
			}
			out = out[:0]
		}
		typ, frame, err := be.Reader.Next()
		if err != nil {
			s.relayFailed(be, out, err, sawFatal)
			return
		}
		switch typ {
		case 'Z':
			out = append(out, frame...)
			if !s.writeClient(out) {
				return
			}
			out = out[:0]
			var status byte = 'I'
			if len(frame) > wire.HeaderLen {
				status = frame[wire.HeaderLen]
			}
			if s.readyForQuery(be, status, segFailed, out) {
				return
			}
			segFailed = false
			continue
		case '1', '3': // ParseComplete, CloseComplete
			s.mu.Lock()
			e, ok := s.queue.popResponse()
			s.mu.Unlock()
			if ok && e.swallow {
				continue
			}
		case 'E':
			segFailed = true
			s.srv.metrics.errorCode(wire.ErrorCode(frame))
			if sev := wire.ErrorField(frame, 'V'); sev == "FATAL" || sev == "PANIC" {
				sawFatal = true
			}
		case 'C':
			s.lastTag = cstring(frame[wire.HeaderLen:])
		}
		out = append(out, frame...)
		if len(out) >= flushThreshold {
			if !s.writeClient(out) {
				return
			}
			out = out[:0]
		}
	}
}

// readyForQuery does the bookkeeping of a completed sync point and reports
// whether the backend was detached (the relay must then stop).
func (s *session) readyForQuery(be *pool.Conn, status byte, failed bool, out []byte) bool {
	s.mu.Lock()
	e, rolledBack := s.queue.popSync()
	for _, name := range rolledBack {
		delete(be.Prepared, name)
	}
	prev := s.txStatus
	s.txStatus = status
	if !failed {
		if e.sync.setting != nil {
			if status == 'I' {
				s.applySetting(be, e.sync.setting)
			} else {
				s.tentative = append(s.tentative, e.sync.setting)
			}
		}
		if e.sync.deallocateAll {
			clear(be.Prepared)
		}
	}
	if status == 'I' && prev != 'I' && len(s.tentative) > 0 {
		if s.lastTag == "COMMIT" {
			for _, c := range s.tentative {
				s.applySetting(be, c)
			}
		}
		s.tentative = s.tentative[:0]
	}
	s.lastTag = ""
	detach := s.queue.syncs == 0 && !s.unsynced && status == 'I' && s.state == stateActive && !s.closing
	if detach {
		s.be = nil
		s.rbuf = out // the next relay reuses the buffer
		s.setState(stateIdle)
	}
	s.mu.Unlock()
	if !e.sent.IsZero() {
		s.srv.metrics.query(time.Since(e.sent))
	}
	if detach {
		be.Pool().Release(be)
		s.srv.metrics.transaction()
		if s.srv.shuttingDown() {
			_ = s.conn.SetReadDeadline(time.Now()) // wake serve to say goodbye
		}
	}
	return detach
}

// applySetting records a completed session parameter change. Callers hold
// s.mu.
func (s *session) applySetting(be *pool.Conn, c *settingChange) {
	s.sets = s.sets.with(c)
	if c.resets() {
		be.SettingsKey = unknownSettings
	} else {
		be.SettingsKey = s.sets.key
	}
	if c.discardsStatements() {
		clear(be.Prepared)
	}
}

// writeClient writes relay output to the client. On failure the client is
// gone: the relay leaves the backend to serve (marked dirty), closes the
// client connection so serve wakes up, and returns false.
func (s *session) writeClient(out []byte) bool {
	if _, err := s.conn.Write(out); err != nil {
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		_ = s.conn.Close()
		return false
	}
	return true
}

// relayFailed handles a read error from the backend. When serve is
// stopping the relay, the error is the wake-up deadline. Otherwise the
// server connection is lost: tell the client, discard the backend and end
// the session, since the client's transaction state is gone.
func (s *session) relayFailed(be *pool.Conn, out []byte, err error, sawFatal bool) {
	s.mu.Lock()
	if s.closing {
		// serve's wake-up deadline: the backend is serve's now, and
		// whether it is clean follows from the response queue.
		s.mu.Unlock()
		return
	}
	s.be = nil
	s.setState(stateIdle)
	s.mu.Unlock()
	slog.Info("server connection lost", "server", be.Addr, "user", s.user.cfg.Name, "err", err)
	be.Pool().Discard(be)
	if !sawFatal {
		s.srv.metrics.errorCode(wire.SQLStateConnectionFailure)
		out = wire.AppendErrorResponse(out, &wire.Error{
			Severity: "FATAL",
			Code:     wire.SQLStateConnectionFailure,
			Message:  "server closed the connection unexpectedly",
			Detail:   "The PostgreSQL server behind pgshard terminated the connection; the transaction, if any, is lost.",
		})
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = s.conn.Write(out)
	_ = s.conn.Close()
}
