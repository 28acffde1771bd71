package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"gopkg.in/yaml.v3"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/replication/twophase"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// The Grafana dashboard and the Prometheus alert rules users load.
const (
	dashboardFile  = "../../docs/deploy/grafana-dashboard.json"
	alertRulesFile = "../../docs/deploy/prometheus-alerts.yml"
)

// TestDeployDashboardMetrics: every pgshard_* metric (and every label in a
// selector of one) that the dashboard and the alert rules name is served
// by a real proxy's or a real meta member's /metrics. The proxy follows
// the meta member, serves traffic (reads on the replica, an error, a
// pinned session), the meta member switches the shard's primary over and
// moves an interval onto a new shard, so that the labelled series exist.
func TestDeployDashboardMetrics(t *testing.T) {
	integration.SkipIfNoPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	cl := integration.NewCluster(t, integration.Shards(1), integration.Replicas(1))
	primary, replica := cl.Shards[0], cl.Shards[0].Replicas[0]
	if err := primary.Exec(ctx, "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL)"); err != nil {
		t.Fatal(err)
	}

	// A meta member, as `pgshard meta run` with failover on and /metrics.
	const token = "deploy-check"
	t.Setenv("PGSHARD_META_PG_PASSWORD", pgcluster.SuperuserPassword)
	apiAddr, metricsAddr := freeAddr(t), freeAddr(t)
	metaCtx, stopMeta := context.WithCancel(context.WithoutCancel(ctx))
	metaLog := &syncBuffer{}
	metaDone := make(chan int, 1)
	go func() {
		metaDone <- run(metaCtx, []string{"meta", "run", "--id", "m1", "--bootstrap",
			"--data-dir", filepath.Join(t.TempDir(), "meta"), "--raft-addr", freeAddr(t), "--api-addr", apiAddr,
			"--token", token, "--metrics-listen", metricsAddr, "--pg-user", pgcluster.SuperuserName,
			"--pg-sslmode", "disable", "--log-level", "warn"}, nil, metaLog, metaLog)
	}()
	defer func() {
		stopMeta()
		if code := <-metaDone; code != exitOK {
			t.Errorf("meta run exited with %d:\n%s", code, metaLog.String())
		}
	}()
	mapYAML := fmt.Sprintf(`shards:
  - {name: s0, primary: %q, replicas: [%q]}
distributions:
  - {name: users, key_type: bigint, strategy: range, default_shard: s0, intervals: [{lo: -inf, hi: +inf, shard: s0}]}
tables:
  - {name: public.users, distribution: users, key: id, cache: {enabled: true}}
`, primary.Addr(), replica.Addr())
	runCtl(t, nil, "map", "apply", "-f", ctlWriteFile(t, "map.yaml", mapYAML), "--meta", apiAddr, "--token", token).want(t, exitOK)

	// A proxy following it, with its admin HTTP API.
	m, err := shardmap.ParseYAMLWithoutEpoch([]byte(mapYAML))
	if err != nil {
		t.Fatal(err)
	}
	m.Epoch = 1
	cfg := testproxy.Config(t, primary)
	if err := cfg.UseShardMap(m); err != nil {
		t.Fatal(err)
	}
	cfg.Cache = proxy.CacheConfig{Enabled: true}
	p := testproxy.Start(t, cfg)
	client, err := metarpc.NewClient([]string{apiAddr}, metarpc.ClientOptions{Token: token, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	followCtx, stopFollow := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { p.Server.FollowMeta(followCtx, client, "deploy-check-proxy", 200*time.Millisecond) })
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		if err := p.Server.ServeAdmin(followCtx, adminLn); err != nil {
			t.Errorf("proxy admin: %v", err)
		}
	})
	defer func() { // before the proxy's own cleanup
		stopFollow()
		wg.Wait()
		_ = client.Close()
	}()

	// Traffic: writes, reads (a replica's pool), an error, a pinned session.
	conn, err := pgx.Connect(ctx, p.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for i := range 20 {
		if _, err := conn.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'x')", i); err != nil {
			t.Fatalf("insert through the proxy: %v", err)
		}
	}
	pollUntil(ctx, t, "a read through the proxy served by the replica", func() (bool, error) {
		var inRecovery bool
		err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery() FROM users WHERE id = 1").Scan(&inRecovery)
		return err == nil && inRecovery, err
	})
	var pgErr *pgconn.PgError
	if _, err := conn.Exec(ctx, "SELECT 1/0"); !errors.As(err, &pgErr) || pgErr.Code != "22012" {
		t.Fatalf("SELECT 1/0 through the proxy: %v, want 22012", err)
	}
	if _, err := conn.Exec(ctx, "CREATE TEMP TABLE pinned (x int)"); err != nil {
		t.Fatalf("temp table through the proxy: %v", err)
	}

	// The proxy's series before the switchover: with the replica promoted,
	// the shard has no replica left and its lag series go (the health
	// monitor drops them at its next probe), so they are checked here.
	beforeSwitch := scrape(ctx, t, "http://"+adminLn.Addr().String()+"/metrics", "")

	// A planned switchover, for the failover series (and a new epoch the
	// proxy follows).
	runCtl(t, nil, "failover", "--shard", "s0", "--meta", apiAddr, "--token", token, "--timeout", "60s").want(t, exitOK)
	pollUntil(ctx, t, "the proxy on the switched-over map", func() (bool, error) {
		return p.Server.MapEpoch() > 1, nil
	})

	// A cached read (its shard's invalidation stream up), and a prepared
	// transaction whose coordinator is gone, which two-phase recovery on
	// the meta leader rolls back. (The switchover ended the pinned session.)
	conn2, err := pgx.Connect(ctx, p.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close(context.WithoutCancel(ctx))
	pollUntil(ctx, t, "a read answered by the row cache", func() (bool, error) {
		var name string
		if err := conn2.QueryRow(ctx, "SELECT name FROM users WHERE id = 2").Scan(&name); err != nil {
			return false, err
		}
		page, err := getText(ctx, "http://"+adminLn.Addr().String()+"/metrics")
		return strings.Contains(page, `pgshard_cache_stream_up{shard="s0"} 1`) &&
			!strings.Contains(page, `pgshard_cache_lookups_total{reason="",result="hit"} 0`), err
	})
	gid, err := twophase.NewGID("gone-proxy", "s0")
	if err != nil {
		t.Fatal(err)
	}
	if err := replica.Exec(ctx, "BEGIN; INSERT INTO users (id, name) VALUES (1000, 'orphan'); PREPARE TRANSACTION '"+string(gid)+"'"); err != nil {
		t.Fatalf("prepare on the new primary: %v", err)
	}
	pollUntil(ctx, t, "two-phase recovery rolling back the orphaned prepared transaction", func() (bool, error) {
		n, err := replica.QueryValue(ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE gid = '"+string(gid)+"'")
		return err == nil && n == "0", err
	})

	// A move onto a new shard, cut over and left for cleanup, for the
	// resharding series of an unfinished move.
	spare := integration.NewCluster(t, integration.Shards(1)).Shards[0]
	runCtl(t, nil, "shards", "add", "s1", "--primary", spare.Addr(), "--meta", apiAddr, "--token", token).want(t, exitOK)
	runCtl(t, nil, "reshard", "move", "--distribution", "users", "--interval", "[10,+inf)", "--to", "s1", "--cutover", "auto",
		"--meta", apiAddr, "--token", token, "-o", "json").want(t, exitOK)

	proxyMetrics := scrape(ctx, t, "http://"+adminLn.Addr().String()+"/metrics", "")
	for name, series := range beforeSwitch {
		if _, ok := proxyMetrics[name]; !ok {
			proxyMetrics[name] = series
		}
	}
	metaMetrics := scrape(ctx, t, "http://"+metricsAddr+"/metrics", token)
	for _, want := range []string{"pgshard_errors_total", "pgshard_pinned_sessions_total", "pgshard_replica_lag_bytes", "pgshard_map_epoch",
		"pgshard_cache_lookups_total", "pgshard_cache_stream_up", "pgshard_cache_staleness_seconds_bucket"} {
		if _, ok := proxyMetrics[want]; !ok {
			t.Errorf("the proxy's /metrics lacks %s after traffic", want)
		}
	}
	for _, want := range []string{"pgshard_failover_switches_total", "pgshard_meta_map_epoch", "pgshard_endpoint_up",
		"pgshard_twophase_recovery_actions_total", "pgshard_twophase_in_doubt", "pgshard_twophase_oldest_in_doubt_seconds", "pgshard_twophase_problem_shards",
		"pgshard_reshard_moves", "pgshard_reshard_rows_to_copy", "pgshard_reshard_cutover_seconds", "pgshard_reshard_verify_equal"} {
		if _, ok := metaMetrics[want]; !ok {
			t.Errorf("the meta member's /metrics lacks %s after a switchover", want)
		}
	}
	served := mergeMetricSets(proxyMetrics, metaMetrics)

	dashExprs := dashboardExprs(t, dashboardFile)
	ruleExprs := alertRuleExprs(t, alertRulesFile)
	for _, tc := range []struct {
		file  string
		exprs []string
	}{{dashboardFile, dashExprs}, {alertRulesFile, ruleExprs}} {
		names := metricNames(tc.exprs)
		if len(names) < 10 {
			t.Errorf("%s names only %d pgshard metrics: %v", tc.file, len(names), names)
		}
		for _, problem := range checkExprs(tc.exprs, served) {
			t.Errorf("%s: %s", tc.file, problem)
		}
	}
}

// TestCheckExprs: the check flags a metric no endpoint serves and a label
// a metric does not have, and accepts histogram series of a histogram.
func TestCheckExprs(t *testing.T) {
	served := parseExposition(strings.NewReader(`# HELP pgshard_errors_total x
# TYPE pgshard_errors_total counter
pgshard_errors_total{sqlstate="22012"} 1
# TYPE pgshard_query_duration_seconds histogram
pgshard_query_duration_seconds_bucket{le="0.1"} 1
pgshard_query_duration_seconds_sum 0.01
pgshard_query_duration_seconds_count 1
`))
	got := checkExprs([]string{
		`sum by (sqlstate) (rate(pgshard_errors_total{job="x", sqlstate=~"08.*"}[5m]))`,
		`histogram_quantile(0.99, sum by (le) (rate(pgshard_query_duration_seconds_bucket[5m])))`,
		`rate(pgshard_query_duration_seconds_count[1m]) + up{job="pgshard-proxy"}`,
		`pgshard_no_such_metric > 0`,
		`rate(pgshard_errors_total{shard="s0"}[5m])`,
		`sum by (instance, state) (rate(pgshard_errors_total[5m]))`,
	}, served)
	want := []string{`metric pgshard_no_such_metric is not served (in: pgshard_no_such_metric > 0)`,
		`metric pgshard_errors_total has no label shard (in: rate(pgshard_errors_total{shard="s0"}[5m]))`,
		`no metric has the label state it is grouped by (in: sum by (instance, state) (rate(pgshard_errors_total[5m])))`}
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%q\nwant\n%q", got, want)
	}
}

