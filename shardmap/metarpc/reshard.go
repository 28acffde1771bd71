package metarpc

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metapb"
)

// Resharder serves the resharding RPCs; internal/controlplane adapts the
// leader-side resharding controller (replication/reshard) to it. Its
// errors match ErrNotFound, ErrFailedPrecondition or ErrInvalidArgument
// when they are about the request.
type Resharder interface {
	// AddShard registers s, owning no interval, and returns the epoch.
	AddShard(ctx context.Context, s shardmap.Shard) (uint64, error)
	// Split splits the interval of dist holding at; returns the epoch.
	Split(ctx context.Context, dist, at string) (uint64, error)
	// StartMove creates a move.
	StartMove(ctx context.Context, req MoveRequest) (ReshardMove, error)
	// Act records a request (cutover, rollback, cancel, cleanup, verify).
	Act(ctx context.Context, ref MoveRef, action string, force bool) (ReshardMove, error)
	// List returns the moves ref names (a zero ref: all).
	List(ref MoveRef) ([]ReshardMove, error)
}

// MoveRequest asks for a move of Interval ("[LO,HI)") of Distribution
// to shard To; ID "" lets the leader choose one; Cutover is "auto" or
// "manual" ("" means manual).
type MoveRequest struct {
	ID, Distribution, Interval, To, Cutover string
}

// MoveRef names a move by ID, or by Distribution and Interval.
type MoveRef struct {
	ID, Distribution, Interval string
}

// ReshardMove is a move's workflow record; State is the JSON of
// replication/reshard's State.
type ReshardMove struct {
	ID        string
	Version   uint64
	UpdatedAt time.Time
	State     []byte
}

func moveToProto(m ReshardMove) *metapb.ReshardMove {
	return &metapb.ReshardMove{Id: m.ID, Version: m.Version, UpdatedAt: timestamp(m.UpdatedAt), StateJson: m.State}
}

func moveFromProto(m *metapb.ReshardMove) ReshardMove {
	return ReshardMove{ID: m.GetId(), Version: m.GetVersion(), UpdatedAt: fromTimestamp(m.GetUpdatedAt()), State: m.GetStateJson()}
}

func refFromProto(r *metapb.MoveRef) MoveRef {
	return MoveRef{ID: r.GetId(), Distribution: r.GetDistribution(), Interval: r.GetInterval()}
}

func refToProto(r MoveRef) *metapb.MoveRef {
	return &metapb.MoveRef{Id: r.ID, Distribution: r.Distribution, Interval: r.Interval}
}

// resharder returns the hook, or the UNIMPLEMENTED status.
func (s *service) resharder() (Resharder, error) {
	if s.reshard == nil {
		return nil, status.Error(codes.Unimplemented, "this meta member runs no resharding controller (it needs a PostgreSQL role: meta run --pg-user)")
	}
	return s.reshard, nil
}

// leaderOnly answers a redirect on a follower.
func (s *service) leaderOnly(ctx context.Context, method string) error {
	if st := s.store.Status(ctx); st.State != "leader" {
		return s.fail(ctx, method, "", &NotLeaderError{Leader: st.LeaderAPIAddress})
	}
	return nil
}

// AddShard implements metapb.MetaServiceServer.
func (s *service) AddShard(ctx context.Context, req *metapb.AddShardRequest) (*metapb.AddShardResponse, error) {
	r, err := s.resharder()
	if err != nil {
		return nil, err
	}
	if err := checkName("name", req.GetName()); err != nil {
		return nil, err
	}
	if err := checkAddress("primary", req.GetPrimary(), false); err != nil {
		return nil, err
	}
	sh := shardmap.Shard{Name: req.GetName(), State: shardmap.StateActive}
	sh.Primary, _ = shardmap.ParseEndpoint(req.GetPrimary())
	for _, a := range req.GetReplicas() {
		if err := checkAddress("replicas", a, false); err != nil {
			return nil, err
		}
		e, _ := shardmap.ParseEndpoint(a)
		sh.Replicas = append(sh.Replicas, e)
	}
	if err := s.leaderOnly(ctx, "AddShard"); err != nil {
		return nil, err
	}
	ctx, cancel := s.bind(ctx)
	defer cancel()
	epoch, err := r.AddShard(ctx, sh)
	if err != nil {
		return nil, s.fail(ctx, "AddShard", "name", err)
	}
	return &metapb.AddShardResponse{Epoch: epoch}, nil
}

// SplitInterval implements metapb.MetaServiceServer.
func (s *service) SplitInterval(ctx context.Context, req *metapb.SplitIntervalRequest) (*metapb.SplitIntervalResponse, error) {
	r, err := s.resharder()
	if err != nil {
		return nil, err
	}
	if err := checkName("distribution", req.GetDistribution()); err != nil {
		return nil, err
	}
	if req.GetAt() == "" {
		return nil, invalid("at", "it is empty")
	}
	if err := s.leaderOnly(ctx, "SplitInterval"); err != nil {
		return nil, err
	}
	epoch, err := r.Split(ctx, req.GetDistribution(), req.GetAt())
	if err != nil {
		return nil, s.fail(ctx, "SplitInterval", "at", err)
	}
	return &metapb.SplitIntervalResponse{Epoch: epoch}, nil
}

