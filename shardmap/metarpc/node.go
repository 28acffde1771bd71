package metarpc

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/meta"
)

// NodeStore serves a meta.Node through the API: it converts the node's
// values to this package's and its errors to gRPC codes (the node's
// NotLeaderError, StaleEpochError and InvalidMapError already carry what
// the server looks for; an uncertain outcome or a closed node is
// Unavailable, so clients retry — the compare-and-set on the epoch keeps a
// retried ApplyMap safe). The proxies' health reports are the node's
// (meta.Node.Reports: in memory on the leader).
func NodeStore(n *meta.Node) Store { return nodeStore{n} }

type nodeStore struct{ n *meta.Node }

func mapVersion(v meta.MapVersion) MapVersion {
	return MapVersion{Epoch: v.Epoch, Map: v.Map, YAML: v.YAML, AppliedAt: v.AppliedAt, Comment: v.Comment}
}

func nodeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, meta.ErrUncertain), errors.Is(err, meta.ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, meta.ErrNotMember):
		return status.Error(codes.NotFound, err.Error())
	}
	return err
}

func (s nodeStore) Map() MapVersion { return mapVersion(s.n.Map()) }

func (s nodeStore) Watch(ctx context.Context, after uint64) (<-chan MapVersion, error) {
	in, err := s.n.Watch(ctx, after)
	if err != nil {
		return nil, nodeError(err)
	}
	out := make(chan MapVersion)
	go func() { // ends when in is closed (ctx ended or the node closed)
		defer close(out)
		for v := range in {
			select {
			case out <- mapVersion(v):
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func (s nodeStore) ApplyMap(ctx context.Context, m *shardmap.Map, expectEpoch uint64, comment string) (uint64, error) {
	e, err := s.n.ApplyMap(ctx, m, expectEpoch, comment)
	return e, nodeError(err)
}

func (s nodeStore) History(limit int) []MapVersion {
	var out []MapVersion
	for _, v := range s.n.History(limit) {
		out = append(out, mapVersion(v))
	}
	return out
}

func (s nodeStore) Status(ctx context.Context) NodeStatus {
	st := s.n.Status(ctx)
	out := NodeStatus{
		ID: st.ID, RaftAddress: st.Addr, APIAddress: st.APIAddr, State: st.State,
		LeaderID: st.LeaderID, LeaderRaftAddress: st.LeaderAddr, LeaderAPIAddress: st.LeaderAPIAddr,
		Term: st.Term, LastIndex: st.LastIndex, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
		LastContact: st.LastContact, MapEpoch: st.Epoch,
	}
	for _, m := range st.Members {
		out.Members = append(out.Members, Member{ID: m.ID, RaftAddress: m.Addr, APIAddress: m.APIAddr, Suffrage: m.Suffrage, Leader: m.Leader})
	}
	return out
}

func (s nodeStore) Join(ctx context.Context, id, raftAddr string) error {
	if err := s.n.Join(ctx, id, raftAddr); err != nil {
		return nodeError(fmt.Errorf("join %s at %s: %w", id, raftAddr, err))
	}
	return nil
}

// SetMemberAPIAddr implements [MemberAPIRecorder].
func (s nodeStore) SetMemberAPIAddr(ctx context.Context, id, apiAddr string) error {
	if err := s.n.SetMemberAPIAddr(ctx, id, apiAddr); err != nil {
		return nodeError(err)
	}
	return nil
}

func (s nodeStore) Remove(ctx context.Context, id string) error {
	if err := s.n.Remove(ctx, id); err != nil {
		return nodeError(fmt.Errorf("remove %s: %w", id, err))
	}
	return nil
}

func (s nodeStore) Heartbeat(ctx context.Context, id, addr string, applied uint64, unreachable []string) error {
	return nodeError(s.n.Heartbeat(ctx, id, addr, applied, unreachable))
}

func (s nodeStore) HeartbeatIncarnation(ctx context.Context, id, incarnation, addr string, applied uint64, unreachable []string) error {
	return nodeError(s.n.HeartbeatIncarnation(ctx, id, incarnation, addr, applied, unreachable))
}

func (s nodeStore) Deregister(ctx context.Context, id string) error {
	return nodeError(s.n.Deregister(ctx, id))
}

func (s nodeStore) Reports(addr string) (unreachable, reporting int) { return s.n.Reports(addr) }

func (s nodeStore) Proxies() []ProxyStatus {
	var out []ProxyStatus
	for _, p := range s.n.Proxies() {
		out = append(out, ProxyStatus{ID: p.ID, Address: p.Addr, AppliedEpoch: p.AppliedEpoch, LastSeen: p.LastSeen, Lease: p.Lease, Live: p.Alive})
	}
	return out
}

func (s nodeStore) WaitApplied(ctx context.Context, epoch uint64) error {
	return nodeError(s.n.WaitApplied(ctx, epoch))
}
