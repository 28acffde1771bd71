package metacluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// ack is a map change the cluster acknowledged as committed.
type ack struct {
	epoch   uint64
	comment string
}

// writer applies a stream of map changes with compare-and-set on the
// epoch, and records every change acknowledged.
type writer struct {
	client *metarpc.Client
	mk     func(n int) (*shardmap.Map, error) // the n-th change
	every  time.Duration                      // pause after each acknowledged change
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	n      int
	expect uint64
	acks   []ack
	errs   []string // the last few
}

// startWriter starts applying maps from epoch expect on; stop ends it.
// The name prefixes the changes' comments.
func startWriter(t *testing.T, client *metarpc.Client, name string, expect uint64, mk func(n int) (*shardmap.Map, error)) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{client: client, mk: mk, every: 100 * time.Millisecond, cancel: cancel, done: make(chan struct{}), expect: expect}
	go w.run(ctx, name)
	t.Cleanup(w.stop)
	return w
}

func (w *writer) run(ctx context.Context, name string) {
	defer close(w.done)
	for ctx.Err() == nil {
		w.mu.Lock()
		w.n++
		n, expect := w.n, w.expect
		w.mu.Unlock()
		comment := fmt.Sprintf("%s %d", name, n)
		m, err := w.mk(n)
		var epoch uint64
		if err == nil {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			epoch, err = w.client.ApplyMap(cctx, m, expect, comment)
			cancel()
		}
		pause := w.every
		w.mu.Lock()
		var se *metarpc.StaleEpochError
		switch {
		case err == nil:
			w.acks = append(w.acks, ack{epoch, comment})
			w.expect = epoch
		case errors.As(err, &se):
			// An earlier change whose answer was lost may have landed.
			w.expect = se.Current
			pause = 0
		case ctx.Err() == nil:
			w.errs = append(w.errs[max(0, len(w.errs)-4):], fmt.Sprintf("%s: %v", comment, err))
			pause = 20 * time.Millisecond
		}
		w.mu.Unlock()
		if pause > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
		}
	}
}

// stop ends the stream and waits for the change in flight. It may be
// called more than once.
func (w *writer) stop() {
	w.cancel()
	<-w.done
}

// acked returns the acknowledged changes so far.
func (w *writer) acked() []ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ack(nil), w.acks...)
}

// waitAcks waits until n acknowledgements have epochs above epoch, and
// returns the acknowledgements.
func (w *writer) waitAcks(t *testing.T, above uint64, n int, timeout time.Duration) []ack {
	t.Helper()
	ok, why := testutil.Poll(timeout, func() (bool, string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		got := 0
		for _, a := range w.acks {
			if a.epoch > above {
				got++
			}
		}
		return got >= n, fmt.Sprintf("%d acknowledged above epoch %d; last errors: %q", got, above, w.errs)
	})
	if !ok {
		t.Fatalf("map changes were not acknowledged within %s: %s", timeout, why)
	}
	return w.acked()
}

// checkAcks fails the test unless the acknowledged epochs grow one by one
// with the order of the acknowledgements (each a compare-and-set on the
// one before: a repeated or skipped epoch means two changes were
// acknowledged for one epoch).
func checkAcks(t *testing.T, acks []ack) {
	t.Helper()
	for i := 1; i < len(acks); i++ {
		if acks[i].epoch <= acks[i-1].epoch {
			t.Errorf("acknowledged epochs do not grow: %q was epoch %d after %q at epoch %d", acks[i].comment, acks[i].epoch, acks[i-1].comment, acks[i-1].epoch)
		}
	}
}

// checkHistory fails the test unless member m has applied every
// acknowledged change: its epoch is at least the last one, and its history
// has each at its epoch with its comment. It waits up to timeout for m to
// catch up.
func checkHistory(t *testing.T, m *metacluster.Member, acks []ack, timeout time.Duration) {
	t.Helper()
	if len(acks) == 0 {
		return
	}
	last := acks[len(acks)-1].epoch
	ok, why := testutil.Poll(timeout, func() (bool, string) {
		st, err := m.Status(t.Context())
		if err != nil {
			return false, err.Error()
		}
		return st.MapEpoch >= last, fmt.Sprintf("it is at epoch %d", st.MapEpoch)
	})
	if !ok {
		t.Errorf("member %s did not reach the last acknowledged epoch %d within %s: %s", m.ID, last, timeout, why)
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	hist, err := m.Client().MapHistory(ctx, 1000, false)
	if err != nil {
		t.Errorf("member %s: MapHistory: %v", m.ID, err)
		return
	}
	if len(hist) == 0 {
		t.Errorf("member %s: empty map history, but %d changes were acknowledged", m.ID, len(acks))
		return
	}
	byEpoch := map[uint64]string{}
	for _, v := range hist {
		byEpoch[v.Epoch] = v.Comment
	}
	lost := 0
	for _, a := range acks {
		c, ok := byEpoch[a.epoch]
		switch {
		case !ok:
			lost++
			t.Errorf("member %s: acknowledged epoch %d (%q) is not in its history (%d versions, epochs %d..%d)", m.ID, a.epoch, a.comment, len(hist), hist[len(hist)-1].Epoch, hist[0].Epoch)
		case c != a.comment:
			lost++
			t.Errorf("member %s: epoch %d is %q in its history, but %q was acknowledged at that epoch", m.ID, a.epoch, c, a.comment)
		}
	}
	if lost == 0 {
		t.Logf("member %s has all %d acknowledged epochs (%d..%d)", m.ID, len(acks), acks[0].epoch, last)
	}
}
