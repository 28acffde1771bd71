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

	"github.com/pgshard/pgshard/internal/controlplane"
	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// Local is a single-member meta cluster inside the test process, as
// internal/controlplane assembles every member: a meta.Node bootstrapped
// on a temporary data directory, served by a metarpc.Server with a token
// on a free 127.0.0.1 port (no failover: it knows no PostgreSQL role).
type Local struct {
	Node  *meta.Node
	Addr  string // the API address
	Token string

	member  *controlplane.Member
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
	l := &Local{Token: rand.Text(), logPath: filepath.Join(dir, "meta.log")}
	var err error
	if l.logFile, err = os.Create(l.logPath); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	l.member, err = controlplane.New(ctx, controlplane.Config{
		Node: meta.Config{
			ID:                 "local",
			RaftAddr:           "127.0.0.1:0",
			DataDir:            filepath.Join(dir, "data"),
			Bootstrap:          true,
			HeartbeatTimeout:   200 * time.Millisecond,
			ElectionTimeout:    200 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond,
		},
		API:           lis,
		Server:        metarpc.ServerOptions{Token: l.Token},
		WaitLeader:    startTimeout,
		ShutdownGrace: -1, // Stop: the address refuses connections at once
	}, slog.New(slog.NewTextHandler(l.logFile, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		_ = l.logFile.Close()
		t.Fatalf("metacluster: start the local meta member: %v", err)
	}
	l.Node, l.Addr = l.member.Node(), l.member.Addr()
	t.Cleanup(func() {
		if err := l.Stop(); err != nil {
			t.Errorf("metacluster: stop the local meta member: %v", err)
		}
		if t.Failed() {
			t.Logf("--- last lines of the local meta member (%s) ---\n%s", l.logPath, LogTail(l.logPath, 40))
		}
	})
	return l
}

// Stop stops serving and closes the node; the address then refuses
// connections. It may be called more than once.
func (l *Local) Stop() error {
	l.once.Do(func() {
		l.stopErr = l.member.Close()
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
