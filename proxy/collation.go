package proxy

import (
	"context"
	"fmt"
	"sync"

	rplan "github.com/pgshard/pgshard/router/plan"
)

// The merge of a read over several shards compares text bytewise: the
// order PostgreSQL gives only under the "C" (or "POSIX", or "C.UTF-8")
// collation. When a statement sorts by text, the database's default
// collation is looked up once per shard and database (it cannot change
// while the database exists) and a text sort key without COLLATE "C" is
// refused under any other.

// collations caches, per shard and database, whether the database's
// default collation sorts text bytewise.
type collations struct {
	mu      sync.Mutex
	entries map[string]bool // shard + "\x00" + database
}

// textByteOrder reports whether database s.db on shard sorts text in byte
// order by default.
func (s *session) textByteOrder(ctx context.Context, shard string) (bool, error) {
	c := &s.srv.colls
	k := shard + "\x00" + s.db
	c.mu.Lock()
	v, ok := c.entries[k]
	c.mu.Unlock()
	if ok {
		return v, nil
	}
	be, err := s.srv.lend(ctx, shard, s.user, s.db)
	if err != nil {
		return false, err
	}
	// PostgreSQL 15: datlocprovider 'c' is libc (datcollate names the
	// locale), 'i' ICU (never byte order).
	tag, err := be.ExecTag(ctx, "SELECT 1 FROM pg_catalog.pg_database WHERE datname = current_database() "+
		"AND datlocprovider = 'c' AND datcollate IN ('C', 'POSIX', 'C.UTF-8', 'C.utf8')")
	be.Pool().Release(be) // (a broken one is discarded)
	if err != nil {
		return false, shardError(shard, fmt.Errorf("look up the database's collation: %w", err))
	}
	v = tag == "SELECT 1"
	c.mu.Lock()
	if c.entries == nil {
		c.entries = make(map[string]bool)
	}
	c.entries[k] = v
	c.mu.Unlock()
	return v, nil
}

// sortsBytewise reports, for a read over several shards, whether text
// sorts bytewise in its database; true when the merge compares nothing
// (no ORDER BY, min or max).
func (s *session) sortsBytewise(ctx context.Context, plan rplan.Plan) (bool, error) {
	if plan.Merge == nil || !plan.Merge.Compares() {
		return true, nil
	}
	return s.textByteOrder(ctx, plan.Shards[0])
}
