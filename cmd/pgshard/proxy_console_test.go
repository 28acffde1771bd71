package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/internal/testutil"
)

// TestProxyCommandConsoleReloadShutdown: in `pgshard proxy --config`, the
// admin console's RELOAD reads the changed file (a new user gets in) and
// SHUTDOWN makes the command return with exit code 0.
func TestProxyCommandConsoleReloadShutdown(t *testing.T) {
	pg := integration.StartPostgres(t)
	t.Setenv("PGSHARD_BACKEND_PASSWORD", pgcluster.SuperuserPassword)
	cfgPath := filepath.Join(t.TempDir(), "pgshard.yaml")
	addr := freeAddr(t)
	write := func(users map[string]string) {
		writeConfig(t, cfgPath, addr, pg, users)
		b, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfgPath, append(b, "admin_users: [ops]\n"...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(map[string]string{"ops": "ops-pw"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"proxy", "--config", cfgPath}, nil, &stdout, &stderr) }()
	dsn := func(user, pw, db string) string {
		return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable&default_query_exec_mode=simple_protocol", user, pw, addr, db)
	}
	qctx, qcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer qcancel()
	var console *pgx.Conn
	if ok, _ := testutil.Poll(10*time.Second, func() (bool, string) {
		c, err := pgx.Connect(qctx, dsn("ops", "ops-pw", "pgshard"))
		console = c
		return err == nil, ""
	}); !ok {
		t.Fatalf("proxy did not come up:\n%s", stderr.String())
	}
	defer console.Close(context.Background())
	if err := tryQuery(qctx, dsn("app", "app-pw", "postgres")); err == nil {
		t.Fatal("app got in before it was configured")
	}
	write(map[string]string{"ops": "ops-pw", "app": "app-pw"})
	if _, err := console.Exec(qctx, "RELOAD"); err != nil {
		t.Fatalf("RELOAD: %v\n%s", err, stderr.String())
	}
	if err := tryQuery(qctx, dsn("app", "app-pw", "postgres")); err != nil {
		t.Fatalf("the user RELOAD added: %v", err)
	}
	if _, err := console.Exec(qctx, "SHUTDOWN"); err != nil {
		t.Fatalf("SHUTDOWN: %v", err)
	}
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit code %d after SHUTDOWN:\n%s", code, stderr.String())
		}
	case <-qctx.Done():
		t.Fatal("pgshard proxy did not return after SHUTDOWN")
	}
}
