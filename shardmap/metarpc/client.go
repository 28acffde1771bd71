package metarpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metapb"
)

// ErrClosed is returned by the methods of a closed Client.
var ErrClosed = errors.New("metarpc: client closed")

// Client defaults and limits.
const (
	defaultAttemptTimeout = 10 * time.Second
	defaultMinBackoff     = 100 * time.Millisecond
	defaultMaxBackoff     = 5 * time.Second
	// maxRedirects is how many leader redirects one round of attempts
	// follows before backing off (leadership may be moving).
	maxRedirects = 4
	// maxLearned is how many addresses the client learns from redirects
	// beyond those it was given.
	maxLearned = 16
)

// ClientOptions configure a Client. Either TLS or Insecure must be set.
type ClientOptions struct {
	// Token, when not empty, is sent as "authorization: Bearer TOKEN".
	Token string
	// TLS, when not nil, is the TLS configuration (see ClientTLSConfig):
	// RootCAs to verify servers, Certificates for mutual TLS.
	TLS *tls.Config
	// Insecure connects without TLS when TLS is nil (and sends Token in
	// clear): for loopback servers.
	Insecure bool
	// AttemptTimeout bounds each attempt of a call (a WaitApplied attempt
	// gets its timeout on top); 0 means 10 s. The call as a whole is
	// bounded by its context only.
	AttemptTimeout time.Duration
	// MinBackoff and MaxBackoff bound the pause between rounds of
	// attempts and between reconnections; 0 means 100 ms and 5 s.
	MinBackoff, MaxBackoff time.Duration
	// MaxMessageSize bounds the messages sent and received; 0 means
	// DefaultMaxMessageSize.
	MaxMessageSize int
	// Logger receives the reasons for retries and reconnections (Debug
	// for calls, Warn for a broken WatchMap); nil means none.
	Logger *slog.Logger
	// Incarnation, sent with every ProxyHeartbeat, names this run of the
	// proxy process (new at each start, at most 64 bytes): two-phase
	// recovery counts a proxy restarted under the same ID as a new one.
	Incarnation string
}

// Client calls the meta cluster. It knows a list of member addresses,
// prefers the one that last answered (the leader, after a redirect), and
// retries on the others. A Client is safe for concurrent use.
//
// Every call retries what may succeed elsewhere or later (the member is
// down, is not the leader, has no leader yet) until its context ends, so
// give it a deadline. Errors that a retry cannot cure come back at once:
// *InvalidArgumentError, *StaleEpochError, and status errors such as
// codes.Unauthenticated (see status.Code).
type Client struct {
	opts    ClientOptions
	dialOps []grpc.DialOption
	log     *slog.Logger

	mu     sync.Mutex
	addrs  []string // the given addresses, then the learned ones
	given  int      // how many of addrs were given
	conns  map[string]*grpc.ClientConn
	prefer string // the member that last answered, or the leader named by a redirect
	closed bool
}

// NewClient returns a client of the members at addrs (host:port) without
// contacting them: connections are made on first use.
func NewClient(addrs []string, opts ClientOptions) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("metarpc: no meta server addresses")
	}
	c := &Client{opts: opts, conns: make(map[string]*grpc.ClientConn), log: opts.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("metarpc: meta server address %q: %w", a, err)
		}
		if !containsString(c.addrs, a) {
			c.addrs = append(c.addrs, a)
		}
	}
	c.given = len(c.addrs)
	if c.opts.AttemptTimeout <= 0 {
		c.opts.AttemptTimeout = defaultAttemptTimeout
	}
	if c.opts.MinBackoff <= 0 {
		c.opts.MinBackoff = defaultMinBackoff
	}
	if c.opts.MaxBackoff <= 0 {
		c.opts.MaxBackoff = defaultMaxBackoff
	}
	c.opts.MaxBackoff = max(c.opts.MaxBackoff, c.opts.MinBackoff)
	size := opts.MaxMessageSize
	if size <= 0 {
		size = DefaultMaxMessageSize
	}
	var creds credentials.TransportCredentials
	switch {
	case opts.TLS != nil:
		creds = credentials.NewTLS(opts.TLS.Clone())
	case opts.Insecure:
		creds = insecure.NewCredentials()
	default:
		return nil, errors.New("metarpc: no TLS configuration; set ClientOptions.Insecure to connect in clear")
	}
	c.dialOps = []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(size), grpc.MaxCallSendMsgSize(size)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}),
		// gRPC's own reconnection backoff grows to 2 minutes by default;
		// a proxy must find a restarted member sooner.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: grpcbackoff.Config{
				BaseDelay:  c.opts.MinBackoff,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   c.opts.MaxBackoff,
			},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	if opts.Token != "" {
		c.dialOps = append(c.dialOps, grpc.WithPerRPCCredentials(bearerToken{header: "Bearer " + opts.Token, requireTLS: opts.TLS != nil}))
	}
	return c, nil
}

