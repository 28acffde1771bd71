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
// The report replaces only the text between the markers
// <!-- bench:begin --> and <!-- bench:end --> of the -out file, so
// hand-written analysis around them survives a rerun. `make bench` runs it:
//
//	go run ./integration/bench -pgshard bin/pgshard -out docs/benchmarks.md
//
// Everything it starts (PostgreSQL, pgshard, PgBouncer, pgbench) is stopped
// when it returns, fails or is interrupted with Ctrl-C.
package main
