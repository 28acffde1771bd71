// Package difftest is pgshard's differential-testing oracle: the same
// schema and data are loaded into a plain PostgreSQL server (the
// reference) and through pgshard, and a corpus of statements
// (testdata/corpus.sql, see ParseCorpus) must get the same answers both
// ways — SQLSTATE, columns with their types and formats, command tag and
// the raw bytes of every value — or the refusal the corpus expects. Row
// order is compared only where the statement fixes it (ORDER BY).
//
// A Runner sends every read in each of Modes (the simple protocol and
// two flavours of the extended one) to both sides, and every write once,
// in corpus order, so that later reads see its effect. CheckPlacement
// then asks the shards directly whether every row sits where the shard
// map says and whether together they hold exactly the reference's rows.
//
// The tests of this package run the corpus through pgshard without a
// map (one shard) and with a map over four shards, range and hash.
package difftest
