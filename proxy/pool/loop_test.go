//go:build linux

package pool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// newTestLoop starts an event loop of two loops, closed after the test's
// pools (cleanups run last-in first-out).
func newTestLoop(t *testing.T) *EventLoop {
	t.Helper()
	e, err := NewEventLoop(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// inlineRecorder is a recorder that may run on the loop; it reports each
// frame (whole) on frames.
type inlineRecorder struct {
	*recorder
	frames chan []byte
}

func (r *inlineRecorder) Inline() {}

func (r *inlineRecorder) Frame(c *Conn, typ byte, frame []byte) bool {
	r.frames <- bytes.Clone(frame)
	return r.recorder.Frame(c, typ, frame)
}

func frame(typ byte, body []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

func wantFrame(t *testing.T, ch <-chan []byte, want []byte) {
	t.Helper()
	select {
	case got := <-ch:
		if !bytes.Equal(got, want) {
			t.Fatalf("handler got a frame of %d bytes %q…, want %d bytes %q…", len(got), got[:min(8, len(got))], len(want), want[:min(8, len(want))])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler got no frame")
	}
}

// TestEventLoopReadsInline: a connection on the event loop has no reader
// goroutine while its handler is inline; frames split over several
// writes, and several frames in one write, reach the handler whole and in
// order; the proxy's own statements (Exec) run on it.
func TestEventLoopReadsInline(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, func(c *Config) { c.EventLoop = newTestLoop(t) })
	ctx := testCtx(t)
	c, srv := acquireNew(t, ctx, p, f)
	if c.loop == nil {
		t.Fatal("the connection is not on the event loop")
	}
	rec := &inlineRecorder{recorder: newRecorder(), frames: make(chan []byte, 16)}
	if err := c.SetHandler(rec); err != nil {
		t.Fatal(err)
	}
	a, b := frame('D', bytes.Repeat([]byte("a"), 100)), frame('C', []byte("SELECT 1\x00"))
	both := append(bytes.Clone(a), b...)
	for _, part := range [][]byte{both[:3], both[3:50], both[50:]} {
		if _, err := srv.Write(part); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // separate segments (not synchronisation: any split is valid)
	}
	wantFrame(t, rec.frames, a)
	wantFrame(t, rec.frames, b)
	c.hmu.Lock()
	mode := c.loop.mode
	c.hmu.Unlock()
	if mode != modeLoop {
		t.Fatalf("mode %d after inline frames, want the loop", mode)
	}
	if err := c.SetHandler(nil); err != nil {
		t.Fatal(err)
	}

	// Exec: the server answers the proxy's own statement.
	done := make(chan error, 1)
	go func() {
		tag, err := c.ExecTag(ctx, "SELECT 1")
		if err == nil && tag != "SELECT 1" {
			err = errors.New("tag " + tag)
		}
		done <- err
	}()
	q := make([]byte, 5+len("SELECT 1")+1)
	if _, err := io.ReadFull(srv, q); err != nil || q[0] != 'Q' {
		t.Fatalf("server read %q, %v", q, err)
	}
	if _, err := srv.Write(append(frame('C', []byte("SELECT 1\x00")), frame('Z', []byte("I"))...)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	p.Release(c)
}

// TestEventLoopMovesToGoroutine: a frame for a handler that is not inline,
// and a frame larger than the buffer, move the connection to a reader
// goroutine of its own with what it had buffered; the frames arrive whole.
func TestEventLoopMovesToGoroutine(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, func(c *Config) { c.EventLoop = newTestLoop(t) })
	ctx := testCtx(t)
	for _, tc := range []struct {
		name   string
		inline bool
		size   int
	}{{"handler", false, 10}, {"large frame", true, 3 * ioBufferSize}} {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := acquireNew(t, ctx, p, f)
			rec := &inlineRecorder{recorder: newRecorder(), frames: make(chan []byte, 16)}
			var h Handler = rec
			if !tc.inline {
				h = struct{ Handler }{rec} // not an InlineHandler
			}
			if err := c.SetHandler(h); err != nil {
				t.Fatal(err)
			}
			big := frame('D', bytes.Repeat([]byte("x"), tc.size))
			next := frame('C', []byte("SELECT 1\x00"))
			go func() { _, _ = srv.Write(append(bytes.Clone(big), next...)) }()
			wantFrame(t, rec.frames, big)
			wantFrame(t, rec.frames, next)
			c.hmu.Lock()
			mode := c.loop.mode
			c.hmu.Unlock()
			if mode != modeGoroutine {
				t.Fatalf("mode %d, want a reader goroutine", mode)
			}
			_ = srv.Close()
			select {
			case err := <-rec.failed:
				if err == nil {
					t.Fatal("Fail with a nil error")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the handler was not told the server closed")
			}
			p.Discard(c)
		})
	}
}

// TestEventLoopConnectionEnds: on the loop, a server that closes a
// connection in use fails its handler; one that sends to an idle
// connection breaks it and the pool drops it; a connection the proxy
// closes fails its handler too.
func TestEventLoopConnectionEnds(t *testing.T) {
	f := newFakeServer(t)
	p := newTestPool(t, f, func(c *Config) { c.EventLoop = newTestLoop(t) })
	ctx := testCtx(t)

	busy, busySrv := acquireNew(t, ctx, p, f)
	rec := &inlineRecorder{recorder: newRecorder(), frames: make(chan []byte, 16)}
	if err := busy.SetHandler(rec); err != nil {
		t.Fatal(err)
	}
	_ = busySrv.Close()
	select {
	case err := <-rec.failed:
		if err == nil {
			t.Fatal("Fail with a nil error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler was not told the server closed")
	}
	p.Discard(busy)

	idle, idleSrv := acquireNew(t, ctx, p, f)
	p.Release(idle)
	if _, err := idleSrv.Write(frame('E', []byte("SFATAL\x00\x00"))); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !idle.Broken(); {
		if time.Now().After(deadline) {
			t.Fatal("an idle connection the server wrote to is not broken")
		}
		time.Sleep(5 * time.Millisecond)
	}

	mine, _ := acquireNew(t, ctx, p, f)
	rec2 := &inlineRecorder{recorder: newRecorder(), frames: make(chan []byte, 16)}
	if err := mine.SetHandler(rec2); err != nil {
		t.Fatal(err)
	}
	mine.Close()
	select {
	case err := <-rec2.failed:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Fail got %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler of a connection the proxy closed was not told")
	}
	p.Discard(mine)
}
