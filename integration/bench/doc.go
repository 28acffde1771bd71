// Command bench compares pgshard with PgBouncer and with a direct
// connection to PostgreSQL, using pgbench, and writes a Markdown report.
//
// In one run it starts a PostgreSQL server with package pgcluster and
// initialises it with `pgbench -i`, starts the pgshard binary given by
// -pgshard and PgBouncer (installed with apt-get when missing) in front of
// it, both in transaction pooling mode, and runs the select-only pgbench
// workload (`pgbench -S`) in each query mode (simple, extended, prepared)
// against each target. For the proxies it samples the process's CPU time
// from /proc/PID/stat around each run to report CPU microseconds per
// transaction.
//
// Then (unless -sharded=false) it runs the sharded comparison: pgbench's
// accounts workload of package shardbench (update, read back and log one
// account, as a transaction and as autocommit statements) with
// pgbench_accounts and pgbench_history sharded by aid, directly on one
// PostgreSQL, through pgshard with a one-shard map over that server, and
// through pgshard over -shards servers holding the same accounts between
// them; afterwards it checks on every server that each row is where the
// map says and that the balances add up. -sharded-only runs just that:
//
//	go run ./integration/bench -pgshard bin/pgshard -sharded-only
//
// With -merged (or -merged-only) it also times reads that pgshard merges
// over -shards shards (ORDER BY ... LIMIT, count/sum/avg, GROUP BY, a key
// IN list), one client, on one server holding every account, on the
// shards directly (each running the statement pgshard sends it, all at
// once) and through pgshard, and reports the proxy's share of the latency
// (merged.go):
//
//	go run ./integration/bench -pgshard bin/pgshard -merged-only -scale 10
//
// With -idle-only it measures idle clients instead (idle.go, make
// bench-clients): for each count in -idle-clients, a fresh pgshard (also
// with limits.park_idle_clients unless -idle-park=false, and -baseline's)
// and PgBouncer get that many clients from load-generator processes (this
// program run as "idle-worker", at most -idle-per-proc clients each), each
// authenticated and having run one query; it reports the proxy's VmRSS
// before and after per client, and with the largest count connected runs
// pgbench through the same proxy and then one more query on every idle
// client. Its section sits between <!-- bench-clients:begin --> and
// <!-- bench-clients:end -->:
//
//	go run ./integration/bench -pgshard bin/pgshard -idle-only -idle-clients 1000,15000
//
// The report replaces only the text between the markers
// <!-- bench:begin --> and <!-- bench:end --> (select-only) and between
// <!-- bench-sharded:begin --> and <!-- bench-sharded:end --> (sharded)
// and between <!-- bench-merged:begin --> and <!-- bench-merged:end --> of
// the -out file, so hand-written analysis around them survives a rerun,
// and a run of one comparison leaves the other's section alone. `make
// bench` runs both:
//
//	go run ./integration/bench -pgshard bin/pgshard -out docs/benchmarks.md
//
// Everything it starts (PostgreSQL, pgshard, PgBouncer, pgbench) is stopped
// when it returns, fails or is interrupted with Ctrl-C.
package main
