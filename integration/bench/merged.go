package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration/shardbench"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
)

// The merged-read comparison (-merged): reads over every shard that
// pgshard merges (ORDER BY ... LIMIT, count/sum/avg, GROUP BY) and a key
// IN list over several shards, timed one at a time (a single client)
//
//   - on one server holding every account ("one server"),
//   - on the shards directly, each shard running the statement pgshard
//     sends it (read from EXPLAIN (pgshard)), all shards in parallel, the
//     time being until the slowest one's last row ("shards direct"),
//   - through pgshard over those shards ("pgshard").
//
// pgshard minus shards direct is what the proxy adds: routing, sending,
// and merging the shards' rows.

// mergedQuery is one read of the comparison.
type mergedQuery struct {
	name, sql string
}

// mergedQueries returns the comparison's reads over accounts accounts.
func mergedQueries(accounts int64) []mergedQuery {
	var keys []string
	for i := range int64(40) {
		keys = append(keys, strconv.FormatInt(1+(i*accounts/40+i*7919)%accounts, 10))
	}
	return []mergedQuery{
		{"ORDER BY ... LIMIT 100", "SELECT aid, abalance FROM pgbench_accounts ORDER BY abalance DESC, aid LIMIT 100"},
		{"ORDER BY ... LIMIT 10000", "SELECT aid, bid, abalance FROM pgbench_accounts ORDER BY aid LIMIT 10000"},
		{"count/sum/avg", "SELECT count(*), sum(abalance), avg(abalance) FROM pgbench_accounts"},
		{"GROUP BY (10k rows)", "SELECT aid / 10 AS g, count(*), sum(abalance) FROM pgbench_accounts WHERE aid <= 100000 GROUP BY aid / 10"},
		{"GROUP BY bid", "SELECT bid, count(*), sum(abalance), min(abalance), max(abalance) FROM pgbench_accounts GROUP BY bid"},
		{"IN list of 40 keys", "SELECT aid, abalance FROM pgbench_accounts WHERE aid IN (" + strings.Join(keys, ", ") + ")"},
	}
}

// Targets of the merged-read comparison.
const (
	mergedOneServer = "one server"
	mergedShards    = "shards direct"
	mergedPgshard   = "pgshard"
	mergedBaseline  = "pgshard baseline" // -baseline: the other binary, for a before/after
)

var mergedTargets = []string{mergedOneServer, mergedShards, mergedPgshard, mergedBaseline}

// mergedResult is the timings of one query on each target.
type mergedResult struct {
	query     mergedQuery
	rows      int                        // rows of the answer (one server's)
	perShard  map[string]string          // the statement each shard gets
	durations map[string][]time.Duration // per target
	err       error
}

// runMerged runs the merged-read comparison and writes its section of the
// report.
func runMerged(ctx context.Context, o *options, env *environment, tmp string, logf func(string, ...any)) (err error) {
	settings := shardedPgSettings
	users := []pgcluster.User{{Name: benchUser, Password: benchPassword}}
	logf("merged: starting one PostgreSQL and %d shards", o.shards)
	single, err := pgcluster.Start(ctx, pgcluster.Options{Name: "bench-merged-single", Settings: settings, Users: users})
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
	cl, err := pgcluster.StartCluster(ctx, o.shards, pgcluster.Options{Name: "bench-merged-shard", Settings: settings, Users: users})
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
		logf("merged: loading %d accounts into %d server(s)", s.Accounts(), len(s.Servers))
		if err := prepareSetup(ctx, s, logf); err != nil {
			return err
		}
		// Balances that differ, so that sorting and sums do some work.
		for _, srv := range s.Servers {
			for _, sql := range []string{"UPDATE pgbench_accounts SET abalance = (aid::bigint * 7919) % 100000 - 50000", "VACUUM ANALYZE pgbench_accounts"} {
				if err := srv.Exec(ctx, sql); err != nil {
					return fmt.Errorf("set balances on %s: %w", srv.Name, err)
				}
			}
		}
	}

	dir := filepath.Join(tmp, "merged")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	mapFile := filepath.Join(dir, "shardmap.yaml")
	if err := many.WriteMap(mapFile); err != nil {
		return err
	}
	proc, addr, err := startPgshard(ctx, o.pgshardBin, dir, nil, mapFile, o.poolSize, benchUser, benchPassword)
	if err != nil {
		return fmt.Errorf("start pgshard: %w", err)
	}
	defer proc.stop(10 * time.Second)
	var baseAddr string
	if o.baselineBin != "" {
		bdir := filepath.Join(tmp, "merged-baseline")
		if err := os.Mkdir(bdir, 0o700); err != nil {
			return err
		}
		bproc, a, err := startPgshard(ctx, o.baselineBin, bdir, nil, mapFile, o.poolSize, benchUser, benchPassword)
		if err != nil {
			return fmt.Errorf("start the baseline pgshard: %w", err)
		}
		defer bproc.stop(10 * time.Second)
		baseAddr = a
	}

	dial := func(ep endpoint) (*pgx.Conn, error) {
		dsn := fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable default_query_exec_mode=simple_protocol",
			ep.host, ep.port, ep.user, ep.password, ep.dbname)
		return pgx.Connect(ctx, dsn)
	}
	var conns []*pgx.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.WithoutCancel(ctx))
		}
	}()
	open := func(ep endpoint) (*pgx.Conn, error) {
		c, err := dial(ep)
		if err == nil {
			conns = append(conns, c)
		}
		return c, err
	}
	oneConn, err := open(endpoint{host: single.Host, port: single.Port, user: benchUser, password: benchPassword, dbname: benchDB})
	if err != nil {
		return fmt.Errorf("connect to the one server: %w", err)
	}
	proxyConn, err := open(endpointAt(addr, benchDB))
	if err != nil {
		return fmt.Errorf("connect to pgshard: %w", err)
	}
	var baseConn *pgx.Conn
	if baseAddr != "" {
		if baseConn, err = open(endpointAt(baseAddr, benchDB)); err != nil {
			return fmt.Errorf("connect to the baseline pgshard: %w", err)
		}
	}
	shardConns := map[string]*pgx.Conn{}
	for i, srv := range many.Servers {
		c, err := open(endpoint{host: srv.Host, port: srv.Port, user: benchUser, password: benchPassword, dbname: benchDB})
		if err != nil {
			return fmt.Errorf("connect to shard %s: %w", many.Map.Shards[i].Name, err)
		}
		shardConns[many.Map.Shards[i].Name] = c
	}

	var results []mergedResult
	for _, q := range mergedQueries(one.Accounts()) {
		logf("merged: %s, %d runs per target", q.name, o.mergedRuns)
		r := measureMerged(ctx, q, o.mergedRuns, oneConn, proxyConn, baseConn, shardConns)
		if r.err != nil {
			logf("  %v", r.err)
		} else {
			logf("  %s", mergedSummary(r))
		}
		results = append(results, r)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	report := renderMergedReport(*env, o, results)
	if err := writeReport(o.out, mergedBeginMarker, mergedEndMarker, report); err != nil {
		return err
	}
	logf("wrote the merged-read section of %s", o.out)
	return nil
}

