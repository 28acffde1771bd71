package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	goruntime "runtime"
	"testing"
	"time"

	"github.com/pgshard/pgshard/wire"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case server = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("accept timed out")
	}
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestClientReaderFrames reads frames split over writes, one larger than
// the buffer, and checks that the reader holds no buffer once it has
// handed out everything it read.
func TestClientReaderFrames(t *testing.T) {
	client, server := tcpPair(t)
	_ = server.SetDeadline(time.Now().Add(20 * time.Second))
	rd := newClientReader(server)
	if rd.raw == nil {
		t.Fatal("a TCP connection should be read through its raw connection")
	}
	fr := wire.NewFrameReader(rd, 0)

	small := wire.AppendString(nil, 'Q', "SELECT 1")
	big := wire.AppendString(nil, 'Q', string(bytes.Repeat([]byte("x"), 3*clientBufferSize)))
	go func() {
		// The small frame in two writes, then the big one.
		_, _ = client.Write(small[:3])
		time.Sleep(20 * time.Millisecond) // lets the reader see a partial header
		_, _ = client.Write(small[3:])
		_, _ = client.Write(big)
	}()
	for i, want := range [][]byte{small, big} {
		typ, frame, err := fr.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if typ != 'Q' || !bytes.Equal(frame, want) {
			t.Fatalf("frame %d: got type %q, %d bytes; want %d bytes", i, typ, len(frame), len(want))
		}
	}
	if rd.Buffered() != 0 {
		t.Fatalf("Buffered = %d after the last frame, want 0", rd.Buffered())
	}

	// Nothing to read: poll says so and holds no buffer.
	if fd, wouldBlock := rd.poll(); !wouldBlock || fd < 0 {
		t.Fatalf("poll with nothing sent = (%d, %v), want a descriptor and true", fd, wouldBlock)
	}
	if rd.buf != nil {
		t.Fatal("the reader holds a buffer while its client is idle")
	}

	// Bytes sent: poll reads them (polling until they arrive).
	if _, err := client.Write(small); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for rd.Buffered() == 0 {
		if _, wouldBlock := rd.poll(); !wouldBlock {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("poll never saw the bytes sent")
		}
		time.Sleep(5 * time.Millisecond)
	}
	typ, frame, err := fr.Next()
	if err != nil || typ != 'Q' || !bytes.Equal(frame, small) {
		t.Fatalf("after poll: %q %q %v", typ, frame, err)
	}

	// The sweeper's deadline (park.go) in the middle of a frame: the read
	// goes on and the frame arrives whole.
	if _, err := client.Write(small[:7]); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.Peek(7); err != nil {
		t.Fatal(err)
	}
	rd.requestPark(time.Now())
	go func() {
		time.Sleep(50 * time.Millisecond) // the reader waits mid-frame meanwhile
		_, _ = client.Write(small[7:])
	}()
	typ, frame, err = fr.Next()
	if err != nil || typ != 'Q' || !bytes.Equal(frame, small) {
		t.Fatalf("frame interrupted by the sweeper's deadline: %q %q %v", typ, frame, err)
	}
	if rd.takeParkRequest() {
		t.Fatal("the park request was not consumed")
	}

	// A read deadline interrupts a wait like on the connection itself,
	// at a frame boundary.
	_ = server.SetReadDeadline(time.Now())
	if _, _, err := fr.Next(); !errors.Is(err, os.ErrDeadlineExceeded) || !rd.boundary {
		t.Fatalf("Next after a deadline: %v (boundary %v), want a deadline error at a boundary", err, rd.boundary)
	}

	// The end of the stream.
	rd.err = nil
	_ = server.SetReadDeadline(time.Now().Add(10 * time.Second))
	client.Close()
	if _, _, err := fr.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next after the client closed: %v, want EOF", err)
	}
}

// TestParkRequestNeverLeavesADeadline: a park request (set by the sweeper
// or an early park on another goroutine) and serve taking it are one step
// each, so a read that its deadline ends always finds the request: a
// deadline left set after its request was taken would end the read with
// an error serve takes for the client's, and close the session.
func TestParkRequestNeverLeavesADeadline(t *testing.T) {
	_, server := tcpPair(t)
	rd := newClientReader(server)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			rd.requestPark(time.Now())
			goruntime.Gosched()
		}
	}()
	defer func() {
		close(stop)
		<-done
	}()
	end := time.Now().Add(300 * time.Millisecond)
	taken := 0
	for time.Now().Before(end) {
		_, err := rd.Peek(1) // the client sends nothing: only deadlines end it
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Peek: %v", err)
		}
		if !rd.takeParkRequest() {
			t.Fatalf("a read deadline without its park request (after %d taken)", taken)
		}
		rd.err = nil // as parkRequested does
		taken++
	}
	if taken == 0 {
		t.Fatal("no park request was taken")
	}
	t.Logf("%d park requests taken", taken)
}
