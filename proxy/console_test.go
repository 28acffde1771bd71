package proxy_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/wire/auth"
)

// TestAdminConsole: admin users connect to the virtual database pgshard
// and read pools, clients, stats, config and help with simple queries;
// others are refused (42501); unknown commands get 42601 and the extended
// protocol 0A000, and the console keeps serving.
func TestAdminConsole(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := baseConfig(t, pg)
	v, err := auth.NewSCRAMVerifier("ops-secret", nil, auth.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Users = append(cfg.Users, proxy.UserConfig{Name: "ops", Password: v.String()})
	cfg.AdminUsers = []string{"ops"}
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	app := connect(t, p.dsn(""))
	if _, err := app.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	console := connect(t, "postgres://ops:ops-secret@"+p.addr+"/pgshard?sslmode=disable&default_query_exec_mode=simple_protocol")

	rows := func(sql string) [][]string {
		t.Helper()
		rs, err := console.Query(ctx, sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		defer rs.Close()
		var out [][]string
		for rs.Next() {
			vals, err := rs.Values()
			if err != nil {
				t.Fatal(err)
			}
			row := make([]string, len(vals))
			for i, v := range vals {
				row[i], _ = v.(string)
			}
			out = append(out, row)
		}
		if err := rs.Err(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return out
	}
	pools := rows("SHOW POOLS")
	if len(pools) != 1 || pools[0][0] != "s0" || pools[0][2] != "primary" || pools[0][3] != "postgres" || pools[0][6] == "0" {
		t.Errorf("SHOW POOLS: %q", pools)
	}
	clients := rows("show clients;")
	var sawApp, sawOps bool
	for _, c := range clients {
		sawApp = sawApp || c[0] == appUser && c[1] == "postgres"
		sawOps = sawOps || c[0] == "ops" && c[3] == "admin console"
	}
	if !sawApp || !sawOps {
		t.Errorf("SHOW CLIENTS: %q", clients)
	}
	stats := rows("SHOW STATS")
	if len(stats) < 3 || stats[0][0] != "clients" || stats[0][1] != "2" {
		t.Errorf("SHOW STATS: %q", stats)
	}
	for _, r := range rows("SHOW CONFIG") {
		if strings.Contains(strings.ToLower(r[0]), "password") || strings.Contains(r[1], appPassword) {
			t.Errorf("SHOW CONFIG shows a secret: %q", r)
		}
	}
	if help := rows("SHOW HELP"); len(help) < 5 {
		t.Errorf("SHOW HELP: %q", help)
	}
	if _, err := console.Exec(ctx, "SELECT 1"); pgCode(err) != "42601" {
		t.Errorf("unknown command: %v, want 42601", err)
	}
	if err := console.PgConn().ExecParams(ctx, "SHOW POOLS", nil, nil, nil, nil).Read().Err; pgCode(err) != "0A000" {
		t.Errorf("extended protocol: %v, want 0A000", err)
	}
	if got := rows("SHOW POOLS"); len(got) != 1 {
		t.Errorf("the console stopped serving after errors: %q", got)
	}
	// Only admin users get in.
	err = tryConnect(p.dsn("") + "&database=pgshard")
	if err == nil {
		c, cerr := pgx.Connect(context.Background(), strings.Replace(p.dsn(""), "/postgres?", "/pgshard?", 1))
		if cerr == nil {
			_ = c.Close(context.Background())
		}
		err = cerr
	}
	if pgCode(err) != "42501" {
		t.Errorf("a non-admin user on the console: %v, want 42501", err)
	}
}
