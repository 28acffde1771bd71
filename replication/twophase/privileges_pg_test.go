package twophase

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/wire"
)

// TestPGDecisionTablePrivileges: an ordinary role cannot insert a commit
// record (which would decide another session's transaction); a member of
// pgshard_coordinator (the proxy's server user) can. A table an older
// version created with INSERT granted to PUBLIC is found by the scan and
// fixed by EnsureSchema.
func TestPGDecisionTablePrivileges(t *testing.T) {
	b := newBank(t, 1, integration.Users(pgcluster.User{Name: "plain", Password: "plain-pw"}, pgcluster.User{Name: "coord", Password: "coord-pw"}))
	srv := b.pg.Shards[0]
	// As an older version created it.
	if err := srv.Exec(b.ctx, `CREATE SCHEMA pgshard;
		CREATE TABLE pgshard.commit_decisions (gid text PRIMARY KEY, committed boolean NOT NULL DEFAULT true, decided_at timestamptz NOT NULL DEFAULT now());
		GRANT USAGE ON SCHEMA pgshard TO PUBLIC;
		GRANT INSERT ON pgshard.commit_decisions TO PUBLIC`); err != nil {
		t.Fatal(err)
	}
	sc, err := b.admin.Scan(b.ctx, srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.NoTable) != 1 || sc.NoTable[0] != "postgres" {
		t.Fatalf("scan: databases needing the schema %v, want [postgres] (PUBLIC may insert)", sc.NoTable)
	}
	b.setup() // a recovery round: EnsureSchema
	if sc, err = b.admin.Scan(b.ctx, srv.Addr()); err != nil || len(sc.NoTable) != 0 {
		t.Fatalf("scan after the recovery round: %v %v, want none", sc.NoTable, err)
	}
	if err := srv.Exec(b.ctx, `GRANT `+CoordinatorRole+` TO coord`); err != nil {
		t.Fatal(err)
	}
	insert := func(user, password string) error {
		conn, err := pgconn.Connect(b.ctx, srv.DSN(user, password, "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(b.ctx, RecordSQL(user)).ReadAll()
		return err
	}
	var pe *pgconn.PgError
	if err := insert("plain", "plain-pw"); !errors.As(err, &pe) || pe.Code != wire.SQLStateInsufficientPrivilege {
		t.Fatalf("an ordinary role inserting a decision: %v, want 42501", err)
	}
	if err := insert("coord", "coord-pw"); err != nil {
		t.Fatalf("a member of %s inserting a decision: %v", CoordinatorRole, err)
	}
	if v, err := srv.QueryValue(b.ctx, `SELECT string_agg(gid, ',') FROM pgshard.commit_decisions`); err != nil || v != "pgshard/coord" {
		t.Fatalf("decisions %q %v, want only coord's", v, err)
	}
}

// RecordSQL is the commit record's INSERT for a made-up GID.
func RecordSQL(name string) string { return RecordStore{}.RecordSQL(GID("pgshard/" + name)) }
