package proxy

import (
	"slices"
	"testing"
	"time"

	"github.com/pgshard/pgshard/router"
)

func parseEntry(name string) entry { return entry{kind: entryParse, name: name} }
func syncWith(tag string) entry {
	return entry{kind: entrySync, sent: time.Unix(int64(len(tag)), 0),
		sync: syncEntry{setting: &settingChange{sql: tag, info: router.Info{Class: router.ClassSet, Param: "x"}}}}
}

func TestRespQueueInOrder(t *testing.T) {
	var q respQueue
	q.push(parseEntry("s1"))
	q.push(parseEntry("")) // unnamed
	q.push(entry{kind: entryClose, swallow: true})
	q.push(syncWith("SET x = 1"))
	if q.syncs != 1 {
		t.Fatalf("syncs = %d, want 1", q.syncs)
	}
	for i, want := range []entry{parseEntry("s1"), parseEntry(""), {kind: entryClose, swallow: true}} {
		got, ok := q.popResponse()
		if !ok || got.kind != want.kind || got.name != want.name || got.swallow != want.swallow {
			t.Fatalf("popResponse %d = %+v, %v; want %+v", i, got, ok, want)
		}
	}
	if e, ok := q.popResponse(); ok {
		t.Fatalf("popResponse at a sync entry popped %+v", e)
	}
	e, failed := q.popSync()
	if e.kind != entrySync || e.sync.setting == nil || e.sync.setting.sql != "SET x = 1" || failed != nil {
		t.Fatalf("popSync = %+v, %q", e, failed)
	}
	if q.syncs != 0 || q.head != 0 || len(q.items) != 0 {
		t.Fatalf("queue not empty and compacted: %+v", q)
	}
}

// TestRespQueueErrorSkips: after an error the backend skips everything up
// to Sync; popSync returns the named Parse entries that never completed.
func TestRespQueueErrorSkips(t *testing.T) {
	var q respQueue
	q.push(parseEntry("ok"))
	q.push(parseEntry("skipped1"))
	q.push(parseEntry("")) // unnamed: nothing to forget
	q.push(entry{kind: entryClose})
	q.push(parseEntry("skipped2"))
	q.push(entry{kind: entrySync})
	q.push(parseEntry("next"))
	q.push(entry{kind: entrySync})
	if q.syncs != 2 {
		t.Fatalf("syncs = %d, want 2", q.syncs)
	}
	if e, ok := q.popResponse(); !ok || e.name != "ok" {
		t.Fatalf("popResponse = %+v, %v", e, ok)
	}
	// ErrorResponse, then ReadyForQuery:
	e, failed := q.popSync()
	if e.kind != entrySync || !slices.Equal(failed, []string{"skipped1", "skipped2"}) {
		t.Fatalf("popSync = %+v, %q; want sync and [skipped1 skipped2]", e, failed)
	}
	if q.syncs != 1 {
		t.Fatalf("syncs = %d after one popSync, want 1", q.syncs)
	}
	// The next segment is untouched.
	if e, ok := q.popResponse(); !ok || e.name != "next" {
		t.Fatalf("popResponse in second segment = %+v, %v", e, ok)
	}
	if e, failed := q.popSync(); e.kind != entrySync || failed != nil {
		t.Fatalf("second popSync = %+v, %q", e, failed)
	}
	if q.syncs != 0 || len(q.items) != 0 || q.head != 0 {
		t.Fatalf("queue not empty: %+v", q)
	}
}

func TestRespQueueEmptyAndNoSync(t *testing.T) {
	var q respQueue
	if e, ok := q.popResponse(); ok || e != (entry{}) {
		t.Fatalf("popResponse on empty = %+v, %v", e, ok)
	}
	if e, failed := q.popSync(); e.kind != 0 || failed != nil {
		t.Fatalf("popSync on empty = %+v, %q", e, failed)
	}
	// A ReadyForQuery that answers nothing recorded drains the queue.
	q.push(parseEntry("a"))
	q.push(entry{kind: entryClose})
	q.push(parseEntry("b"))
	e, failed := q.popSync()
	if e.kind != 0 || !slices.Equal(failed, []string{"a", "b"}) {
		t.Fatalf("popSync without sync = %+v, %q", e, failed)
	}
	if q.syncs != 0 || len(q.items) != 0 || q.head != 0 {
		t.Fatalf("queue not empty: %+v", q)
	}
}

