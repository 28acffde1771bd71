package metarpc

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/shardmap/metapb"
)

// WatchMap calls fn with every map newer than epoch after, in epoch order
// (epochs that follow each other quickly may be skipped: only the newest
// matters), until ctx ends or fn returns an error. It follows the map on
// any member, moving to another one — or waiting, with backoff, for one to
// come back — whenever a stream breaks, and resumes after the last epoch
// fn saw. This is how proxies follow the map.
//
// WatchMap returns fn's error unchanged; otherwise an error wrapping
// ctx's, or one that no reconnection can cure (codes.Unauthenticated, a
// map this client cannot parse, ErrClosed).
func (c *Client) WatchMap(ctx context.Context, after uint64, fn func(MapVersion) error) error {
	last := after
	bo := c.newBackoff()
	for {
		var lastErr error
		for _, addr := range c.order() {
			progressed, err := c.watchOnce(ctx, addr, &last, fn)
			if progressed {
				bo.reset()
			}
			var fe callbackError
			switch {
			case errors.As(err, &fe):
				return fe.err
			case ctx.Err() != nil:
				return fmt.Errorf("metarpc: WatchMap: %w", ctx.Err())
			case !rewatchable(err):
				return fmt.Errorf("metarpc: WatchMap on %s: %w", addr, err)
			}
			c.log.Warn("metarpc: map watch broke; reconnecting", "addr", addr, "epoch", last, "err", err)
			lastErr = err
		}
		if err := bo.wait(ctx); err != nil {
			return fmt.Errorf("metarpc: WatchMap: %w (last error: %w)", err, lastErr)
		}
	}
}

// callbackError carries the error of WatchMap's fn.
type callbackError struct{ err error }

// Error is fn's error's text.
func (e callbackError) Error() string { return e.err.Error() }

// permanentError is a watch failure that reconnecting cannot cure.
type permanentError struct{ err error }

// Error is the cause's text.
func (e permanentError) Error() string { return e.err.Error() }

// Unwrap returns the cause.
func (e permanentError) Unwrap() error { return e.err }

// rewatchable reports whether a watch that ended with err may succeed on
// another member or later.
func rewatchable(err error) bool {
	var pe permanentError
	if errors.As(err, &pe) || errors.Is(err, ErrClosed) {
		return false
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.Unimplemented, codes.ResourceExhausted:
		return false
	}
	return true
}

// watchOnce follows one stream from addr until it breaks; progressed says
// whether it delivered anything (to reset the backoff). A goroutine
// receives while fn runs and keeps only the newest map, so a slow fn is
// never handed a map that a newer one has already replaced.
func (c *Client) watchOnce(ctx context.Context, addr string, last *uint64, fn func(MapVersion) error) (progressed bool, err error) {
	mc, err := c.client(addr)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := mc.WatchMap(ctx, &metapb.WatchMapRequest{AfterEpoch: *last})
	if err != nil {
		return false, err
	}
	var (
		mu      sync.Mutex
		newest  *metapb.MapVersion // received, not yet taken
		recvErr error              // the error that ended the stream
	)
	ready := make(chan struct{}, 1)
	received := make(chan struct{})
	go func() {
		defer close(received)
		for {
			resp, err := stream.Recv()
			mu.Lock()
			if err != nil {
				recvErr = err
			} else if pv := resp.GetMap(); pv != nil && (newest == nil || pv.GetEpoch() > newest.GetEpoch()) {
				newest = pv
			}
			mu.Unlock()
			select {
			case ready <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		cancel()
		<-received
	}()
	for {
		<-ready
		mu.Lock()
		pv, rerr := newest, recvErr
		newest = nil
		mu.Unlock()
		if pv != nil {
			progressed = true
			if pv.GetEpoch() > *last {
				v, err := versionFromProto(pv)
				if err != nil {
					return progressed, permanentError{fmt.Errorf("from %s: %w", addr, err)}
				}
				if v.Map != nil {
					if err := fn(v); err != nil {
						return progressed, callbackError{err}
					}
					*last = v.Epoch
				}
			}
		}
		if rerr != nil {
			return progressed, rerr
		}
	}
}
