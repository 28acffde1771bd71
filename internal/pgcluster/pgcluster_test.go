package pgcluster_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
)

func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaks(m)) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustValue(t *testing.T, ctx context.Context, s *pgcluster.Server, sql string) string {
	t.Helper()
	v, err := s.QueryValue(ctx, sql)
	if err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	return v
}

func TestReplicasSeePrimaryWrites(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	p := integration.StartPostgres(t, integration.Replicas(2))
	if len(p.Replicas) != 2 {
		t.Fatalf("got %d replicas, want 2", len(p.Replicas))
	}
	if err := p.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'hello')"); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitReplayed(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range p.Replicas {
		if r.Primary != p || r.Port == p.Port {
			t.Errorf("%s: Primary=%p Port=%d, want primary %p and its own port", r.Name, r.Primary, r.Port, p)
		}
		if got := mustValue(t, ctx, r, "SELECT v FROM t WHERE id = 1"); got != "hello" {
			t.Errorf("%s: got %q, want hello", r.Name, got)
		}
		if got := mustValue(t, ctx, r, "SELECT pg_is_in_recovery()"); got != "t" {
			t.Errorf("%s: pg_is_in_recovery = %q, want t", r.Name, got)
		}
	}
	if err := p.Replicas[0].WaitReplayed(ctx); err == nil {
		t.Error("WaitReplayed on a replica: want error")
	}
}

func TestKillRestartKeepsData(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := integration.StartPostgres(t)
	// synchronous_commit is off by default: make this commit durable.
	if err := s.Exec(ctx, "SET synchronous_commit = on; CREATE TABLE t (id int); INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	pid, port := s.PID(), s.Port
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if s.PID() != 0 {
		t.Errorf("PID after Kill = %d, want 0", s.PID())
	}
	if err := s.Kill(); err == nil {
		t.Error("Kill of a stopped server: want error")
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if s.PID() == pid || s.PID() == 0 || s.Port != port {
		t.Errorf("after Restart: pid %d (was %d), port %d (was %d)", s.PID(), pid, s.Port, port)
	}
	if got := mustValue(t, ctx, s, "SELECT id FROM t"); got != "42" {
		t.Errorf("got %q, want 42", got)
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := integration.StartPostgres(t, integration.TLS())
	ca := s.CACertPath()
	if ca == "" {
		t.Fatal("CACertPath is empty")
	}
	for _, dsn := range []string{
		s.SuperDSN("postgres"), // sslmode=require
		"host=127.0.0.1 port=" + itoa(s.Port) + " user=postgres password=postgres dbname=postgres sslmode=verify-full sslrootcert=" + ca,
		"host=localhost port=" + itoa(s.Port) + " user=postgres password=postgres dbname=postgres sslmode=verify-full sslrootcert=" + ca,
	} {
		conn, err := pgconn.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("connect %q: %v", dsn, err)
			continue
		}
		res, err := conn.Exec(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").ReadAll()
		if err != nil || string(res[0].Rows[0][0]) != "t" {
			t.Errorf("%q: ssl not in use: %v", dsn, err)
		}
		conn.Close(ctx)
	}
	// A CA that did not sign the certificate must not verify it.
	other := filepath.Join(t.TempDir(), "other.crt")
	if err := os.WriteFile(other, otherCA(t), 0o644); err != nil {
		t.Fatal(err)
	}
	dsn := "host=127.0.0.1 port=" + itoa(s.Port) + " user=postgres password=postgres sslmode=verify-full sslrootcert=" + other
	if conn, err := pgconn.Connect(ctx, dsn); err == nil {
		conn.Close(ctx)
		t.Error("verify-full with an unrelated CA: want error")
	}
}

func TestHostAuth(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		method, prefix string
	}{
		{pgcluster.AuthMD5, "md5"},
		{pgcluster.AuthScram, "SCRAM-SHA-256$"},
	} {
		t.Run(tc.method, func(t *testing.T) {
			ctx := ctxT(t)
			s := integration.StartPostgres(t, integration.HostAuth(tc.method),
				integration.Users(pgcluster.User{Name: "app", Password: "s3cret'x"}))
			conn, err := pgconn.Connect(ctx, s.DSN("app", "s3cret'x", "postgres"))
			if err != nil {
				t.Fatalf("connect as app: %v", err)
			}
			conn.Close(ctx)
			for _, role := range []string{"app", "postgres"} {
				pw := mustValue(t, ctx, s, "SELECT rolpassword FROM pg_authid WHERE rolname = '"+role+"'")
				if len(pw) < len(tc.prefix) || pw[:len(tc.prefix)] != tc.prefix {
					t.Errorf("%s password stored as %.14q..., want prefix %q", role, pw, tc.prefix)
				}
			}
			_, err = pgconn.Connect(ctx, s.DSN("app", "wrong", "postgres"))
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
				t.Errorf("wrong password: got %v, want SQLSTATE 28P01", err)
			}
		})
	}
}

func TestStopLeavesNoProcess(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s, err := pgcluster.Start(ctx, pgcluster.Options{Name: "stop"})
	if err != nil {
		t.Fatal(err)
	}
	pid := s.PID()
	running, err := pgcluster.Running()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(running, pid) {
		t.Errorf("Running() = %v, want it to contain %d", running, pid)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	running, err = pgcluster.Running()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(running, pid) {
		t.Errorf("Running() = %v after Stop, still contains %d", running, pid)
	}
	if err := s.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.DataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data dir after Destroy: %v, want not exist", err)
	}
}

func TestRestartAfterStop(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := integration.StartPostgres(t, integration.Settings(map[string]string{"work_mem": "'7MB'"}))
	if got := mustValue(t, ctx, s, "SHOW work_mem"); got != "7MB" {
		t.Errorf("work_mem = %q, want 7MB", got)
	}
	if got := mustValue(t, ctx, s, "SHOW wal_level"); got != "logical" {
		t.Errorf("wal_level = %q, want logical", got)
	}
	if got := mustValue(t, ctx, s, "SHOW max_prepared_transactions"); got != "64" {
		t.Errorf("max_prepared_transactions = %q, want 64", got)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	mustValue(t, ctx, s, "SELECT 1")
	if tail := s.LogTail(5); tail == "" {
		// log_min_messages=warning keeps the log short, but shutdown and
		// startup always write something at LOG level through stderr.
		t.Log("log is empty")
	}
}
