package pgadmin

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/replication/health"
)

// TestMain checks that no PostgreSQL server and no goroutine outlives the
// tests.
func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaksOrGoroutines(m)) }

// adminUser is the role the tests run pgadmin as. Its password is unlike
// any other string in the tests, so an error that leaks it is caught.
var adminUser = pgcluster.User{Name: "pgshard_admin", Password: "adm1n-s3cret-pw"}

// testTimeout bounds each test.
const testTimeout = 50 * time.Second

// startShard starts a primary with replicas and makes adminUser a superuser
// on all of them.
func startShard(t *testing.T, name string, replicas int, opts ...integration.Option) *pgcluster.Server {
	t.Helper()
	opts = append(opts, integration.Replicas(replicas), integration.Users(adminUser), integration.Name(name))
	p := integration.StartPostgres(t, opts...)
	mustExec(t, p, "ALTER ROLE "+adminUser.Name+" SUPERUSER")
	if replicas > 0 {
		if err := p.WaitReplayed(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// newAdmin returns an Admin that connects as adminUser with the default
// settings otherwise (sslmode prefer against servers without TLS).
func newAdmin() *Admin {
	return New(Config{User: adminUser.Name, Password: adminUser.Password})
}

// testCtx is the test's context, bounded by testTimeout.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func mustExec(t *testing.T, s *pgcluster.Server, sql string) {
	t.Helper()
	if err := s.Exec(testCtx(t), sql); err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
}

func mustValue(t *testing.T, s *pgcluster.Server, sql string) string {
	t.Helper()
	v, err := s.QueryValue(testCtx(t), sql)
	if err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	return v
}

// writeSync commits sql on s with synchronous_commit on (the harness turns
// it off), so the commit is flushed and replicas can get it, and returns
// s's WAL position after it.
func writeSync(t *testing.T, s *pgcluster.Server, sql string) health.LSN {
	t.Helper()
	// A multi-statement query is one transaction: the position must be read
	// after it has committed.
	mustExec(t, s, "SET synchronous_commit = on; "+sql)
	return parseLSN(t, mustValue(t, s, "SELECT pg_current_wal_lsn()"))
}

func parseLSN(t *testing.T, v string) health.LSN {
	t.Helper()
	lsn, err := health.ParseLSN(v)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// mustState reads the state of s.
func mustState(t *testing.T, a *Admin, s *pgcluster.Server) State {
	t.Helper()
	st, err := a.State(testCtx(t), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// session opens a superuser session on s that the test closes at the end.
func session(t *testing.T, s *pgcluster.Server) *pgconn.PgConn {
	t.Helper()
	conn, err := pgconn.Connect(testCtx(t), s.SuperDSN("postgres"))
	if err != nil {
		t.Fatalf("connect to %s: %v", s.Name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}

// run runs sql on conn.
func run(ctx context.Context, conn *pgconn.PgConn, sql string) error {
	_, err := conn.Exec(ctx, sql).ReadAll()
	return err
}

// wantSQLState fails the test unless err is a server error with code.
func wantSQLState(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := sqlState(err); got != code {
		t.Errorf("%s: error %v (SQLSTATE %q), want SQLSTATE %s", what, err, got, code)
	}
}

// noSecret fails the test if err's text holds the admin password.
func noSecret(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), adminUser.Password) {
		t.Errorf("error leaks the password: %v", err)
	}
}
