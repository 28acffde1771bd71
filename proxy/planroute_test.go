package proxy_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// TestShardMapRouting routes by the sharding key with the SQL-aware
// planner over a range map: rows land on the shard the map says, in both
// protocols, and what needs several shards is refused, not answered
// wrongly.
func TestShardMapRouting(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	p := startProxy(t, cfg)
	cfg2 := kvMapConfig(t, c)
	cfg2.BroadcastWrites = "allow"
	pAllow := startProxy(t, cfg2)
	ctx := ctxT(t)
	var direct [2]*pgx.Conn
	for i, srv := range c.Shards {
		direct[i] = connect(t, srv.SuperDSN("postgres"))
		if _, err := direct[i].Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text)`); err != nil {
			t.Fatal(err)
		}
	}
	for mi, mode := range []string{"simple_protocol", "cache_statement", "cache_describe", "describe_exec", "exec"} {
		conn := connect(t, p.dsn("default_query_exec_mode="+mode))
		for _, k := range []int64{1, 99, 100, 5000, -7} {
			key := k*10 + int64(mi) // distinct per mode, same side of 100 for k≠99
			if k == 99 {
				key = 99 - int64(mi)
			}
			if _, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, $2)`, key, mode); err != nil {
				t.Fatalf("%s: insert %d: %v", mode, key, err)
			}
			var v string
			if err := conn.QueryRow(ctx, `SELECT v FROM kv WHERE k = $1`, key).Scan(&v); err != nil || v != mode {
				t.Fatalf("%s: read %d back: %q %v", mode, key, v, err)
			}
			shard := 0
			if key >= 100 {
				shard = 1
			}
			var n int
			if err := direct[shard].QueryRow(ctx, `SELECT count(*) FROM kv WHERE k = $1`, key).Scan(&n); err != nil || n != 1 {
				t.Fatalf("%s: key %d is not on s%d (%d, %v)", mode, key, shard, n, err)
			}
		}
		// A read over several shards is merged, in every protocol mode.
		var total int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM kv`).Scan(&total); err != nil || total != 5*(mi+1) {
			t.Fatalf("%s: scatter count: %d %v", mode, total, err)
		}
		// A write over several shards is refused.
		if _, err := conn.Exec(ctx, `UPDATE kv SET v = v`); pgCode(err) != "0A000" {
			t.Fatalf("%s: broadcast update: want 0A000, got %v", mode, err)
		}
		// Statements with no sharded table go to the default shard.
		var one int
		if err := conn.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil || one != 1 {
			t.Fatalf("%s: SELECT 1: %v", mode, err)
		}
	}
	// A transaction stays on its key's shard.
	conn := connect(t, p.dsn(""))
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE kv SET v = 'tx' WHERE k = $1`, int64(5000)*10); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE kv SET v = 'tx' WHERE k = $1`, int64(10)); pgCode(err) != "0A000" {
		t.Fatalf("cross-shard update in a transaction: %v", err)
	}
	_ = tx.Rollback(ctx)
	// A transaction on one key commits there, also with statements that
	// pgx prepares (Parse/Describe outside the transaction, then Bind).
	key := int64(5000) * 10
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"first", "second"} {
		if _, err := tx.Exec(ctx, `UPDATE kv SET v = $2 WHERE k = $1`, key, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var v string
	if err := direct[1].QueryRow(ctx, `SELECT v FROM kv WHERE k = $1`, key).Scan(&v); err != nil || v != "second" {
		t.Fatalf("committed value on s1: %q %v", v, err)
	}
	if err := direct[1].QueryRow(ctx, `SELECT v FROM kv WHERE k = 10`).Scan(&v); err == nil {
		t.Fatal("key 10 must not be on s1")
	}
	// Session hints: SET pgshard.shard routes everything to that shard,
	// SET pgshard.key as if the statement named that key; RESET ends it.
	for _, mode := range []string{"simple_protocol", "cache_statement"} {
		hc := connect(t, p.dsn("default_query_exec_mode="+mode))
		var onS1, onS0 int
		if err := direct[1].QueryRow(ctx, `SELECT count(*) FROM kv`).Scan(&onS1); err != nil {
			t.Fatal(err)
		}
		if err := direct[0].QueryRow(ctx, `SELECT count(*) FROM kv`).Scan(&onS0); err != nil {
			t.Fatal(err)
		}
		for _, step := range []struct {
			set  string
			want int
		}{
			{"SET pgshard.shard = 's1'", onS1},
			{"SET pgshard.shard = 's0'", onS0},
			{"RESET pgshard.shard", -1},
			{"SET pgshard.key = '150'", onS1},
		} {
			if _, err := hc.Exec(ctx, step.set); err != nil {
				t.Fatalf("%s: %s: %v", mode, step.set, err)
			}
			var n int
			err := hc.QueryRow(ctx, `SELECT count(*) FROM kv`).Scan(&n)
			if step.want < 0 {
				if err != nil || n != onS0+onS1 {
					t.Fatalf("%s: after RESET: %d %v", mode, n, err)
				}
				continue
			}
			if err != nil || n != step.want {
				t.Fatalf("%s: after %s: count %d (%v), want %d", mode, step.set, n, err, step.want)
			}
		}
		var shown string
		if err := hc.QueryRow(ctx, `SHOW pgshard.key`).Scan(&shown); err != nil || shown != "150" {
			t.Fatalf("%s: SHOW pgshard.key = %q %v", mode, shown, err)
		}
	}
	// With broadcast_writes: allow, an UPDATE without the key runs on
	// every shard and reports the total count.
	bc := connect(t, pAllow.dsn("default_query_exec_mode=simple_protocol"))
	tag, err := bc.Exec(ctx, `UPDATE kv SET v = 'all'`)
	if err != nil || tag.RowsAffected() != 25 {
		t.Fatalf("broadcast update: %v %v", tag, err)
	}
	for i, d := range direct {
		var n int
		if err := d.QueryRow(ctx, `SELECT count(*) FROM kv WHERE v <> 'all'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("s%d: %d rows not updated (%v)", i, n, err)
		}
	}
}

