package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/pgshard/pgshard/integration/shardbench"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
)

// Targets of the sharded comparison, besides targetDirect (the script
// straight to the one-server setup's PostgreSQL).
const (
	targetOneShard   = "pgshard-1-shard"  // pgshard with a one-shard map over that same server
	targetManyShards = "pgshard-n-shards" // pgshard over -shards servers
)

// shardedPgSettings are the postgresql.conf settings of every server of
// the sharded comparison: shared buffers hold all accounts of scale 10 on
// the one server too, so that the shards' smaller tables are no advantage.
var shardedPgSettings = map[string]string{"max_connections": "200", "shared_buffers": "256MB"}

// shardedTargets is the order the sharded comparison's targets run in (each
// round rotates it) and are reported in.
var shardedTargets = []string{targetDirect, targetOneShard, targetManyShards}

// shardedCheck is the outcome of shardbench's checks on one setup after
// the runs.
type shardedCheck struct {
	name   string // "1 server", "4 shards"
	totals shardbench.Totals
	err    error
}

// runSharded compares pgbench's accounts workload (package shardbench)
// directly on one PostgreSQL, through pgshard with a one-shard map over
// that server, and through pgshard over o.shards servers that share the
// same accounts between them, then checks placement and consistency on
// every server and writes its section of the report.
func runSharded(ctx context.Context, o *options, env *environment, tmp, pgbenchBin string, logf func(string, ...any)) (err error) {
	settings := shardedPgSettings
	users := []pgcluster.User{{Name: benchUser, Password: benchPassword}}
	logf("sharded: starting one PostgreSQL and %d shards", o.shards)
	single, err := pgcluster.Start(ctx, pgcluster.Options{Name: "bench-single", Settings: settings, Users: users})
	if err != nil {
		return fmt.Errorf("start PostgreSQL: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if derr := single.Destroy(sctx); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	cl, err := pgcluster.StartCluster(ctx, o.shards, pgcluster.Options{Name: "bench-shard", Settings: settings, Users: users})
	if err != nil {
		return fmt.Errorf("start shards: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if derr := cl.Stop(sctx); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	if env.postgres == "" {
		if env.postgres, err = single.QueryValue(ctx, "SHOW server_version"); err != nil {
			return fmt.Errorf("query server version: %w", err)
		}
	}

	strategy := shardmap.Strategy(o.shardStrategy)
	one, err := shardbench.NewSetup(strategy, []*pgcluster.Server{single}, o.scale)
	if err != nil {
		return err
	}
	many, err := shardbench.NewSetup(strategy, cl.Shards, o.scale)
	if err != nil {
		return err
	}
	for _, s := range []*shardbench.Setup{one, many} {
		logf("sharded: loading %d accounts into %d server(s)", s.Accounts(), len(s.Servers))
		if err := prepareSetup(ctx, s, logf); err != nil {
			return err
		}
	}

	dir := filepath.Join(tmp, "sharded")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	endpoints := map[string]endpoint{
		targetDirect: {host: single.Host, port: single.Port, user: benchUser, password: benchPassword, dbname: benchDB},
	}
	procs := map[string]*child{}
	for target, s := range map[string]*shardbench.Setup{targetOneShard: one, targetManyShards: many} {
		pdir := filepath.Join(dir, target)
		if err := os.Mkdir(pdir, 0o700); err != nil {
			return err
		}
		mapFile := filepath.Join(pdir, "shardmap.yaml")
		if err := s.WriteMap(mapFile); err != nil {
			return err
		}
		c, addr, err := startPgshard(ctx, o.pgshardBin, pdir, nil, mapFile, o.poolSize, benchUser, benchPassword)
		if err != nil {
			return fmt.Errorf("start pgshard (%s): %w", target, err)
		}
		defer c.stop(10 * time.Second)
		procs[target] = c
		endpoints[target] = endpointAt(addr, benchDB)
	}
	workloads := map[string][]string{}
	for _, name := range o.scripts {
		path, err := shardbench.WriteScript(dir, name)
		if err != nil {
			return err
		}
		workloads[name] = []string{"-f", path, "-s", strconv.Itoa(o.scale)}
	}

	if o.warmup > 0 {
		logf("sharded: warm-up: %s directly on PostgreSQL", o.warmup)
		if _, err := runPgbench(ctx, pgbenchBin, endpoints[targetDirect], workloads[o.scripts[0]], "prepared", o.clients, o.jobs, o.warmup); err != nil {
			return err
		}
	}
	hz := clockTicks()
	var results []result
	for round := range o.rounds {
		for _, script := range o.scripts {
			for _, mode := range o.modes {
				k := round % len(shardedTargets)
				targets := append(slices.Clone(shardedTargets[k:]), shardedTargets[:k]...)
				for _, target := range targets {
					logf("sharded: round %d/%d, script %s, mode %s, target %s: pgbench for %s", round+1, o.rounds, script, mode, target, o.duration)
					r, err := measure(ctx, pgbenchBin, endpoints[target], procs[target], hz, workloads[script], mode, o)
					if err != nil {
						return err
					}
					r.script, r.target = script, target
					annotate(&r, "", o.clients)
					results = append(results, r)
					logf("  %s", summary(r))
					if !r.pgbench.ok {
						logf("  pgbench output:\n%s", indent(lastLines(r.pgbench.output, 25)))
					}
				}
			}
		}
	}

	// Stop the proxies first, so that nothing they still hold (an
	// aborted client's transaction) changes the rows under the checks.
	for _, c := range procs {
		c.stop(10 * time.Second)
	}
	var checks []shardedCheck
	for _, s := range []*shardbench.Setup{one, many} {
		name := fmt.Sprintf("%d shards", len(s.Servers))
		if len(s.Servers) == 1 {
			name = "1 server (direct and pgshard, 1 shard)"
		}
		logf("sharded: checking placement and balances on %s", name)
		tot, err := s.Check(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		checks = append(checks, shardedCheck{name: name, totals: tot, err: err})
		if err != nil {
			logf("  %v", err)
		}
	}

	report := renderShardedReport(*env, o, aggregate(results), checks)
	if err := writeReport(o.out, shardedBeginMarker, shardedEndMarker, report); err != nil {
		return err
	}
	logf("wrote the sharded section of %s", o.out)
	return nil
}

// prepareSetup loads a setup's accounts, lets the benchmark's user run the
// scripts, and reads the tables into shared buffers (pg_prewarm, when the
// extension is installed) so that the first runs do not pay for it.
func prepareSetup(ctx context.Context, s *shardbench.Setup, logf func(string, ...any)) error {
	if err := s.Load(ctx); err != nil {
		return err
	}
	for _, srv := range s.Servers {
		if err := srv.Exec(ctx, "GRANT SELECT, INSERT, UPDATE ON pgbench_accounts, pgbench_history TO "+benchUser); err != nil {
			return fmt.Errorf("grant on %s: %w", srv.Name, err)
		}
		err := srv.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_prewarm; SELECT pg_prewarm('pgbench_accounts'), pg_prewarm('pgbench_accounts_pkey')")
		if err != nil {
			logf("sharded: no pg_prewarm on %s (%v): the first runs warm the cache", srv.Name, err)
		}
	}
	return nil
}
