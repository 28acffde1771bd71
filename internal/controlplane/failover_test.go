package controlplane

import (
	"log/slog"
	"sync"
	"testing"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/replication/pgadmin"
)

// TestAdminPortLoginRefused: a server that refuses the meta member's
// login is alive — reported as a reachable primary, so it never starts a
// failover — while a server that does not answer is an error.
func TestAdminPortLoginRefused(t *testing.T) {
	pg := integration.StartPostgres(t)
	ctx := t.Context()
	good := adminPort{a: pgadmin.New(pgadmin.Config{User: pgcluster.SuperuserName, Password: pgcluster.SuperuserPassword, SSLMode: "disable"}), warned: new(sync.Map), log: slog.Default()}
	bad := adminPort{a: pgadmin.New(pgadmin.Config{User: pgcluster.SuperuserName, Password: "wrong", SSLMode: "disable"}), warned: new(sync.Map), log: slog.Default()}
	st, err := good.State(ctx, pg.Addr())
	if err != nil || st.InRecovery || st.CurrentLSN == 0 {
		t.Fatalf("state with the right password: %+v %v", st, err)
	}
	st, err = bad.State(ctx, pg.Addr())
	if err != nil || st.InRecovery {
		t.Fatalf("state with a refused login: %+v %v, want a reachable primary", st, err)
	}
	if _, ok := bad.warned.Load(pg.Addr()); !ok {
		t.Error("the refused login was not logged")
	}
	if _, err := good.State(ctx, "127.0.0.1:1"); err == nil {
		t.Fatal("a closed port answered")
	}
}
