package reshard

import (
	"time"

	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
)

// fenceFunctionDDL is the trigger function of table t: row-level it
// rejects an INSERT whose new row, a DELETE whose old row, and an UPDATE
// of which either row lies in the interval; statement-level (TRUNCATE) it
// rejects everything.
func (e *Engine) fenceFunctionDDL(t Table) string {
	m := e.cfg.Move
	col := quoteIdent(t.KeyColumn)
	msg := fmt.Sprintf("rows of table %s with %s in [%s, %s) are moving to another shard (resharding move %s)",
		t.Name, t.KeyColumn, m.Lo, m.Hi, m.ID)
	if m.Strategy == shardmap.Hash {
		msg = fmt.Sprintf("rows of table %s whose hash of %s lies in [%s, %s) are moving to another shard (resharding move %s)",
			t.Name, t.KeyColumn, m.Lo, m.Hi, m.ID)
	}
	hint := "Retry: pgshard routes the write to the interval's new shard once it owns it."
	raise := func(what string) string {
		return fmt.Sprintf("RAISE EXCEPTION USING ERRCODE = %s, MESSAGE = %s || %s, HINT = %s;",
			quoteLiteral(wire.SQLStateIntervalFenced), quoteLiteral("write refused: "), what, quoteLiteral(hint))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE OR REPLACE FUNCTION %s.%s() RETURNS trigger LANGUAGE plpgsql AS $pgshard$\nBEGIN\n",
		quoteIdent(FenceSchema), quoteIdent(e.names.Function(t.Name)))
	fmt.Fprintf(&b, "  IF TG_LEVEL = 'STATEMENT' THEN\n    %s\n  END IF;\n",
		raise(quoteLiteral("TRUNCATE would delete "+msg)))
	fmt.Fprintf(&b, "  IF TG_OP <> 'DELETE' AND %s THEN\n    %s\n  END IF;\n",
		m.filterOn("NEW."+col), raise(quoteLiteral(msg+"; key ")+" || NEW."+col+"::text"))
	fmt.Fprintf(&b, "  IF TG_OP <> 'INSERT' AND %s THEN\n    %s\n  END IF;\n",
		m.filterOn("OLD."+col), raise(quoteLiteral(msg+"; key ")+" || OLD."+col+"::text"))
	b.WriteString("  IF TG_OP = 'DELETE' THEN\n    RETURN OLD;\n  END IF;\n  RETURN NEW;\nEND\n$pgshard$")
	return b.String()
}

// Fence installs on the source, on every table of the move, a trigger
// that rejects writes to the interval's rows (and TRUNCATE) with SQLSTATE
// [wire.SQLStateIntervalFenced] and a message naming the table, the interval
// and the key. Writes to other keys pass.
//
// The triggers are ordinary (ENABLE) triggers, which PostgreSQL does not
// fire in sessions with session_replication_role = replica: the apply
// worker of a subscription, so the reverse replication of a rollback
// (Reverse().StartCopy, StartReverse) can still write the interval, and
// DeleteMoved, which sets it. Installing them waits (up to
// Config.FenceLockTimeout) for the transactions that are writing to the
// tables to end, so every write the fence lets through is committed when
// Fence returns and WaitCaughtUp then covers it; while it waits, new
// writes to the tables (any interval) wait too. Idempotent (CREATE OR
// REPLACE).
func (e *Engine) Fence(ctx context.Context) error {
	var b strings.Builder
	b.WriteString("BEGIN;\n" + e.lockTimeout() + "CREATE SCHEMA IF NOT EXISTS " + quoteIdent(FenceSchema) + ";\n")
	for _, t := range e.cfg.Move.Tables {
		fn := quoteIdent(FenceSchema) + "." + quoteIdent(e.names.Function(t.Name))
		b.WriteString(e.fenceFunctionDDL(t) + ";\n")
		fmt.Fprintf(&b, "CREATE OR REPLACE TRIGGER %s BEFORE INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION %s();\n",
			quoteIdent(e.names.Trigger), qualified(t.Name), fn)
		fmt.Fprintf(&b, "CREATE OR REPLACE TRIGGER %s BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s();\n",
			quoteIdent(e.names.Trigger+"_truncate"), qualified(t.Name), fn)
	}
	b.WriteString("COMMIT;")
	err := e.withConn(ctx, e.source(), func(conn *pgx.Conn) error {
		return conn.PgConn().Exec(ctx, b.String()).Close()
	})
	if err != nil {
		return fmt.Errorf("reshard: fence %s on %s: %w", e.cfg.Move, e.source(), err)
	}
	e.log.Info("reshard: interval fenced", "shard", e.cfg.Source.Shard)
	return nil
}

// lockTimeout is the SET LOCAL of Config.FenceLockTimeout.
func (e *Engine) lockTimeout() string {
	return fmt.Sprintf("SET LOCAL lock_timeout = '%dms';\n", e.cfg.FenceLockTimeout.Milliseconds())
}

