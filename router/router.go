package router

import "github.com/pgshard/pgshard/router/plan"

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
	// Router that knows answers with plan.Plan.DescribeShards.
	Describe bool
}

// Router decides the target of a statement: Route is the one routing
// entry point, and its plan.Plan is what the session runs (it switches on
// the plan's Kind). A refused statement comes back as a plan of Kind
// plan.Refused with its plan.Plan.Err as the error (a
// *plan.RefusalError). Implementations must be safe for concurrent use
// and cheap: the session calls Route for every statement.
type Router interface {
	Route(q Query) (plan.Plan, error)
}

// KeyPositioner is a Router that routes an INSERT without a column list
// once told the position of the table's key column among its columns.
type KeyPositioner interface {
	SetKeyPosition(table string, pos int)
}

// SingleShard routes every statement to one shard.
type SingleShard struct {
	Shard string
}

// Route implements Router.
func (s SingleShard) Route(Query) (plan.Plan, error) {
	return plan.Plan{Kind: plan.Single, Shard: s.Shard}, nil
}
