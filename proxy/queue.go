package proxy

import "time"

// entryKind says which response an entry waits for.
type entryKind uint8

const (
	entrySync  entryKind = iota + 1 // ReadyForQuery after Sync, Query or FunctionCall
	entryParse                      // ParseComplete
	entryClose                      // CloseComplete
	// entryBind is a BindComplete of a Bind the proxy injected (see
	// raiseViaServer); the client's Binds have no entries.
	entryBind
)

// entry is one request sent to the backend whose response needs
// bookkeeping. Responses arrive in request order; after an error the
// backend skips everything up to the next Sync, so entries between the
// error and the sync entry never get their response.
type entry struct {
	kind    entryKind
	swallow bool   // the proxy injected the request: hide the response
	name    string // entryParse: statement name added to the backend's set
	// stmt is, for the client's own Parse of a named statement, that
	// statement: forgotten when the Parse does not complete.
	stmt *stmt
	sync syncEntry
	sent time.Time // entrySync: for the latency histogram
}

// syncEntry carries what to do when a sync point completes without error.
type syncEntry struct {
	setting       *settingChange
	deallocateAll bool
	// status, when set, replaces the transaction status in this sync
	// point's ReadyForQuery (a deferred transaction the server does not
	// know about yet).
	status byte
	// hide drops this sync point's ReadyForQuery: the proxy sent the
	// Sync itself (held-back messages answered before a Bind over
	// several shards).
	hide bool
	// captureLSN marks the hidden WAL position query (reads.go).
	captureLSN bool
	// clientSync marks the sync point of a client's Sync message, and
	// copyEnds is how many CopyDone/CopyFail the client had sent before
	// it: a Sync sent during COPY FROM STDIN is ignored by the server
	// (dropCopySyncs).
	clientSync bool
	copyEnds   uint32
	// drops are the client's named statements when it sent DEALLOCATE
	// ALL or DISCARD ALL (deallocateAll), or DEALLOCATE of one in session
	// pooling: forgotten when it completes.
	drops *[]*stmt
	// retry marks a request serve may send again when it fails with
	// PS001 (fencedretry.go).
	retry bool
}

// respQueue is a FIFO of entries. It is owned by a session and guarded by
// the session's mutex.
type respQueue struct {
	items []entry
	head  int
	syncs int // number of sync entries queued
	// gone are client statements the server does not have (their Parse
	// failed or was skipped, or they were deallocated), for serve to
	// forget (session.forgetStatements); reset leaves them.
	gone []*stmt
}

func (q *respQueue) reset() {
	clear(q.items)
	q.items = q.items[:0]
	q.head = 0
	q.syncs = 0
}

func (q *respQueue) push(e entry) {
	if e.kind == entrySync {
		q.syncs++
	}
	q.items = append(q.items, e)
}

// popResponse pops the entry a ParseComplete or CloseComplete answers.
// It reports false (and pops nothing) when the head is a sync entry,
// which would mean the response answers nothing the proxy recorded.
func (q *respQueue) popResponse() (entry, bool) {
	if q.head >= len(q.items) || q.items[q.head].kind == entrySync {
		return entry{}, false
	}
	e := q.items[q.head]
	q.items[q.head] = entry{}
	q.head++
	q.compact()
	return e, true
}

// popBind pops the head of the queue when it is an entryBind: the
// BindComplete that just arrived answers the proxy's own Bind.
func (q *respQueue) popBind() bool {
	if q.head >= len(q.items) || q.items[q.head].kind != entryBind {
		return false
	}
	q.items[q.head] = entry{}
	q.head++
	q.compact()
	return true
}

// empty reports whether no entry is queued.
func (q *respQueue) empty() bool { return q.head >= len(q.items) }

// peek returns the entry at the head of the queue.
func (q *respQueue) peek() (entry, bool) {
	if q.head >= len(q.items) {
		return entry{}, false
	}
	return q.items[q.head], true
}

// dropCopySyncs removes, from the head of the queue, the sync entries of
// client Syncs sent before the client ended the copy-in that just started
// (the n-th of the session): PostgreSQL ignores Sync during copy-in, so
// they will never be answered. It returns how many it removed and how
// many of those had a status override.
func (q *respQueue) dropCopySyncs(n uint32) (dropped, overrides int) {
	for q.head < len(q.items) {
		e := q.items[q.head]
		if e.kind != entrySync || !e.sync.clientSync || e.sync.copyEnds >= n {
			break
		}
		if e.sync.status != 0 || e.sync.hide {
			overrides++
		}
		q.items[q.head] = entry{}
		q.head++
		q.syncs--
		dropped++
	}
	q.compact()
	return dropped, overrides
}

// firstSync returns the first sync entry queued.
func (q *respQueue) firstSync() (entry, bool) {
	for i := q.head; i < len(q.items); i++ {
		if q.items[i].kind == entrySync {
			return q.items[i], true
		}
	}
	return entry{}, false
}

// popSync pops entries up to and including the first sync entry and
// returns it, with the names of Parse entries that never completed (their
// statements are not on the backend).
func (q *respQueue) popSync() (entry, []string) {
	var failed []string
	for q.head < len(q.items) {
		e := q.items[q.head]
		q.items[q.head] = entry{}
		q.head++
		if e.kind == entrySync {
			q.syncs--
			q.compact()
			return e, failed
		}
		if e.kind == entryParse && e.name != "" {
			failed = append(failed, e.name)
		}
		if e.stmt != nil {
			q.gone = append(q.gone, e.stmt)
		}
	}
	q.compact()
	return entry{}, failed
}

// compact reclaims popped slots: at once when the queue is empty, and by
// moving the live entries to the front when most slots are dead (a client
// that always has a request in flight never empties it).
func (q *respQueue) compact() {
	switch {
	case q.head == len(q.items):
		q.items = q.items[:0]
		q.head = 0
	case q.head >= 64 && q.head*2 >= len(q.items):
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
}