// TestScatterAfterPipelinedStatement: a read over several shards queued
// behind a single-shard statement waits for it instead of being refused.
func TestScatterAfterPipelinedStatement(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.Users = append(cfg.Users, proxy.UserConfig{Name: "tr", Auth: "trust"})
	p := startProxy(t, cfg)
	for i, srv := range c.Shards {
		d := connect(t, srv.SuperDSN("postgres"))
		if _, err := d.Exec(ctxT(t), fmt.Sprintf(`CREATE TABLE kv (k bigint PRIMARY KEY, v text); INSERT INTO kv VALUES (%d, 'x')`, 50+i*100)); err != nil {
			t.Fatal(err)
		}
	}
	conn, fe := trustedSession(t, p.addr)
	defer conn.Close()
	fe.Send(&pgproto3.Query{String: `SELECT v FROM kv WHERE k = 150`})
	fe.Send(&pgproto3.Query{String: `SELECT count(*) FROM kv`})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var rows []string
	for zs := 0; zs < 2; {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			rows = append(rows, string(m.Values[0]))
		case *pgproto3.ErrorResponse:
			t.Fatalf("error: %s (%s)", m.Message, m.Code)
		case *pgproto3.ReadyForQuery:
			zs++
		}
	}
	if len(rows) != 2 || rows[0] != "x" || rows[1] != "2" {
		t.Fatalf("rows %v", rows)
	}
}

// TestDDLOnEveryShard runs DDL on a sharded table on every shard, all or
// none: a failure on one shard names it and leaves the others unchanged.
func TestDDLOnEveryShard(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	conn := connect(t, p.dsn("default_query_exec_mode=simple_protocol"))
	var direct [2]*pgx.Conn
	for i, srv := range c.Shards {
		direct[i] = connect(t, srv.SuperDSN("postgres"))
	}
	exists := func(d *pgx.Conn, q string) bool {
		var ok bool
		if err := d.QueryRow(ctx, q).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for _, ddl := range []string{
		`CREATE TABLE kv (k bigint PRIMARY KEY, v text)`,
		`CREATE INDEX kv_v ON kv (v)`,
		`ALTER TABLE kv ADD COLUMN w int`,
	} {
		if _, err := conn.Exec(ctx, ddl); err != nil {
			t.Fatalf("%s: %v", ddl, err)
		}
	}
	for i, d := range direct {
		if !exists(d, `SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = 'kv_v')`) ||
			!exists(d, `SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'kv' AND column_name = 'w')`) {
			t.Fatalf("DDL missing on s%d", i)
		}
	}
	// A failure on s1 rolls s0 back too, and the error names s1.
	if _, err := direct[1].Exec(ctx, `CREATE INDEX dup_idx ON kv (w)`); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, `CREATE INDEX dup_idx ON kv (v)`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42P07" || !strings.Contains(pgErr.Message, "shard s1") {
		t.Fatalf("want 42P07 naming shard s1, got %v", err)
	}
	if exists(direct[0], `SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = 'dup_idx')`) {
		t.Fatal("s0 kept the index although s1 failed")
	}
	// Statements not allowed in a transaction block run shard by shard.
	if _, err := conn.Exec(ctx, `VACUUM kv`); err != nil {
		t.Fatalf("VACUUM: %v", err)
	}
	if _, err := conn.Exec(ctx, `DROP TABLE kv`); err != nil {
		t.Fatal(err)
	}
	for i, d := range direct {
		if exists(d, `SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'kv')`) {
			t.Fatalf("kv still on s%d", i)
		}
	}
}