// metricSet maps each served metric name (histogram series included) to
// the label names its samples carry.
type metricSet map[string]map[string]bool

// scrape fetches a /metrics page, polling until it answers.
func scrape(ctx context.Context, t *testing.T, url, token string) metricSet {
	t.Helper()
	var set metricSet
	pollUntil(ctx, t, "GET "+url, func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("status %s", resp.Status)
		}
		set = parseExposition(resp.Body)
		return len(set) > 0, nil
	})
	return set
}

// getText fetches url's body.
func getText(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// sampleLine is a sample of the text exposition format: name, labels.
var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s`)
var labelName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)

// parseExposition reads the Prometheus text format: TYPE lines name a
// metric (and a histogram's or summary's series), samples their labels.
func parseExposition(r io.Reader) metricSet {
	set := metricSet{}
	add := func(name string) map[string]bool {
		if set[name] == nil {
			set[name] = map[string]bool{}
		}
		return set[name]
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) >= 4 && f[0] == "#" && f[1] == "TYPE" {
			add(f[2])
			if f[3] == "histogram" || f[3] == "summary" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					add(f[2] + s)
				}
			}
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		labels := add(m[1])
		for _, l := range labelName.FindAllStringSubmatch(m[2], -1) {
			labels[l[1]] = true
		}
	}
	return set
}

func mergeMetricSets(sets ...metricSet) metricSet {
	out := metricSet{}
	for _, s := range sets {
		for name, labels := range s {
			if out[name] == nil {
				out[name] = map[string]bool{}
			}
			for l := range labels {
				out[name][l] = true
			}
		}
	}
	return out
}

// metricRef is a pgshard metric in an expression, with its selector.
var metricRef = regexp.MustCompile(`\b(pgshard_[a-zA-Z0-9_]+)(\{[^}]*\})?`)

// scrapeLabels are the labels Prometheus adds to every series it scrapes.
var scrapeLabels = map[string]bool{"job": true, "instance": true, "__name__": true}

// groupingClause is a by (...) or without (...) of an aggregation.
var groupingClause = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)

// checkExprs reports every pgshard metric the expressions name that is
// not served, every selector label such a metric does not carry, and
// every label an aggregation groups by that no pgshard metric of the
// expression carries.
func checkExprs(exprs []string, served metricSet) []string {
	var problems []string
	for _, e := range exprs {
		carried := map[string]bool{}
		for _, m := range metricRef.FindAllStringSubmatch(e, -1) {
			labels, ok := served[m[1]]
			if !ok {
				problems = append(problems, fmt.Sprintf("metric %s is not served (in: %s)", m[1], e))
				continue
			}
			for l := range labels {
				carried[l] = true
			}
			for _, l := range labelName.FindAllStringSubmatch(m[2], -1) {
				if !labels[l[1]] && !scrapeLabels[l[1]] && l[1] != "le" {
					problems = append(problems, fmt.Sprintf("metric %s has no label %s (in: %s)", m[1], l[1], e))
				}
			}
		}
		if len(carried) == 0 {
			continue
		}
		for _, g := range groupingClause.FindAllStringSubmatch(e, -1) {
			for _, l := range strings.Split(g[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !carried[l] && !scrapeLabels[l] {
					problems = append(problems, fmt.Sprintf("no metric has the label %s it is grouped by (in: %s)", l, e))
				}
			}
		}
	}
	return problems
}

// metricNames lists the distinct pgshard metrics the expressions name.
func metricNames(exprs []string) []string {
	var names []string
	for _, e := range exprs {
		for _, m := range metricRef.FindAllStringSubmatch(e, -1) {
			if !slices.Contains(names, m[1]) {
				names = append(names, m[1])
			}
		}
	}
	slices.Sort(names)
	return names
}

// dashboardExprs returns the queries of a Grafana dashboard: every
// panel target's expr (rows' panels included) and the variables' queries.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string            `json:"title"`
		UID        string            `json:"uid"`
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("%s: no title, uid or panels", path)
	}
	type panel struct {
		Type    string            `json:"type"`
		Title   string            `json:"title"`
		Panels  []json.RawMessage `json:"panels"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	}
	var exprs []string
	var walk func([]json.RawMessage)
	walk = func(raws []json.RawMessage) {
		for _, raw := range raws {
			var p panel
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatalf("%s: panel: %v", path, err)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no queries", path, p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q has an empty query", path, p.Title)
				}
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			exprs = append(exprs, v.Definition)
		}
	}
	return exprs
}

// alertRuleExprs returns the expressions of a Prometheus rule file,
// checking that every alert has a severity and a summary.
func alertRuleExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Record      string            `yaml:"record"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var exprs []string
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" && r.Record == "" || strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: group %s: a rule without alert/record or expr: %+v", path, g.Name, r)
			}
			if r.Alert != "" && (r.Labels["severity"] == "" || r.Annotations["summary"] == "") {
				t.Errorf("%s: alert %s needs labels.severity and annotations.summary", path, r.Alert)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: alert %s: for: %v", path, r.Alert, err)
				}
			}
			exprs = append(exprs, r.Expr)
		}
	}
	if len(exprs) == 0 {
		t.Fatalf("%s: no rules", path)
	}
	return exprs
}

// pollUntil polls cond every 100 ms until it is true or ctx ends.
func pollUntil(ctx context.Context, t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("%s: gave up (%v), last error: %v", what, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