// TestRespQueueClearsPopped: popped slots drop their pointers so the
// queue does not keep setting changes alive.
func TestRespQueueClearsPopped(t *testing.T) {
	var q respQueue
	q.push(parseEntry("a"))
	q.push(syncWith("SET x = 1"))
	q.push(syncWith("SET x = 2"))
	q.popResponse()
	q.popSync()
	if q.head != 2 || len(q.items) != 3 {
		t.Fatalf("head %d len %d, want 2 and 3", q.head, len(q.items))
	}
	for i := range q.head {
		if q.items[i] != (entry{}) {
			t.Errorf("popped slot %d still holds %+v", i, q.items[i])
		}
	}
	q.reset()
	if q.syncs != 0 || q.head != 0 || len(q.items) != 0 {
		t.Fatalf("reset left %+v", q)
	}
	for _, it := range q.items[:cap(q.items)] {
		if it != (entry{}) {
			t.Fatalf("reset left %+v in the backing array", it)
		}
	}
	q.push(entry{kind: entrySync})
	if e, _ := q.popSync(); e.kind != entrySync || q.syncs != 0 {
		t.Fatalf("queue unusable after reset: %+v %+v", e, q)
	}
}

// TestRespQueueCompactsWhilePipelining: a client that always has a
// request in flight (pipelining, a busy pgx batch loop) never empties the
// queue; the backing array must still stay bounded.
func TestRespQueueCompactsWhilePipelining(t *testing.T) {
	var q respQueue
	q.push(entry{kind: entrySync})
	for range 100_000 {
		q.push(entry{kind: entrySync})
		q.popSync()
	}
	if q.syncs != 1 || len(q.items)-q.head != 1 {
		t.Fatalf("queue holds %d entries (%d syncs), want 1", len(q.items)-q.head, q.syncs)
	}
	if len(q.items) > 1024 {
		t.Errorf("backing slice has %d entries for 1 queued", len(q.items))
	}
}

func TestRespQueueSyncCounter(t *testing.T) {
	var q respQueue
	for i := range 5 {
		q.push(parseEntry("p"))
		q.push(entry{kind: entrySync})
		if q.syncs != i+1 {
			t.Fatalf("syncs = %d after %d pushes", q.syncs, i+1)
		}
	}
	for i := 5; i > 0; i-- {
		q.popResponse()
		q.popSync()
		if q.syncs != i-1 {
			t.Fatalf("syncs = %d, want %d", q.syncs, i-1)
		}
	}
}

// TestRespQueueGoneStatements: the client statements of Parse entries that
// never completed are kept for serve to forget, across a reset; those
// that completed are not.
func TestRespQueueGoneStatements(t *testing.T) {
	var q respQueue
	ok, bad := &stmt{name: "ok"}, &stmt{name: "bad"}
	q.push(entry{kind: entryParse, name: "g1", stmt: ok})
	q.push(entry{kind: entryParse, name: "g2", stmt: bad})
	q.push(entry{kind: entryParse, name: "g3", swallow: true}) // injected: not the client's Parse
	q.push(entry{kind: entrySync})
	if _, done := q.popResponse(); !done {
		t.Fatal("no entry for the first ParseComplete")
	}
	q.popSync()
	q.reset()
	if len(q.gone) != 1 || q.gone[0] != bad {
		t.Fatalf("gone = %+v, want only the failed statement", q.gone)
	}
}

// TestRespQueueOnlyRetry: a request may be sent again after PS001 only
// when it is the only one in flight, but for the proxy's own WAL position
// query after it.
func TestRespQueueOnlyRetry(t *testing.T) {
	sync := entry{kind: entrySync, sync: syncEntry{retry: true}}
	lsn := entry{kind: entrySync, swallow: true, sync: syncEntry{captureLSN: true}}
	parse := entry{kind: entryParse}
	for _, tt := range []struct {
		name  string
		items []entry
		want  bool
	}{
		{"empty", nil, false},
		{"one sync", []entry{sync}, true},
		{"a Parse before it", []entry{parse, sync}, true},
		{"the WAL position query after it", []entry{sync, lsn}, true},
		{"another request after it", []entry{sync, {kind: entrySync}}, false},
		{"a Parse after it", []entry{sync, parse}, false},
		{"two WAL position queries", []entry{sync, lsn, lsn}, false},
	} {
		var q respQueue
		for _, e := range tt.items {
			q.push(e)
		}
		if got := q.onlyRetry(); got != tt.want {
			t.Errorf("%s: onlyRetry = %v, want %v", tt.name, got, tt.want)
		}
	}
}
