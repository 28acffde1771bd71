package metacluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/metacluster"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/internal/testutil"
)

// TestMapApplyDataCheck runs the real binaries as a DBA would: three
// `pgshard meta run` members logging in to two real shards as
// --pg-user, and `pgshard map apply` sent to a follower. Moving the kv
// boundary from 1000 to 500 while s0 holds 50 rows in [500, 1000) is
// refused with exit 4 and the exact count, by the leader (the follower
// redirects); -o json prints an error object with it; nothing is
// applied. --no-data-check applies the same map.
func TestMapApplyDataCheck(t *testing.T) {
	pg := integration.NewCluster(t, integration.Shards(2))
	setupShards(t, pg)
	mc := metacluster.Start(t, pgshardBin,
		metacluster.Args("--pg-user", pgcluster.SuperuserName, "--pg-sslmode", "disable", "--no-failover"),
		metacluster.Environ("PGSHARD_META_PG_PASSWORD="+pgcluster.SuperuserPassword))
	client := mc.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	first, err := client.ApplyMap(ctx, kvMap(t, pg, 1000), 0, "initial")
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.Shards[0].Exec(ctx, "INSERT INTO kv SELECT i, 'v' || i FROM generate_series(500, 549) i"); err != nil {
		t.Fatal(err)
	}
	leader, err := mc.WaitLeader(ctx, mc.Members...)
	if err != nil {
		t.Fatal(err)
	}
	follower := mc.Others(leader)[0]
	// map apply reads the epoch it expects from the member it asks.
	fc := follower.Client()
	ok, why := testutil.Poll(10*time.Second, func() (bool, string) {
		v, err := fc.GetMap(ctx)
		return err == nil && v.Epoch == first, fmt.Sprintf("epoch %d, %v", v.Epoch, err)
	})
	if !ok {
		t.Fatalf("the follower %s did not get epoch %d: %s", follower.ID, first, why)
	}

	file := filepath.Join(t.TempDir(), "map.yaml")
	y, err := kvMap(t, pg, 500).YAML()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, y, 0o600); err != nil {
		t.Fatal(err)
	}
	apply := func(args ...string) (int, string, string) {
		return runCLIExit(t, ctx, append([]string{"map", "apply", "-f", file, "--meta", follower.APIAddr, "--token", mc.Token, "--timeout", "20s"}, args...)...)
	}
	code, _, stderr := apply()
	want := fmt.Sprintf("distribution kv [500, 1000) from s0 to s1: 50 rows on %s (%s 50)", pg.Shards[0].Addr(), kvTable)
	if code != 4 || !strings.Contains(stderr, want) || !strings.Contains(stderr, "--no-data-check") {
		t.Fatalf("pgshard map apply: exit %d, stderr:\n%s\nwant exit 4 and %q", code, stderr, want)
	}
	code, stdout, _ := apply("-o", "json")
	var je struct {
		Error struct {
			Reason string `json:"reason"`
			Moves  []struct {
				Interval string `json:"interval"`
				Tables   []struct {
					Table string `json:"table"`
					Rows  int64  `json:"rows"`
				} `json:"tables"`
			} `json:"moves"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(stdout), &je); err != nil || code != 4 {
		t.Fatalf("pgshard map apply -o json: exit %d, printed %q (%v)", code, stdout, err)
	}
	if e := je.Error; e.Reason != "DATA_NOT_MOVED" || len(e.Moves) != 1 || e.Moves[0].Interval != "[500, 1000)" ||
		len(e.Moves[0].Tables) != 1 || e.Moves[0].Tables[0].Rows != 50 {
		t.Errorf("pgshard map apply -o json printed %+v, want DATA_NOT_MOVED for [500, 1000) with 50 rows", e)
	}
	if v, err := client.GetMap(ctx); err != nil || v.Epoch != first {
		t.Fatalf("after the refusals the map is at epoch %d (%v), want %d", v.Epoch, err, first)
	}

	if code, _, stderr := apply("--no-data-check", "--comment", "kv [500, 1000) copied to s1 by hand"); code != 0 {
		t.Fatalf("pgshard map apply --no-data-check: exit %d\n%s", code, stderr)
	}
	if v, err := client.GetMap(ctx); err != nil || v.Epoch != first+1 {
		t.Fatalf("after --no-data-check the map is at epoch %d (%v), want %d", v.Epoch, err, first+1)
	}
}

// runCLIExit runs the pgshard binary and returns its exit code and
// output.
func runCLIExit(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, pgshardBin, args...)
	cmd.Env = metacluster.Env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("pgshard %q: %v", args, err)
	return 0, "", ""
}
