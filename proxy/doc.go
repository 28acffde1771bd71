// Package proxy is the pgshard proxy server: it accepts client
// connections, authenticates them, and runs one session per client that
// relays protocol frames to backend connections lent by package pool, on
// the shard package router chooses.
//
// It is the composition root of the data path (wire, router, pool, and
// later cache and replication), which is why it is a package of its own
// rather than part of any of them. Config is its YAML configuration; Server
// owns the listener, the sessions, the pools and the admin HTTP endpoint.
//
// A session keeps one client's view consistent over server connections
// that change under it. It defers BEGIN to the transaction's first
// statement; pins itself to its server connection once a statement left
// session state there (SET, PREPARE, cursors, LISTEN, temporary objects),
// and refuses one that would leave it on several shards (attach.go); runs
// statements over several shards and merges their answers (package
// proxy/scatter, started from attach.go and portal.go);
// and has a request that only describes statements answered by any
// healthy server, sent again elsewhere when its server fails or stays
// silent (describe.go). Its state and the rule of which shard a statement
// may use are one type with its transitions (sessionstate.go). New
// clients are greeted with the parameters of any pool, or of any healthy
// primary (handshake.go).
//
// The shard map can change while sessions run (mapupdate.go): a
// transaction finishes on the map it began with, and every connection to
// a server that stops being its shard's primary is aborted, so nothing it
// answers counts. Writes for a shard switching its primary wait for the
// next map (buffer.go). A proxy following a meta cluster (metawatch.go)
// routes only by the cluster's map and refuses writes, visibly, while the
// cluster has not confirmed it (metastate.go).
package proxy
