package integration_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration"
)

func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaks(m)) }

func TestParallelServers(t *testing.T) {
	for _, name := range []string{"a", "b"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := integration.StartPostgres(t, integration.Name(name))
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if err := s.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNewCluster(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2), integration.Replicas(1))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if len(c.Shards) != 2 || len(c.Servers()) != 4 {
		t.Fatalf("got %d shards, %d servers; want 2, 4", len(c.Shards), len(c.Servers()))
	}
	ports := map[int]bool{}
	for i, s := range c.Shards {
		if err := s.Exec(ctx, "CREATE TABLE t (shard int); INSERT INTO t VALUES ("+string(rune('0'+i))+")"); err != nil {
			t.Fatal(err)
		}
		if err := s.WaitReplayed(ctx); err != nil {
			t.Fatal(err)
		}
		v, err := s.Replicas[0].QueryValue(ctx, "SELECT shard FROM t")
		if err != nil || v != string(rune('0'+i)) {
			t.Errorf("%s: got %q, %v", s.Replicas[0].Name, v, err)
		}
	}
	for _, s := range c.Servers() {
		if ports[s.Port] {
			t.Errorf("port %d used twice", s.Port)
		}
		ports[s.Port] = true
	}
}
