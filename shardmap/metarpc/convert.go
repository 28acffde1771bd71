package metarpc

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metapb"
)

// Conversions between the Go values of this package and metapb. Maps
// travel as their YAML: the server writes it, the client parses it.

// timestamp converts a time, leaving the zero time unset.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// fromTimestamp converts a timestamp, unset being the zero time.
func fromTimestamp(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// versionFromProto parses a map version the server sent. A version
// without map_yaml (MapHistory without maps) has a nil Map.
func versionFromProto(pv *metapb.MapVersion) (MapVersion, error) {
	v := MapVersion{
		Epoch:     pv.GetEpoch(),
		AppliedAt: fromTimestamp(pv.GetAppliedAt()),
		Comment:   pv.GetComment(),
	}
	if len(pv.GetMapYaml()) == 0 {
		return v, nil
	}
	v.YAML = pv.GetMapYaml()
	m, err := shardmap.ParseYAML(v.YAML)
	if err != nil {
		return MapVersion{}, fmt.Errorf("map of epoch %d: %w", v.Epoch, err)
	}
	if m.Epoch != v.Epoch {
		return MapVersion{}, fmt.Errorf("map of epoch %d says it is epoch %d", v.Epoch, m.Epoch)
	}
	v.Map = m
	return v, nil
}

func proxyToProto(p ProxyStatus) *metapb.Proxy {
	return &metapb.Proxy{
		Id:           p.ID,
		Address:      p.Address,
		AppliedEpoch: p.AppliedEpoch,
		LastSeen:     timestamp(p.LastSeen),
		Lease:        durationpb.New(p.Lease),
		Live:         p.Live,
	}
}

func proxiesToProto(ps []ProxyStatus) []*metapb.Proxy {
	out := make([]*metapb.Proxy, 0, len(ps))
	for _, p := range ps {
		out = append(out, proxyToProto(p))
	}
	return out
}

func proxiesFromProto(ps []*metapb.Proxy) []ProxyStatus {
	out := make([]ProxyStatus, 0, len(ps))
	for _, p := range ps {
		out = append(out, ProxyStatus{
			ID:           p.GetId(),
			Address:      p.GetAddress(),
			AppliedEpoch: p.GetAppliedEpoch(),
			LastSeen:     fromTimestamp(p.GetLastSeen()),
			Lease:        p.GetLease().AsDuration(),
			Live:         p.GetLive(),
		})
	}
	return out
}

func statusToProto(st NodeStatus) *metapb.MemberStatusResponse {
	r := &metapb.MemberStatusResponse{
		NodeId:            st.ID,
		RaftAddress:       st.RaftAddress,
		ApiAddress:        st.APIAddress,
		State:             st.State,
		LeaderId:          st.LeaderID,
		LeaderRaftAddress: st.LeaderRaftAddress,
		LeaderApiAddress:  st.LeaderAPIAddress,
		Term:              st.Term,
		LastLogIndex:      st.LastIndex,
		CommitIndex:       st.CommitIndex,
		AppliedIndex:      st.AppliedIndex,
		LastContact:       timestamp(st.LastContact),
		MapEpoch:          st.MapEpoch,
	}
	for _, m := range st.Members {
		r.Members = append(r.Members, &metapb.Member{
			Id:          m.ID,
			RaftAddress: m.RaftAddress,
			ApiAddress:  m.APIAddress,
			Suffrage:    m.Suffrage,
			Leader:      m.Leader,
		})
	}
	return r
}

func statusFromProto(r *metapb.MemberStatusResponse) NodeStatus {
	st := NodeStatus{
		ID:                r.GetNodeId(),
		RaftAddress:       r.GetRaftAddress(),
		APIAddress:        r.GetApiAddress(),
		State:             r.GetState(),
		LeaderID:          r.GetLeaderId(),
		LeaderRaftAddress: r.GetLeaderRaftAddress(),
		LeaderAPIAddress:  r.GetLeaderApiAddress(),
		Term:              r.GetTerm(),
		LastIndex:         r.GetLastLogIndex(),
		CommitIndex:       r.GetCommitIndex(),
		AppliedIndex:      r.GetAppliedIndex(),
		LastContact:       fromTimestamp(r.GetLastContact()),
		MapEpoch:          r.GetMapEpoch(),
	}
	for _, m := range r.GetMembers() {
		st.Members = append(st.Members, Member{
			ID:          m.GetId(),
			RaftAddress: m.GetRaftAddress(),
			APIAddress:  m.GetApiAddress(),
			Suffrage:    m.GetSuffrage(),
			Leader:      m.GetLeader(),
		})
	}
	return st
}