// StartMove implements metapb.MetaServiceServer.
func (s *service) StartMove(ctx context.Context, req *metapb.StartMoveRequest) (*metapb.ReshardResponse, error) {
	r, err := s.resharder()
	if err != nil {
		return nil, err
	}
	if err := checkName("distribution", req.GetDistribution()); err != nil {
		return nil, err
	}
	if err := checkName("to", req.GetTo()); err != nil {
		return nil, err
	}
	if req.GetInterval() == "" {
		return nil, invalid("interval", "it is empty; want [LO,HI)")
	}
	if err := s.leaderOnly(ctx, "StartMove"); err != nil {
		return nil, err
	}
	mv, err := r.StartMove(ctx, MoveRequest{ID: req.GetId(), Distribution: req.GetDistribution(), Interval: req.GetInterval(), To: req.GetTo(), Cutover: req.GetCutover()})
	if err != nil {
		return nil, s.fail(ctx, "StartMove", "interval", err)
	}
	return &metapb.ReshardResponse{Move: moveToProto(mv)}, nil
}

// checkRef checks a move reference.
func checkRef(ref MoveRef) error {
	if ref.ID == "" && (ref.Distribution == "" || ref.Interval == "") {
		return invalid("move", "name a move by its id, or by distribution and interval")
	}
	return nil
}

// ReshardAction implements metapb.MetaServiceServer.
func (s *service) ReshardAction(ctx context.Context, req *metapb.ReshardActionRequest) (*metapb.ReshardResponse, error) {
	r, err := s.resharder()
	if err != nil {
		return nil, err
	}
	ref := refFromProto(req.GetMove())
	if err := checkRef(ref); err != nil {
		return nil, err
	}
	if err := s.leaderOnly(ctx, "ReshardAction"); err != nil {
		return nil, err
	}
	mv, err := r.Act(ctx, ref, req.GetAction(), req.GetForce())
	if err != nil {
		return nil, s.fail(ctx, "ReshardAction", "action", err)
	}
	return &metapb.ReshardResponse{Move: moveToProto(mv)}, nil
}

// ListMoves implements metapb.MetaServiceServer.
func (s *service) ListMoves(ctx context.Context, req *metapb.ListMovesRequest) (*metapb.ListMovesResponse, error) {
	r, err := s.resharder()
	if err != nil {
		return nil, err
	}
	ref := MoveRef{}
	if req.GetMove() != nil {
		ref = refFromProto(req.GetMove())
		if err := checkRef(ref); err != nil {
			return nil, err
		}
	}
	mvs, err := r.List(ref)
	if err != nil {
		return nil, s.fail(ctx, "ListMoves", "move", err)
	}
	resp := &metapb.ListMovesResponse{}
	for _, m := range mvs {
		resp.Moves = append(resp.Moves, moveToProto(m))
	}
	return resp, nil
}

// AddShard registers the shard name (primary and replicas host:port),
// owning no interval, after the leader created the distributions' tables
// on it; it returns the map's epoch with the shard. Not retried after a
// call that may have reached the leader: a repeat says the shard exists.
func (c *Client) AddShard(ctx context.Context, name, primary string, replicas []string) (uint64, error) {
	req := &metapb.AddShardRequest{Name: name, Primary: primary, Replicas: replicas}
	var resp *metapb.AddShardResponse
	err := c.call(ctx, "AddShard", c.longAttempt(ctx), func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) (err error) {
		resp, err = mc.AddShard(ctx, req, opts...)
		return err
	})
	return resp.GetEpoch(), err
}

// longAttempt is the attempt timeout of calls that do work on the leader:
// the time left of ctx.
func (c *Client) longAttempt(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return time.Until(d)
	}
	return defaultSwitchover
}

// SplitInterval splits the interval of distribution holding at (a value
// as in the map's YAML) in two on the same shard, and returns the epoch.
func (c *Client) SplitInterval(ctx context.Context, distribution, at string) (uint64, error) {
	req := &metapb.SplitIntervalRequest{Distribution: distribution, At: at}
	var resp *metapb.SplitIntervalResponse
	err := c.call(ctx, "SplitInterval", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) (err error) {
		resp, err = mc.SplitInterval(ctx, req, opts...)
		return err
	})
	return resp.GetEpoch(), err
}

// StartMove creates a move and returns its record.
func (c *Client) StartMove(ctx context.Context, req MoveRequest) (ReshardMove, error) {
	preq := &metapb.StartMoveRequest{Id: req.ID, Distribution: req.Distribution, Interval: req.Interval, To: req.To, Cutover: req.Cutover}
	var resp *metapb.ReshardResponse
	err := c.call(ctx, "StartMove", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) (err error) {
		resp, err = mc.StartMove(ctx, preq, opts...)
		return err
	})
	if err != nil {
		return ReshardMove{}, err
	}
	return moveFromProto(resp.GetMove()), nil
}

// ReshardAction asks move ref for action (cutover, rollback, cancel,
// cleanup, verify) and returns its record with the request.
func (c *Client) ReshardAction(ctx context.Context, ref MoveRef, action string, force bool) (ReshardMove, error) {
	req := &metapb.ReshardActionRequest{Move: refToProto(ref), Action: action, Force: force}
	var resp *metapb.ReshardResponse
	err := c.call(ctx, "ReshardAction", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) (err error) {
		resp, err = mc.ReshardAction(ctx, req, opts...)
		return err
	})
	if err != nil {
		return ReshardMove{}, err
	}
	return moveFromProto(resp.GetMove()), nil
}

// ListMoves returns the moves ref names (a zero ref: all).
func (c *Client) ListMoves(ctx context.Context, ref MoveRef) ([]ReshardMove, error) {
	req := &metapb.ListMovesRequest{}
	if ref != (MoveRef{}) {
		req.Move = refToProto(ref)
	}
	var resp *metapb.ListMovesResponse
	err := c.call(ctx, "ListMoves", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) (err error) {
		resp, err = mc.ListMoves(ctx, req, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]ReshardMove, 0, len(resp.GetMoves()))
	for _, m := range resp.GetMoves() {
		out = append(out, moveFromProto(m))
	}
	return out, nil
}
