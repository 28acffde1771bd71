package metarpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"time"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metapb"
)

// Request limits.
const (
	defaultHistory = 20
	maxHistory     = 1000
	defaultWait    = 30 * time.Second
	maxWait        = 10 * time.Minute
	// defaultSwitchover is a Switchover's timeout when the request has
	// none; maxWait bounds it too.
	defaultSwitchover = 60 * time.Second
	// maxUnreachable bounds the endpoints one heartbeat may report.
	maxUnreachable = 4096
	maxCommentLen  = 1024
	maxNameLen     = 256 // ids and addresses
)

// service implements metapb.MetaServiceServer over a Store.
type service struct {
	metapb.UnimplementedMetaServiceServer
	store    Store
	stopping context.Context // canceled when the server shuts down
	log      *slog.Logger
	maxMsg   int

	// The optional hooks of ServerOptions; nil when not given.
	switchover func(ctx context.Context, shard, to string) (uint64, string, error)
	health     func() []EndpointHealth
	countRows  func(ctx context.Context, server string, qs []RowQuery) ([]int64, error)
	reshard    Resharder
	// transactions is ServerOptions.Transactions.
	transactions func() (TransactionsReport, bool)

	// The YAML of the newest epoch encoded, which every watcher sends.
	yamlMu    sync.Mutex
	yamlEpoch uint64
	yaml      []byte
}

// fail turns a Store's error into the status the client gets, naming the
// leader in the trailer for a redirect. field is the request field an
// InvalidInput error is about.
func (s *service) fail(ctx context.Context, method, field string, err error) error {
	st, leader, redirect := statusOf(err, field)
	if redirect && leader != "" {
		// The status's ErrorInfo names the leader too; a failure to set
		// the trailer loses nothing.
		_ = grpc.SetTrailer(ctx, metadata.Pairs(LeaderMetadataKey, leader))
	}
	if st.Code() == codes.Unknown {
		s.log.Warn("metarpc: store error", "method", method, "err", err)
	}
	return st.Err()
}

// bind returns a context that also ends when the server shuts down, for
// calls that may last long.
func (s *service) bind(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.stopping, cancel)
	return ctx, func() { stop(); cancel() }
}

// ended is the status of a call whose bound context ended.
func (s *service) ended(ctx context.Context) error {
	if s.stopping.Err() != nil {
		return status.Error(codes.Unavailable, "the meta server is shutting down")
	}
	return status.FromContextError(ctx.Err()).Err()
}

// encode converts a version; withMap adds its YAML: the committed bytes
// when the Store has them, else Map encoded (and kept for the next
// watcher).
func (s *service) encode(v MapVersion, withMap bool) (*metapb.MapVersion, error) {
	pv := &metapb.MapVersion{Epoch: v.Epoch, AppliedAt: timestamp(v.AppliedAt), Comment: v.Comment}
	if !withMap || v.Map == nil {
		return pv, nil
	}
	if v.YAML != nil {
		pv.MapYaml = v.YAML
		return pv, nil
	}
	s.yamlMu.Lock()
	defer s.yamlMu.Unlock()
	if s.yaml != nil && s.yamlEpoch == v.Epoch {
		pv.MapYaml = s.yaml
		return pv, nil
	}
	y, err := v.Map.YAML()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode the map of epoch %d: %v", v.Epoch, err)
	}
	if v.Epoch >= s.yamlEpoch {
		s.yamlEpoch, s.yaml = v.Epoch, y
	}
	pv.MapYaml = y
	return pv, nil
}

// GetMap implements metapb.MetaServiceServer.
func (s *service) GetMap(context.Context, *metapb.GetMapRequest) (*metapb.GetMapResponse, error) {
	v := s.store.Map()
	if v.Map == nil {
		return &metapb.GetMapResponse{}, nil
	}
	pv, err := s.encode(v, true)
	if err != nil {
		return nil, err
	}
	return &metapb.GetMapResponse{Map: pv}, nil
}

