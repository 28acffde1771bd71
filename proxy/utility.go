package proxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/proxy/scatter"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// runUtility runs DDL (or another utility statement) that names a sharded
// table on every shard, all or none: in one transaction per shard,
// committed only when every shard succeeded (as one, with two-phase
// commit: splitcommit.go), else rolled back everywhere, with the error
// naming the shard that failed. Statements PostgreSQL does
// not allow in a transaction block (VACUUM, CREATE INDEX CONCURRENTLY, …)
// run shard by shard instead, stopping at the first failure. No backend
// is attached, so serve owns client output.
func (s *session) runUtility(ctx context.Context, plan rplan.Plan, sql string) error {
	tag, err := s.utilityOnShards(ctx, plan, sql)
	if err != nil {
		return err
	}
	s.out = wire.AppendString(s.out, 'C', tag)
	s.out = wire.AppendReadyForQuery(s.out, s.idleStatus())
	return s.flushClient()
}

// utilityOnShards runs sql on plan's shards as runUtility says (each
// shard of plan.PerShardSQL gets its own statement) and returns the
// command tag.
func (s *session) utilityOnShards(ctx context.Context, plan rplan.Plan, sql string) (string, error) {
	if err := s.flushClient(); err != nil {
		return "", err
	}
	s.mu.Lock()
	inTx := s.st.inTxOverShards()
	s.mu.Unlock()
	if inTx {
		return s.utilityInTx(ctx, plan, sql)
	}
	shards := slices.Sorted(slices.Values(plan.Shards)) // a fixed order: no deadlock between two of these
	commit, err := s.splitCommit(shards)
	if err != nil {
		return "", err
	}
	sqls := make([]string, len(shards))
	for i, shard := range shards {
		sqls[i] = strings.Clone(sql)
		if t, ok := plan.PerShardSQL[shard]; ok {
			sqls[i] = t
		}
	}
	conns := make([]*pool.Conn, 0, len(shards))
	defer s.learnLSNs(ctx, shards) // after the connections are back
	defer func() {
		for _, be := range conns {
			be.Pool().Release(be) // (a broken one is discarded)
		}
	}()
	for _, shard := range shards {
		be, err := s.srv.lend(ctx, shard, s.user, s.db)
		if err != nil {
			return "", err
		}
		conns = append(conns, be)
		if err := s.prepareBackend(ctx, be); err != nil {
			return "", err
		}
	}
	tag, failed, err := scatter.Utility(ctx, shards, conns, sqls, commit)
	if err != nil {
		e := err
		if failed != "" {
			e = shardError(failed, err)
		}
		if we, ok := e.(*wire.Error); ok && len(shards) > 1 && undefinedObject(we.Code) && we.Hint == "" {
			we.Hint = "DDL runs on every shard of its tables, or of the map when it names no table of the map; " +
				"an object that exists on one shard only is changed there with a /* pgshard: shard=NAME */ comment or SET pgshard.shard."
		}
		return "", e
	}
	return tag, nil
}

// utilityInTx runs sql on plan's shards inside the session's transaction
// over several shards (multitx.go), which commits it with the rest (with
// two-phase commit when it wrote on two or more shards); a failure fails
// the transaction, and a statement PostgreSQL does not allow in a
// transaction block gets its 25001, as on PostgreSQL.
func (s *session) utilityInTx(ctx context.Context, plan rplan.Plan, sql string) (string, error) {
	out, err := s.scatterInTx(ctx, true, scatter.Request{Shards: plan.Shards, SQL: strings.Clone(sql), PerShardSQL: plan.PerShardSQL})
	if err != nil {
		return "", err
	}
	if len(out) <= wire.HeaderLen || out[0] != 'C' {
		return "", wire.Errorf(wire.SQLStateInternalError, "DDL over several shards: no command tag")
	}
	return cstring(out[wire.HeaderLen:]), nil
}

// undefinedObject reports whether SQLSTATE c says an object named by the
// statement does not exist.
func undefinedObject(c string) bool {
	switch c {
	case wire.SQLStateUndefinedObject, wire.SQLStateUndefinedTable, wire.SQLStateUndefinedFunction, wire.SQLStateInvalidSchemaName:
		return true
	}
	return false
}

// shardError names the shard in a server's error for the client.
func shardError(shard string, err error) error {
	var se *pool.ServerError
	if errors.As(err, &se) {
		return &wire.Error{Code: se.Code, Message: fmt.Sprintf("shard %s: %s", shard, se.Message)}
	}
	return &wire.Error{Code: wire.SQLStateConnectionFailure, Message: fmt.Sprintf("shard %s: %v", shard, err), Err: err}
}
