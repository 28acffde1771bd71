// Package banktest is the end-to-end test of transactions over several
// shards (transactions.cross_shard: two_phase): a bank of accounts hashed
// over four shards, concurrent transfers between random accounts through
// two `pgshard proxy` processes following a meta cluster of `pgshard meta
// run` processes, over the simple and the extended protocol, while in turn
// a proxy is killed -9 mid-commit, a shard primary is killed -9 (that
// shard replicates synchronously to two standbys; meta fails it over) and
// the meta leader is killed -9, then the other proxy (the new leader
// resolves its in-doubt transactions).
//
// Every client keeps a ledger: each transfer writes a row keyed by a
// client-chosen UUID in the same transaction, on its first shard, and is
// recorded as acknowledged (COMMIT answered COMMIT), failed (an error
// before COMMIT, or a COMMIT error that means "rolled back everywhere") or
// unknown (the connection died during COMMIT, or 08007). Afterwards the
// test checks that no prepared transaction is left on any server within a
// bound, that the total balance is unchanged, that every account's balance
// is exactly its initial balance plus the transfers recorded in the
// transfers table (all or nothing of each transfer), that every
// acknowledged transfer is there once and no failed one is, and that every
// error the clients saw carries one of the SQLSTATEs README documents.
//
// It runs in about 80 s on two cores (TestBench2PC, the benchmark behind
// make bench-2pc, is skipped unless PGSHARD_BENCH_2PC=1):
//
//	go test ./integration/banktest/
//
// The package has only tests; this file is its documentation.
package banktest
