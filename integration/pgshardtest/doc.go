// Package pgshardtest starts a sharded pgshard cluster for a Go test in
// one call, as net/http/httptest starts a server: local PostgreSQL
// servers (shards, each a primary with streaming replicas), a meta
// member holding the shard map, and a proxy following it, all stopped
// and removed when the test ends. Point the code under test at
// [Cluster.DSN]; check where rows landed through each shard's own
// connection strings ([Shard.Primary], [Shard.Replicas]).
//
//	func TestMain(m *testing.M) { os.Exit(pgshardtest.VerifyNoLeaks(m)) }
//
//	func TestOrders(t *testing.T) {
//		c := pgshardtest.Start(t,
//			pgshardtest.Shards(2), pgshardtest.Replicas(1),
//			pgshardtest.RangeSharded([]int64{1000}, pgshardtest.Table{Name: "orders", Key: "customer_id"}),
//			pgshardtest.Schema("CREATE TABLE orders (id bigint, customer_id bigint, total numeric)"))
//		db, err := pgx.Connect(t.Context(), c.DSN)
//		if err != nil {
//			t.Fatal(err)
//		}
//		defer db.Close(context.Background())
//		// ... the application's code against db; then, directly on a shard:
//		shard, _ := c.ShardFor("orders", 1500) // shard1
//		direct, err := pgx.Connect(t.Context(), shard.Primary)
//		// ...
//	}
//
// The shard map comes from [HashSharded], [RangeSharded], [Distribute] (a
// [Distribution] with text or uuid keys) or [ShardMap] (the map's own
// YAML, distributions and tables); tables it does not name are not
// routed by key. The proxy accepts [Users] (default [DefaultUser],
// app/app) and runs their statements on the shards as the servers'
// superuser; [ProxyConfig] adjusts the rest of its configuration.
// [Cluster.MetaAddr] serves the DBA CLI and the meta API (`pgshard
// failover --shard shard0 --meta ADDR` switches a shard over mid-test).
//
// PostgreSQL must be installed locally (see [Start]); without it tests
// skip, except in CI. Starting a cluster of two shards with a replica
// each takes a few seconds. To run against containers instead, start
// docs/deploy/docker-compose.yml (a meta cluster of three members, two
// shards with a replica each, two proxies; see the README's "Testing your
// application against pgshard") and connect to its fixed addresses.
package pgshardtest
