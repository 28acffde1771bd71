package proxy

import (
	"context"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/proxy/scatter"
)

// scatterBackends lends a statement over several shards (package
// proxy/scatter) the server's connections for a user and a database.
type scatterBackends struct {
	srv  *Server
	user *userState
	db   string
}

// WaitSwitch implements scatter.Backends.
func (b *scatterBackends) WaitSwitch(ctx context.Context, shard string) error {
	return b.srv.waitSwitch(ctx, shard)
}

// Pool implements scatter.Backends.
func (b *scatterBackends) Pool(ctx context.Context, shard, addr string) (*pool.Pool, error) {
	return b.srv.poolAt(ctx, shard, addr, b.user, b.db)
}

// Acquire implements scatter.Backends.
func (b *scatterBackends) Acquire(ctx context.Context, p *pool.Pool) (*pool.Conn, error) {
	return b.srv.acquire(ctx, p)
}

// scatter runs req on several shards for user and database db: see
// scatter.Run.
func (s *Server) scatter(ctx context.Context, user *userState, db string, req scatter.Request) ([]byte, error) {
	if req.Log == nil {
		req.Log = s.log
	}
	return scatter.Run(ctx, &scatterBackends{srv: s, user: user, db: db}, req)
}
