package metacluster

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// Local is a single-member meta cluster inside the test process: a
// meta.Node bootstrapped on a temporary data directory, served by a
// metarpc.Server with a token on a free 127.0.0.1 port.
type Local struct {
	Node  *meta.Node
	Addr  string // the API address
	Token string

	srv     *metarpc.Server
	served  chan error
	logPath string
	logFile *os.File
	once    sync.Once
	stopErr error
}

// StartLocal starts a Local member with a random token, and stops it when
// the test ends (Stop stops it earlier). It returns once the member leads
// and serves. Raft's timings are shortened so that it leads at once.
func StartLocal(t testing.TB) *Local {
	t.Helper()
	dir := tempDir(t, "local-meta-")
	l := &Local{Token: rand.Text(), logPath: filepath.Join(dir, "meta.log"), served: make(chan error, 1)}
	var err error
	if l.logFile, err = os.Create(l.logPath); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Addr = lis.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	l.Node, err = meta.Open(ctx, meta.Config{
		ID:                 "local",
		RaftAddr:           "127.0.0.1:0",
		APIAddr:            l.Addr,
		DataDir:            filepath.Join(dir, "data"),
		Bootstrap:          true,
		Logger:             slog.New(slog.NewTextHandler(l.logFile, &slog.HandlerOptions{Level: slog.LevelInfo})),
		HeartbeatTimeout:   200 * time.Millisecond,
		ElectionTimeout:    200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		_ = lis.Close()
		_ = l.logFile.Close()
		t.Fatalf("metacluster: open the local meta node: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Stop(); err != nil {
			t.Errorf("metacluster: stop the local meta member: %v", err)
		}
		if t.Failed() {
			t.Logf("--- last lines of the local meta member (%s) ---\n%s", l.logPath, LogTail(l.logPath, 40))
		}
	})
	if err := l.Node.WaitLeader(ctx); err != nil {
		_ = lis.Close()
		t.Fatal(err)
	}
	if l.srv, err = metarpc.NewServer(metarpc.NodeStore(l.Node), metarpc.ServerOptions{Token: l.Token}); err != nil {
		_ = lis.Close()
		t.Fatal(err)
	}
	go func() { l.served <- l.srv.Serve(lis) }()
	return l
}

// Stop stops serving and closes the node; the address then refuses
// connections. It may be called more than once.
func (l *Local) Stop() error {
	l.once.Do(func() {
		if l.srv != nil {
			l.srv.Stop()
			l.stopErr = <-l.served
		}
		if err := l.Node.Close(); err != nil && l.stopErr == nil {
			l.stopErr = err
		}
		_ = l.logFile.Close()
	})
	return l.stopErr
}

// ClientOptions are the options of the framework's clients (see
// Cluster.ClientOptions).
func (l *Local) ClientOptions() metarpc.ClientOptions { return clientOptions(l.Token) }

// Client returns a client of the member, closed when the test ends.
func (l *Local) Client(t testing.TB) *metarpc.Client {
	t.Helper()
	return newClient(t, []string{l.Addr}, l.ClientOptions())
}
