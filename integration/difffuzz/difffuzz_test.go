package difffuzz_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/difffuzz"
	"github.com/pgshard/pgshard/integration/difftest"
	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/shardmap"
)

func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaks(m)) }

// Flags, with defaults from the environment (make fuzz sets those).
var (
	fuzzTime = flag.Duration("difffuzz.time", envDuration("PGSHARD_DIFFFUZZ_DURATION", time.Minute),
		"how long TestDiffFuzz generates statements (env PGSHARD_DIFFFUZZ_DURATION); ignored when -difffuzz.statements is set")
	fuzzStatements = flag.Int("difffuzz.statements", envInt("PGSHARD_DIFFFUZZ_STATEMENTS", 0),
		"run exactly this many statements instead (env PGSHARD_DIFFFUZZ_STATEMENTS)")
	fuzzSeed = flag.Uint64("difffuzz.seed", uint64(envInt("PGSHARD_DIFFFUZZ_SEED", 1)),
		"seed of the first statement; statement i has seed+i (env PGSHARD_DIFFFUZZ_SEED)")
	fuzzShards = flag.String("difffuzz.shards", envString("PGSHARD_DIFFFUZZ_SHARDS", "2,4"),
		"shard counts of the configurations, each with a range and a hash map (env PGSHARD_DIFFFUZZ_SHARDS)")
)

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// maxShards is how many shard servers the run starts: every
// configuration uses the first n of them, each in a database of its own.
const maxShards = 4

// TestDiffFuzz loads the fuzzer's dataset into a plain PostgreSQL server
// (the reference) and, through pgshard, into each configuration (2 and
// 4 shards, a range and a hash map each; the shard servers are shared,
// one database per configuration), then runs generated statements —
// each on every configuration, in the simple or the extended protocol
// by seed — and fails on every answer that differs from the reference's
// and is not a refusal (0A000). Refusals are counted by reason and
// logged. By default it runs for a minute; -difffuzz.statements (or
// PGSHARD_DIFFFUZZ_STATEMENTS) runs a fixed number of statements.
func TestDiffFuzz(t *testing.T) {
	var counts []int
	for _, f := range strings.Split(*fuzzShards, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > maxShards {
			t.Fatalf("-difffuzz.shards: %q is not a shard count between 1 and %d", f, maxShards)
		}
		counts = append(counts, n)
	}
	budget := *fuzzTime
	if *fuzzStatements > 0 {
		budget = time.Duration(*fuzzStatements) * 200 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute+budget)
	defer cancel()

	ref := integration.StartPostgres(t, integration.Name("reference"))
	cl := integration.NewCluster(t, integration.Shards(maxShards))
	refConn := connect(t, ctx, ref.SuperDSN("postgres"))
	if err := difffuzz.LoadReference(ctx, refConn); err != nil {
		t.Fatal(err)
	}

	var targets []difffuzz.Target
	for _, n := range counts {
		bounds := make([]int64, n-1)
		for i := range bounds {
			bounds[i] = int64((i + 1) * difffuzz.Users / n)
		}
		for _, strategy := range []string{"range", "hash"} {
			name := fmt.Sprintf("%s-%d", strategy, n)
			db := fmt.Sprintf("%s%d", strategy, n)
			var addrs, names []string
			direct := map[string]*pgx.Conn{}
			for i, s := range cl.Shards[:n] {
				if err := s.Exec(ctx, "CREATE DATABASE "+db); err != nil {
					t.Fatal(err)
				}
				addrs = append(addrs, s.Addr())
				names = append(names, difftest.ShardName(i))
				direct[difftest.ShardName(i)] = connect(t, ctx, s.SuperDSN(db))
			}
			text, err := difftest.MapYAML(addrs, strategy, bounds)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), name+".yaml")
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			m, err := shardmap.ParseYAML([]byte(text))
			if err != nil {
				t.Fatal(err)
			}
			cfg := testproxy.Config(t, cl.Shards[0])
			cfg.Shards = nil
			cfg.ShardMapFile = path
			p := testproxy.Start(t, cfg)
			c := connect(t, ctx, fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", testproxy.User, testproxy.Password, p.Addr, db))
			if err := difffuzz.LoadThroughProxy(ctx, c, names); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			problems, err := difftest.CheckPlacement(ctx, refConn, direct, m.Distribution("users"), difftest.Tables)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				t.Errorf("%s: %s", name, p)
			}
			targets = append(targets, difffuzz.Target{Name: name, Conn: c})
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	f := &difffuzz.Fuzzer{Ref: refConn, Targets: targets, StatementTimeout: 30 * time.Second}
	start := time.Now()
	var runErr error
	for i := uint64(0); ; i++ {
		if *fuzzStatements > 0 && i >= uint64(*fuzzStatements) || *fuzzStatements <= 0 && time.Since(start) >= *fuzzTime {
			break
		}
		if err := f.Run(ctx, *fuzzSeed+i); err != nil {
			runErr = fmt.Errorf("after %d statements: %w", i, err)
			break
		}
	}
	elapsed := time.Since(start)
	if runErr != nil {
		// What ran so far is reported below.
		t.Error(runErr)
	}
	names := make([]string, len(targets))
	for i, tg := range targets {
		names[i] = tg.Name
	}
	t.Logf("seeds %d..%d on %s in %s (rerun: PGSHARD_DIFFFUZZ_SEED=%d PGSHARD_DIFFFUZZ_STATEMENTS=%d)\n%s",
		*fuzzSeed, *fuzzSeed+uint64(f.Stats.Statements)-1, strings.Join(names, ", "), elapsed.Round(time.Second),
		*fuzzSeed, f.Stats.Statements, f.Stats.Report())
	if testing.Verbose() {
		for what, ex := range f.Stats.Examples {
			t.Logf("first %s: %s", what, ex)
		}
	}
	for i, fl := range f.Stats.Failures {
		if i == 100 {
			t.Errorf("... and %d more", len(f.Stats.Failures)-i)
			break
		}
		t.Error(fl)
	}
	// The generator must keep producing statements pgshard answers, and
	// few PostgreSQL rejects: otherwise the run proves little.
	if *fuzzStatements > 0 && *fuzzStatements < 50 {
		return // reproducing a few statements
	}
	runs := f.Stats.Statements * len(targets)
	if f.Stats.Statements < 50 {
		t.Errorf("only %d statements ran", f.Stats.Statements)
	}
	if f.Stats.Identical < runs/3 {
		t.Errorf("only %d of %d runs answered identically", f.Stats.Identical, runs)
	}
	refErrors := 0
	for _, n := range f.Stats.RefErrors {
		refErrors += n
	}
	if refErrors > f.Stats.Statements/10 {
		t.Errorf("the reference rejected %d of %d statements: %v", refErrors, f.Stats.Statements, f.Stats.RefErrors)
	}
}

func connect(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}
