// Package router decides where a client's statements go and what they do
// to session state.
//
// Router is the seam sharded routing plugs into: the proxy's session loop
// asks it (Route, the one routing entry point) for a plan.Plan whenever it
// needs a backend, and never decides a target itself; it switches on the
// plan's Kind (a scatter is a kind, a refusal a *plan.RefusalError).
// PlanRouter routes with the SQL-aware planner of package router/plan;
// SingleShard sends everything to one shard, HintRouter follows comment
// hints only.
//
// Classify is a cheap lexical look at a statement (no full parse) that
// tells the session loop about session state: SET/RESET to track and
// replay on another backend, and statements whose effects cannot be
// replayed (temporary tables, SQL-level PREPARE, WITH HOLD cursors,
// session advisory locks, LISTEN), which pin a client to its backend.
package router