// Unfence removes the fence of Fence from the source. Idempotent.
func (e *Engine) Unfence(ctx context.Context) error {
	var b strings.Builder
	b.WriteString("BEGIN;\n" + e.lockTimeout())
	for _, t := range e.cfg.Move.Tables {
		fmt.Fprintf(&b, "DO $pgshard$ BEGIN IF to_regclass(%s) IS NOT NULL THEN DROP TRIGGER IF EXISTS %s ON %s; DROP TRIGGER IF EXISTS %s ON %s; END IF; END $pgshard$;\n",
			quoteLiteral(qualified(t.Name)), quoteIdent(e.names.Trigger), qualified(t.Name), quoteIdent(e.names.Trigger+"_truncate"), qualified(t.Name))
		fmt.Fprintf(&b, "DROP FUNCTION IF EXISTS %s.%s();\n", quoteIdent(FenceSchema), quoteIdent(e.names.Function(t.Name)))
	}
	b.WriteString("COMMIT;")
	err := e.withConn(ctx, e.source(), func(conn *pgx.Conn) error {
		ok, err := exists(ctx, conn, "SELECT to_regnamespace($1) IS NOT NULL", FenceSchema)
		if err != nil || !ok {
			return err
		}
		return conn.PgConn().Exec(ctx, b.String()).Close()
	})
	if err != nil {
		return fmt.Errorf("reshard: unfence %s on %s: %w", e.cfg.Move, e.source(), err)
	}
	e.log.Info("reshard: fence removed", "shard", e.cfg.Source.Shard)
	return nil
}

// Fenced reports whether every table of the move has the fence on the
// source.
func (e *Engine) Fenced(ctx context.Context) (bool, error) {
	all := true
	err := e.withConn(ctx, e.source(), func(conn *pgx.Conn) error {
		for _, t := range e.cfg.Move.Tables {
			ok, err := exists(ctx, conn, "SELECT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2 AND tgenabled = 'O')",
				qualified(t.Name), e.names.Trigger)
			if err != nil {
				return err
			}
			all = all && ok
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("reshard: fenced: %s: %w", e.source(), err)
	}
	return all, nil
}

// WaitCaughtUp writes a marker into the source's WAL (see markLSN) and
// waits until the target has applied everything before it, then makes the
// target flush its WAL, and returns the marker's position. Called after
// Fence, it means that the target has every write of the interval, durably:
// dropping the replication afterwards (StopForward) loses nothing even if
// the target crashes. The subscription must exist and every table must be
// past its initial copy; until then it waits.
//
// Applied means that the subscription's apply worker has received a
// message at or past the marker (pg_stat_subscription.received_lsn on the
// target: the walsender sends a keepalive once it has decoded past the
// marker, and the worker handles messages one at a time, so every
// transaction before it is committed). It does not wait for the slot's
// confirmed_flush_lsn: the subscriber reports that only when its own
// asynchronous commits are flushed and its next status message is due,
// up to a second later; the flush is forced instead.
func (e *Engine) WaitCaughtUp(ctx context.Context) (health.LSN, error) {
	target, err := e.markLSN(ctx)
	if err == nil {
		err = e.waitApplied(ctx, target, true)
	}
	if err == nil {
		err = e.withConn(ctx, e.target(), func(conn *pgx.Conn) error {
			// A commit with synchronous_commit = on flushes the WAL up to
			// it, including the apply worker's asynchronous commits.
			return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = on; SELECT pg_current_xact_id()")
				return err
			})
		})
	}
	if err != nil {
		return 0, fmt.Errorf("reshard: wait until %s has applied %s of %s: %w", e.target(), target, e.source(), err)
	}
	return target, nil
}

// waitApplied waits until the target's subscription has every table past
// its initial copy and has applied the source's WAL up to lsn. Without a
// subscription it fails when must is set, and otherwise returns at once
// (replication already stopped, e.g. after cutover: nothing more will
// arrive).
//
// While the subscription is enabled but its apply worker is not running
// (a subscription just created, e.g. the reverse one of a rollback that
// follows its cutover at once), each poll wakes the target's logical
// replication launcher (see wakeLauncher).
func (e *Engine) waitApplied(ctx context.Context, lsn health.LSN, must bool) error {
	return e.withConn(ctx, e.target(), func(conn *pgx.Conn) error {
		return e.poll(ctx, func() (bool, error) {
			var ready, idle bool
			var received *string
			err := conn.QueryRow(ctx, `SELECT coalesce((SELECT bool_and(srsubstate = 'r') FROM pg_subscription_rel WHERE srsubid = s.oid), false),
				(SELECT received_lsn::text FROM pg_stat_subscription WHERE subid = s.oid AND relid IS NULL),
				s.subenabled AND s.subslotname IS NOT NULL AND NOT EXISTS (SELECT FROM pg_stat_subscription WHERE subid = s.oid AND relid IS NULL AND pid IS NOT NULL)
				FROM pg_subscription s WHERE subname = $1`, e.names.Subscription).Scan(&ready, &received, &idle)
			if errors.Is(err, pgx.ErrNoRows) {
				if must {
					return false, fmt.Errorf("no subscription %s: the replication is not running", e.names.Subscription)
				}
				return true, nil
			}
			if err == nil && idle {
				err = e.wakeLauncher(ctx, conn)
			}
			if err != nil || !ready || received == nil {
				return false, err
			}
			l, err := health.ParseLSN(*received)
			return l >= lsn, err
		})
	})
}