// Dial returns a client of the members at addrs once one of them has
// answered (a MemberStatus call), so that wrong addresses or credentials
// show at once. It retries until ctx ends.
func Dial(ctx context.Context, addrs []string, opts ClientOptions) (*Client, error) {
	c, err := NewClient(addrs, opts)
	if err != nil {
		return nil, err
	}
	if _, err := c.MemberStatus(ctx); err != nil {
		_ = c.Close()
		return nil, err // "metarpc: MemberStatus on ADDR: ..." says enough
	}
	return c, nil
}

// Close closes the client's connections. Calls in progress fail.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for a, cc := range c.conns {
		if err := cc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close connection to %s: %w", a, err))
		}
	}
	c.conns = nil
	return errors.Join(errs...)
}

// order returns the addresses to try: the preferred one first.
func (c *Client) order() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.addrs))
	if c.prefer != "" {
		out = append(out, c.prefer)
	}
	for _, a := range c.addrs {
		if a != c.prefer {
			out = append(out, a)
		}
	}
	return out
}

func (c *Client) setPrefer(addr string) {
	c.mu.Lock()
	c.prefer = addr
	c.mu.Unlock()
}

// learn adds an address a redirect named, and reports whether the client
// may use it (it is known, or there is room for one more).
func (c *Client) learn(addr string) bool {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if containsString(c.addrs, addr) {
		return true
	}
	if len(c.addrs) >= c.given+maxLearned {
		return false
	}
	c.addrs = append(c.addrs, addr)
	return true
}

// client returns the stub for addr, connecting lazily.
func (c *Client) client(addr string) (metapb.MetaServiceClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	cc, ok := c.conns[addr]
	if !ok {
		var err error
		if cc, err = grpc.NewClient(addr, c.dialOps...); err != nil {
			return nil, fmt.Errorf("connect to %s: %w", addr, err)
		}
		c.conns[addr] = cc
	}
	return metapb.NewMetaServiceClient(cc), nil
}

// rpcFunc is one attempt of a call on one member.
type rpcFunc func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) error

// call runs a unary RPC with retries: it tries the preferred member, then
// the others, following leader redirects at once, and backs off between
// rounds until ctx ends. Errors a retry cannot cure end it at once.
func (c *Client) call(ctx context.Context, method string, attempt time.Duration, rpc rpcFunc) error {
	bo := c.newBackoff()
	var lastErr error
	for {
		redirects := 0
		tried := make(map[string]bool)
		for queue := c.order(); len(queue) > 0; {
			addr := queue[0]
			queue = queue[1:]
			if tried[addr] {
				continue
			}
			tried[addr] = true
			mc, err := c.client(addr)
			if err != nil {
				return fmt.Errorf("metarpc: %s: %w", method, err)
			}
			var trailer metadata.MD
			actx, cancel := context.WithTimeout(ctx, attempt)
			err = rpc(actx, mc, grpc.Trailer(&trailer))
			cancel()
			if err == nil {
				c.setPrefer(addr)
				return nil
			}
			if ctx.Err() != nil {
				return fmt.Errorf("metarpc: %s on %s: %w", method, addr, ctxError(ctx, err))
			}
			err = typedError(err, trailer)
			lastErr = fmt.Errorf("%s: %w", addr, err)
			var nl *NotLeaderError
			if errors.As(err, &nl) {
				if nl.Leader != "" && !tried[nl.Leader] && redirects < maxRedirects && c.learn(nl.Leader) {
					redirects++
					c.setPrefer(nl.Leader)
					queue = append([]string{nl.Leader}, queue...)
				}
				continue
			}
			if !retryable(err) {
				return fmt.Errorf("metarpc: %s on %s: %w", method, addr, err)
			}
			c.log.Debug("metarpc: call failed; trying another member", "method", method, "addr", addr, "err", err)
		}
		if err := bo.wait(ctx); err != nil {
			return fmt.Errorf("metarpc: %s: %w (last error: %w)", method, err, lastErr)
		}
	}
}

