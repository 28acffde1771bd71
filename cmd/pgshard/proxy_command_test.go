package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/wire/auth"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func writeConfig(t *testing.T, path, listen string, pg *pgcluster.Server, users map[string]string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\nshutdown_timeout: 5s\nusers:\n", listen)
	for name, pw := range users {
		v, err := auth.NewSCRAMVerifier(pw, nil, 4096)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "  - name: %s\n    password: %q\n", name, v.String())
	}
	fmt.Fprintf(&b, "shards:\n  - {name: s0, host: %s, port: %d}\nbackend: {user: %s, sslmode: disable}\n", pg.Host, pg.Port, pgcluster.SuperuserName)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func tryQuery(ctx context.Context, dsn string) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, "SELECT 1")
	return err
}

// TestProxyCommandReloadAndStop runs `pgshard proxy --config`, reloads a
// changed user list on SIGHUP and stops on context cancellation (SIGTERM
// in main).
func TestProxyCommandReloadAndStop(t *testing.T) {
	pg := integration.StartPostgres(t)
	t.Setenv("PGSHARD_BACKEND_PASSWORD", pgcluster.SuperuserPassword)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "pgshard.yaml")
	addr := freeAddr(t)
	writeConfig(t, cfgPath, addr, pg, map[string]string{"app": "pw1"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"proxy", "--config", cfgPath}, nil, &stdout, &stderr) }()
	dsn := func(user, pw string) string {
		return fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", user, pw, addr)
	}
	qctx, qcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer qcancel()
	if ok, _ := testutil.Poll(10*time.Second, func() (bool, string) { return tryQuery(qctx, dsn("app", "pw1")) == nil, "" }); !ok {
		t.Fatalf("proxy did not come up:\n%s", stderr.String())
	}
	writeConfig(t, cfgPath, addr, pg, map[string]string{"app": "pw1", "ops": "pw2"})
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if ok, _ := testutil.Poll(10*time.Second, func() (bool, string) { return tryQuery(qctx, dsn("ops", "pw2")) == nil, "" }); !ok {
		t.Fatalf("reload did not add the user:\n%s", stderr.String())
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit code %d:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("proxy did not stop")
	}
	if err := tryQuery(qctx, dsn("app", "pw1")); err == nil {
		t.Fatal("proxy still serving after stop")
	}
}

func TestProxyCommandUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"proxy"}, nil, &stdout, &stderr); code != exitUsage {
		t.Fatalf("exit %d, want %d: %s", code, exitUsage, stderr.String())
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("listen: 127.0.0.1:0\nusers: [{name: a, password: plain}]\nshards: [{name: s0}]\nnope: 1\n"), 0o600)
	stderr.Reset()
	if code := run(context.Background(), []string{"proxy", "--config", bad}, nil, &stdout, &stderr); code != exitError {
		t.Fatalf("exit %d for a bad config", code)
	}
	if !strings.Contains(stderr.String(), "nope") {
		t.Fatalf("error should name the unknown key: %s", stderr.String())
	}
	// A client certificate towards meta needs its key and a CA.
	good := filepath.Join(t.TempDir(), "good.yaml")
	_ = os.WriteFile(good, []byte("listen: 127.0.0.1:0\nusers: [{name: a, auth: trust}]\nshards: [{name: s0}]\n"), 0o600)
	for _, args := range [][]string{{"--meta-tls-cert", "c.pem"}, {"--meta-tls-cert", "c.pem", "--meta-tls-key", "k.pem"}} {
		stderr.Reset()
		argv := append([]string{"proxy", "--config", good, "--meta", "127.0.0.1:1"}, args...)
		if code := run(context.Background(), argv, nil, &stdout, &stderr); code != exitUsage || !strings.Contains(stderr.String(), "--meta-tls-cert and --meta-tls-key go together") {
			t.Errorf("%v: exit %d: %s", args, code, stderr.String())
		}
	}
}

func TestPasswdCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"passwd", "app"}, strings.NewReader("s3cret\n"), &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	v, err := auth.ParseSCRAMVerifier(strings.TrimSpace(stdout.String()))
	if err != nil || v.Iterations != auth.DefaultIterations {
		t.Fatalf("verifier %q: %v", stdout.String(), err)
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"passwd", "--md5", "app"}, strings.NewReader("s3cret\n"), &stdout, &stderr); code != exitOK {
		t.Fatal(stderr.String())
	}
	if got, want := strings.TrimSpace(stdout.String()), auth.MD5Verifier("app", "s3cret"); got != want {
		t.Fatalf("md5 %q want %q", got, want)
	}
	if strings.Contains(stderr.String(), "s3cret") {
		t.Fatal("password echoed")
	}
}
