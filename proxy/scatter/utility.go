package scatter

import (
	"context"
	"fmt"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/wire"
)

// Utility runs a utility statement (DDL) on several shards, all or none:
// sqls[i] on conns[i] (a backend of shards[i]), each in a transaction,
// all committed once every shard succeeded, else all rolled back at the
// first failure. A statement PostgreSQL does not allow in a transaction
// block (25001: VACUUM, CREATE INDEX CONCURRENTLY, ...) runs connection by
// connection instead, stopping at the first failure. It returns the
// statement's tag, or the failing shard and its error. commit, when not
// nil, commits the transactions as one (two-phase commit) instead of one
// by one; its error names no shard (failed is "").
func Utility(ctx context.Context, shards []string, conns []*pool.Conn, sqls []string, commit CommitFunc) (tag, failed string, err error) {
	tag, failed, err = utilityInTransactions(ctx, shards, conns, sqls, commit)
	if serverCode(err) == wire.SQLStateActiveSQLTransaction { // cannot run inside a transaction block
		tag, failed, err = "", "", nil
		for i, be := range conns {
			if tag, err = be.ExecTag(ctx, sqls[i]); err != nil {
				failed = shards[i]
				break
			}
		}
	}
	return tag, failed, err
}

// utilityInTransactions runs sql in a transaction on every connection and
// commits them all, or rolls all back at the first failure. It returns
// the statement's tag, or the failing shard and its error.
func utilityInTransactions(ctx context.Context, shards []string, conns []*pool.Conn, sqls []string, commit CommitFunc) (string, string, error) {
	var tag string
	for i, be := range conns {
		t, err := be.ExecInTx(ctx, "BEGIN;\n"+sqls[i]+"\n;")
		if err == nil {
			tag = t
			continue
		}
		for _, other := range conns[:i+1] {
			_ = other.Exec(ctx, "ROLLBACK")
		}
		return "", shards[i], err
	}
	if commit != nil {
		txs := make([]Tx, len(conns))
		for i, be := range conns {
			txs[i] = Tx{Name: shards[i], Conn: be}
		}
		if err := commit(ctx, txs); err != nil {
			return "", "", err
		}
		return tag, "", nil
	}
	for i, be := range conns {
		if err := be.Exec(ctx, "COMMIT"); err != nil {
			// Earlier shards committed: say so; this cannot be undone.
			return "", shards[i], fmt.Errorf("commit failed after %d of %d shards committed: %w", i, len(conns), err)
		}
	}
	return tag, "", nil
}
