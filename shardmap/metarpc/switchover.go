package metarpc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pgshard/pgshard/shardmap/metapb"
)

// ErrMaybeStarted reports a Switchover whose outcome is unknown: the call
// failed without an answer after a member may have started the switch.
var ErrMaybeStarted = errors.New("metarpc: the switchover may have started (the call failed without an answer); " +
	"read the shard (its primary and switch in ListShards) before asking again")

// switchoverMargin is the part of the caller's deadline that Switchover
// keeps for the answer to come back (at most a tenth of the time left).
const switchoverMargin = time.Second

// Switchover asks the leader to make the replica to (host:port; "" lets
// the leader's failover controller choose) the primary of shard, and
// returns the epoch of the map that has the new primary, and that
// primary. The leader decides how: a switchover that loses nothing while
// the primary is up, a failover when it is down.
//
// The leader gets the time left until ctx's deadline, less up to a second
// for the answer; without a deadline, the server's default (60 s). It
// bounds the whole switch (at most 10 min).
//
// A switchover is never sent twice. Switchover first finds the leader
// with a call that is safe to retry (MemberStatus, retried until ctx
// ends), then sends the request once, following only "not the leader"
// answers, which mean nothing was done. Errors: *InvalidArgumentError (a
// malformed shard or to, or a to that is not a replica of the shard);
// errors matching ErrNotFound (no such shard), ErrFailedPrecondition (the
// shard cannot switch now: nothing was done), ErrAborted (the switch
// started and was rolled back: the primary is unchanged) and
// ErrUnimplemented (the cluster runs no failover controller); and, when
// the call failed without an answer, an error matching ErrMaybeStarted
// and the cause: read the shard before asking again.
func (c *Client) Switchover(ctx context.Context, shard, to string) (uint64, string, error) {
	st, err := c.MemberStatus(ctx)
	if err != nil {
		return 0, "", fmt.Errorf("metarpc: Switchover: find the leader: %w", err)
	}
	addr := c.preferred() // the member that answered
	if st.State != "leader" && st.LeaderAPIAddress != "" && c.learn(st.LeaderAPIAddress) {
		addr = st.LeaderAPIAddress
	}
	req := &metapb.SwitchoverRequest{Shard: shard, To: to}
	attempt := defaultSwitchover + c.opts.AttemptTimeout
	if d, ok := ctx.Deadline(); ok {
		left := time.Until(d)
		t := left - min(switchoverMargin, left/10)
		if t <= 0 {
			return 0, "", fmt.Errorf("metarpc: Switchover: no time left to switch (nothing was sent): %w", context.DeadlineExceeded)
		}
		req.Timeout = durationpb.New(min(t, maxWait))
		attempt = left
	}
	for redirects := 0; ; redirects++ {
		mc, err := c.client(addr)
		if err != nil {
			return 0, "", fmt.Errorf("metarpc: Switchover: %w", err)
		}
		var trailer metadata.MD
		actx, cancel := context.WithTimeout(ctx, attempt)
		resp, err := mc.Switchover(actx, req, grpc.Trailer(&trailer))
		cancel()
		if err == nil {
			c.setPrefer(addr)
			return resp.GetEpoch(), resp.GetNewPrimary(), nil
		}
		redirect := isRedirect(err)
		terr := typedError(err, trailer)
		if redirect {
			var nl *NotLeaderError
			if errors.As(terr, &nl) && nl.Leader != "" && nl.Leader != addr && redirects < maxRedirects && c.learn(nl.Leader) {
				c.setPrefer(nl.Leader)
				addr = nl.Leader
				continue
			}
			return 0, "", fmt.Errorf("metarpc: Switchover on %s: %w", addr, terr)
		}
		if ctx.Err() != nil {
			terr = ctxError(ctx, err)
		}
		if maybeStarted(err) || ctx.Err() != nil {
			return 0, "", fmt.Errorf("metarpc: Switchover of shard %s on %s: %w (%w)", shard, addr, ErrMaybeStarted, terr)
		}
		return 0, "", fmt.Errorf("metarpc: Switchover on %s: %w", addr, terr)
	}
}

// maybeStarted reports whether a call that failed with err, not a
// redirect, may have been carried out: it ended without the server's
// answer, or with an answer that does not say nothing was done.
func maybeStarted(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Internal, codes.DataLoss:
		return true
	}
	return false
}

// preferred returns the member the client prefers (the last that
// answered), or the first address.
func (c *Client) preferred() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prefer != "" {
		return c.prefer
	}
	return c.addrs[0]
}
