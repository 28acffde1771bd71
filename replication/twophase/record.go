package twophase

import (
	"context"
	"fmt"
)

// The commit record: the decision store pgshard uses (see doc.go).

// DecisionTable is the table, in every database of every shard that
// takes part in two-phase commits, that holds commit records (and the
// abort records recovery writes). Recovery creates it ([SchemaSQL]).
const DecisionTable = "pgshard.commit_decisions"

// CoordinatorRole is the role that may insert commit records: the
// proxy's server users need its membership (GRANT pgshard_coordinator TO
// role) unless they are superusers. An ordinary role cannot insert a
// record, which would decide another session's transaction.
const CoordinatorRole = "pgshard_coordinator"

// SchemaSQL creates the decision table and CoordinatorRole, and grants
// INSERT on the table to that role only (it revokes what older versions
// granted to PUBLIC). Recovery runs it where the table is missing or
// PUBLIC may insert ([NeedsSchemaSQL]).
const SchemaSQL = `CREATE SCHEMA IF NOT EXISTS pgshard;
CREATE TABLE IF NOT EXISTS pgshard.commit_decisions (
	gid text PRIMARY KEY,
	committed boolean NOT NULL DEFAULT true,
	decided_at timestamptz NOT NULL DEFAULT now()
);
DO $pgshard$ BEGIN
	CREATE ROLE ` + CoordinatorRole + ` NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $pgshard$;
GRANT USAGE ON SCHEMA pgshard TO PUBLIC;
REVOKE ALL ON pgshard.commit_decisions FROM PUBLIC;
GRANT INSERT ON pgshard.commit_decisions TO ` + CoordinatorRole

// NeedsSchemaSQL returns one row, true when the database needs SchemaSQL:
// the decision table is missing, or PUBLIC may insert into it (created
// by an older version).
const NeedsSchemaSQL = `SELECT CASE WHEN to_regclass('` + DecisionTable + `') IS NULL THEN true ` +
	`ELSE has_table_privilege('public', to_regclass('` + DecisionTable + `'), 'INSERT') END`

// RecordStore is the DecisionStore that keeps the decision in the
// decision participant's own prepared transaction: its commit record is
// inserted before PREPARE, and COMMIT PREPARED on that participant is the
// decision.
type RecordStore struct{}

// RecordSQL inserts the commit record.
func (RecordStore) RecordSQL(gid GID) string {
	return "INSERT INTO " + DecisionTable + " (gid) VALUES (" + quoteLiteral(string(gid)) + ")"
}

// LetGoKey is the key of gid's let-go record: its coordinator's note,
// on any participant, that it left gid to recovery without a decision it
// knows, so that recovery resolves it at once (doc.go).
func LetGoKey(gid string) string { return gid + letGoSuffix }

// letGoSuffix ends the keys of let-go records.
const letGoSuffix = "/let-go"

// LetGoSQL inserts gid's let-go record (a statement of its own, outside
// any transaction).
func (RecordStore) LetGoSQL(gid GID) string {
	return "INSERT INTO " + DecisionTable + " (gid, committed) VALUES (" + quoteLiteral(LetGoKey(string(gid))) + ", false) ON CONFLICT (gid) DO NOTHING"
}

// Decide commits the decision participant's prepared transaction, which
// holds the commit record. A server error (its prepared transaction is
// gone: recovery rolled it back) means not decided; no answer is
// uncertain.
func (RecordStore) Decide(ctx context.Context, gid GID, dp Participant) (bool, error) {
	err := run(ctx, dp, "COMMIT PREPARED "+quoteLiteral(string(gid)), "COMMIT PREPARED")
	switch {
	case err == nil:
		return true, nil
	case uncertain(err):
		return false, fmt.Errorf("commit the decision shard %s: %w: %w", dp.Shard(), ErrUncertain, err)
	}
	return false, fmt.Errorf("commit the decision shard %s: %w", dp.Shard(), err)
}

// DecisionSQL is what recovery runs, on the decision shard in the
// transaction's database, for a transaction that is no longer prepared
// there: it records an abort unless a commit record exists or is being
// written (then it waits on the record's lock: bounded by lock_timeout),
// and returns the decision. An abort recorded first makes the
// coordinator's own INSERT fail, so its PREPARE fails: the abort is final.
func DecisionSQL(gid string) string {
	q := quoteLiteral(gid)
	return "INSERT INTO " + DecisionTable + " (gid, committed) VALUES (" + q + ", false) ON CONFLICT (gid) DO NOTHING; " +
		"SELECT committed FROM " + DecisionTable + " WHERE gid = " + q
}
