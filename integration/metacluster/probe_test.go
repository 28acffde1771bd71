package metacluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/internal/testutil"
)

// probe queries a proxy for the probe rows in a loop, and counts what
// succeeded and what failed.
type probe struct {
	dsn    string
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	ok, fail int
	failures []string // the first maxFailures, in order
}

// maxFailures is how many failure messages a probe keeps.
const maxFailures = 1000

// probeMark is a point in a probe's counts.
type probeMark struct{ ok, fail int }

// startProbe starts querying the proxy at dsn; the test's end stops it.
func startProbe(t *testing.T, dsn string) *probe {
	ctx, cancel := context.WithCancel(context.Background())
	p := &probe{dsn: dsn, cancel: cancel, done: make(chan struct{})}
	go p.run(ctx)
	t.Cleanup(p.stop)
	return p
}

func (p *probe) stop() {
	p.cancel()
	<-p.done
}

func (p *probe) run(ctx context.Context) {
	defer close(p.done)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	keys := []struct {
		id int64
		v  string
	}{{probeLow, "low"}, {probeHigh, "high"}}
	for i := 0; ctx.Err() == nil; i++ {
		err := func() error {
			qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if conn == nil || conn.IsClosed() {
				c, err := pgx.Connect(qctx, p.dsn)
				if err != nil {
					return fmt.Errorf("connect: %w", err)
				}
				conn = c
			}
			k := keys[i%len(keys)]
			var v string
			if err := conn.QueryRow(qctx, "SELECT v FROM kv WHERE id = $1", k.id).Scan(&v); err != nil {
				return fmt.Errorf("id %d: %w", k.id, err)
			}
			if v != k.v {
				return fmt.Errorf("id %d: got %q, want %q (routed to the wrong shard?)", k.id, v, k.v)
			}
			return nil
		}()
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		if err == nil {
			p.ok++
		} else {
			p.fail++
			if len(p.failures) < maxFailures {
				p.failures = append(p.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
			}
		}
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p *probe) mark() probeMark {
	p.mu.Lock()
	defer p.mu.Unlock()
	return probeMark{p.ok, p.fail}
}

// check fails the test if a query failed since mark, or if fewer than
// three succeeded since then (it waits up to 5 s for them).
func (p *probe) check(t *testing.T, phase string, since probeMark) {
	t.Helper()
	ok, _ := testutil.Poll(5*time.Second, func() (bool, string) { return p.mark().ok >= since.ok+3, "" })
	p.mu.Lock()
	defer p.mu.Unlock()
	if !ok {
		t.Errorf("%s: only %d queries through the proxy succeeded", phase, p.ok-since.ok)
	}
	if p.fail > since.fail {
		first := p.failures[min(since.fail, len(p.failures)):min(since.fail+5, len(p.failures))]
		t.Errorf("%s: %d of %d queries through the proxy failed; the first: %q", phase, p.fail-since.fail, p.ok+p.fail-since.ok-since.fail, first)
	} else {
		t.Logf("%s: %d queries through the proxy succeeded, none failed", phase, p.ok-since.ok)
	}
}
