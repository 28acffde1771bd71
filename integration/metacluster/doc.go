// Package metacluster is the test framework for the meta cluster of
// pgshard (shardmap/meta behind shardmap/metarpc) as operators run it:
// every member is a real `pgshard meta run` OS process, so tests can kill
// one with SIGKILL, freeze one with SIGSTOP, and restart one on its data
// directory. [Build] compiles the pgshard binary once per test binary
// (call it from TestMain); [Start] starts and joins a cluster whose
// members stop with the test; [StartLocal] runs a single member inside the
// test process when a test needs meta but not its failures; [StartProcess]
// runs any other pgshard command (a proxy) as a child process.
//
// It sits beside package integration, which starts the PostgreSQL shards,
// and package integration/testproxy, which starts proxies in-process; the
// tests of this package put the three together. Every process started
// here gets a parent-death signal, lives in its own process group, and is
// killed at the latest when the test ends; [Running] lists the ones still
// alive, for leak checks in TestMain. With PGSHARD_KEEP_DATA=1 the
// members' data directories and logs are kept (and their paths logged)
// for a post-mortem.
//
// The tests need PostgreSQL (see package integration) and the Go
// toolchain; they run in about 25 s on two cores:
//
//	go test ./integration/metacluster/
package metacluster
