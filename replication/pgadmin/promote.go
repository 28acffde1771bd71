package pgadmin

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgshard/pgshard/wire"
)

// maxPromoteWaitSeconds bounds pg_promote's own wait; Promote keeps polling
// after it while ctx lasts.
const maxPromoteWaitSeconds = 60

// Promote makes the replica at addr a primary: pg_promote(wait => true),
// then makes sure default_transaction_read_only is off (ALTER SYSTEM RESET
// and pg_reload_conf) and that it answers pg_is_in_recovery() = false.
// Idempotent: on a server already a primary it only does the reset and the
// check, which also lifts a Fence or Quiesce.
func (a *Admin) Promote(ctx context.Context, addr string) error {
	err := a.withConn(ctx, addr, func(conn *pgconn.PgConn) error {
		rec, err := isInRecovery(ctx, conn)
		if err != nil {
			return err
		}
		if rec {
			if err := promote(ctx, conn); err != nil {
				return err
			}
		}
		if err := setReadOnly(ctx, conn, false); err != nil {
			return err
		}
		if rec, err = isInRecovery(ctx, conn); err != nil {
			return err
		}
		if rec {
			return errors.New("still in recovery after the promotion")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pgadmin: promote %s: %w", addr, err)
	}
	return nil
}

// promote runs pg_promote and waits until recovery has ended. Another
// caller may promote the server first: pg_promote then fails with 55000,
// which is fine once the server is out of recovery.
func promote(ctx context.Context, conn *pgconn.PgConn) error {
	sql := fmt.Sprintf("SELECT pg_promote(true, %d)", waitSeconds(ctx, maxPromoteWaitSeconds))
	if _, err := queryValue(ctx, conn, sql); err != nil && sqlState(err) != wire.SQLStateObjectNotInPrerequisite {
		return fmt.Errorf("pg_promote: %w", err)
	}
	// pg_promote returns false when recovery did not end within its wait.
	err := poll(ctx, func() (bool, error) {
		rec, err := isInRecovery(ctx, conn)
		return !rec, err
	})
	if err != nil {
		return fmt.Errorf("wait for the promotion to finish: %w", err)
	}
	return nil
}
