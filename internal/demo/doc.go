// Package demo builds the environment of `pgshard demo`: local PostgreSQL
// servers started with package pgcluster (today one shard, a primary and one
// streaming replica), a proxy configuration pointing at them with the demo
// user, sample data loaded through the proxy, and the banner that tells the
// user how to connect.
//
// It holds the logic; cmd/pgshard only parses flags, runs the proxy and
// wires these steps together. The proxy itself is package proxy.
package demo
