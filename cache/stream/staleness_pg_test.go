package stream_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/cache"
)

// commit is one acknowledged write of a hot key: its version and when the
// server acknowledged it.
type commit struct {
	v  int
	at time.Time
}

// TestStreamBoundedStaleness runs writers straight on the server and
// readers through the cache on a few hot keys. A checker knows every
// committed version and when it was acknowledged; for each value served
// from the cache it computes how long a newer version had been committed
// (its staleness) and fails when that exceeds the bound.
func TestStreamBoundedStaleness(t *testing.T) {
	e := setup(t)
	e.startReader(e.srv.SuperDSN("postgres"))
	e.waitStatus("the stream comes up", cache.Miss)
	const keys, writers, readers = 4, 2, 4
	if _, err := e.db.Exec(t.Context(), "UPDATE users SET name = '0' WHERE id <= $1", keys); err != nil {
		t.Fatal(err)
	}
	e.waitApplied()

	var (
		mu      sync.Mutex
		history [keys + 1][]commit // per key, in version order
		stale   []time.Duration    // staleness of every hit that was stale at all
		hits    atomic.Int64
		fills   atomic.Int64
		writes  atomic.Int64
		wg      sync.WaitGroup
		errs    = make(chan error, writers+readers)
	)
	for k := 1; k <= keys; k++ {
		history[k] = []commit{{v: 0}}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	connect := func() *pgx.Conn {
		c, err := pgx.Connect(t.Context(), e.srv.SuperDSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	for w := range writers {
		conn := connect()
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				k := 1 + w + writers*(i%(keys/writers)) // each key has one writer: versions stay in order
				mu.Lock()
				v := history[k][len(history[k])-1].v + 1
				mu.Unlock()
				if _, err := conn.Exec(ctx, "UPDATE users SET name = $1 WHERE id = $2", strconv.Itoa(v), k); err != nil {
					if ctx.Err() == nil {
						errs <- fmt.Errorf("write: %w", err)
					}
					return
				}
				at := time.Now()
				mu.Lock()
				history[k] = append(history[k], commit{v: v, at: at})
				mu.Unlock()
				writes.Add(1)
			}
		})
	}
	for r := range readers {
		conn := connect()
		wg.Go(func() {
			var b cache.KeyBuilder
			for i := 0; ctx.Err() == nil; i++ {
				k := 1 + (r+i)%keys
				id := strconv.Itoa(k)
				key := e.key(&b, "public.users", id)
				lookup := time.Now()
				val, st := e.cache.Get(key, 0)
				switch st {
				case cache.Hit:
					hits.Add(1)
					served, err := strconv.Atoi(string(val))
					if err != nil {
						errs <- fmt.Errorf("key %d: served %q", k, val)
						return
					}
					mu.Lock()
					// The first version newer than the one served, if it
					// was acknowledged before the lookup began.
					for _, c := range history[k] {
						if c.v > served {
							if c.at.Before(lookup) {
								stale = append(stale, lookup.Sub(c.at))
							}
							break
						}
					}
					mu.Unlock()
				case cache.Miss:
					tok := e.cache.BeginFill(key, 0)
					var name string
					if err := conn.QueryRow(ctx, "SELECT name FROM users WHERE id = $1", k).Scan(&name); err != nil {
						if ctx.Err() == nil {
							errs <- fmt.Errorf("read: %w", err)
						}
						return
					}
					if e.cache.Fill(tok, []byte(name)) {
						fills.Add(1)
					}
				default:
					errs <- fmt.Errorf("key %d: %v during the run", k, st)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if hits.Load() == 0 || fills.Load() == 0 || writes.Load() == 0 {
		t.Fatalf("nothing exercised: %d hits, %d fills, %d writes", hits.Load(), fills.Load(), writes.Load())
	}
	slices.Sort(stale)
	worst := time.Duration(0)
	p99 := time.Duration(0)
	if len(stale) > 0 {
		worst = stale[len(stale)-1]
		p99 = stale[len(stale)*99/100]
	}
	t.Logf("%d writes, %d hits (%d served while a newer version was committed: p99 %v, max %v), %d fills; bound %v",
		writes.Load(), hits.Load(), len(stale), p99, worst, fills.Load(), bound)
	e.staleness()
	if worst > bound {
		t.Errorf("a value was served %v after a newer one was committed, over the bound %v", worst, bound)
	}
}
