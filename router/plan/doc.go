// Package plan holds the routing contract, Plan (one Kind: Single, Any,
// Scatter, Utility, CopyIn, CopyOut, Refused; RefusalError), and the
// planner that turns SQL statements into plans for the proxy: which
// shards a statement goes to (Plan.Reach: the key's shards, every shard,
// the default shard), how a scatter SELECT's results are merged (a
// merge.Spec, with the statement rewritten for the shards when needed),
// and what it refuses and why. router.PlanRouter completes the plan for
// the session (EXPLAIN, SHOW pgshard.*, broadcast policy).
//
// The session loop calls Planner.Route (or RouteHint with the session's
// SET pgshard.* hint) for each execution. Only a plan-cache miss parses
// (pg_query_go, cgo). The cache key is the statement normalized in one
// pass: whitespace and comments collapsed, numeric and '...' literals
// replaced by a placeholder, so WHERE id = 17 and WHERE id = 18 share one
// cached template. The template records where the key comes from (the
// k-th literal or parameter $n); a hit reads that value, hashes or
// searches it in the distribution, and fills in the plan. Literals whose
// value decides the plan beyond the key (ORDER BY 2, a hint value, or a
// literal the parser does not keep as a constant) are "pinned": the
// template applies only when they are equal, and up to 8 variants share a
// normalized text.
//
// What is routed and how:
//   - key = v, v = key, key IN (...), key = ANY($n | '{..}' | ARRAY[..]),
//     casts, qualified/aliased columns, AND with other terms, OR of such
//     terms; joins between tables of the same distribution linked by key
//     equalities: Single, or Scatter (ReachKey) when the values land on
//     several shards. Correlated subqueries linked by the key run when the values
//     land on one shard; over several shards they are refused. Anything
//     else on a sharded table is a Scatter on every shard (ReachAll;
//     UPDATE/DELETE get Broadcast). A SELECT whose key condition is an
//     IN list or ARRAY[..] of literals ANDed at the top of its WHERE
//     gives each shard of its Scatter only that shard's keys
//     (Plan.PerShardSQL with PerShardKeys; see scatterkeys.go).
//   - Unsharded tables live on their distribution's DefaultShard; a
//     statement mixing them with sharded tables runs only when the key
//     lands on that shard. Tables not in the map (catalogs, ...) are
//     assumed to exist on every shard and do not affect routing.
//   - DDL (Utility): on every shard of its tables' distribution for a
//     sharded table (ReachAll, Broadcast), on an unsharded table's shard;
//     schema DDL naming no table of the map (indexes, sequences,
//     functions, types, tables not in the map, ...) on every shard of the
//     map (ReachAll, Broadcast; a DROP gets IF EXISTS on the shards other than
//     the default shard, in PerShardSQL); temporary objects and other
//     utility statements on the default shard.
//   - INSERT needs the key column given as a constant or parameter in
//     every row; without a column list, its position comes from the
//     catalog (Plan.NeedKeyPosition, Planner.SetKeyPosition). A multi-row INSERT whose rows land on
//     several shards is split: Plan.PerShardSQL holds one INSERT per shard
//     with only its rows (ON CONFLICT and RETURNING kept).
//     INSERT ... SELECT is refused unless the SELECT is constrained to one
//     shard on a key that becomes the inserted key.
//   - UPDATE that sets the key column is refused.
//   - COPY ... FROM STDIN into a sharded table is CopyIn (the key's position
//     in the explicit column list, which is required); COPY ... TO STDOUT
//     is CopyOut with the outputs concatenated (a csv HEADER comes once per
//     shard: the proxy must drop the repeats).
//   - Scatter SELECTs: concatenation; ORDER BY (k-way merge) by output
//     name, position or expression, else a hidden sort column; LIMIT n
//     OFFSET m pushed down as LIMIT n + m; count/sum/min/max/avg (as sum
//     and count)/bool_and/bool_or/every, GROUP BY (hidden key columns
//     when not selected), DISTINCT. LIMIT without ORDER BY is allowed: any
//     rows are a correct answer. GROUP BY, DISTINCT ON and window
//     PARTITION BY including a sharding key column need no merging (each
//     group is on one shard); aggregate(DISTINCT key) combines as usual;
//     casts, round() and + - * / over aggregates are computed by the merge
//     (merge.Expr); SELECT * sorts by hidden columns after the star's
//     (Spec.HiddenTail). Refused, with SQLSTATE 0A000, a reason
//     and a hint, because they cannot be merged exactly: window
//     functions, HAVING with aggregates, DISTINCT ON not on the key,
//     other aggregates with DISTINCT or WITHIN GROUP, order-dependent or
//     non-decomposable aggregates (string_agg, array_agg, json_agg,
//     percentile_*, mode, stddev, ...), other expressions of aggregates,
//     set operations over sharded tables (a UNION ALL whose parts each
//     read one shard runs there: unionSplit), subqueries or CTEs reading
//     sharded tables without a key link to the outer query, SELECT *
//     with aggregates or ORDER BY another item's name, values
//     that differ by shard (now(), current_setting(), ...; random() next
//     to an aggregate), outer joins whose preserved side reads no sharded
//     table, GROUP BY an output alias that may also be an input column,
//     min/max or ORDER BY under an explicit collation other than "C".
//     avg also asks the shards for avg itself (its overflow error) and
//     sums ask for extra_float_digits (the merged floats' text).
//   - Key conditions count only where they limit the whole result (not on
//     the nullable side of an outer join); key equalities link two tables
//     only in the FROM scope of one of them (not two outer tables from a
//     subquery); a table or join alias with a column list hides the key.
//     A cached plan whose ORDER BY/GROUP BY expression matched a select
//     item applies only to the same literals.
//   - Hints: a leading /* pgshard: shard=s2 */ or /* pgshard: key=42 */
//     comment, or the session's Hint, decides the target (Single).
//     SET/RESET pgshard.shard and pgshard.key are Any plans with
//     Plan.Hint; SHOW pgshard.route and pgshard.shards are Any plans with
//     Plan.Show.
//
// Hidden columns the planner adds for merging are appended after the
// client's columns in ShardSQL: sort keys are listed in Spec.Final with
// Hidden set; GROUP BY keys and avg's count are not listed.
package plan
