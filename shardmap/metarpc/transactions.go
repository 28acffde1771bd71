package metarpc

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgshard/pgshard/shardmap/metapb"
)

// Transactions over several shards: the leader's two-phase recovery
// report (ListTransactions; `pgshard transactions list`).

// TransactionsReport is what the leader's last two-phase recovery round
// saw (replication/twophase Report).
type TransactionsReport struct {
	ScannedAt time.Time             `json:"scanned_at"`
	InDoubt   []InDoubtTransaction  `json:"in_doubt"`
	Decisions []TransactionDecision `json:"decisions"`
	Problems  []TransactionProblem  `json:"problems"`
}

// InDoubtTransaction is a pgshard prepared transaction on one shard.
type InDoubtTransaction struct {
	GID      string        `json:"gid"`
	Shard    string        `json:"shard"`
	Addr     string        `json:"addr"`
	Database string        `json:"database"`
	Age      time.Duration `json:"age_ns"`
	// Proxy is the coordinating proxy as the GID names it.
	Proxy      string `json:"proxy"`
	ProxyAlive bool   `json:"proxy_alive"`
	// State is "in progress", "commit", "rollback" or "blocked: <why>".
	State string `json:"state"`
}

// TransactionDecision is a commit or abort record on a decision shard.
type TransactionDecision struct {
	GID       string    `json:"gid"`
	Shard     string    `json:"shard"`
	Database  string    `json:"database"`
	Committed bool      `json:"committed"`
	DecidedAt time.Time `json:"decided_at"`
}

// TransactionProblem is a shard where two-phase commit cannot work now.
type TransactionProblem struct {
	Shard string `json:"shard"`
	Addr  string `json:"addr"`
	Error string `json:"error"`
}

// ListTransactions implements metapb.MetaServiceServer through the
// Transactions hook, on the leader only.
func (s *service) ListTransactions(ctx context.Context, _ *metapb.ListTransactionsRequest) (*metapb.ListTransactionsResponse, error) {
	if s.transactions == nil {
		return nil, status.Error(codes.Unimplemented, "this meta cluster runs no two-phase recovery (it knows no PostgreSQL role), so it cannot list transactions")
	}
	if st := s.store.Status(ctx); st.State != "leader" {
		return nil, s.fail(ctx, "ListTransactions", "", &NotLeaderError{Leader: st.LeaderAPIAddress})
	}
	rep, ok := s.transactions()
	if !ok {
		return nil, status.Error(codes.Unavailable, "the leader has not finished its first two-phase recovery round yet; ask again in a few seconds")
	}
	resp := &metapb.ListTransactionsResponse{ScannedAt: timestamppb.New(rep.ScannedAt)}
	for _, d := range rep.InDoubt {
		resp.InDoubt = append(resp.InDoubt, &metapb.InDoubtTransaction{
			Gid: d.GID, Shard: d.Shard, Addr: d.Addr, Database: d.Database, Age: durationpb.New(d.Age),
			Proxy: d.Proxy, ProxyAlive: d.ProxyAlive, State: d.State,
		})
	}
	for _, d := range rep.Decisions {
		resp.Decisions = append(resp.Decisions, &metapb.TransactionDecision{
			Gid: d.GID, Shard: d.Shard, Database: d.Database, Committed: d.Committed, DecidedAt: timestamppb.New(d.DecidedAt),
		})
	}
	for _, p := range rep.Problems {
		resp.Problems = append(resp.Problems, &metapb.TransactionProblem{Shard: p.Shard, Addr: p.Addr, Error: p.Error})
	}
	return resp, nil
}

// ListTransactions returns the leader's last two-phase recovery report.
func (c *Client) ListTransactions(ctx context.Context) (TransactionsReport, error) {
	var resp *metapb.ListTransactionsResponse
	err := c.call(ctx, "ListTransactions", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) (err error) {
		resp, err = mc.ListTransactions(ctx, &metapb.ListTransactionsRequest{}, opts...)
		return err
	})
	if err != nil {
		return TransactionsReport{}, err
	}
	rep := TransactionsReport{ScannedAt: resp.GetScannedAt().AsTime()}
	for _, d := range resp.GetInDoubt() {
		if err := d.GetAge().CheckValid(); err != nil {
			return TransactionsReport{}, fmt.Errorf("metarpc: ListTransactions: age of %s: %w", d.GetGid(), err)
		}
		rep.InDoubt = append(rep.InDoubt, InDoubtTransaction{
			GID: d.GetGid(), Shard: d.GetShard(), Addr: d.GetAddr(), Database: d.GetDatabase(), Age: d.GetAge().AsDuration(),
			Proxy: d.GetProxy(), ProxyAlive: d.GetProxyAlive(), State: d.GetState(),
		})
	}
	for _, d := range resp.GetDecisions() {
		rep.Decisions = append(rep.Decisions, TransactionDecision{
			GID: d.GetGid(), Shard: d.GetShard(), Database: d.GetDatabase(), Committed: d.GetCommitted(), DecidedAt: d.GetDecidedAt().AsTime(),
		})
	}
	for _, p := range resp.GetProblems() {
		rep.Problems = append(rep.Problems, TransactionProblem{Shard: p.GetShard(), Addr: p.GetAddr(), Error: p.GetError()})
	}
	return rep, nil
}
