// Package stream reads a shard primary's logical decoding stream and turns
// its changes into invalidations of the proxy's cache (package cache: why
// each proxy reads each shard with a temporary slot is written there).
//
// One [Reader] per shard primary: it connects with replication=database,
// makes sure the publication of the cacheable tables exists (creating it,
// or adding missing tables, when its role may: the publication then belongs
// to that role; a DBA may create it beforehand instead, FOR TABLE the
// cacheable tables, owned by any role), creates a TEMPORARY logical slot
// with the pgoutput plugin (the server drops it when the connection ends,
// however the reader ends, so it never retains WAL for a reader that is
// gone), and streams from the slot's consistent point.
//
// Decoding: INSERT invalidates the new row's key; UPDATE the new key and,
// when the server sends the old key, the old one; DELETE the old key;
// TRUNCATE the whole table. The old key of an UPDATE or DELETE is only sent
// for the replica identity's columns: the sharding key must be part of the
// replica identity (the primary key, REPLICA IDENTITY USING INDEX, or
// FULL). Where it is not, an UPDATE (which might change the key) and a
// DELETE invalidate the whole table, and the reader logs it once per
// relation. DDL is not decoded: the proxy invalidates for its own DDL.
//
// The reader reports to the cache through a [cache.ShardStream]: Up at the
// consistent point with the configured tables the publication holds (the
// cache bypasses the others on this shard; a configured table created on
// the shard later is covered from the next connection), every change as it arrives, Committed at each commit
// (the applied LSN read-your-writes compares with), Progress at each
// keepalive (it asks the server for one every StatusInterval, so an idle
// stream still proves it is alive and advances its applied LSN), and Down
// when the connection fails; then it reconnects after RetryInterval with a
// new temporary slot.
package stream
