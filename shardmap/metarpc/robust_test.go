package metarpc

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/shardmap/metapb"
)

// Garbage written to the gRPC port closes that connection and nothing
// else; the server keeps serving.
func TestGarbageOnPort(t *testing.T) {
	pki := newPKI(t, "g")
	random := make([]byte, 64<<10)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	payloads := map[string][]byte{
		"random bytes":         random,
		"HTTP/1.1 request":     []byte("GET / HTTP/1.1\r\nHost: meta\r\n\r\n"),
		"PostgreSQL startup":   {0, 0, 0, 8, 4, 210, 22, 47},
		"preface, then junk":   append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0xff, 0xff, 0xff, 0x04, 0, 0, 0, 0, 0, 1, 2, 3),
		"TLS hello, truncated": {0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00},
		"nothing":              nil,
	}
	for _, tc := range []struct {
		name   string
		opts   ServerOptions
		client ClientOptions
	}{
		{"plaintext", ServerOptions{Token: "tok"}, ClientOptions{Token: "tok"}},
		{"TLS", ServerOptions{TLS: pki.serverTLS(), RequireClientCert: true}, ClientOptions{TLS: pki.clientTLS(&pki.client)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newFakeStore("n1")
			ts := startServer(t, store, tc.opts, "")
			ctx := testContext(t, 20*time.Second)
			c := newClient(t, []string{ts.addr}, tc.client)
			if _, err := c.ApplyMap(ctx, testMap(t, 1), 0, ""); err != nil {
				t.Fatal(err)
			}

			// A connection that says nothing stays open meanwhile.
			idle, err := net.Dial("tcp", ts.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer idle.Close()

			var wg sync.WaitGroup
			for name, p := range payloads {
				if p == nil {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					conn, err := net.Dial("tcp", ts.addr)
					if err != nil {
						t.Error(err)
						return
					}
					defer conn.Close()
					wait := 5 * time.Second
					if len(p) < 24 {
						wait = 500 * time.Millisecond
					}
					_ = conn.SetDeadline(time.Now().Add(wait))
					_, _ = conn.Write(p) // the server may hang up before reading it all
					_, err = io.Copy(io.Discard, conn)
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() && len(p) >= 24 {
						// Shorter payloads are not even a whole HTTP/2
						// preface: the server waits for the rest until
						// its handshake timeout (10 s).
						t.Errorf("%s: the server did not close the connection", name)
					}
				}()
			}
			// Meanwhile the server answers.
			for i := uint64(1); i <= 5; i++ {
				if _, err := c.ApplyMap(ctx, testMap(t, i+1), i, ""); err != nil {
					t.Fatal(err)
				}
			}
			wg.Wait()
			if v, err := c.GetMap(ctx); err != nil || v.Epoch != 6 {
				t.Fatalf("GetMap after the garbage = %d, %v", v.Epoch, err)
			}
			// A fresh client connects fine too.
			c2 := newClient(t, []string{ts.addr}, tc.client)
			if _, err := c2.MemberStatus(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A panic in the Store is answered with Internal; the server lives on.
func TestStorePanic(t *testing.T) {
	store := newFakeStore("n1")
	store.panicIn = "History"
	ts := startServer(t, store, insecureOpts, "")
	ctx := testContext(t, 10*time.Second)
	c := newClient(t, []string{ts.addr}, ClientOptions{})
	if _, err := c.MapHistory(ctx, 5, false); status.Code(err) != codes.Internal {
		t.Fatalf("MapHistory with a panicking store = %v", err)
	}
	if _, err := c.ApplyMap(ctx, testMap(t, 1), 0, ""); err != nil {
		t.Fatal(err)
	}
}

// Shutdown ends watches (clients see Unavailable and move on) and
// returns.
func TestShutdown(t *testing.T) {
	store := newFakeStore("n1")
	store.set(testMap(t, 1), "")
	ts := startServer(t, store, insecureOpts, "")
	ctx := testContext(t, 10*time.Second)
	raw := rawClient(t, ts.addr)
	stream, err := raw.WatchMap(ctx, &metapb.WatchMapRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || r.GetMap().GetEpoch() != 1 {
		t.Fatalf("first watch message = %v, %v", r, err)
	}
	if _, err := raw.ProxyHeartbeat(ctx, &metapb.ProxyHeartbeatRequest{ProxyId: "p1", AppliedEpoch: 0}); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan error, 1)
	go func() {
		_, err := raw.WaitApplied(ctx, &metapb.WaitAppliedRequest{Epoch: 1})
		waiting <- err
	}()
	testutil.Until(t, 5*time.Second, "the wait to begin", func() bool { return store.waiting() > 0 })
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	<-ts.done
	ts.srv = nil
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("watch after Shutdown = %v", err)
	}
	if err := <-waiting; status.Code(err) != codes.Unavailable {
		t.Fatalf("WaitApplied after Shutdown = %v", err)
	}
}

// MapHistory with maps stops before its reply would outgrow a message.
func TestMapHistoryFitsInAMessage(t *testing.T) {
	store := newFakeStore("n1")
	for e := uint64(1); e <= 40; e++ {
		store.set(testMap(t, e), strings.Repeat("c", 100))
	}
	opts := insecureOpts
	opts.MaxMessageSize = 16 << 10
	ts := startServer(t, store, opts, "")
	ctx := testContext(t, 10*time.Second)
	c := newClient(t, []string{ts.addr}, ClientOptions{})
	hist, err := c.MapHistory(ctx, 40, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) == 0 || len(hist) >= 40 || hist[0].Epoch != 40 {
		t.Fatalf("MapHistory returned %d versions, newest %d", len(hist), hist[0].Epoch)
	}
	if hist, err = c.MapHistory(ctx, 40, false); err != nil || len(hist) != 40 {
		t.Fatalf("MapHistory without maps = %d, %v", len(hist), err)
	}
}
