package proxy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/wire"
)

// dtxSession is a session's part in deadlock detection across shards
// (deadlock.go): the distributed ID of its transaction over several
// shards and which of its server connections carry it.
type dtxSession struct {
	// id is the open transaction's distributed ID ("" when it is on one
	// shard, or none); tagged are its connections whose application_name
	// names it. Under session.mu.
	id string
	// scatterSince is when the statement over several shards running in
	// the transaction started (unix nanos; 0 when none runs).
	scatterSince atomic.Int64
	// victim is the error the session reports instead of the next
	// 57014 of the transaction: the detector cancelled its statement to
	// break a deadlock across shards.
	victim atomic.Pointer[wire.Error]
	// more holds what only transactions over several shards use,
	// allocated on first use (the session struct stays in its size
	// class, see TestSessionSize). Under session.mu.
	more *dtxMore
}

// dtxMore is the part of dtxSession a session allocates when it first
// needs it.
type dtxMore struct {
	// tagged are the transaction's connections whose application_name
	// names it.
	tagged []*pool.Conn
	// sets are the parameter changes of the session's transaction, for
	// its other participants (settings.go).
	sets txSettings
}

// extra returns d.more, allocating it on first use.
func (d *dtxSession) extra() *dtxMore {
	if d.more == nil {
		d.more = &dtxMore{}
	}
	return d.more
}

// isTagged reports whether be carries the transaction's tag.
func (d *dtxSession) isTagged(be *pool.Conn) bool {
	return d.more != nil && slices.Contains(d.more.tagged, be)
}

// takeSets returns the parameter changes shard's participant has not
// run (see txSettings.take).
func (d *dtxSession) takeSets(shard string) string {
	if d.more == nil {
		return ""
	}
	return d.more.sets.take(shard)
}

// dtxTag returns the statement that tags a participant of the session's
// transaction over several shards, giving the transaction its ID (and
// the detector a watch on it) on first use. Callers hold s.mu.
func (s *session) dtxTag() string {
	if s.dtx.id == "" {
		s.dtx.id = s.srv.dl.newID()
		s.srv.dl.watch(s)
	}
	return dtxTagSQL(s.dtx.id)
}

// dtxTagged records that be carries the transaction's tag. Callers hold
// s.mu.
func (s *session) dtxTagged(be *pool.Conn) {
	m := s.dtx.extra()
	m.tagged = append(m.tagged, be)
}

// dtxBegin returns begin with the tag of the session's transaction
// appended (one simple query, answered by one ReadyForQuery), for a
// shard the transaction is about to be opened on; begin itself on a
// replica, whose waits the detector does not look at. Callers hold s.mu
// and record the connection with dtxTagged once it is attached.
func (s *session) dtxBegin(begin string, replica bool) string {
	if begin == "" || replica {
		return begin
	}
	return begin + "\n;" + s.dtxTag() // a trailing -- comment must not swallow the tag
}

// dtxTagParked tags be, a connection of the session idle in its
// transaction without a handler (the first shard's, when the transaction
// reaches a second one), unless it is tagged already, on a replica or in
// a failed transaction (which holds no locks any more). ParameterStatus
// of the change, and of its revert at the end of the transaction, go to
// the proxy, not to the client.
func (s *session) dtxTagParked(ctx context.Context, be *pool.Conn) error {
	s.mu.Lock()
	a := s.st.byConn(be)
	if a == nil || a.replica || a.txStatus != 'T' || s.dtx.isTagged(be) {
		s.mu.Unlock()
		return nil
	}
	sql := s.dtxTag()
	s.mu.Unlock()
	if _, err := be.ExecInTx(ctx, sql); err != nil {
		return asWireError(err)
	}
	s.mu.Lock()
	s.dtxTagged(be)
	s.mu.Unlock()
	return nil
}

// dtxTagCurrent tags the current attachment before a statement over
// several shards runs in the transaction (it has no handler then).
func (s *session) dtxTagCurrent(ctx context.Context) error {
	s.mu.Lock()
	be := s.st.conn()
	s.mu.Unlock()
	if be == nil {
		return nil
	}
	return s.dtxTagParked(ctx, be)
}

