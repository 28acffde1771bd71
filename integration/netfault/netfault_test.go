package netfault_test

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration/netfault"
)

// TestBlackholeStallsThenHeals: a dial to a blackholed port times out (no
// refusal: the packets vanish), an established connection's write gets no
// answer, and after heal both work again.
func TestBlackholeStallsThenHeals(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // echo
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	established, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer established.Close()

	heal := netfault.Blackhole(t, port)
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a dial to a blackholed port succeeded")
	} else if ne := (net.Error)(nil); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a dial to a blackholed port failed with %v, want a time-out", err)
	}
	if _, err := established.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = established.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := established.Read(make([]byte, 4)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read across the blackhole: %v, want a time-out", err)
	}

	heal()
	// The kernel retransmits "ping"; its echo arrives once healed.
	_ = established.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4)
	if _, err := established.Read(buf); err != nil || string(buf) != "ping" {
		t.Fatalf("after heal: read %q, %v", buf, err)
	}
	c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatalf("dial after heal: %v", err)
	}
	c.Close()
}
