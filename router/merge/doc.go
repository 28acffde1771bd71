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
package merge
