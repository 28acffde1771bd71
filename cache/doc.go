// Package cache is the proxy's hot-row result cache: the encoded result
// messages of point reads by sharding key, kept in ristretto under a byte
// budget and replayed to clients without lending a server connection. It is
// never stale past a measured bound and always lets a session read its own
// writes. The proxy uses it through a handful of calls:
//
//	c, _ := cache.New(cache.Config{MaxBytes: 256 << 20})
//	c.SetEpoch(m.Epoch)                       // on every map the proxy applies
//	c.SetTables(settingsFromMap)              // cacheable tables, live
//	var b cache.KeyBuilder                    // one per session, reused
//	b.Begin(epoch, shard, table, rowKey); b.Statement(norm); b.Param(f, v)...
//	b.Role(role, cache.Primary); b.Formats(resultFormats)
//	k := b.Key()
//	if v, st := c.Get(k, sessionCommitLSN); st == cache.Hit { replay(v) } else {
//		var tok cache.FillToken
//		if st == cache.Miss { tok = c.BeginFill(k, 0) } // BEFORE sending the read
//		result := run()                                   // encoded messages
//		c.Fill(tok, result)                               // no-op for a zero token
//	}
//	// own writes: after the server confirmed the commit (its
//	// CommandComplete), before relaying ReadyForQuery to the client
//	c.Invalidate(shard, table, rowKey, commitLSN)
//	c.InvalidateTable(table, commitLSN)               // unknown keys, TRUNCATE, DDL
//
// The proxy looks reads up without planning them first: a key without its
// row (b.BeginLookup(epoch), then statement, parameters, roles, formats),
// c.Lookup(k, sessionLSN) on every read, and only when it serves nothing
// the planner's shard, table and row key go to c.BeginFillRow, which
// counts the miss or bypass and returns the fill token. The entry keeps
// the row's invalidation slot, shard and table, and Lookup applies to it
// every check Get applies to a key with its row.
//
// # Coherence
//
// Every invalidation takes the next value of one counter and raises a
// stamp to it: a slot stamp per (shard, table, row key) hash (a fixed array,
// so memory does not grow with the keys written; keys sharing a slot only
// cost each other a miss), a stamp per table, per shard and for everything.
// BeginFill remembers the counter when the read starts; Fill refuses the
// result if any stamp covering its key has moved past it, and Get treats an
// entry whose fill version is older than any covering stamp as a miss. So a
// read that raced an invalidation never lands after it, whatever the order
// of ristretto's buffered writes: the check that decides is made on every
// hit, not only at fill time ("no stale fill").
//
// Entries are keyed by the map epoch: SetEpoch drops every older entry,
// moved intervals included. A shard is served only while its invalidation
// stream is up and within the staleness bound ([Config.MaxStreamLag]: its
// keepalives arrive, its last commit was not applied later than that after
// it was made, and it has applied every server WAL position reported
// through [ShardStream.ServerPosition] more than that ago — the proxy
// feeds it from its health probes' pg_current_wal_lsn()); when
// the stream goes down the shard is bypassed (BypassStreamDown) and fills
// fail; when it comes back everything cached for the shard before is
// dropped, since the changes in between were not seen. A stream covers the
// tables of its publication only: any other cacheable table of the shard
// is bypassed (BypassNotStreamed), so a table missing from the publication
// can never be served stale. Read your writes: a
// session passes its last commit LSN on the shard; while the stream has not
// applied that LSN the lookup bypasses (BypassReadYourWrites). A replica
// read passes the replica's replay LSN to BeginFill, and its result is not
// stored when the key or table was invalidated at a later LSN. The TTL is a
// backstop only.
//
// Staleness (pgshard_cache_staleness_seconds) is the proxy's clock at the
// invalidation minus the commit timestamp the stream carries: clock skew
// between proxy and server adds to it. With synchronous_commit off a commit
// reaches the decoder only at the WAL writer's next round (wal_writer_delay,
// 200 ms by default), which then dominates it.
//
// # The invalidation stream: where it is read
//
// Package cache/stream reads each shard primary's logical decoding stream
// (pgoutput, through pglogrepl). Two placements were weighed, for 10
// proxies × 16 shards:
//
//   - Each proxy reads each shard with a TEMPORARY slot (implemented). Per
//     shard primary: 10 logical slots and 10 walsenders (160 of each in the
//     cluster; max_replication_slots and max_wal_senders must leave room
//     for them besides physical replicas and resharding), and the WAL is
//     decoded 10 times: each walsender reads every WAL record and runs it
//     through its own reorder buffer (up to logical_decoding_work_mem,
//     64 MB by default, each, before spilling to disk) whatever the
//     publication keeps, so decoding CPU and memory grow linearly with the
//     proxies. Measured here (BenchmarkDecodingCost in cache/stream,
//     PostgreSQL 15): a walsender spends about 4.4 µs of CPU per changed
//     row of a published table and 1.7 µs per row of any other table, so
//     a shard primary changing 10,000 published rows a second spends about
//     0.44 of a core on 10 readers (0.044 on one), plus 10× the network.
//     What it buys: no coordination at all, a stream failure only
//     bypasses one proxy's view of one shard, read-your-writes compares a
//     session's commit LSN with the very stream that invalidates this
//     proxy's cache, the staleness measured is end to end, and a temporary
//     slot is dropped by the server when its connection ends, so no WAL is
//     ever retained for a reader that is gone.
//   - One reader per shard elected by meta, fanning out invalidations over
//     gRPC: 16 slots, 16 walsenders, decoding once per shard (1/10th of the
//     decoding CPU and memory), plus 160 gRPC streams of small messages. It
//     needs a leased assignment in meta, a new fan-out service with
//     per-subscriber buffering and ordering, an extra hop of staleness, and
//     every proxy bypasses a shard whenever its one reader fails over (the
//     new reader starts a new slot, changes in between are lost).
//
// The per-proxy temporary slot is the pragmatic choice now: it is correct
// by construction and needs nothing from meta. The elected reader is the
// later option once the decoding cost is measured to matter (many proxies,
// write-heavy shards); the cache side does not change, since a fan-out
// subscriber would drive the same [ShardStream] handle.
package cache
