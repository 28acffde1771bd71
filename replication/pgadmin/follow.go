package pgadmin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/replication/health"
)

// Repoint makes the replica at addr stream from primary ("host:port"). It
// reads the replica's primary_conninfo (SHOW primary_conninfo), replaces
// host and port and drops hostaddr, keeping every other setting (user,
// password, application_name, sslmode, ...; an empty primary_conninfo gets
// only host and port). When that changes the setting, it runs ALTER SYSTEM
// SET primary_conninfo and pg_reload_conf(): PostgreSQL 15 restarts its
// WAL receiver on a reload. It then waits, while ctx lasts, until
// pg_stat_wal_receiver shows it streaming from primary. With
// recovery_target_timeline = latest (the default) the replica follows a
// promoted primary onto its new timeline, provided it has not replayed
// past the point where that timeline forked. Idempotent: a replica that
// already has the setting is left alone (its WAL receiver is not
// restarted). It refuses a server that is not in recovery: a former
// primary needs [Rebuild].
func (a *Admin) Repoint(ctx context.Context, addr, primary string) error {
	phost, pport, err := net.SplitHostPort(primary)
	if err != nil {
		return fmt.Errorf("pgadmin: repoint %s: primary address %q: %w", addr, primary, err)
	}
	err = a.withConn(ctx, addr, func(conn *pgconn.PgConn) error {
		rec, err := isInRecovery(ctx, conn)
		if err != nil {
			return err
		}
		if !rec {
			return errors.New("not a replica (pg_is_in_recovery() is false); a former primary needs a rebuild")
		}
		cur, err := queryValue(ctx, conn, "SHOW primary_conninfo")
		if err != nil {
			return fmt.Errorf("show primary_conninfo: %w", err)
		}
		ci, err := parseConninfo(cur)
		if err != nil {
			return fmt.Errorf("primary_conninfo: %w", err)
		}
		next, err := ci.withAddr(primary)
		if err != nil {
			return err
		}
		if !next.equal(ci) {
			// The statement holds the password: its text must stay out of
			// errors.
			if err := execSQL(ctx, conn, "ALTER SYSTEM SET primary_conninfo = "+quoteLiteral(next.String())); err != nil {
				return fmt.Errorf("ALTER SYSTEM SET primary_conninfo (%s): %w", next.Masked(), err)
			}
			if err := execSQL(ctx, conn, "SELECT pg_reload_conf()"); err != nil {
				return fmt.Errorf("pg_reload_conf: %w", err)
			}
		}
		return waitStreamingFrom(ctx, conn, phost, pport)
	})
	if err != nil {
		return fmt.Errorf("pgadmin: repoint %s to %s: %w", addr, primary, err)
	}
	return nil
}

// waitStreamingFrom polls pg_stat_wal_receiver until the WAL receiver
// streams from host:port.
func waitStreamingFrom(ctx context.Context, conn *pgconn.PgConn, host, port string) error {
	const q = `SELECT (SELECT status FROM pg_stat_wal_receiver),
		(SELECT sender_host FROM pg_stat_wal_receiver),
		(SELECT sender_port FROM pg_stat_wal_receiver)`
	last := "no WAL receiver"
	err := poll(ctx, func() (bool, error) {
		row, err := queryRow(ctx, conn, q, 3)
		if err != nil {
			return false, fmt.Errorf("read pg_stat_wal_receiver: %w", err)
		}
		if row[0] == nil {
			last = "no WAL receiver"
			return false, nil
		}
		last = fmt.Sprintf("WAL receiver %s from %s", row[0], net.JoinHostPort(string(row[1]), string(row[2])))
		return string(row[0]) == "streaming" && strings.EqualFold(string(row[1]), host) && string(row[2]) == port, nil
	})
	if err != nil {
		return fmt.Errorf("wait until it streams (last seen: %s): %w", last, err)
	}
	return nil
}

// WaitReplayed polls, every 20ms, until the replica at addr has replayed
// lsn (pg_last_wal_replay_lsn() >= lsn) or ctx ends; the error then says
// how far it got. A promoted server keeps the position its recovery
// reached; a server that never was a replica has none and never gets
// there.
func (a *Admin) WaitReplayed(ctx context.Context, addr string, lsn health.LSN) error {
	var replayed health.LSN
	seen := false
	err := a.withConn(ctx, addr, func(conn *pgconn.PgConn) error {
		return poll(ctx, func() (bool, error) {
			v, err := queryValue(ctx, conn, "SELECT pg_last_wal_replay_lsn()")
			if err != nil {
				return false, fmt.Errorf("pg_last_wal_replay_lsn: %w", err)
			}
			replayed, seen = 0, true
			if v != "" {
				if replayed, err = health.ParseLSN(v); err != nil {
					return false, err
				}
			}
			return replayed >= lsn, nil
		})
	})
	if err == nil {
		return nil
	}
	if seen {
		return fmt.Errorf("pgadmin: wait for %s to replay %s: replayed up to %s, %d bytes short: %w",
			addr, lsn, replayed, uint64(lsn-replayed), err)
	}
	return fmt.Errorf("pgadmin: wait for %s to replay %s: %w", addr, lsn, err)
}
