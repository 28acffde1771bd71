// Package testproxy starts pgshard proxies inside a test process, against
// servers started with package integration: Config makes a one-shard
// configuration with a SCRAM client user (User, Password) that a test
// adjusts, and Start runs it until the test ends.
//
// It is separate from integration so that packages the proxy depends on
// can use the harness in their own tests without an import cycle.
package testproxy