// dtxEnd forgets the transaction's distributed ID at its end. Callers
// hold s.mu.
func (s *session) dtxEnd() {
	if m := s.dtx.more; m != nil {
		m.sets.reset()
	}
	if s.dtx.id == "" && s.dtx.victim.Load() == nil {
		return
	}
	s.dtx.id = ""
	if m := s.dtx.more; m != nil {
		clear(m.tagged)
		m.tagged = m.tagged[:0]
	}
	s.dtx.victim.Store(nil)
	s.dtx.scatterSince.Store(0)
	s.srv.dl.unwatch(s)
}

// dtxScatter marks a statement over several shards running in the
// transaction (for the detector's wait) until the returned func is
// called; it then turns the statement's 57014 into the deadlock's error
// when the detector cancelled it. Once the statement has ended, however,
// the detector's cancel is not waited for any more.
func (s *session) dtxScatter() func(error) error {
	s.dtx.scatterSince.Store(time.Now().UnixNano())
	return func(err error) error {
		s.dtx.scatterSince.Store(0)
		err = s.dtxError(err)
		s.dtx.victim.Store(nil)
		return err
	}
}

// dtxError returns the deadlock's error instead of err when err is the
// 57014 of a statement the detector cancelled.
func (s *session) dtxError(err error) error {
	var we *wire.Error
	if err == nil || s.dtx.victim.Load() == nil || !errors.As(err, &we) || we.Code != wire.SQLStateQueryCanceled {
		return err
	}
	if e := s.dtx.victim.Swap(nil); e != nil {
		return e
	}
	return err
}

// dtxFrame returns the ErrorResponse the relay passes on for frame: the
// deadlock's error when frame is the 57014 of the statement the detector
// cancelled, else frame. Any error ends the statement the detector
// cancelled, and the transaction: a cancel arriving later finds nothing
// to cancel, so the conversion is disarmed.
func (s *session) dtxFrame(frame []byte) []byte {
	e := s.dtx.victim.Swap(nil)
	if e != nil && wire.ErrorCode(frame) == wire.SQLStateQueryCanceled {
		return wire.AppendErrorResponse(nil, e)
	}
	return frame
}

// dtxDisarm undoes the detector's arming with e (a victim's statement
// whose cancel was not sent), unless the conversion has been used.
func (s *session) dtxDisarm(e *wire.Error) {
	s.dtx.victim.CompareAndSwap(e, nil)
}

// dtxSettled is told that every statement sent to the session's current
// attachment has completed without an error: a statement the detector
// meant to cancel finished first, and the next 57014 is not the
// deadlock's. Callers hold s.mu.
func (s *session) dtxSettled() {
	if s.dtx.victim.Load() != nil && s.queue.empty() {
		s.dtx.victim.Store(nil)
	}
}

// dtxWaitingSince returns since when the session's transaction over
// several shards waits for an answer (zero when it does not, or is not
// one), and its ID. Callers hold s.mu.
func (s *session) dtxWaitingSince() (time.Time, string) {
	if s.dtx.id == "" {
		return time.Time{}, ""
	}
	var since time.Time
	q := &s.queue
	for i := q.head; i < len(q.items); i++ {
		if e := &q.items[i]; e.kind == entrySync && !e.sent.IsZero() {
			since = e.sent
			break
		}
	}
	if n := s.dtx.scatterSince.Load(); n != 0 {
		if t := time.Unix(0, n); since.IsZero() || t.Before(since) {
			since = t
		}
	}
	return since, s.dtx.id
}

// deadlockError is what the victim of a deadlock across shards gets.
func deadlockError(v dlVictim, shard string) *wire.Error {
	return &wire.Error{Code: wire.SQLStateDeadlockDetected,
		Message: "deadlock detected across shards",
		Detail: "Distributed transaction " + v.dtx + " waited on shard " + shard + " in a cycle of lock waits over shards " +
			strings.Join(v.shards, ", ") + " with " + strings.Join(slices.DeleteFunc(slices.Clone(v.members), func(m string) bool { return m == v.dtx }), ", ") +
			"; it was chosen to fail as the youngest.",
		Hint: "Roll the transaction back and retry it."}
}
