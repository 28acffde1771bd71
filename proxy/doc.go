// Package proxy is the pgshard proxy server: it accepts client
// connections, authenticates them, and runs one session per client that
// relays protocol frames to backend connections lent by package pool, on
// the shard package router chooses.
//
// It is the composition root of the data path (wire, router, pool, and
// later cache and replication), which is why it is a package of its own
// rather than part of any of them. Config is its YAML configuration; Server
// owns the listener, the sessions, the pools and the admin HTTP endpoint.
package proxy
