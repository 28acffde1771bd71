// Package merge combines the result sets several shards return for one
// scatter-gather SELECT into exactly the result a single server would
// have returned: concatenation, streaming k-way merge for ORDER BY,
// OFFSET/LIMIT after the merge, aggregates (count, sum, min, max, avg
// rewritten as sum/count, bool_and/or) with GROUP BY, and DISTINCT.
//
// Spec is the contract with the planner (package router/plan): the planner
// rewrites the statement for the shards and says how to combine what
// comes back; this package does the combining on raw DataRow values
// (text or binary format, decided per column by the RowDescription).
//
// Aggregation and DISTINCT read every row before they emit one: groups
// are kept in a map, their accumulators and rows come from slabs (a few
// allocations per 256 groups), and with Merger.Arrivals the shards are
// read as their rows arrive rather than one after another. Without ORDER
// BY or DISTINCT each group is encoded and emitted as soon as the last
// row is in, without a second copy.
package merge