// WatchMap implements metapb.MetaServiceServer. Changes that come while a
// send is blocked on a slow client are coalesced into the newest (by
// Store.Watch).
func (s *service) WatchMap(req *metapb.WatchMapRequest, stream grpc.ServerStreamingServer[metapb.WatchMapResponse]) error {
	ctx, cancel := s.bind(stream.Context())
	defer cancel()
	last := req.GetAfterEpoch()
	versions, err := s.store.Watch(ctx, last)
	if err != nil {
		return s.fail(ctx, "WatchMap", "", err)
	}
	for {
		select {
		case v, ok := <-versions:
			if !ok {
				if ctx.Err() != nil {
					return s.ended(ctx)
				}
				return status.Error(codes.Unavailable, "this meta member stopped watching the map (is it shutting down?)")
			}
			if v.Map == nil || v.Epoch <= last {
				continue
			}
			pv, err := s.encode(v, true)
			if err != nil {
				return err
			}
			if err := stream.Send(&metapb.WatchMapResponse{Map: pv}); err != nil {
				return err
			}
			last = v.Epoch
		case <-ctx.Done():
			return s.ended(ctx)
		}
	}
}

// ApplyMap implements metapb.MetaServiceServer. The map is parsed and
// validated here, so that a follower answers InvalidArgument without
// bothering the leader, and validated again by the Store.
func (s *service) ApplyMap(ctx context.Context, req *metapb.ApplyMapRequest) (*metapb.ApplyMapResponse, error) {
	if len(req.GetMapYaml()) == 0 {
		return nil, invalid("map_yaml", "the map is empty")
	}
	if len(req.GetComment()) > maxCommentLen {
		return nil, invalid("comment", fmt.Sprintf("the comment is %d bytes long, more than %d", len(req.GetComment()), maxCommentLen))
	}
	if req.GetExpectedEpoch() == math.MaxUint64 {
		return nil, invalid("expected_epoch", "no epoch can follow epoch 18446744073709551615")
	}
	m, err := shardmap.ParseYAML(req.GetMapYaml())
	if err != nil {
		return nil, (&InvalidArgumentError{Field: "map_yaml", Problems: problems(err)}).GRPCStatus().Err()
	}
	m.Epoch = req.GetExpectedEpoch() + 1
	if err := m.Validate(); err != nil {
		return nil, (&InvalidArgumentError{Field: "map_yaml", Problems: problems(err)}).GRPCStatus().Err()
	}
	if cur := s.store.Map(); cur.Map != nil && cur.Epoch == req.GetExpectedEpoch() && shardmap.SameContent(cur.Map, m) &&
		s.store.Status(ctx).State == "leader" {
		// The map is the current one: nothing to apply, no new epoch
		// (re-applying the file that is in force is a no-op). The
		// response's epoch is the expected one, which tells the caller.
		return &metapb.ApplyMapResponse{Epoch: cur.Epoch}, nil
	}
	if hs := s.hazards(ctx, m, req.GetExpectedEpoch()); len(hs) > 0 {
		list := make([]string, len(hs))
		for i, h := range hs {
			list[i] = h.String()
		}
		if !req.GetForce() {
			s.log.Warn("metarpc: refused an unsafe shard map (apply it with force to override)", "epoch", m.Epoch, "problems", list)
			return nil, (&UnsafeMapError{Hazards: hs}).GRPCStatus().Err()
		}
		s.log.Warn("metarpc: applying an unsafe shard map because the request forces it", "epoch", m.Epoch, "problems", list, "comment", req.GetComment())
	}
	if err := s.checkData(ctx, m, req); err != nil {
		return nil, err
	}
	epoch, err := s.store.ApplyMap(ctx, m, req.GetExpectedEpoch(), req.GetComment())
	if err != nil {
		return nil, s.fail(ctx, "ApplyMap", "map_yaml", err)
	}
	return &metapb.ApplyMapResponse{Epoch: epoch}, nil
}

// hazards returns what makes m unsafe to follow the current map (see
// shardmap.CheckSuccessor), with the Health hook's view of which servers
// are in recovery (a server not probed yet, or down, counts as not in
// recovery). It finds none when the map is not at expected (the
// compare-and-set refuses the change anyway) or when this member is not
// the leader (the request goes there, and the leader's view decides).
func (s *service) hazards(ctx context.Context, m *shardmap.Map, expected uint64) []shardmap.Hazard {
	cur := s.store.Map()
	if cur.Map == nil || cur.Epoch != expected {
		return nil
	}
	var inRecovery func(string) bool
	if s.health != nil {
		recovering := make(map[string]bool)
		for _, st := range s.health() {
			if st.Probed && st.Up && st.InRecovery {
				recovering[st.Addr] = true
			}
		}
		inRecovery = func(addr string) bool { return recovering[addr] }
	}
	hs := shardmap.CheckSuccessor(cur.Map, m, inRecovery)
	if len(hs) > 0 && s.store.Status(ctx).State != "leader" {
		return nil
	}
	return hs
}

