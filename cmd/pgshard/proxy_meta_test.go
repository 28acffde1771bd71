package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
	"github.com/pgshard/pgshard/wire/auth"
)

// kvShardMap is a one-shard map (s0 on primary) holding table kv whole.
func kvShardMap(t *testing.T, primary *pgcluster.Server) *shardmap.Map {
	t.Helper()
	return shardmaptest.KV(nil, primary.Addr()).Map(t)
}

// TestProxyCommandFollowsMetaMap runs `pgshard proxy --meta` with a
// configuration without shards: it starts and routes by the meta
// cluster's map. Restarted after the map moved the shard to another
// primary, with a configuration that still names the old server, it
// routes by the meta map: no write reaches the old server.
func TestProxyCommandFollowsMetaMap(t *testing.T) {
	pg := integration.NewCluster(t, integration.Shards(2))
	old, cur := pg.Shards[0], pg.Shards[1]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, srv := range pg.Shards {
		if err := srv.Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text)`); err != nil {
			t.Fatal(err)
		}
	}
	meta := metacluster.StartLocal(t)
	client := meta.Client(t)
	first, err := client.ApplyMap(ctx, kvShardMap(t, old), 0, "initial")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGSHARD_BACKEND_PASSWORD", pgcluster.SuperuserPassword)
	v, err := auth.NewSCRAMVerifier("pw", nil, 4096)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "pgshard.yaml")
	addr := freeAddr(t)
	base := fmt.Sprintf("listen: %s\nshutdown_timeout: 5s\nusers:\n  - {name: app, password: %q}\nbackend: {user: %s, sslmode: disable}\n",
		addr, v.String(), pgcluster.SuperuserName)
	dsn := fmt.Sprintf("postgres://app:pw@%s/postgres?sslmode=disable", addr)

	// run1 starts the proxy with the configuration text, waits until it
	// acknowledges a write of key k, and stops it.
	run1 := func(config string, k int) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		pctx, stop := context.WithCancel(ctx)
		defer stop()
		var stdout, stderr syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- run(pctx, []string{"proxy", "--config", cfgPath, "--meta", meta.Addr, "--meta-token", meta.Token}, nil, &stdout, &stderr)
		}()
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := tryWrite(ctx, dsn, k)
			if err == nil {
				break
			}
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code != "25006" {
				t.Fatalf("write through the proxy: %v", err)
			}
			select {
			case code := <-done:
				t.Fatalf("the proxy exited (%d):\n%s", code, stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the proxy does not accept writes (%v):\n%s", err, stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		stop()
		select {
		case code := <-done:
			if code != exitOK {
				t.Fatalf("exit code %d:\n%s", code, stderr.String())
			}
		case <-time.After(15 * time.Second):
			t.Fatal("the proxy did not stop")
		}
	}
	rows := func(srv *pgcluster.Server, k int) string {
		t.Helper()
		v, err := srv.QueryValue(ctx, fmt.Sprintf(`SELECT count(*) FROM kv WHERE k = %d`, k))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	run1(base, 1)
	if rows(old, 1) != "1" || rows(cur, 1) != "0" {
		t.Errorf("key 1: %s rows on the map's primary %s, %s on %s", rows(old, 1), old.Addr(), rows(cur, 1), cur.Addr())
	}

	// The shard moves to cur (as a failover does) while the proxy is down;
	// its configuration still names old.
	epoch, err := client.ApplyMap(ctx, kvShardMap(t, cur), first, "s0 moved")
	if err != nil {
		t.Fatal(err)
	}
	run1(base+fmt.Sprintf("shards:\n  - {name: s0, host: %s, port: %d}\n", old.Host, old.Port), 2)
	if rows(cur, 2) != "1" || rows(old, 2) != "0" {
		t.Errorf("key 2: %s rows on the map's primary %s, %s on the configuration's host %s", rows(cur, 2), cur.Addr(), rows(old, 2), old.Addr())
	}
	b, err := os.ReadFile(filepath.Join(dir, "pgshard-map-state.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	saved, err := shardmap.ParseYAML(b)
	if err != nil {
		t.Fatal(err)
	}
	if saved.Epoch != epoch || saved.Shards[0].Primary.String() != cur.Addr() {
		t.Errorf("the saved map is epoch %d with primary %s, want meta's (epoch %d, %s)", saved.Epoch, saved.Shards[0].Primary, epoch, cur.Addr())
	}
}

// tryWrite inserts key k into kv through dsn.
func tryWrite(ctx context.Context, dsn string, k int) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, 'x')`, k)
	return err
}
