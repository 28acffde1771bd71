package metarpc

import (
	"context"
	"sync"
	"testing"
	"time"
)

// incarnationStore is a fake store that records the incarnations its
// heartbeats carry.
type incarnationStore struct {
	*fakeStore
	mu  sync.Mutex
	got []string
}

func (s *incarnationStore) HeartbeatIncarnation(ctx context.Context, id, inc, addr string, applied uint64, unreachable []string) error {
	s.mu.Lock()
	s.got = append(s.got, inc)
	s.mu.Unlock()
	return s.fakeStore.Heartbeat(ctx, id, addr, applied, unreachable)
}

func TestProxyHeartbeatIncarnation(t *testing.T) {
	store := &incarnationStore{fakeStore: newFakeStore("n1")}
	ts := startServer(t, store, insecureOpts, "")
	ctx := testContext(t, 5*time.Second)
	c := newClient(t, []string{ts.addr}, ClientOptions{Insecure: true, Incarnation: "0123456789ab"})
	if _, err := c.ProxyHeartbeat(ctx, "p1", "10.1.0.1:6432", 0, nil); err != nil {
		t.Fatal(err)
	}
	// Without one, the plain heartbeat.
	plain := newClient(t, []string{ts.addr}, ClientOptions{Insecure: true})
	if _, err := plain.ProxyHeartbeat(ctx, "p2", "10.1.0.2:6432", 0, nil); err != nil {
		t.Fatal(err)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if len(store.got) != 1 || store.got[0] != "0123456789ab" {
		t.Fatalf("incarnations %q", store.got)
	}
	if len(store.Proxies()) != 2 {
		t.Fatalf("proxies %+v", store.Proxies())
	}
}
