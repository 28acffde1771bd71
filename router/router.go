package router

import (
	"github.com/pgshard/pgshard/router/merge"
	"github.com/pgshard/pgshard/router/plan"
)

// Kind says how many shards a plan targets.
type Kind uint8

// Plan kinds.
const (
	// KindSingle targets exactly one shard, named in Plan.Shard.
	KindSingle Kind = iota + 1
	// KindAny has no target of its own (transaction control, SET, SHOW):
	// it runs where the session already is, else on Plan.Shard.
	KindAny
	// KindScatter is a statement on several shards whose results are
	// merged: Plan.Shards, Plan.SQL (the statement for the shards) and
	// Plan.Merge; a split INSERT has Plan.PerShardSQL instead.
	KindScatter
	// KindUtility is DDL or another utility statement on a sharded table,
	// or DDL that names no table of the map: it runs on every shard in
	// Plan.Shards, all or none (the shards in Plan.PerShardSQL get that
	// statement instead: a DROP with IF EXISTS).
	KindUtility
	// KindCopyIn is COPY into a sharded table FROM STDIN: the rows are
	// split by Plan.Copy over Plan.Shards.
	KindCopyIn
	// KindCopyOut is COPY ... TO STDOUT over several shards (Plan.Shards):
	// the shards' data is concatenated.
	KindCopyOut
)

// Plan is a routing decision for one statement.
type Plan struct {
	Kind  Kind
	Shard string // target shard for KindSingle and KindAny

	// SetHint, when set, is a routing hint the statement sets; the
	// session keeps it for later statements.
	SetHint *HintChange

	// SQL, for KindAny and KindSingle, replaces the client's simple
	// query (EXPLAIN (pgshard) is answered by a query the router builds).
	// For KindScatter it is the statement for the shards ("" means the
	// client's text).
	SQL string

	// Replica says the statement may run on a streaming replica of its
	// shard(s): a read calling only functions known not to write (see
	// plan.Plan.ReplicaSafe). KindSingle and KindScatter.
	Replica bool

	// KindScatter only.
	Shards []string
	Merge  *merge.Spec // nil means concatenate
	// ReadOnly marks a read: it may run again without effect.
	ReadOnly bool
	// Calls are functions the statement calls that might be user-defined
	// aggregates (see plan.Plan.Calls).
	Calls []string
	// PerShardSQL, when set, is the statement each shard gets (the rows
	// of a multi-row INSERT that belong to it).
	PerShardSQL map[string]string
	// RowOrder gives, per shard, the positions of the rows it returns in
	// the client's result (INSERT ... RETURNING of a split INSERT).
	RowOrder map[string][]int
	// Atomic runs the statement in a transaction on every shard, all
	// committed or all rolled back.
	Atomic bool
	// Copy says how to split the rows of a KindCopyIn.
	Copy *plan.CopySpec

	// AnyShard marks a KindSingle statement that names no table of the
	// map (SELECT 1, catalog queries, NOTIFY): Shard is where it goes on
	// its own, but it runs alike on every shard, so a session held on
	// another shard (a transaction) runs it there.
	AnyShard bool
	// InTxOnly, when set, allows the statement (DO, CALL) only on the
	// shard of the session's open transaction: elsewhere the session
	// refuses it with this error.
	InTxOnly *RefusedError
	// DescribeShards, for a Query with Describe set, are the shards any
	// of which can describe the statement (the schema is the same on
	// every shard), the preferred first; nil means Shard only.
	DescribeShards []string
}

// Query is what a router may look at to place a statement. Every field
// may alias a network buffer: a Router must not keep any of it after
// Route returns.
type Query struct {
	// SQL is the statement text ("" for messages that carry none).
	SQL string
	// Parse is the body of the statement's Parse message (extended
	// protocol), for the parameter types; nil for simple queries.
	Parse []byte
	// Bind is the body of the Bind message being routed, for parameter
	// values; nil when routing a simple query, a Parse or a Describe.
	Bind []byte
	// HintShard and HintKey are the session's routing hints (SET
	// pgshard.shard / pgshard.key); "" when unset.
	HintShard, HintKey string
	// Describe asks where statement SQL can be parsed and described
	// without running it (Parse and Describe sent before any Bind): a
	// Router that knows answers with Plan.DescribeShards.
	Describe bool
}

// HintChange is a SET or RESET of a session routing hint.
type HintChange struct {
	Name  string // "shard" or "key"
	Value string // "" for RESET
}

// Router decides the target of a statement. Implementations must be safe
// for concurrent use and cheap: the session calls Route for every
// statement.
type Router interface {
	Route(q Query) (Plan, error)
}

// RefusedError is a statement a router will not run, with the SQLSTATE and
// texts for the client.
type RefusedError struct {
	Code, Message, Hint string
	// NeedKeyPosition names a sharded table ("public.users") whose key
	// column position would let the statement (an INSERT without a column
	// list) be routed: a KeyPositioner learns it from the catalog of
	// Shard, then the statement is routed again.
	NeedKeyPosition, KeyColumn, Shard string
}

// KeyPositioner is a Router that routes an INSERT without a column list
// once told the position of the table's key column among its columns.
type KeyPositioner interface {
	SetKeyPosition(table string, pos int)
}

// Error implements error.
func (e *RefusedError) Error() string { return e.Message }

// SingleShard routes every statement to one shard.
type SingleShard struct {
	Shard string
}

// Route implements Router.
func (s SingleShard) Route(Query) (Plan, error) {
	return Plan{Kind: KindSingle, Shard: s.Shard}, nil
}