// checkData refuses m while a key interval it gives to another shard
// still has rows on the old owner (see checkData and
// ServerOptions.CountRows), unless the request says the data was moved.
// Like hazards, it checks on the leader only and only when the map is at
// the expected epoch; a map that moves no interval contacts no server.
func (s *service) checkData(ctx context.Context, m *shardmap.Map, req *metapb.ApplyMapRequest) error {
	if s.countRows == nil {
		return nil
	}
	cur := s.store.Map()
	if cur.Map == nil || cur.Epoch != req.GetExpectedEpoch() || len(shardmap.DataMoves(cur.Map, m)) == 0 {
		return nil
	}
	if req.GetNoDataCheck() {
		s.log.Warn("metarpc: applying a map that gives key intervals to other shards without counting their rows, because the request says the data is already there",
			"epoch", m.Epoch, "comment", req.GetComment())
		return nil
	}
	if s.store.Status(ctx).State != "leader" {
		return nil // the store redirects the request to the leader, which checks
	}
	ctx, cancel := s.bind(ctx)
	defer cancel()
	err := checkData(ctx, cur.Map, m, s.countRows)
	var dn *DataNotMovedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &dn):
		s.log.Warn("metarpc: refused a shard map that gives rows to another shard (apply it with no_data_check to override)", "epoch", m.Epoch, "err", err)
		return dn.GRPCStatus().Err()
	case ctx.Err() != nil:
		return s.ended(ctx)
	}
	return s.fail(ctx, "ApplyMap", "", err)
}

// MapHistory implements metapb.MetaServiceServer. With maps, it returns
// fewer versions than asked when more would not fit in one message.
func (s *service) MapHistory(_ context.Context, req *metapb.MapHistoryRequest) (*metapb.MapHistoryResponse, error) {
	limit := int(req.GetLimit())
	switch {
	case limit == 0:
		limit = defaultHistory
	case limit > maxHistory:
		limit = maxHistory
	}
	resp := &metapb.MapHistoryResponse{}
	budget := s.maxMsg / 2
	for _, v := range s.store.History(limit) {
		pv, err := s.encode(v, req.GetIncludeMaps())
		if err != nil {
			return nil, err
		}
		if budget -= len(pv.GetMapYaml()) + len(pv.GetComment()) + 64; budget < 0 && len(resp.Versions) > 0 {
			break
		}
		resp.Versions = append(resp.Versions, pv)
	}
	return resp, nil
}

// ListShards implements metapb.MetaServiceServer. Each endpoint's health
// comes from the Health hook, and the proxies' reports from the Store.
func (s *service) ListShards(context.Context, *metapb.ListShardsRequest) (*metapb.ListShardsResponse, error) {
	v := s.store.Map()
	if v.Map == nil {
		return &metapb.ListShardsResponse{}, nil
	}
	var idx healthIndex
	if s.health != nil {
		idx = newHealthIndex(s.health())
	}
	return &metapb.ListShardsResponse{Epoch: v.Epoch, Shards: shardsToProto(v.Map, idx, s.store)}, nil
}

// MemberStatus implements metapb.MetaServiceServer.
func (s *service) MemberStatus(ctx context.Context, _ *metapb.MemberStatusRequest) (*metapb.MemberStatusResponse, error) {
	st := s.store.Status(ctx)
	if st.MapEpoch == 0 {
		st.MapEpoch = s.store.Map().Epoch
	}
	return statusToProto(st), nil
}

// JoinMember implements metapb.MetaServiceServer.
func (s *service) JoinMember(ctx context.Context, req *metapb.JoinMemberRequest) (*metapb.JoinMemberResponse, error) {
	if err := checkName("id", req.GetId()); err != nil {
		return nil, err
	}
	if err := checkAddress("raft_address", req.GetRaftAddress(), false); err != nil {
		return nil, err
	}
	if err := checkAddress("api_address", req.GetApiAddress(), true); err != nil {
		return nil, err
	}
	if err := s.store.Join(ctx, req.GetId(), req.GetRaftAddress()); err != nil {
		return nil, s.fail(ctx, "JoinMember", "id", err)
	}
	if r, ok := s.store.(MemberAPIRecorder); ok && req.GetApiAddress() != "" {
		if err := r.SetMemberAPIAddr(ctx, req.GetId(), req.GetApiAddress()); err != nil {
			return nil, s.fail(ctx, "JoinMember", "api_address", err)
		}
	}
	return &metapb.JoinMemberResponse{}, nil
}

