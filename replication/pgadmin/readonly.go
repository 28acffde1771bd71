package pgadmin

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/replication/health"
)

// terminateWaitMillis bounds how long one pg_terminate_backend call waits
// for the backend to exit; callers then keep polling until ctx ends.
const terminateWaitMillis = 5000

// Quiesce prepares a live primary for a planned switchover. It sets
// default_transaction_read_only = on (ALTER SYSTEM and pg_reload_conf), so
// new transactions can no longer write; waits up to grace for the open
// transactions of other client backends to end (pg_stat_activity:
// backend_type 'client backend', xact_start not null); terminates those
// still open after grace (pg_terminate_backend) and waits until they have
// exited. It then runs CHECKPOINT, which flushes the WAL of asynchronous
// commits too, and returns pg_current_wal_lsn() taken after it: every
// committed write is at or before that position, and the server has
// flushed it, so replicas can replay up to it. Idempotent: on a quiesced
// server with no open transactions it only checkpoints and returns the
// position. It refuses a replica.
func (a *Admin) Quiesce(ctx context.Context, addr string, grace time.Duration) (health.LSN, error) {
	var lsn health.LSN
	err := a.withConn(ctx, addr, func(conn *pgconn.PgConn) error {
		rec, err := isInRecovery(ctx, conn)
		if err != nil {
			return err
		}
		if rec {
			return errors.New("the server is a replica (in recovery), not a primary")
		}
		if err := setReadOnly(ctx, conn, true); err != nil {
			return err
		}
		open, err := waitTransactionsEnd(ctx, conn, grace)
		if err != nil {
			return err
		}
		// Terminate the stragglers until none is left: a client that sets
		// default_transaction_read_only off again can still open one.
		for len(open) > 0 {
			if err := terminate(ctx, conn, open); err != nil {
				return err
			}
			if open, err = openTransactions(ctx, conn); err != nil {
				return err
			}
		}
		if err := execSQL(ctx, conn, "CHECKPOINT"); err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
		v, err := queryValue(ctx, conn, "SELECT pg_current_wal_lsn()")
		if err != nil {
			return fmt.Errorf("pg_current_wal_lsn: %w", err)
		}
		lsn, err = health.ParseLSN(v)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("pgadmin: quiesce %s: %w", addr, err)
	}
	return lsn, nil
}

// Fence makes a former primary that is still reachable harmless: it sets
// default_transaction_read_only = on (ALTER SYSTEM and pg_reload_conf) and
// terminates every other client backend (pg_terminate_backend), waiting
// until they have exited. Replication connections (walsenders) are left
// alone. Idempotent. Best effort is the caller's business: Fence returns
// errors.
func (a *Admin) Fence(ctx context.Context, addr string) error {
	err := a.withConn(ctx, addr, func(conn *pgconn.PgConn) error {
		if err := setReadOnly(ctx, conn, true); err != nil {
			return err
		}
		pids, err := pidsWhere(ctx, conn, "true")
		if err != nil {
			return err
		}
		return terminate(ctx, conn, pids)
	})
	if err != nil {
		return fmt.Errorf("pgadmin: fence %s: %w", addr, err)
	}
	return nil
}

// setReadOnly sets (on) or resets (off) default_transaction_read_only in
// postgresql.auto.conf, reloads the configuration and waits until this
// session has re-read it. By then the postmaster has signalled every
// backend, and each applies the new default before it runs its next
// command (a transaction already open keeps its read-write state). It checks that the setting took effect and says
// where the value comes from when it did not (postgresql.conf, or a role
// or database setting).
func setReadOnly(ctx context.Context, conn *pgconn.PgConn, on bool) error {
	before, err := queryValue(ctx, conn, "SELECT pg_conf_load_time()")
	if err != nil {
		return fmt.Errorf("pg_conf_load_time: %w", err)
	}
	stmt, want := "ALTER SYSTEM RESET default_transaction_read_only", "off"
	if on {
		stmt, want = "ALTER SYSTEM SET default_transaction_read_only = on", "on"
	}
	// ALTER SYSTEM refuses to run in a (implicit) transaction block, so
	// each statement goes alone.
	if err := execSQL(ctx, conn, stmt); err != nil {
		return fmt.Errorf("%s: %w", stmt, err)
	}
	if err := execSQL(ctx, conn, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("pg_reload_conf: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, reloadTimeout)
	defer cancel()
	err = poll(rctx, func() (bool, error) {
		now, err := queryValue(ctx, conn, "SELECT pg_conf_load_time()")
		return now != before, err
	})
	if err != nil {
		return fmt.Errorf("wait for the configuration reload: %w", err)
	}
	row, err := queryRow(ctx, conn, `SELECT setting, source, coalesce(sourcefile || ':' || sourceline, '')
		FROM pg_settings WHERE name = 'default_transaction_read_only'`, 3)
	if err != nil {
		return fmt.Errorf("read default_transaction_read_only: %w", err)
	}
	if string(row[0]) != want {
		where := string(row[1])
		if len(row[2]) > 0 {
			where += " " + string(row[2])
		}
		return fmt.Errorf("default_transaction_read_only is still %s after %s and a reload (set by %s)", row[0], stmt, where)
	}
	return nil
}

// waitTransactionsEnd waits up to grace (and while ctx lasts) until no
// other client backend has a transaction open, and returns the pids of
// those still open then. It wants two empty looks in a row: a backend that
// had read its next command just before the reload reached it starts a
// read-write transaction a moment later, maybe after the first look.
func waitTransactionsEnd(ctx context.Context, conn *pgconn.PgConn, grace time.Duration) ([]int, error) {
	gctx, cancel := context.WithTimeout(ctx, max(grace, 0))
	defer cancel()
	var open []int
	empty := 0
	err := poll(gctx, func() (bool, error) {
		var err error
		open, err = openTransactions(ctx, conn) // ctx: grace ending must not cancel a query
		if len(open) > 0 {
			empty = 0
		} else {
			empty++
		}
		return empty >= 2, err
	})
	graceOver := errors.Is(err, context.DeadlineExceeded) && gctx.Err() != nil && ctx.Err() == nil
	if err != nil && !graceOver {
		return nil, fmt.Errorf("wait for open transactions to end: %w", err)
	}
	return open, nil
}

// openTransactions lists the other client backends with a transaction
// open.
func openTransactions(ctx context.Context, conn *pgconn.PgConn) ([]int, error) {
	return pidsWhere(ctx, conn, "xact_start IS NOT NULL")
}

// pidsWhere lists the client backends other than this session's that
// match cond, an SQL condition on pg_stat_activity.
func pidsWhere(ctx context.Context, conn *pgconn.PgConn, cond string) ([]int, error) {
	rows, err := queryRows(ctx, conn, `SELECT pid FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND (`+cond+`)`)
	if err != nil {
		return nil, fmt.Errorf("list client backends: %w", err)
	}
	pids := make([]int, 0, len(rows))
	for _, r := range rows {
		pid, err := strconv.Atoi(string(r[0]))
		if err != nil {
			return nil, fmt.Errorf("list client backends: pid %q: %w", r[0], err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// terminate ends the backends pids (pg_terminate_backend) and waits until
// they have exited, so that whatever they were committing is in the WAL.
func terminate(ctx context.Context, conn *pgconn.PgConn, pids []int) error {
	if len(pids) == 0 {
		return nil
	}
	list := make([]string, len(pids))
	for i, p := range pids {
		list[i] = itoa(p)
	}
	arr := "ARRAY[" + strings.Join(list, ",") + "]::int[]"
	wait := min(waitSeconds(ctx, terminateWaitMillis/1000)*1000, terminateWaitMillis)
	if err := execSQL(ctx, conn, "SELECT pg_terminate_backend(pid, "+itoa(wait)+") FROM unnest("+arr+") pid"); err != nil {
		return fmt.Errorf("pg_terminate_backend: %w", err)
	}
	err := poll(ctx, func() (bool, error) {
		n, err := queryValue(ctx, conn, "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY("+arr+")")
		return n == "0", err
	})
	if err != nil {
		return fmt.Errorf("wait for terminated backends %v to exit: %w", pids, err)
	}
	return nil
}
