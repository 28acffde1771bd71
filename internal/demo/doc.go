// Package demo builds the environment of `pgshard demo`: local PostgreSQL
// servers started with package pgcluster ([Shards] shards, each a primary
// with [Replicas] streaming replica), a proxy configuration pointing at them
// with the demo user and a shard map (users range-sharded by id at
// [SplitID], orders colocated by user_id), sample data loaded through the
// proxy, and the banner that tells the user how to connect.
//
// It holds the logic; cmd/pgshard only parses flags, runs the proxy (and
// its embedded meta member) and wires these steps together. It lives under
// internal/ because the shipped binary links it: nothing under
// integration/ may be linked into the binary.
package demo
