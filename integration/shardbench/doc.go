// Package shardbench is pgbench's accounts workload over shards: a
// transaction that updates, reads and logs one account, with
// pgbench_accounts and pgbench_history both sharded by aid (colocated), so
// that every transaction stays on the shard of its account.
//
// It builds the shard map ([NewSetup], range or hash over the aids), creates
// the tables on every shard and loads each shard's accounts directly,
// filtered by the map in SQL ([Setup.Load]), runs pgbench with [Script]
// through pgshard ([Pgbench]) and checks afterwards, shard by shard, that
// every row sits where the map says and that the balances add up to the
// logged deltas ([Setup.Check]).
//
// The package's test runs the workload through a pgshard proxy started
// in-process (package testproxy) over four servers started by package
// integration, in every pgbench query mode; integration/bench uses the same
// pieces to measure sharded throughput for docs/benchmarks.md.
package shardbench
