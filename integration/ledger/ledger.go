// Package ledger is a test kit for write load during resharding: a
// Writer inserts, updates and deletes its own keys through a proxy, one
// autocommit statement at a time, and keeps a ledger of the writes the
// proxy acknowledged, to compare with the servers afterwards.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/wire"
)

// Statements are the statements a Writer sends. Insert takes ($1 key,
// $2 value); Delete ($1 key, $2 the ledger's value); Update ($1 key, $2
// new value, $3 the ledger's value). Delete and Update must match the
// ledger's value, so that a row that differs from the ledger makes them
// affect no row.
type Statements struct {
	Insert, Delete, Update string
}

// KV writes the table kv (id bigint, v text).
var KV = Statements{
	Insert: `INSERT INTO kv (id, v) VALUES ($1, $2)`,
	Delete: `DELETE FROM kv WHERE id = $1 AND v = $2`,
	Update: `UPDATE kv SET v = $2 WHERE id = $1 AND v = $3`,
}

// Writer inserts, updates and deletes Keys through one connection, one
// autocommit statement at a time, and keeps in Ledger the writes the
// proxy acknowledged: key → value, absent when deleted.
type Writer struct {
	Name   string
	Keys   []int64
	Conn   *pgx.Conn
	SQL    Statements
	Ledger map[int64]string
	// Acks holds the time (UnixNano) of each acknowledged write.
	Acks []int64
	// MaxGap is the longest time between the start of Run and the
	// first acknowledged write or between two acknowledged writes.
	MaxGap time.Duration
	// Retryable counts errors the documented retryable SQLSTATEs of a
	// cutover gave (08006: held past buffer.window, did not run; PS001:
	// reached the fenced source, did not run); Failed lists them in
	// order. Err is any other error, which ended Run.
	Retryable map[string]int
	Failed    []Failure
	Err       error
}

// Failure is one retryable error of a Writer: when (UnixNano) and the
// SQLSTATE.
type Failure struct {
	At   int64
	Code string
}

// New connects a Writer named name through dsn for keys, closed when the
// test ends; initial gives the value a key's row has before the writes
// (false: no row; nil: no key has a row).
func New(t testing.TB, ctx context.Context, name, dsn string, sql Statements, keys []int64, initial func(k int64) (string, bool)) *Writer {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("%s: connect: %v", name, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	w := &Writer{Name: name, Keys: keys, Conn: conn, SQL: sql, Ledger: map[int64]string{}, Retryable: map[string]int{}}
	if initial != nil {
		for _, k := range keys {
			if v, ok := initial(k); ok {
				w.Ledger[k] = v
			}
		}
	}
	return w
}

// Writes is the number of acknowledged writes.
func (w *Writer) Writes() int { return len(w.Acks) }

// Run writes until stop is set (checked between statements, so that
// every statement's outcome is known), ctx ends, or a statement fails
// with an error that is not retryable (Err).
func (w *Writer) Run(ctx context.Context, stop *atomic.Bool) {
	last := time.Now()
	for n := 0; !stop.Load() && ctx.Err() == nil; n++ {
		k := w.Keys[n%len(w.Keys)]
		v, present := w.Ledger[k]
		nv := w.Name + "-" + strconv.Itoa(n)
		var sql string
		var args []any
		switch {
		case !present:
			sql, args = w.SQL.Insert, []any{k, nv}
		case n%3 == 0:
			sql, args = w.SQL.Delete, []any{k, v}
		default:
			sql, args = w.SQL.Update, []any{k, nv, v}
		}
		tag, err := w.Conn.Exec(ctx, sql, args...)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var pe *pgconn.PgError
			if errors.As(err, &pe) && (pe.Code == wire.SQLStateConnectionFailure || pe.Code == wire.SQLStateIntervalFenced) {
				w.Retryable[pe.Code]++
				w.Failed = append(w.Failed, Failure{time.Now().UnixNano(), pe.Code})
				continue
			}
			w.Err = fmt.Errorf("%s: %s %v: %w", w.Name, sql, args, err)
			return
		}
		if tag.RowsAffected() != 1 {
			w.Err = fmt.Errorf("%s: %s %v affected %d rows: the ledger and the servers disagree", w.Name, sql, args, tag.RowsAffected())
			return
		}
		switch {
		case !present:
			w.Ledger[k] = nv
		case n%3 == 0:
			delete(w.Ledger, k)
		default:
			w.Ledger[k] = nv
		}
		now := time.Now()
		w.MaxGap = max(w.MaxGap, now.Sub(last))
		last = now
		w.Acks = append(w.Acks, now.UnixNano())
	}
}

// Start runs ws until the returned stop is called, which waits for them.
func Start(ctx context.Context, ws ...*Writer) (stop func()) {
	var stopping atomic.Bool
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { w.Run(ctx, &stopping) })
	}
	return func() {
		stopping.Store(true)
		wg.Wait()
	}
}

// GapOver is the longest gap between acknowledged writes that overlaps
// [from, to].
func (w *Writer) GapOver(from, to time.Time) time.Duration {
	f, l := from.UnixNano(), to.UnixNano()
	i := max(sort.Search(len(w.Acks), func(i int) bool { return w.Acks[i] >= f })-1, 0)
	var g int64
	for ; i+1 < len(w.Acks) && w.Acks[i] <= l; i++ {
		g = max(g, w.Acks[i+1]-w.Acks[i])
	}
	return time.Duration(g)
}

// Check logs each writer's counts and fails the test on a writer's
// error, on a PS001 (the proxy retries an autocommit statement that met
// the fence), on a gap of maxIn or more between acknowledged writes of a
// writer inside a moving interval, and on a gap of maxOut or more or any
// error of a writer outside.
func Check(t testing.TB, inside, outside []*Writer, maxIn, maxOut time.Duration) {
	t.Helper()
	for _, w := range append(append([]*Writer{}, inside...), outside...) {
		t.Logf("%s: %d acknowledged writes, longest gap %s, retryable errors %v", w.Name, w.Writes(), w.MaxGap.Round(time.Millisecond), w.Retryable)
		if w.Err != nil {
			t.Error(w.Err)
		}
		if n := w.Retryable[wire.SQLStateIntervalFenced]; n > 0 {
			t.Errorf("%s: %d autocommit writes failed with PS001: the proxy did not retry them", w.Name, n)
		}
	}
	for _, w := range inside {
		if w.MaxGap >= maxIn {
			t.Errorf("%s: longest gap inside the moving interval %s, want < %s", w.Name, w.MaxGap, maxIn)
		}
	}
	for _, w := range outside {
		if w.MaxGap >= maxOut {
			t.Errorf("%s: longest gap outside the moving interval %s, want < %s", w.Name, w.MaxGap, maxOut)
		}
		if len(w.Retryable) > 0 {
			t.Errorf("%s: errors outside the moving interval: %v", w.Name, w.Retryable)
		}
	}
}

// Diff lists, sorted, the keys where got (a server's rows) differs from
// want (a ledger).
func Diff(want, got map[int64]string) []string {
	var diff []string
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			diff = append(diff, fmt.Sprintf("%d: ledger %q, server %q", k, v, g))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			diff = append(diff, fmt.Sprintf("%d: not in the ledger, server %q", k, v))
		}
	}
	sort.Strings(diff)
	return diff
}

// Summary joins the first n entries of diff.
func Summary(diff []string, n int) string {
	return strings.Join(diff[:min(len(diff), n)], "; ")
}