// measureMerged times q runs times on each target, the targets taking
// turns, after one untimed run each; it checks that pgshard's answer has
// the one server's rows. baseConn (nil: none) is the baseline pgshard.
func measureMerged(ctx context.Context, q mergedQuery, runs int, oneConn, proxyConn, baseConn *pgx.Conn, shardConns map[string]*pgx.Conn) mergedResult {
	r := mergedResult{query: q, durations: map[string][]time.Duration{}}
	per, err := explainPerShard(ctx, proxyConn, q.sql)
	if err != nil {
		r.err = fmt.Errorf("EXPLAIN (pgshard): %w", err)
		return r
	}
	r.perShard = per
	var want []string // the one server's rows, sorted
	for run := -1; run < runs; run++ {
		for _, target := range mergedTargets {
			if target == mergedBaseline && baseConn == nil {
				continue
			}
			start := time.Now()
			var rows []string
			switch target {
			case mergedOneServer:
				rows, err = readAll(ctx, oneConn, q.sql)
			case mergedPgshard:
				rows, err = readAll(ctx, proxyConn, q.sql)
			case mergedBaseline:
				rows, err = readAll(ctx, baseConn, q.sql)
			case mergedShards:
				err = readShards(ctx, shardConns, per)
			}
			d := time.Since(start)
			if err != nil {
				r.err = fmt.Errorf("%s: %w", target, err)
				return r
			}
			if run < 0 {
				// The untimed first run: compare the answers.
				switch target {
				case mergedOneServer:
					r.rows, want = len(rows), sortedCopy(rows)
				case mergedPgshard, mergedBaseline:
					if !slices.Equal(sortedCopy(rows), want) {
						r.err = fmt.Errorf("%s's answer (%d rows) differs from the one server's (%d rows)", target, len(rows), r.rows)
						return r
					}
				}
				continue
			}
			r.durations[target] = append(r.durations[target], d)
		}
	}
	return r
}

func sortedCopy(rows []string) []string {
	s := slices.Clone(rows)
	slices.Sort(s)
	return s
}

// explainPerShard returns the statement pgshard sends each shard for sql.
func explainPerShard(ctx context.Context, c *pgx.Conn, sql string) (map[string]string, error) {
	rows, err := c.Query(ctx, "EXPLAIN (pgshard) "+sql)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	per := map[string]string{}
	for rows.Next() {
		var shard, route, stmt, detail *string
		if err := rows.Scan(&shard, &route, &stmt, &detail); err != nil {
			return nil, err
		}
		if shard == nil || stmt == nil {
			return nil, fmt.Errorf("not routed to shards (%v)", deref(detail))
		}
		per[*shard] = *stmt
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(per) < 2 {
		return nil, fmt.Errorf("runs on %d shard(s), not merged", len(per))
	}
	return per, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// readAll runs sql and returns its rows as text.
func readAll(ctx context.Context, c *pgx.Conn, sql string) ([]string, error) {
	rows, err := c.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var b strings.Builder
		for i, v := range rows.RawValues() {
			if i > 0 {
				b.WriteByte('|')
			}
			b.Write(v)
		}
		out = append(out, b.String())
	}
	return out, rows.Err()
}

// readShards runs each shard's statement on its connection, all at once,
// and returns when every shard's answer is read.
func readShards(ctx context.Context, conns map[string]*pgx.Conn, per map[string]string) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(per))
	for shard, sql := range per {
		c := conns[shard]
		if c == nil {
			return fmt.Errorf("no connection to shard %s", shard)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := readAll(ctx, c, sql); err != nil {
				errs <- fmt.Errorf("shard %s: %w", shard, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// quantile returns the q-quantile (0..1) of ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// mergedSummary is one line for the console.
func mergedSummary(r mergedResult) string {
	med := func(t string) time.Duration { return quantile(r.durations[t], 0.5) }
	one, shards, proxy := med(mergedOneServer), med(mergedShards), med(mergedPgshard)
	return fmt.Sprintf("%d rows; median ms: one server %.2f, shards direct %.2f, pgshard %.2f (proxy adds %.2f ms, %.0f%% of shards direct)",
		r.rows, ms(one), ms(shards), ms(proxy), ms(proxy-shards), 100*float64(proxy-shards)/float64(max(shards, 1)))
}
