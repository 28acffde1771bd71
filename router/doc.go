// Package router decides where a client's statements go and what they do
// to session state. It is the proxy's only way to a target: the session
// loop asks a Router for a Plan whenever it needs a backend and never
// picks a shard itself.
//
// What it holds today:
//   - Router and Query (router.go): the contract with the proxy. Route,
//     the one routing entry point, returns a plan.Plan (package
//     router/plan holds the one Plan type); the proxy switches on its
//     Kind (Single, Any, Scatter, Utility, CopyIn, CopyOut, Refused): a
//     scatter is a kind, a refusal a Refused plan with its
//     *plan.RefusalError. PlanRouter reads the parameters of a Bind
//     (decoded by package wire) to find a key given as $n.
//   - Three routers, chosen by the proxy's configuration: PlanRouter
//     (planrouter.go) over a shard map, with the SQL-aware planner of
//     package router/plan; HintRouter (hint.go) for several shards
//     without a map, by a leading /* pgshard: shard=NAME */ comment, else
//     the default shard; SingleShard for one shard.
//   - The answers to EXPLAIN (pgshard), SHOW pgshard.route and SHOW
//     SHARDS (explain.go), built as VALUES queries that a shard runs, so
//     they arrive in order with the session's other replies.
//   - Classify (classify.go): a cheap lexical look at a statement (no
//     full parse) that tells the session loop about session state:
//     SET/RESET to track and replay on another backend, and statements
//     whose effects cannot be replayed (temporary tables, SQL-level
//     PREPARE, WITH HOLD cursors, session advisory locks, LISTEN), which
//     pin a client to its backend.
//
// Sub-packages: plan (SQL to routing plans, with a plan cache), merge
// (combining the rows of a scatter SELECT) and copysplit (splitting
// COPY FROM STDIN data by key).
package router
