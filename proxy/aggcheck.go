package proxy

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgshard/pgshard/router"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// The planner knows PostgreSQL's aggregates by name; a user-defined one
// looks like any function call. Before a read over several shards runs,
// the functions it calls are looked up in the catalog of one of its shards
// (and remembered for aggCacheTTL): per-shard results of an aggregate the
// merge does not know must not be concatenated.

// aggCacheTTL is how long a function's "is it an aggregate" answer is
// trusted. An aggregate created meanwhile under a name cached as "not an
// aggregate" is noticed at the latest after this.
const aggCacheTTL = 30 * time.Second

// aggCache remembers which function names are aggregates, per database.
type aggCache struct {
	mu      sync.Mutex
	entries map[string]aggEntry // database + "\x00" + name
}

type aggEntry struct {
	agg bool
	at  time.Time
}

// checkAggregates refuses (0A000) a statement over several shards that
// calls a user-defined aggregate; calls are its function names, shard one
// of its shards.
func (s *session) checkAggregates(ctx context.Context, shard string, calls []string) error {
	if len(calls) == 0 {
		return nil
	}
	c := &s.srv.aggs
	now := time.Now()
	var unknown []string
	c.mu.Lock()
	for _, name := range calls {
		e, ok := c.entries[s.db+"\x00"+name]
		switch {
		case !ok || now.Sub(e.at) > aggCacheTTL:
			unknown = append(unknown, name)
		case e.agg:
			c.mu.Unlock()
			return aggRefusal(name)
		}
	}
	c.mu.Unlock()
	if len(unknown) == 0 {
		return nil
	}
	be, err := s.srv.lend(ctx, shard, s.user, s.db)
	if err != nil {
		return err
	}
	found := make([]bool, len(unknown))
	for i, name := range unknown {
		tag, err := be.ExecTag(ctx, "SELECT 1 FROM pg_catalog.pg_proc WHERE prokind = 'a' AND proname = "+quoteLiteral(name)+" LIMIT 1")
		if err != nil {
			be.Pool().Release(be) // (a broken one is discarded)
			return shardError(shard, fmt.Errorf("look up function %s: %w", name, err))
		}
		found[i] = tag == "SELECT 1"
	}
	be.Pool().Release(be)
	c.mu.Lock()
	if c.entries == nil {
		c.entries = make(map[string]aggEntry)
	}
	for i, name := range unknown {
		c.entries[s.db+"\x00"+name] = aggEntry{agg: found[i], at: now}
	}
	c.mu.Unlock()
	for i, name := range unknown {
		if found[i] {
			return aggRefusal(name)
		}
	}
	return nil
}

func aggRefusal(name string) error {
	return &wire.Error{Code: wire.SQLStateFeatureNotSupported,
		Message: fmt.Sprintf("cross-shard query: %s() is an aggregate pgshard cannot merge exactly from several shards", strings.ToLower(name)),
		Hint:    "Add a condition on the sharding key so that the query runs on one shard, or use SET pgshard.shard."}
}

// routeWithKeyPosition handles a refusal that names a table whose key
// column position the router needs (an INSERT without a column list):
// it asks the catalog of a shard holding the table where the key is
// among the live columns, tells the router, and routes q again. Any other
// outcome returns plan and err as they were.
func (s *session) routeWithKeyPosition(ctx context.Context, q router.Query, plan rplan.Plan, err error) (rplan.Plan, error) {
	r := s.routerFor()
	kp, ok := r.(router.KeyPositioner)
	if plan.Kind != rplan.Refused || plan.NeedKeyPosition == "" || !ok {
		return plan, err
	}
	schema, table, _ := strings.Cut(plan.NeedKeyPosition, ".")
	keyCol := plan.NeedKeyColumn
	if keyCol == "" {
		return plan, err
	}
	be, lerr := s.srv.lend(ctx, plan.Shard, s.user, s.db)
	if lerr != nil {
		return plan, err
	}
	defer be.Pool().Release(be)
	rel := quoteLiteral(quoteIdentifier(schema) + "." + quoteIdentifier(table))
	// The key column must exist; the tag's row count is then the number
	// of live columns before it.
	tag, qerr := be.ExecTag(ctx, "SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = "+rel+"::regclass AND attname = "+quoteLiteral(keyCol)+" AND attnum > 0 AND NOT attisdropped")
	if qerr != nil || tag != "SELECT 1" {
		return plan, err
	}
	tag, qerr = be.ExecTag(ctx, "SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = "+rel+"::regclass AND attnum > 0 AND NOT attisdropped"+
		" AND attnum < (SELECT attnum FROM pg_catalog.pg_attribute WHERE attrelid = "+rel+"::regclass AND attname = "+quoteLiteral(keyCol)+")")
	n, cerr := strconv.Atoi(strings.TrimPrefix(tag, "SELECT "))
	if qerr != nil || cerr != nil || !strings.HasPrefix(tag, "SELECT ") {
		return plan, err
	}
	kp.SetKeyPosition(plan.NeedKeyPosition, n)
	return r.Route(q)
}

// quoteIdentifier quotes a name for SQL as quote_ident always would.
func quoteIdentifier(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
