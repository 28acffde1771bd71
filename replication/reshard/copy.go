package reshard

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/replication/health"
)

// StartCopy starts the move's replication: on the source a publication
// with a row filter for the interval on each table (inserts, updates and
// deletes; not TRUNCATE, which would empty the target's whole table), on
// the target a subscription with slot [Names.Slot] that first copies the
// interval's rows (tables in parallel, as many as the target's
// max_sync_workers_per_subscription allows) and then streams the changes.
//
// It refuses, before creating anything, a table whose replica identity
// does not include the key column: PostgreSQL 15 needs the row filter's
// columns in the replica identity to publish updates and deletes, and
// would otherwise fail the source's UPDATE and DELETE statements on the
// table. It also refuses when the target already has rows in the interval
// (from an earlier, cancelled move: [Engine.Cancel] deletes them).
//
// Idempotent: when the subscription exists it does nothing. A replication
// slot of the move's name without a subscription (left by a crash inside
// CREATE SUBSCRIPTION) is dropped and made again.
func (e *Engine) StartCopy(ctx context.Context) error {
	if err := e.startReplication(ctx, true); err != nil {
		return fmt.Errorf("reshard: start copy (%s): %w", e.cfg.Move, err)
	}
	return nil
}

// startReplication creates the publication on the source and the
// subscription on the target, with or without the initial copy.
func (e *Engine) startReplication(ctx context.Context, copyData bool) error {
	src, tgt := e.source(), e.target()
	var subExists bool
	err := e.withConn(ctx, tgt, func(conn *pgx.Conn) error {
		var err error
		subExists, err = exists(ctx, conn, "SELECT EXISTS (SELECT FROM pg_subscription WHERE subname = $1)", e.names.Subscription)
		if err != nil || subExists || !copyData {
			return err
		}
		for _, t := range e.cfg.Move.Tables {
			var n int64
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+qualified(t.Name)+" WHERE "+e.cfg.Move.Filter(t)).Scan(&n); err != nil {
				return fmt.Errorf("%s: count rows of the interval in %s: %w", tgt, t.Name, err)
			}
			if n > 0 {
				return fmt.Errorf("%s already has %d rows of the interval in table %s; a move copies into an empty interval (cancel the move that left them, or delete them)", tgt, n, t.Name)
			}
		}
		return nil
	})
	if err != nil || subExists {
		return err
	}
	conninfo, err := publisherConninfo(e.cfg.Source)
	if err != nil {
		return fmt.Errorf("conninfo of %s: %w", src, err)
	}
	err = e.withConn(ctx, src, func(conn *pgx.Conn) error {
		if err := checkPublisher(ctx, conn, copyData); err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		if err := checkReplicaIdentity(ctx, conn, e.cfg.Move.Tables); err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		ok, err := exists(ctx, conn, "SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1)", e.names.Publication)
		if err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		if !ok {
			if _, err := conn.Exec(ctx, e.publicationDDL()); err != nil {
				return fmt.Errorf("%s: create publication %s: %w", src, e.names.Publication, err)
			}
		}
		// No subscription, so a slot of its name is an orphan.
		if err := dropSlots(ctx, conn, "slot_name = $1", e.names.Slot); err != nil {
			return fmt.Errorf("%s: drop orphan slot: %w", src, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sub := fmt.Sprintf("CREATE SUBSCRIPTION %s CONNECTION %s PUBLICATION %s WITH (slot_name = %s, create_slot = true, copy_data = %t, enabled = true)",
		quoteIdent(e.names.Subscription), quoteLiteral(conninfo), quoteIdent(e.names.Publication), quoteIdent(e.names.Slot), copyData)
	err = e.withConn(ctx, tgt, func(conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, sub); err != nil {
			return fmt.Errorf("%s: create subscription %s: %w", tgt, e.names.Subscription, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	e.log.Info("reshard: replication started", "publication", e.names.Publication, "copy", copyData)
	return nil
}

// publicationDDL is the CREATE PUBLICATION of the move.
func (e *Engine) publicationDDL() string {
	parts := make([]string, len(e.cfg.Move.Tables))
	for i, t := range e.cfg.Move.Tables {
		parts[i] = qualified(t.Name) + " WHERE " + e.cfg.Move.Filter(t)
	}
	return "CREATE PUBLICATION " + quoteIdent(e.names.Publication) + " FOR TABLE " + strings.Join(parts, ", ") +
		" WITH (publish = 'insert, update, delete')"
}

// checkPublisher refuses a server that cannot publish the move: without
// wal_level = logical, or without a free replication slot and WAL sender
// for the subscription (and one more for an initial copy's sync worker:
// without it the copy would stall, retrying, instead of failing).
func checkPublisher(ctx context.Context, conn *pgx.Conn, copyData bool) error {
	var level string
	var freeSlots, freeSenders int
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'),
		current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots),
		current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication)`).Scan(&level, &freeSlots, &freeSenders)
	if err != nil {
		return fmt.Errorf("read replication settings: %w", err)
	}
	if level != "logical" {
		return fmt.Errorf("wal_level is %s: moving data needs wal_level = logical (set it and restart the server)", level)
	}
	need := 1
	if copyData {
		need = 2
	}
	if freeSlots < need {
		return fmt.Errorf("%d free replication slots, the move needs %d: raise max_replication_slots (restart) or drop unused slots", freeSlots, need)
	}
	if freeSenders < need {
		return fmt.Errorf("%d free WAL senders, the move needs %d: raise max_wal_senders (restart)", freeSenders, need)
	}
	return nil
}

// checkReplicaIdentity refuses tables whose replica identity lacks the key
// column.
func checkReplicaIdentity(ctx context.Context, conn *pgx.Conn, tables []Table) error {
	var errs []error
	for _, t := range tables {
		var ident string
		var cols []string
		err := conn.QueryRow(ctx, `SELECT c.relreplident::text, coalesce((SELECT array_agg(a.attname::text)
			FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
			WHERE i.indrelid = c.oid AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))), '{}')
			FROM pg_class c WHERE c.oid = to_regclass($1)`, qualified(t.Name)).Scan(&ident, &cols)
		if errors.Is(err, pgx.ErrNoRows) {
			errs = append(errs, fmt.Errorf("no table %s", t.Name))
			continue
		}
		if err != nil {
			return fmt.Errorf("replica identity of %s: %w", t.Name, err)
		}
		fix := fmt.Sprintf("make the key part of it (a primary key or a unique index with %s, then ALTER TABLE %s REPLICA IDENTITY USING INDEX ..., or REPLICA IDENTITY FULL)", quoteIdent(t.KeyColumn), qualified(t.Name))
		switch {
		case ident == "f":
		case ident == "n":
			errs = append(errs, fmt.Errorf("table %s has REPLICA IDENTITY NOTHING, so updates and deletes of the moving rows cannot be replicated: %s", t.Name, fix))
		case len(cols) == 0:
			errs = append(errs, fmt.Errorf("table %s has no primary key or replica identity index, so updates and deletes of the moving rows cannot be replicated: %s", t.Name, fix))
		default:
			found := false
			for _, c := range cols {
				found = found || c == t.KeyColumn
			}
			if !found {
				errs = append(errs, fmt.Errorf("the replica identity of table %s (%s) does not include the key column %s, which the interval's row filter uses; PostgreSQL would then refuse updates and deletes on the table: %s",
					t.Name, strings.Join(cols, ", "), t.KeyColumn, fix))
			}
		}
	}
	return errors.Join(errs...)
}

// SyncState is a table's state in the subscription (pg_subscription_rel).
type SyncState string

// The sync states, from pg_subscription_rel.srsubstate.
const (
	SyncNone         SyncState = ""             // no subscription, or the table is not in it yet
	SyncInit         SyncState = "init"         // i: waiting for a sync worker
	SyncCopying      SyncState = "copying"      // d: initial copy running
	SyncFinishedCopy SyncState = "finishedcopy" // f: copy done, catching up
	SyncDone         SyncState = "syncdone"     // s: caught up, handed to the apply worker
	SyncReady        SyncState = "ready"        // r: streamed by the apply worker
)

func syncState(c string) SyncState {
	switch c {
	case "i":
		return SyncInit
	case "d":
		return SyncCopying
	case "f":
		return SyncFinishedCopy
	case "s":
		return SyncDone
	case "r":
		return SyncReady
	}
	return SyncNone
}

// TableProgress is the copy progress of one table.
type TableProgress struct {
	Table string
	State SyncState
	// RowsCopied and BytesCopied are the initial copy's counters
	// (pg_stat_progress_copy of the sync worker on the target) while the
	// copy runs; 0 before, and afterwards the last values this Engine saw
	// (0 if it never saw the copy run).
	RowsCopied, BytesCopied int64
}

// Progress is the state of the move's replication.
type Progress struct {
	Tables []TableProgress
	// Subscription reports whether the subscription exists.
	Subscription bool
	// Copied reports whether every table is past its initial copy and
	// streamed by the apply worker (state ready).
	Copied bool
	// SourceLSN is the source's pg_current_wal_insert_lsn(); ConfirmedLSN the
	// slot's confirmed_flush_lsn (what the target has applied and
	// flushed); LagBytes the difference, -1 without a slot.
	SourceLSN, ConfirmedLSN health.LSN
	LagBytes                int64
	// ApplyErrors and SyncErrors count the errors of the subscription's
	// apply and initial-copy workers (pg_stat_subscription_stats); the
	// workers retry, so a copy that stays stuck with errors growing needs
	// a person (the target's log says why, e.g. a conflicting row).
	ApplyErrors, SyncErrors int64
}

// Progress reads the replication's progress from both servers.
func (e *Engine) Progress(ctx context.Context) (Progress, error) {
	p := Progress{LagBytes: -1}
	err := e.withConn(ctx, e.target(), func(conn *pgx.Conn) error {
		var subid uint32
		err := conn.QueryRow(ctx, "SELECT oid FROM pg_subscription WHERE subname = $1", e.names.Subscription).Scan(&subid)
		if errors.Is(err, pgx.ErrNoRows) {
			for _, t := range e.cfg.Move.Tables {
				p.Tables = append(p.Tables, TableProgress{Table: t.Name})
			}
			return nil
		}
		if err != nil {
			return err
		}
		p.Subscription = true
		p.Copied = true
		err = conn.QueryRow(ctx, "SELECT apply_error_count, sync_error_count FROM pg_stat_subscription_stats WHERE subid = $1", subid).Scan(&p.ApplyErrors, &p.SyncErrors)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		for _, t := range e.cfg.Move.Tables {
			tp := TableProgress{Table: t.Name}
			var st string
			err := conn.QueryRow(ctx, "SELECT srsubstate::text FROM pg_subscription_rel WHERE srsubid = $1 AND srrelid = to_regclass($2)", subid, qualified(t.Name)).Scan(&st)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			tp.State = syncState(st)
			if tp.State != SyncReady {
				p.Copied = false
			}
			err = conn.QueryRow(ctx, `SELECT p.tuples_processed, p.bytes_processed FROM pg_stat_progress_copy p
				JOIN pg_stat_subscription s ON s.pid = p.pid AND s.subid = $1
				WHERE p.relid = to_regclass($2)`, subid, qualified(t.Name)).Scan(&tp.RowsCopied, &tp.BytesCopied)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			tp.RowsCopied, tp.BytesCopied = e.rememberCopy(t.Name, tp.RowsCopied, tp.BytesCopied)
			p.Tables = append(p.Tables, tp)
		}
		return nil
	})
	if err != nil {
		return Progress{}, fmt.Errorf("reshard: progress: %s: %w", e.target(), err)
	}
	err = e.withConn(ctx, e.source(), func(conn *pgx.Conn) error {
		var cur string
		var conf *string
		err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text, (SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1)", e.names.Slot).Scan(&cur, &conf)
		if err != nil {
			return err
		}
		if p.SourceLSN, err = health.ParseLSN(cur); err != nil {
			return err
		}
		if conf != nil {
			if p.ConfirmedLSN, err = health.ParseLSN(*conf); err != nil {
				return err
			}
			p.LagBytes = max(0, int64(p.SourceLSN)-int64(p.ConfirmedLSN))
		}
		return nil
	})
	if err != nil {
		return Progress{}, fmt.Errorf("reshard: progress: %s: %w", e.source(), err)
	}
	return p, nil
}

// rememberCopy keeps the highest copy counters seen per table, so that a
// table whose copy finished still reports them.
func (e *Engine) rememberCopy(table string, rows, bytes int64) (int64, int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.copied == nil {
		e.copied = map[string][2]int64{}
	}
	c := e.copied[table]
	c[0], c[1] = max(c[0], rows), max(c[1], bytes)
	e.copied[table] = c
	return c[0], c[1]
}

// WaitCopied waits until every table has finished its initial copy and is
// streamed by the apply worker (Progress.Copied), calling report (if not
// nil) with each progress read.
func (e *Engine) WaitCopied(ctx context.Context, report func(Progress)) error {
	err := e.poll(ctx, func() (bool, error) {
		p, err := e.Progress(ctx)
		if err != nil {
			return false, err
		}
		if report != nil {
			report(p)
		}
		if !p.Subscription {
			return false, fmt.Errorf("no subscription %s on %s: start the copy first", e.names.Subscription, e.target())
		}
		return p.Copied, nil
	})
	if err != nil {
		return fmt.Errorf("reshard: wait for the copy: %w", err)
	}
	return nil
}

// SourceRows counts the interval's rows on the source, over every table
// of the move: the total a progress display needs for an ETA. It is one
// scan of each table (a count, in one snapshot).
func (e *Engine) SourceRows(ctx context.Context) (int64, error) {
	var total int64
	err := e.withConn(ctx, e.source(), func(conn *pgx.Conn) error {
		return pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			for _, t := range e.cfg.Move.Tables {
				var n int64
				if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+qualified(t.Name)+" WHERE "+e.cfg.Move.Filter(t)).Scan(&n); err != nil {
					return fmt.Errorf("count rows of the interval in %s: %w", t.Name, err)
				}
				total += n
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("reshard: %s: %w", e.source(), err)
	}
	return total, nil
}
