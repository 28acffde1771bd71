package proxy

import (
	"context"
	"slices"
	"time"

	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/wire"
)

// Describing before the key is known. A driver's first use of a statement
// is often Parse, Describe (statement) and Sync, with no Bind: pgx's
// statement cache, JDBC's describe. Nothing runs, and every shard has the
// same schema, so any server holding the statement's tables answers alike
// — a healthy one is chosen rather than the default shard's primary,
// which may be the one server that cannot be reached.

// attachForDescribe attaches, outside any deferred transaction, a backend
// that can answer the held-back Parse and Describe messages pending (they
// are followed by a Sync, so the attachment ends there).
func (s *session) attachForDescribe(ctx context.Context, pending [][]byte) (*pool.Conn, error) {
	s.noBegin = true
	defer func() { s.noBegin = false }()
	shards := s.describeShards(pending)
	if shards == nil || s.mode == PoolSession || s.attached() != nil {
		// A session-pooled client keeps its first backend: let the
		// usual route choose it.
		return s.attach(ctx, router.Query{})
	}
	shard, replica := s.srv.describeEndpoint(shards)
	return s.attachRouted(ctx, router.Plan{Kind: router.KindAny, Shard: shard}, router.Query{},
		func(router.Plan) string { return replica })
}

// describeShards returns the shards any of which can describe every
// statement of pending, the preferred first, or nil when the router does
// not say.
func (s *session) describeShards(pending [][]byte) []string {
	r := s.routerFor()
	var shards []string
	seen := false
	for _, f := range pending {
		body := f[wire.HeaderLen:]
		var sql string
		if f[0] == 'P' {
			sql = cstring(body[len(cstring(body))+1:])
		} else {
			name := cstring(body[1:])
			sql = pendingSQL(pending, name, s.stmtSQL(name))
		}
		if sql == "" {
			continue
		}
		plan, err := r.Route(router.Query{SQL: sql, Describe: true})
		if err != nil || plan.DescribeShards == nil {
			return nil
		}
		if !seen {
			shards, seen = slices.Clone(plan.DescribeShards), true
			continue
		}
		shards = slices.DeleteFunc(shards, func(sh string) bool { return !slices.Contains(plan.DescribeShards, sh) })
	}
	if len(shards) == 0 {
		return nil
	}
	return shards
}

// endpointView is the health of every endpoint of the shard map, reused
// for replicaViewTTL.
type endpointView struct {
	at       time.Time
	statuses []health.Status
}

// describeEndpoint picks the server that describes a statement any of
// shards can describe: the primary of the first unless the health monitor
// saw it down (or its shard is switching primaries), else the primary of
// another that the monitor saw up, else a replica of one of them that it
// saw up (the statement is only described there); when none is known up,
// the primary that failed the fewest probes in a row. It returns the shard and the replica's
// address ("" for the primary).
func (s *Server) describeEndpoint(shards []string) (shard, replica string) {
	v := s.endpoints.Load()
	if v == nil || time.Since(v.at) > replicaViewTTL {
		v = &endpointView{at: time.Now(), statuses: s.Health()}
		s.endpoints.Store(v)
	}
	statuses := v.statuses
	find := func(shard, role string) *health.Status {
		for i := range statuses {
			if st := &statuses[i]; st.Shard == shard && st.Role == role {
				return st
			}
		}
		return nil
	}
	if st := find(shards[0], health.RolePrimary); (st == nil || st.Up || st.LastProbe.IsZero()) && !s.switching(shards[0]) {
		return shards[0], ""
	}
	for _, sh := range shards[1:] {
		if st := find(sh, health.RolePrimary); st != nil && st.Up && !s.switching(sh) {
			return sh, ""
		}
	}
	for _, sh := range shards {
		for _, st := range statuses {
			if st.Shard == sh && st.Role == health.RoleReplica && st.Up {
				return sh, st.Addr
			}
		}
	}
	// None is known up: the primary that failed the fewest probes in a
	// row (a probe may just have timed out).
	best, fails := shards[0], -1
	for _, sh := range shards {
		if st := find(sh, health.RolePrimary); st != nil && (fails < 0 || st.ConsecutiveFailures < fails) {
			best, fails = sh, st.ConsecutiveFailures
		}
	}
	return best, ""
}