// RemoveMember implements metapb.MetaServiceServer.
func (s *service) RemoveMember(ctx context.Context, req *metapb.RemoveMemberRequest) (*metapb.RemoveMemberResponse, error) {
	if err := checkName("id", req.GetId()); err != nil {
		return nil, err
	}
	if err := s.store.Remove(ctx, req.GetId()); err != nil {
		return nil, s.fail(ctx, "RemoveMember", "id", err)
	}
	return &metapb.RemoveMemberResponse{}, nil
}

// maxIncarnation bounds a heartbeat's incarnation.
const maxIncarnation = 64

// incarnationHeartbeater is a Store that records the proxy's incarnation
// with its heartbeat (the node's does).
type incarnationHeartbeater interface {
	HeartbeatIncarnation(ctx context.Context, id, incarnation, addr string, applied uint64, unreachable []string) error
}

// ProxyHeartbeat implements metapb.MetaServiceServer.
func (s *service) ProxyHeartbeat(ctx context.Context, req *metapb.ProxyHeartbeatRequest) (*metapb.ProxyHeartbeatResponse, error) {
	if err := checkName("proxy_id", req.GetProxyId()); err != nil {
		return nil, err
	}
	if err := checkAddress("address", req.GetAddress(), true); err != nil {
		return nil, err
	}
	if n := len(req.GetUnreachable()); n > maxUnreachable {
		return nil, invalid("unreachable", fmt.Sprintf("%d endpoints, more than %d", n, maxUnreachable))
	}
	for _, a := range req.GetUnreachable() {
		if err := checkAddress("unreachable", a, false); err != nil {
			return nil, err
		}
	}
	if n := len(req.GetIncarnation()); n > maxIncarnation {
		return nil, invalid("incarnation", fmt.Sprintf("%d bytes, more than %d", n, maxIncarnation))
	}
	var err error
	if hi, ok := s.store.(incarnationHeartbeater); ok && req.GetIncarnation() != "" {
		err = hi.HeartbeatIncarnation(ctx, req.GetProxyId(), req.GetIncarnation(), req.GetAddress(), req.GetAppliedEpoch(), req.GetUnreachable())
	} else {
		err = s.store.Heartbeat(ctx, req.GetProxyId(), req.GetAddress(), req.GetAppliedEpoch(), req.GetUnreachable())
	}
	if err != nil {
		return nil, s.fail(ctx, "ProxyHeartbeat", "proxy_id", err)
	}
	return &metapb.ProxyHeartbeatResponse{Ok: true, CurrentEpoch: s.store.Map().Epoch}, nil
}

// DeregisterProxy implements metapb.MetaServiceServer.
func (s *service) DeregisterProxy(ctx context.Context, req *metapb.DeregisterProxyRequest) (*metapb.DeregisterProxyResponse, error) {
	if err := checkName("proxy_id", req.GetProxyId()); err != nil {
		return nil, err
	}
	if err := s.store.Deregister(ctx, req.GetProxyId()); err != nil {
		return nil, s.fail(ctx, "DeregisterProxy", "proxy_id", err)
	}
	return &metapb.DeregisterProxyResponse{}, nil
}

// ListProxies implements metapb.MetaServiceServer.
func (s *service) ListProxies(context.Context, *metapb.ListProxiesRequest) (*metapb.ListProxiesResponse, error) {
	return &metapb.ListProxiesResponse{Proxies: proxiesToProto(s.store.Proxies())}, nil
}