// ctxError is the error of a call whose context ended: the context's, with
// what the attempt said.
func ctxError(ctx context.Context, err error) error {
	if status.Code(err) == codes.Canceled || status.Code(err) == codes.DeadlineExceeded {
		return ctx.Err()
	}
	return fmt.Errorf("%w (%w)", ctx.Err(), err)
}

// retryable reports whether another member, or the same one later, may
// succeed where a call failed.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return false
}

// backoff is exponential backoff with jitter.
type backoff struct {
	min, max, cur time.Duration
}

func (c *Client) newBackoff() *backoff {
	return &backoff{min: c.opts.MinBackoff, max: c.opts.MaxBackoff}
}

// wait sleeps for the next pause, or until ctx ends.
func (b *backoff) wait(ctx context.Context) error {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	d := b.cur/2 + rand.N(b.cur/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *backoff) reset() { b.cur = 0 }

// GetMap returns the current map; its Map is nil when there is none yet.
func (c *Client) GetMap(ctx context.Context) (MapVersion, error) {
	var resp *metapb.GetMapResponse
	err := c.call(ctx, "GetMap", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) (err error) {
		resp, err = mc.GetMap(ctx, &metapb.GetMapRequest{}, opts...)
		return err
	})
	if err != nil {
		return MapVersion{}, err
	}
	if resp.GetMap() == nil {
		return MapVersion{}, nil
	}
	v, err := versionFromProto(resp.GetMap())
	if err != nil {
		return MapVersion{}, fmt.Errorf("metarpc: GetMap: %w", err)
	}
	return v, nil
}

// ApplyMap makes m the next epoch if the map is still at expectEpoch (0
// when there is no map yet), and returns the new epoch. m's own Epoch is
// ignored. It fails with *InvalidArgumentError for a map that does not
// validate and *StaleEpochError when the epoch has moved on.
//
// When an attempt failed without an answer and a retry then finds the
// epoch moved on by one, ApplyMap reads the map: if it is m with this
// comment, the lost attempt applied it, and ApplyMap reports success.
// When ctx ends after such an attempt, the error matches ErrMaybeApplied:
// a member took the change but could not confirm it, so it may still be
// committed (Raft keeps what a leader appended once it wins again); read
// the map before retrying.
//
// A map that would send writes to a server that is not a shard's real
// primary, or that drops a fence, fails with *UnsafeMapError (see
// [ApplyMapOptions.Force]). A map that gives key intervals holding rows
// to another shard fails with *DataNotMovedError (see
// [ApplyMapOptions.NoDataCheck]).
func (c *Client) ApplyMap(ctx context.Context, m *shardmap.Map, expectEpoch uint64, comment string) (uint64, error) {
	return c.ApplyMapWith(ctx, m, expectEpoch, ApplyMapOptions{Comment: comment})
}

// ApplyMapOptions are the optional parts of a map change.
type ApplyMapOptions struct {
	// Comment is kept in the history.
	Comment string
	// Force applies a map the server would refuse as unsafe
	// (*UnsafeMapError): a fenced or recovering server as a primary, or a
	// dropped fence. It risks acknowledged writes on a server that is not
	// the real primary (split brain).
	Force bool
	// NoDataCheck applies a map that gives key intervals to other shards
	// without counting their rows on the old owners, which the server
	// otherwise does (*DataNotMovedError while any has rows). Dangerous:
	// use it only when the rows are already on the new owner; rows left
	// behind disappear from the proxies' view.
	NoDataCheck bool
}

