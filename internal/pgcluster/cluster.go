package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// startConcurrency bounds how many servers StartCluster starts at once.
const startConcurrency = 2

// Cluster is a set of independent shards, each a primary with
// [Options.Replicas] streaming replicas.
type Cluster struct {
	// Shards are the shard primaries, in order; their replicas are in
	// each one's Replicas.
	Shards []*Server
}

// StartCluster starts n shards with opts, at most two at a time. Shard i is
// named opts.Name followed by i ("shard0", "shard1", ... by default). On
// error nothing is left running.
func StartCluster(ctx context.Context, n int, opts Options) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("pgcluster: StartCluster: need at least one shard, got %d", n)
	}
	prefix := opts.Name
	if prefix == "" {
		prefix = "shard"
	}
	c := &Cluster{Shards: make([]*Server, n)}
	errs := make([]error, n)
	sem := make(chan struct{}, startConcurrency)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			o := opts
			o.Name = fmt.Sprintf("%s%d", prefix, i)
			c.Shards[i], errs[i] = Start(ctx, o)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		if serr := c.Stop(context.WithoutCancel(ctx)); serr != nil {
			err = errors.Join(err, serr)
		}
		return nil, err
	}
	return c, nil
}

// Stop stops every server, replicas before primaries, and removes their data
// directories unless PGSHARD_KEEP_DATA=1. It is idempotent.
func (c *Cluster) Stop(ctx context.Context) error {
	var errs []error
	for _, s := range c.Shards {
		if s == nil {
			continue
		}
		for _, r := range s.Replicas {
			errs = append(errs, r.Stop(ctx))
		}
	}
	for _, s := range c.Shards {
		if s != nil {
			errs = append(errs, s.Destroy(ctx))
		}
	}
	return errors.Join(errs...)
}

// Servers returns every server of the cluster: each shard primary followed
// by its replicas.
func (c *Cluster) Servers() []*Server {
	var all []*Server
	for _, s := range c.Shards {
		if s == nil {
			continue
		}
		all = append(all, s)
		all = append(all, s.Replicas...)
	}
	return all
}