// WaitApplied implements metapb.MetaServiceServer. A wait that times out
// is an answer (applied false, with the lagging proxies), not an error.
func (s *service) WaitApplied(ctx context.Context, req *metapb.WaitAppliedRequest) (*metapb.WaitAppliedResponse, error) {
	timeout := defaultWait
	if t := req.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
			return nil, invalid("timeout", "the timeout must be a positive duration")
		}
		if d := t.AsDuration(); d > 0 {
			timeout = min(d, maxWait)
		}
	}
	if req.GetEpoch() == 0 {
		return nil, invalid("epoch", "epochs start at 1")
	}
	ctx, cancel := s.bind(ctx)
	defer cancel()
	wctx, wcancel := context.WithTimeout(ctx, timeout)
	defer wcancel()
	err := s.store.WaitApplied(wctx, req.GetEpoch())
	switch {
	case err == nil:
		return &metapb.WaitAppliedResponse{Applied: true}, nil
	case ctx.Err() != nil:
		return nil, s.ended(ctx)
	case !errors.Is(err, context.DeadlineExceeded) || wctx.Err() == nil:
		return nil, s.fail(ctx, "WaitApplied", "epoch", err)
	}
	resp := &metapb.WaitAppliedResponse{}
	for _, p := range s.store.Proxies() {
		if p.Live && p.AppliedEpoch < req.GetEpoch() {
			resp.Lagging = append(resp.Lagging, proxyToProto(p))
		}
	}
	// Proxies that caught up between the timeout and the listing make
	// the wait a success after all.
	resp.Applied = len(resp.Lagging) == 0
	return resp, nil
}

// Switchover implements metapb.MetaServiceServer through the Switchover
// hook, on the leader only. A follower redirects before anything is done;
// once the hook runs, a lost leadership is not a redirect (the client must
// not send the switchover again blindly) but Unavailable saying so.
func (s *service) Switchover(ctx context.Context, req *metapb.SwitchoverRequest) (*metapb.SwitchoverResponse, error) {
	if s.switchover == nil {
		return nil, status.Error(codes.Unimplemented, "this meta cluster runs no failover controller, so it cannot switch primaries (Switchover)")
	}
	if err := checkName("shard", req.GetShard()); err != nil {
		return nil, err
	}
	if err := checkAddress("to", req.GetTo(), true); err != nil {
		return nil, err
	}
	timeout := defaultSwitchover
	if t := req.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
			return nil, invalid("timeout", "the timeout must be a positive duration")
		}
		if d := t.AsDuration(); d > 0 {
			timeout = min(d, maxWait)
		}
	}
	if st := s.store.Status(ctx); st.State != "leader" {
		return nil, s.fail(ctx, "Switchover", "", &NotLeaderError{Leader: st.LeaderAPIAddress})
	}
	ctx, cancel := s.bind(ctx)
	defer cancel()
	hctx, hcancel := context.WithTimeout(ctx, timeout)
	defer hcancel()
	epoch, primary, err := s.switchover(hctx, req.GetShard(), req.GetTo())
	var lr LeaderRedirect
	switch {
	case err == nil:
		return &metapb.SwitchoverResponse{Epoch: epoch, NewPrimary: primary}, nil
	case errors.As(err, &lr):
		return nil, status.Errorf(codes.Unavailable, "this member stopped leading the meta cluster during the switchover of shard %s (%v); "+
			"a new leader resumes it from the map: read the shard before asking again", req.GetShard(), err)
	case s.stopping.Err() != nil:
		return nil, status.Errorf(codes.Unavailable, "the meta server shut down during the switchover of shard %s (%v); "+
			"a leader resumes it from the map: read the shard before asking again", req.GetShard(), err)
	}
	return nil, s.fail(ctx, "Switchover", "to", err)
}

// invalid is an InvalidArgument status error about one field.
func invalid(field, problem string) error {
	return (&InvalidArgumentError{Field: field, Problems: []string{problem}}).GRPCStatus().Err()
}

// problems lists the problems an error joins (ParseYAML and Validate
// report each on its own line).
func problems(err error) []string {
	var out []string
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, problems(e)...)
		}
		return out
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// checkName checks an id: not empty, not too long, printable, no spaces.
func checkName(field, v string) error {
	switch {
	case v == "":
		return invalid(field, "it is empty")
	case len(v) > maxNameLen:
		return invalid(field, fmt.Sprintf("it is %d bytes long, more than %d", len(v), maxNameLen))
	case strings.IndexFunc(v, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0:
		return invalid(field, fmt.Sprintf("%q has spaces or unprintable characters", v))
	}
	return nil
}

// checkAddress checks a host:port address; optional ones may be empty.
func checkAddress(field, v string, optional bool) error {
	if v == "" && optional {
		return nil
	}
	if err := checkName(field, v); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(v); err != nil {
		return invalid(field, fmt.Sprintf("%q is not host:port", v))
	}
	return nil
}