// ApplyMapWith is ApplyMap with options.
func (c *Client) ApplyMapWith(ctx context.Context, m *shardmap.Map, expectEpoch uint64, o ApplyMapOptions) (uint64, error) {
	comment := o.Comment
	y, err := m.YAML()
	if err != nil {
		return 0, fmt.Errorf("metarpc: ApplyMap: encode the map: %w", err)
	}
	req := &metapb.ApplyMapRequest{MapYaml: y, ExpectedEpoch: expectEpoch, Comment: comment, Force: o.Force, NoDataCheck: o.NoDataCheck}
	var resp *metapb.ApplyMapResponse
	ambiguous := false
	err = c.call(ctx, "ApplyMap", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) (err error) {
		resp, err = mc.ApplyMap(ctx, req, opts...)
		if retryable(err) && !isRedirect(err) {
			ambiguous = true
		}
		return err
	})
	var se *StaleEpochError
	if errors.As(err, &se) && ambiguous && expectEpoch < math.MaxUint64 && se.Current == expectEpoch+1 && c.appliedAlready(ctx, m, se.Current, comment) {
		return se.Current, nil
	}
	if err != nil && ambiguous && se == nil {
		return 0, fmt.Errorf("%w (%w)", ErrMaybeApplied, err)
	}
	if err != nil {
		return 0, err
	}
	return resp.GetEpoch(), nil
}

// ErrMaybeApplied reports an ApplyMap whose outcome is unknown: a member
// accepted the change and could not confirm it before the call ended.
var ErrMaybeApplied = errors.New("meta: the map change may have been applied (a member accepted it but could not confirm it); read the map before retrying")

// isRedirect reports whether err is a not-the-leader answer, which means
// nothing was done.
func isRedirect(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	info := errorInfo(st)
	return info != nil && info.GetReason() == reasonNotLeader
}

// appliedAlready reports whether the map at epoch is m with comment.
func (c *Client) appliedAlready(ctx context.Context, m *shardmap.Map, epoch uint64, comment string) bool {
	cur, err := c.GetMap(ctx)
	if err != nil || cur.Map == nil || cur.Epoch != epoch || cur.Comment != comment {
		return false
	}
	want := m.Clone()
	want.Epoch = epoch
	a, err1 := want.YAML()
	b, err2 := cur.Map.YAML()
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

// MapHistory returns up to limit map versions, newest first (limit 0
// means 20; the server returns at most 1000). Without withMaps their Map
// is nil.
func (c *Client) MapHistory(ctx context.Context, limit int, withMaps bool) ([]MapVersion, error) {
	req := &metapb.MapHistoryRequest{Limit: uint32(min(max(limit, 0), maxHistory)), IncludeMaps: withMaps}
	var resp *metapb.MapHistoryResponse
	err := c.call(ctx, "MapHistory", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) (err error) {
		resp, err = mc.MapHistory(ctx, req, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]MapVersion, 0, len(resp.GetVersions()))
	for _, pv := range resp.GetVersions() {
		v, err := versionFromProto(pv)
		if err != nil {
			return nil, fmt.Errorf("metarpc: MapHistory: %w", err)
		}
		out = append(out, v)
	}
	return out, nil
}

// ListShards returns the shards of the current map, with the health of
// their endpoints as the member that answers knows it, and the map's epoch
// (0 and none when there is no map yet).
func (c *Client) ListShards(ctx context.Context) (uint64, []ShardStatus, error) {
	var resp *metapb.ListShardsResponse
	err := c.call(ctx, "ListShards", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) (err error) {
		resp, err = mc.ListShards(ctx, &metapb.ListShardsRequest{}, opts...)
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	shards, err := shardsFromProto(resp.GetShards())
	if err != nil {
		return 0, nil, fmt.Errorf("metarpc: ListShards: %w", err)
	}
	return resp.GetEpoch(), shards, nil
}

// MemberStatus describes the Raft group as the member that answers sees
// it.
func (c *Client) MemberStatus(ctx context.Context) (NodeStatus, error) {
	var resp *metapb.MemberStatusResponse
	err := c.call(ctx, "MemberStatus", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) (err error) {
		resp, err = mc.MemberStatus(ctx, &metapb.MemberStatusRequest{}, opts...)
		return err
	})
	if err != nil {
		return NodeStatus{}, err
	}
	return statusFromProto(resp), nil
}

// JoinMember adds the member id, whose Raft transport listens at
// raftAddr, as a voter.
func (c *Client) JoinMember(ctx context.Context, id, raftAddr string) error {
	return c.JoinMemberAt(ctx, id, raftAddr, "")
}

// JoinMemberAt is JoinMember that also records the new member's API
// address (optional: "" records none), so that MemberStatus names it
// before the member ever leads.
func (c *Client) JoinMemberAt(ctx context.Context, id, raftAddr, apiAddr string) error {
	req := &metapb.JoinMemberRequest{Id: id, RaftAddress: raftAddr, ApiAddress: apiAddr}
	return c.call(ctx, "JoinMember", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) error {
		_, err := mc.JoinMember(ctx, req, opts...)
		return err
	})
}

