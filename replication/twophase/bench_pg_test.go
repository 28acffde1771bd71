package twophase

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap/meta"
)

// The measurements behind the choice of decision store (doc.go):
//
//	go test -run XXX -bench . -benchtime 300x ./replication/twophase/
//
// The servers run with fsync and synchronous_commit on, as production
// does; the meta nodes fsync their Raft log.

// durable are settings that make commits durable.
var durable = integration.Settings(map[string]string{"fsync": "on", "synchronous_commit": "on"})

// metaStore is the alternative decision store: a workflow record per
// transaction in the meta Raft log (no commit record on a participant).
type metaStore struct{ n *meta.Node }

func (metaStore) RecordSQL(GID) string { return "" }
func (s metaStore) Decide(ctx context.Context, gid GID, _ Participant) (bool, error) {
	_, err := s.n.PutWorkflow(ctx, "2pc/"+string(gid), "twophase", 0, []byte("commit"))
	return false, err
}

func freeAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// metaLeader starts n in-process meta nodes (fsync on) and returns the
// leader.
func metaLeader(b *testing.B, n int) *meta.Node {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var peers []meta.Peer
	for i := range n {
		peers = append(peers, meta.Peer{ID: "m" + strconv.Itoa(i), Addr: freeAddr(b)})
	}
	var nodes []*meta.Node
	for i, p := range peers {
		others := append(append([]meta.Peer{}, peers[:i]...), peers[i+1:]...)
		node, err := meta.Open(ctx, meta.Config{ID: p.ID, RaftAddr: p.Addr, DataDir: b.TempDir(), Bootstrap: true, Peers: others,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = node.Close() })
		nodes = append(nodes, node)
	}
	if err := nodes[0].WaitLeader(ctx); err != nil {
		b.Fatal(err)
	}
	for {
		for _, node := range nodes {
			if node.IsLeader() {
				return node
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// benchCommit commits a transfer over the servers per op with store, and
// reports the decision's mean latency.
func benchCommit(b *testing.B, servers []*pgcluster.Server, store DecisionStore) {
	ctx := context.Background()
	if store != nil {
		admin := NewPGAdmin(PGLogin{User: pgcluster.SuperuserName, Password: pgcluster.SuperuserPassword, SSLMode: "disable"})
		for _, s := range servers {
			if err := admin.EnsureSchema(ctx, s.Addr(), "postgres"); err != nil {
				b.Fatal(err)
			}
		}
	}
	var conns []*Conn
	for i, s := range servers {
		if err := s.Exec(ctx, "CREATE TABLE IF NOT EXISTS acct (id int PRIMARY KEY, balance int); INSERT INTO acct VALUES (1, 0) ON CONFLICT DO NOTHING"); err != nil {
			b.Fatal(err)
		}
		pg, err := pgconn.Connect(ctx, s.SuperDSN("postgres"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { pg.Close(context.Background()) })
		conns = append(conns, &Conn{ShardName: "s" + strconv.Itoa(i), PG: pg, Wrote: true})
	}
	c := New("bench-proxy", store, Options{}, nil)
	var decide time.Duration
	b.ResetTimer()
	for range b.N {
		for _, cn := range conns {
			if _, err := cn.Exec(ctx, "BEGIN; UPDATE acct SET balance = balance + 1 WHERE id = 1"); err != nil {
				b.Fatal(err)
			}
		}
		out, err := c.Commit(ctx, asParts(conns))
		if err != nil || !out.Committed || len(out.Pending) > 0 {
			b.Fatalf("%+v %v", out, err)
		}
		decide += out.Decide
	}
	b.ReportMetric(float64(decide.Microseconds())/float64(b.N), "decide-µs/op")
}

func BenchmarkCommit1Server(b *testing.B) {
	pg := integration.NewCluster(b, integration.Shards(1), durable)
	benchCommit(b, pg.Shards, RecordStore{})
}

func BenchmarkCommit2PCRecord(b *testing.B) {
	pg := integration.NewCluster(b, integration.Shards(2), durable)
	benchCommit(b, pg.Shards, RecordStore{})
}

func BenchmarkCommit2PCMeta1(b *testing.B) {
	pg := integration.NewCluster(b, integration.Shards(2), durable)
	benchCommit(b, pg.Shards, metaStore{metaLeader(b, 1)})
}

func BenchmarkCommit2PCMeta3(b *testing.B) {
	pg := integration.NewCluster(b, integration.Shards(2), durable)
	benchCommit(b, pg.Shards, metaStore{metaLeader(b, 3)})
}

// BenchmarkDecisionMetaPut is the Raft put alone, one at a time.
func BenchmarkDecisionMetaPut(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("voters=%d", n), func(b *testing.B) {
			node := metaLeader(b, n)
			ctx := context.Background()
			b.ResetTimer()
			for i := range b.N {
				if _, err := node.PutWorkflow(ctx, "2pc/"+strconv.Itoa(i), "twophase", 0, []byte("commit")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
