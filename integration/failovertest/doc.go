// Package failovertest holds the end-to-end tests of replicas and
// failure: two shards, each a primary with two streaming replicas, a meta
// cluster of `pgshard meta run` processes that fails over dead primaries
// and runs planned switchovers, and two in-process proxies following it,
// under continuous write and read load. The tests measure the write
// availability gap of a failover, check that every write a client saw
// committed survives it (with synchronous replication; the asynchronous
// loss window is measured), that a restarted old primary gets no traffic,
// and that a planned switchover costs no client error and no write.
//
// The package has only tests; this file is its documentation.
package failovertest