// RemoveMember removes the member id from the Raft group.
func (c *Client) RemoveMember(ctx context.Context, id string) error {
	req := &metapb.RemoveMemberRequest{Id: id}
	return c.call(ctx, "RemoveMember", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) error {
		_, err := mc.RemoveMember(ctx, req, opts...)
		return err
	})
}

// ProxyHeartbeat tells the leader that proxy id, listening at addr, is
// alive and routes with the map of epoch applied, and that its own probes
// fail to reach the endpoints (host:port) in unreachable (nil: none; at
// most 4096). It returns the current epoch.
func (c *Client) ProxyHeartbeat(ctx context.Context, id, addr string, applied uint64, unreachable []string) (uint64, error) {
	req := &metapb.ProxyHeartbeatRequest{ProxyId: id, Address: addr, AppliedEpoch: applied, Unreachable: unreachable, Incarnation: c.opts.Incarnation}
	var resp *metapb.ProxyHeartbeatResponse
	err := c.call(ctx, "ProxyHeartbeat", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) (err error) {
		resp, err = mc.ProxyHeartbeat(ctx, req, opts...)
		return err
	})
	if err != nil {
		return 0, err
	}
	if !resp.GetOk() {
		return 0, fmt.Errorf("metarpc: ProxyHeartbeat: the leader did not record the heartbeat of %s", id)
	}
	return resp.GetCurrentEpoch(), nil
}

// DeregisterProxy tells the leader that proxy id stops: it no longer
// counts in WaitApplied. Forgetting an unknown proxy is not an error.
func (c *Client) DeregisterProxy(ctx context.Context, id string) error {
	req := &metapb.DeregisterProxyRequest{ProxyId: id}
	return c.call(ctx, "DeregisterProxy", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) error {
		_, err := mc.DeregisterProxy(ctx, req, opts...)
		return err
	})
}

// ListProxies lists the proxies the cluster knows from their heartbeats,
// by ID, as the member that answers has applied them.
func (c *Client) ListProxies(ctx context.Context) ([]ProxyStatus, error) {
	var resp *metapb.ListProxiesResponse
	err := c.call(ctx, "ListProxies", c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) (err error) {
		resp, err = mc.ListProxies(ctx, &metapb.ListProxiesRequest{}, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return proxiesFromProto(resp.GetProxies()), nil
}

// WaitApplied waits up to timeout (0 means the server's 30 s, at most 10
// min) until every live proxy reports epoch or a newer one. It returns nil
// then, or a *LaggingError naming the proxies that had not.
func (c *Client) WaitApplied(ctx context.Context, epoch uint64, timeout time.Duration) error {
	req := &metapb.WaitAppliedRequest{Epoch: epoch}
	wait := defaultWait
	if timeout > 0 {
		req.Timeout = durationpb.New(timeout)
		wait = min(timeout, maxWait)
	}
	var resp *metapb.WaitAppliedResponse
	err := c.call(ctx, "WaitApplied", wait+c.opts.AttemptTimeout, func(ctx context.Context, mc metapb.MetaServiceClient, opts ...grpc.CallOption) (err error) {
		resp, err = mc.WaitApplied(ctx, req, opts...)
		return err
	})
	if err != nil {
		return err
	}
	if !resp.GetApplied() {
		return &LaggingError{Epoch: epoch, Proxies: proxiesFromProto(resp.GetLagging())}
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
