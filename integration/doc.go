// Package integration is the framework for tests that need real PostgreSQL
// servers. It wraps package pgcluster (which does the work and is also used
// by `pgshard demo`) for Go tests: servers are started with functional
// options, a failure calls t.Fatal, and t.Cleanup stops the servers, removes
// their data and, when the test failed, logs the tail of each server's log.
//
// Tests read like stories:
//
//	c := integration.NewCluster(t, integration.Shards(2), integration.Replicas(1))
//	db := c.Shards[0].SuperDSN("postgres")
//
// A package using it should check for leaked servers in its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaks(m)) }
//
// PostgreSQL must be installed (see pgcluster.FindBinDir); tests fail
// without it unless PGSHARD_ALLOW_SKIP=1, which makes them skip.
//
// Network partitions (a server that neither answers nor resets) come from
// package netfault, which drops a port's packets with iptables.
//
// Below this package: the test kit other tests build on — testproxy
// (proxies in-process), metacluster (meta clusters of `pgshard meta run`
// processes), netfault, difftest (the differential oracle) and shardbench
// (the sharded pgbench workload) — and the end-to-end tests that use it
// (failovertest, difffuzz, and the tests of metacluster, difftest and
// shardbench); bench is the `make bench` command. Nothing outside integration/ but tests imports these
// packages, and the shipped binary links none of them
// (internal/layers_test.go checks).
package integration
