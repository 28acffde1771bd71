//go:build linux

package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func epollInstance(t *testing.T) int {
	t.Helper()
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(epfd) })
	return epfd
}

// TestParkConnDetachAttach: bytes sent while detached are read after
// attach, the client's address is kept, the read deadline set while
// detached holds after attach, and the detached descriptor is the only
// one left of the socket (the connection's own was closed).
func TestParkConnDetachAttach(t *testing.T) {
	client, server := tcpPair(t)
	sc := server.(*net.TCPConn)
	remote := sc.RemoteAddr().String()
	pc := newParkConn(sc)
	epfd := epollInstance(t)

	fd, ok := pc.detach()
	if !ok {
		t.Fatal("detach failed")
	}
	if _, err := pc.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read while detached: %v, want net.ErrClosed", err)
	}
	if got := pc.RemoteAddr().String(); got != remote {
		t.Fatalf("remote address while detached: %s, want %s", got, remote)
	}
	// The connection's own descriptor is gone: its reads fail.
	if _, err := sc.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on the detached connection: %v, want net.ErrClosed", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(fd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	events := make([]unix.EpollEvent, 1)
	if n, err := unix.EpollWait(epfd, events, 5000); err != nil || n != 1 || events[0].Fd != int32(fd) {
		t.Fatalf("epoll: %d %v", n, err)
	}

	pc.attach(epfd)
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
		t.Fatal("the detached descriptor is still open after attach")
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(pc, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read after attach: %q %v", buf, err)
	}
	if _, err := pc.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "world" {
		t.Fatalf("client read: %q %v", buf, err)
	}
	// Parking again registers the new descriptor under any number: the
	// previous registration went with attach.
	fd2, ok := pc.detach()
	if !ok {
		t.Fatal("second detach failed")
	}
	ev = unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(fd2)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd2, &ev); err != nil {
		t.Fatalf("second registration (descriptor %d, first %d): %v", fd2, fd, err)
	}
	// A read deadline set while detached holds after attach.
	if err := pc.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	pc.attach(epfd)
	if _, err := pc.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after attach with a past deadline: %v", err)
	}
	if err := pc.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(pc, buf); err != nil || string(buf) != "again" {
		t.Fatalf("read after clearing the deadline: %q %v", buf, err)
	}
}

// TestParkConnCloseWhileDetached: Close from another goroutine while the
// connection is detached closes the socket (the client sees the end),
// and attach leaves the connection closed.
func TestParkConnCloseWhileDetached(t *testing.T) {
	client, server := tcpPair(t)
	pc := newParkConn(server.(*net.TCPConn))
	epfd := epollInstance(t)
	fd, ok := pc.detach()
	if !ok {
		t.Fatal("detach failed")
	}
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
		t.Fatal("the detached descriptor is still open after Close")
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client read after Close: %d %v, want EOF", n, err)
	}
	pc.attach(epfd)
	if _, err := pc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close and attach: %v, want net.ErrClosed", err)
	}
	if _, ok := pc.detach(); ok {
		t.Fatal("detach of a closed connection succeeded")
	}
	if err := pc.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}