// wakeLauncher makes the target's logical replication launcher look for
// subscriptions without an apply worker now. PostgreSQL 15's launcher
// starts at most one apply worker per wal_retrieve_retry_interval (5 s by
// default) on a server, and when a new subscription's commit wakes it
// sooner than that after its previous start, it sleeps a whole interval
// before looking again: the worker of a subscription created within 5 s
// of another worker's start then starts about 5 s after its creation
// (PostgreSQL 16 tracks the last start per subscription instead). ALTER
// SUBSCRIPTION ... ENABLE of an enabled subscription changes nothing but
// wakes the launcher at commit, so polled it starts the worker as soon as
// the interval since the previous start has passed. Only an enabled
// subscription with a slot is touched, checked in the same DO block just
// before: only a DISABLE committed between the two (DropReplication's; a
// move's steps run one at a time) could be undone.
func (e *Engine) wakeLauncher(ctx context.Context, conn *pgx.Conn) error {
	sub := quoteIdent(e.names.Subscription)
	_, err := conn.Exec(ctx, `DO $pgshard$ BEGIN
		IF EXISTS (SELECT FROM pg_subscription WHERE subname = `+quoteLiteral(e.names.Subscription)+` AND subenabled AND subslotname IS NOT NULL) THEN
			ALTER SUBSCRIPTION `+sub+` ENABLE;
		END IF;
	END $pgshard$`)
	if err != nil {
		return fmt.Errorf("wake the logical replication launcher for %s: %w", e.names.Subscription, err)
	}
	return nil
}

// markLSN commits a logical message on the source with synchronous_commit
// = on and returns its position: every transaction committed on the
// source before markLSN was called lies before it in the WAL, flushed.
// pgoutput does not send messages to subscriptions (messages = false), so
// the subscriber only sees the position advance.
func (e *Engine) markLSN(ctx context.Context) (health.LSN, error) {
	var lsn health.LSN
	err := e.withConn(ctx, e.source(), func(conn *pgx.Conn) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = on"); err != nil {
				return err
			}
			var s string
			if err := tx.QueryRow(ctx, "SELECT pg_logical_emit_message(true, 'pgshard_reshard', $1)::text", e.names.Slot).Scan(&s); err != nil {
				return err
			}
			var err error
			lsn, err = health.ParseLSN(s)
			return err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("mark the WAL position of %s: %w", e.source(), err)
	}
	return lsn, nil
}

// replicaWait bounds WaitReplicas: a standby further behind than this is
// one the proxies' lag-aware reads no longer use.
const replicaWait = 30 * time.Second

// WaitReplicas waits until every physical standby streaming from the
// source has replayed the source's WAL as of the call, so that rows the
// source deleted (cleanup, cancel, the end of a rollback) are gone from
// its replicas too before the map stops saying the shard holds rows it
// does not own: a read the proxy sends to a replica then cannot count
// them twice. Logical walsenders (subscriptions, cache streams) are not
// standbys. A standby still behind after 30 s is left to the proxies'
// replica lag bound; WaitReplicas then returns nil, logging it.
func (e *Engine) WaitReplicas(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, replicaWait)
	defer cancel()
	behind := int64(0)
	err := e.withConn(wctx, e.source(), func(conn *pgx.Conn) error {
		var lsn string
		if err := conn.QueryRow(wctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
			return err
		}
		return e.poll(wctx, func() (bool, error) {
			err := conn.QueryRow(wctx, `SELECT count(*) FROM pg_stat_replication r
				WHERE NOT EXISTS (SELECT FROM pg_replication_slots s WHERE s.active_pid = r.pid AND s.slot_type = 'logical')
				AND (r.replay_lsn IS NULL OR r.replay_lsn < $1::pg_lsn)`, lsn).Scan(&behind)
			return behind == 0, err
		})
	})
	switch {
	case err == nil:
		return nil
	case ctx.Err() == nil && wctx.Err() != nil:
		e.log.Warn("reshard: a replica has not replayed the source's deletes yet; the proxies' replica lag bound keeps reads away from it", "shard", e.cfg.Source.Shard, "replicas_behind", behind, "waited", replicaWait)
		return nil
	}
	return fmt.Errorf("reshard: wait for the replicas of %s: %w", e.source(), err)
}
