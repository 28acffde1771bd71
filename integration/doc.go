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
package integration
