package proxy_test

import (
	"strings"
	"testing"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/wire/auth"
)

// limitsConfig is pg's base configuration with a second user, "other"
// (password other-pw), and limits set by adjust.
func limitsConfig(t *testing.T, pg *pgcluster.Server, adjust func(*proxy.Config)) *proxy.Config {
	t.Helper()
	cfg := baseConfig(t, pg)
	v, err := auth.NewSCRAMVerifier("other-pw", nil, auth.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Users = append(cfg.Users, proxy.UserConfig{Name: "other", Password: v.String()})
	adjust(cfg)
	return cfg
}

// reload applies a new configuration to p, as SIGHUP or RELOAD do.
func reload(t *testing.T, p *testProxy, cfg *proxy.Config) {
	t.Helper()
	if err := cfg.Complete(); err != nil {
		t.Fatal(err)
	}
	if err := p.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
}

// TestRateLimitStatements: over a user's statement rate, simple queries
// and extended-protocol statements are refused with 53400 while another
// user goes on; a refusal inside a transaction aborts it, as any error;
// reloading lifts the limit on the same connections, and a per-address
// limit set by reload counts every user's statements from the address.
// The refusals are counted per limit.
func TestRateLimitStatements(t *testing.T) {
	pg := integration.StartPostgres(t)
	// 0.2/s: no token comes back while the test runs its statements.
	perUser := func(c *proxy.Config) {
		c.RateLimits.PerUser = proxy.RateLimit{StatementsPerSecond: 0.2, StatementBurst: 3}
	}
	p := startProxy(t, limitsConfig(t, pg, perUser))
	ctx := ctxT(t)
	app := connect(t, p.dsn("default_query_exec_mode=simple_protocol"))
	other := connect(t, userDSN(p.addr, "other", "other-pw")+"&default_query_exec_mode=simple_protocol")

	for _, sql := range []string{"BEGIN", "SELECT 1", "SELECT 2"} {
		if _, err := app.Exec(ctx, sql); err != nil {
			t.Fatalf("%s within the burst: %v", sql, err)
		}
	}
	_, err := app.Exec(ctx, "SELECT 3")
	if pgCode(err) != "53400" || !strings.Contains(err.Error(), `role "app" may run at most 0.2 statements per second`) {
		t.Fatalf("a statement over the rate: %v, want 53400 naming the limit", err)
	}
	if _, err := other.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("another user while app is limited: %v", err)
	}
	extended := connect(t, p.dsn(""))
	var n int
	if err := extended.QueryRow(ctx, "SELECT $1::int", 7).Scan(&n); pgCode(err) != "53400" {
		t.Errorf("an extended-protocol statement over the rate: %v (%d), want 53400", err, n)
	}

	// Live: without the limit, the same connections run statements; the
	// transaction the refusal hit is aborted.
	reload(t, p, limitsConfig(t, pg, func(*proxy.Config) {}))
	if _, err := app.Exec(ctx, "SELECT 4"); pgCode(err) != "25P02" {
		t.Errorf("the transaction after the refusal: %v, want 25P02 (aborted)", err)
	}
	if _, err := app.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := extended.QueryRow(ctx, "SELECT $1::int", 7).Scan(&n); err != nil || n != 7 {
		t.Errorf("an extended-protocol statement after the reload: %d, %v", n, err)
	}

	// Per address: both users share 127.0.0.1's budget.
	reload(t, p, limitsConfig(t, pg, func(c *proxy.Config) {
		c.RateLimits.PerAddress = proxy.RateLimit{StatementsPerSecond: 0.2, StatementBurst: 2}
	}))
	if _, err := app.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	_, err = other.Exec(ctx, "SELECT 1")
	if pgCode(err) != "53400" || !strings.Contains(err.Error(), "clients from 127.0.0.1 may run at most 0.2 statements per second") {
		t.Errorf("a statement over the address's rate: %v, want 53400 naming the address", err)
	}

	metrics := scrape(t, p)
	for _, want := range []string{
		`pgshard_rate_limited_total{limit="user_statements"} 2`,
		`pgshard_rate_limited_total{limit="address_statements"} 1`,
		`pgshard_rate_limited_total{limit="user_connections"} 0`,
		`pgshard_rate_limit_per_second{limit="address_statements"} 0.2`,
		`pgshard_rate_limit_per_second{limit="user_statements"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(metrics, "rate_limit"))
		}
	}
}

// TestRateLimitConnections: new connections over a client address's rate
// or a user's own rate_limit are refused with 53300 before the session
// starts; the user limit counts only that user; reload lifts the limits.
func TestRateLimitConnections(t *testing.T) {
	pg := integration.StartPostgres(t)
	limits := func(c *proxy.Config) {
		c.RateLimits.PerAddress = proxy.RateLimit{ConnectionsPerSecond: 0.2, ConnectionBurst: 3}
		c.Users[1].RateLimit = &proxy.RateLimit{ConnectionsPerSecond: 0.2, ConnectionBurst: 1}
	}
	p := startProxy(t, limitsConfig(t, pg, limits))
	otherDSN := userDSN(p.addr, "other", "other-pw")

	if err := tryConnect(otherDSN); err != nil { // address 1, other 1
		t.Fatal(err)
	}
	err := tryConnect(otherDSN) // address 2, other refused
	if pgCode(err) != "53300" || !strings.Contains(err.Error(), `too many new connections for role "other"`) {
		t.Errorf("a connection over the user's rate: %v, want 53300", err)
	}
	if err := tryConnect(p.dsn("")); err != nil { // address 3
		t.Errorf("another user under its limits: %v", err)
	}
	err = tryConnect(p.dsn("")) // address refused
	if pgCode(err) != "53300" || !strings.Contains(err.Error(), "too many new connections from 127.0.0.1") {
		t.Errorf("a connection over the address's rate: %v, want 53300", err)
	}
	metrics := scrape(t, p)
	for _, want := range []string{
		`pgshard_rate_limited_total{limit="user_connections"} 1`,
		`pgshard_rate_limited_total{limit="address_connections"} 1`,
		`pgshard_rate_limit_per_second{limit="address_connections"} 0.2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(metrics, "rate_limit"))
		}
	}
	reload(t, p, limitsConfig(t, pg, func(*proxy.Config) {}))
	for range 3 {
		if err := tryConnect(otherDSN); err != nil {
			t.Fatalf("after the reload lifted the limits: %v", err)
		}
	}
}

// TestRateLimitConfig: rates must be numbers of zero or more.
func TestRateLimitConfig(t *testing.T) {
	_, err := proxy.ParseConfig([]byte(`
users: [{name: a, auth: trust}]
shards: [{name: s0}]
rate_limits:
  per_user: {statements_per_second: -1}
  per_address: {connection_burst: -2}
`))
	if err == nil || !strings.Contains(err.Error(), "rate_limits.per_user.statements_per_second") || !strings.Contains(err.Error(), "rate_limits.per_address.connection_burst") {
		t.Errorf("negative rates: %v", err)
	}
	cfg, err := proxy.ParseConfig([]byte(`
users: [{name: a, auth: trust, rate_limit: {connections_per_second: 5}}]
shards: [{name: s0}]
rate_limits:
  per_address: {statements_per_second: 100, statement_burst: 200}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RateLimits.PerAddress.StatementBurst != 200 || cfg.Users[0].RateLimit.ConnectionsPerSecond != 5 {
		t.Errorf("parsed: %+v %+v", cfg.RateLimits, cfg.Users[0].RateLimit)
	}
}