// kvMapConfig writes a shard map for table kv, range-sharded by k over the
// cluster's two shards (k < 100 on s0), and returns a proxy config using it.
func kvMapConfig(t *testing.T, c *pgcluster.Cluster) *proxy.Config {
	t.Helper()
	return mapConfig(t, c.Shards[0], shardmaptest.KV([]int64{100}, c.Shards[0].Addr(), c.Shards[1].Addr()).YAML(t))
}

// TestLiveMapChange: a new shard map applied at run time routes the next
// statements at once, while a transaction that began under the old map
// finishes on it; the map is saved to map_state_file; stale and invalid
// maps are refused.
func TestLiveMapChange(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.MapStateFile = filepath.Join(t.TempDir(), "map-state.yaml")
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	var direct [2]*pgx.Conn
	for i, srv := range c.Shards {
		direct[i] = connect(t, srv.SuperDSN("postgres"))
		if _, err := direct[i].Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text)`); err != nil {
			t.Fatal(err)
		}
	}
	conn := connect(t, p.dsn(""))
	if _, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (75, 'old')`); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE kv SET v = 'in tx' WHERE k = $1`, 75); err != nil {
		t.Fatal(err)
	}
	// Epoch 2 moves [50, 100) to s1.
	b, err := os.ReadFile(cfg.ShardMapFile)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := shardmap.ParseYAML([]byte(strings.NewReplacer("epoch: 1", "epoch: 2", "hi: 100", "hi: 50", "lo: 100", "lo: 50").Replace(string(b))))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := p.srv.ApplyMap(m2); !ok || err != nil {
		t.Fatalf("apply epoch 2: %v %v", ok, err)
	}
	if p.srv.MapEpoch() != 2 {
		t.Fatalf("epoch in use: %d", p.srv.MapEpoch())
	}

	var txEpoch int64
	if err := tx.QueryRow(ctx, `SHOW pgshard.shards`, pgx.QueryExecModeSimpleProtocol).Scan(new(string), new(string), new(string), new(string), &txEpoch, new(string), new(string), new(string), new(string)); err != nil || txEpoch != 1 {
		t.Fatalf("SHOW pgshard.shards in the transaction: epoch %d %v", txEpoch, err)
	}
	// The open transaction still routes key 75 to s0, where it began.
	var v string
	if err := tx.QueryRow(ctx, `SELECT v FROM kv WHERE k = $1`, 75).Scan(&v); err != nil || v != "in tx" {
		t.Fatalf("in the transaction after the map change: %q %v", v, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// SHOW pgshard.shards tells clients the epoch (inside the transaction
	// it said 1, the transaction's map) and the shards.
	var shard, primary string
	var epoch int64
	if err := conn.QueryRow(ctx, `SHOW SHARDS`, pgx.QueryExecModeSimpleProtocol).Scan(&shard, &primary, new(string), new(string), &epoch, new(string), new(string), new(string), new(string)); err != nil ||
		shard != "s0" || primary != c.Shards[0].Addr() || epoch != 2 {
		t.Fatalf("SHOW pgshard.shards: %s %s %d %v", shard, primary, epoch, err)
	}
	// New statements follow the new map: key 60 lands on s1.
	if _, err := conn.Exec(ctx, `INSERT INTO kv (k, v) VALUES (60, 'new')`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := direct[1].QueryRow(ctx, `SELECT count(*) FROM kv WHERE k = 60`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("key 60 is not on s1 after the map change (%d, %v)", n, err)
	}
	// Stale and invalid maps change nothing.
	if ok, err := p.srv.ApplyMap(m2); ok || err != nil {
		t.Fatalf("re-applying epoch 2: %v %v", ok, err)
	}
	bad := m2.Clone()
	bad.Epoch = 3
	bad.Distributions[0].Intervals[0].Shard = "nosuch"
	if ok, err := p.srv.ApplyMap(bad); ok || err == nil {
		t.Fatalf("invalid map applied: %v %v", ok, err)
	}
	// The applied map was saved.
	saved, err := os.ReadFile(cfg.MapStateFile)
	if err != nil {
		t.Fatal(err)
	}
	if sm, err := shardmap.ParseYAML(saved); err != nil || sm.Epoch != 2 {
		t.Fatalf("map_state_file: %v %v", sm, err)
	}
}

// TestEndpointHealth: with a shard map, the proxy probes every endpoint
// of it while it serves.
func TestEndpointHealth(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2))
	cfg := kvMapConfig(t, c)
	cfg.HealthInterval = proxy.Duration(50 * time.Millisecond)
	p := startProxy(t, cfg)
	testutil.WaitFor(t, 10*time.Second, "both primaries reported up", func() (bool, string) {
		st := p.srv.Health()
		up := 0
		for _, e := range st {
			if e.Up && !e.InRecovery && e.Role == "primary" {
				up++
			}
		}
		return up == 2, fmt.Sprintf("endpoints %+v", st)
	})
}
