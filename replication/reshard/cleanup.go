package reshard

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgshard/pgshard/wire"
)

// DropReplication drops this direction's replication objects: the
// subscription on the target, its slots on the source (the main slot and
// the initial-copy slots pg_<subid>_sync_*), and the publication on the
// source. It works on a live copy too (cancel): it disables the
// subscription, ends its workers, drops the slots
// (ending a walsender still attached), then detaches and drops the
// subscription, so a crash at any point leaves a subscription that a
// repeat finds. A DropReplication that finds nothing succeeds.
func (e *Engine) DropReplication(ctx context.Context) error {
	src, tgt := e.source(), e.target()
	var subid uint32
	hasSub := false
	err := e.withConn(ctx, tgt, func(conn *pgx.Conn) error {
		err := conn.QueryRow(ctx, "SELECT oid FROM pg_subscription WHERE subname = $1", e.names.Subscription).Scan(&subid)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		hasSub = true
		if _, err := conn.Exec(ctx, "ALTER SUBSCRIPTION "+quoteIdent(e.names.Subscription)+" DISABLE"); err != nil {
			return fmt.Errorf("disable subscription: %w", err)
		}
		// A disabled subscription's workers notice it at their next wake
		// (up to a second); ending them is immediate, and the launcher
		// does not restart the workers of a disabled subscription.
		return e.poll(ctx, func() (bool, error) {
			return exists(ctx, conn, `SELECT count(pg_terminate_backend(pid)) = 0 FROM pg_stat_subscription WHERE subid = $1 AND pid IS NOT NULL`, subid)
		})
	})
	if err != nil {
		return fmt.Errorf("reshard: drop replication %s: %s: %w", e.names.Subscription, tgt, err)
	}
	err = e.withConn(ctx, src, func(conn *pgx.Conn) error {
		// End the walsenders of the subscription's workers (application
		// name: the subscription's for the apply worker, the sync slot's
		// for an initial-copy worker) and wait until none is left: one
		// still creating its slot would otherwise create it after the
		// slots below were listed, and leave it behind.
		if hasSub {
			err := e.poll(ctx, func() (bool, error) {
				return exists(ctx, conn, `SELECT count(pg_terminate_backend(pid)) = 0 FROM pg_stat_activity
					WHERE backend_type = 'walsender' AND (application_name = $1 OR application_name LIKE $2)`,
					e.names.Subscription, fmt.Sprintf(`pg\_%d\_sync\_%%`, subid))
			})
			if err != nil {
				return fmt.Errorf("end the walsenders of the subscription: %w", err)
			}
		}
		if err := dropSlots(ctx, conn, "slot_name = $1", e.names.Slot); err != nil {
			return err
		}
		if hasSub {
			if err := dropSlots(ctx, conn, "slot_name LIKE $1", fmt.Sprintf(`pg\_%d\_sync\_%%`, subid)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reshard: drop replication %s: %s: %w", e.names.Subscription, src, err)
	}
	if hasSub {
		err = e.withConn(ctx, tgt, func(conn *pgx.Conn) error {
			sub := quoteIdent(e.names.Subscription)
			if _, err := conn.Exec(ctx, "ALTER SUBSCRIPTION "+sub+" SET (slot_name = NONE)"); err != nil {
				return err
			}
			_, err := conn.Exec(ctx, "DROP SUBSCRIPTION IF EXISTS "+sub)
			return err
		})
		if err != nil {
			return fmt.Errorf("reshard: drop subscription %s on %s: %w", e.names.Subscription, tgt, err)
		}
	}
	err = e.withConn(ctx, src, func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+quoteIdent(e.names.Publication))
		return err
	})
	if err != nil {
		return fmt.Errorf("reshard: drop publication %s on %s: %w", e.names.Publication, src, err)
	}
	e.mu.Lock()
	e.copied = nil
	e.mu.Unlock()
	e.log.Info("reshard: replication objects dropped", "subscription", e.names.Subscription)
	return nil
}

// dropSlots drops the replication slots matching the condition on
// pg_replication_slots, ending the walsenders that hold them.
func dropSlots(ctx context.Context, conn *pgx.Conn, where string, arg any) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		rows, err := conn.Query(ctx, "SELECT slot_name::text, active_pid FROM pg_replication_slots WHERE "+where, arg)
		if err != nil {
			return err
		}
		type slot struct {
			name string
			pid  *int32
		}
		slots, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (slot, error) {
			var s slot
			err := r.Scan(&s.name, &s.pid)
			return s, err
		})
		if err != nil {
			return err
		}
		if len(slots) == 0 {
			return nil
		}
		var busy error
		for _, s := range slots {
			if s.pid != nil {
				if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1, 5000)", *s.pid); err != nil {
					return fmt.Errorf("end walsender %d of slot %s: %w", *s.pid, s.name, err)
				}
			}
			if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", s.name); err != nil {
				// 55006 object_in_use: the walsender has not released
				// the slot yet; 42704: dropped meanwhile.
				switch sqlState(err) {
				case wire.SQLStateObjectInUse:
					busy = fmt.Errorf("drop slot %s: %w", s.name, err)
					continue
				case wire.SQLStateUndefinedObject:
					continue
				}
				return fmt.Errorf("drop slot %s: %w", s.name, err)
			}
		}
		if busy != nil && time.Now().After(deadline) {
			return busy
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DeleteOptions throttle DeleteMoved and Cancel.
type DeleteOptions struct {
	// BatchSize is the number of rows one transaction deletes; 0 means
	// 5000.
	BatchSize int
	// Pause is waited between batches, to leave the server's I/O to its
	// traffic; 0 means none.
	Pause time.Duration
	// Progress, if not nil, is called after each batch.
	Progress func(DeleteProgress)
}

// DeleteProgress is the state of a deletion after a batch.
type DeleteProgress struct {
	Table   string
	Deleted int64 // rows of Table deleted so far by this call
	Total   int64 // rows of every table deleted so far by this call
	Done    bool  // Table has no row of the interval left
}

// DeleteMoved deletes the interval's rows from the source (after cutover,
// at cleanup) in batches of BatchSize rows, one transaction each, pausing
// Pause between them. The fence stays: DeleteMoved refuses to run without
// it, since a write it let through would be lost, and deletes with
// session_replication_role = replica, which the fence lets pass. It also
// refuses while this direction's publication exists: the deletes would be
// replicated to the target. Idempotent: with nothing left it deletes
// nothing. It returns the number of rows deleted.
func (e *Engine) DeleteMoved(ctx context.Context, opts DeleteOptions) (int64, error) {
	fenced, err := e.Fenced(ctx)
	if err != nil {
		return 0, err
	}
	if !fenced {
		return 0, fmt.Errorf("reshard: delete moved rows of %s: %s is not fenced for the interval: fence it first, or writes could be lost", e.cfg.Move, e.source())
	}
	var pub bool
	err = e.withConn(ctx, e.source(), func(conn *pgx.Conn) error {
		pub, err = exists(ctx, conn, "SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1)", e.names.Publication)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("reshard: delete moved rows: %s: %w", e.source(), err)
	}
	if pub {
		return 0, fmt.Errorf("reshard: delete moved rows of %s: publication %s still exists on %s and would replicate the deletes: drop the replication first", e.cfg.Move, e.names.Publication, e.source())
	}
	return e.deleteInterval(ctx, e.source(), opts)
}

// deleteInterval deletes the interval's rows on s in batches. One session
// reads the rows' ctids through a cursor (a single scan of each table,
// whatever the strategy: a hash interval has no index to walk), another
// deletes each batch by ctid in its own transaction. Rows the cursor's
// snapshot did not see, or that moved meanwhile, are caught by another
// pass, until a count finds none.
func (e *Engine) deleteInterval(ctx context.Context, s side, opts DeleteOptions) (int64, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 5000
	}
	var total int64
	err := e.withConn(ctx, s, func(reader *pgx.Conn) error {
		return e.withConn(ctx, s, func(writer *pgx.Conn) error {
			for _, t := range e.cfg.Move.Tables {
				var deleted int64
				for {
					if err := e.deletePass(ctx, reader, writer, t, opts, &deleted, &total); err != nil {
						return fmt.Errorf("delete from %s: %w", t.Name, err)
					}
					var left int64
					if err := reader.QueryRow(ctx, "SELECT count(*) FROM "+qualified(t.Name)+" r WHERE "+e.cfg.Move.filterOn("r."+quoteIdent(t.KeyColumn))).Scan(&left); err != nil {
						return fmt.Errorf("count rows left in %s: %w", t.Name, err)
					}
					if left == 0 {
						break
					}
				}
				if opts.Progress != nil {
					opts.Progress(DeleteProgress{Table: t.Name, Deleted: deleted, Total: total, Done: true})
				}
			}
			return nil
		})
	})
	if err != nil {
		return total, fmt.Errorf("reshard: delete the interval's rows on %s: %w", s, err)
	}
	e.log.Info("reshard: interval rows deleted", "shard", s.ep.Shard, "rows", total)
	return total, nil
}

// deletePass is one scan of t's interval rows, deleted batch by batch,
// adding to the counters.
func (e *Engine) deletePass(ctx context.Context, reader, writer *pgx.Conn, t Table, opts DeleteOptions, deleted, total *int64) error {
	return pgx.BeginTxFunc(ctx, reader, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(rtx pgx.Tx) error {
		if _, err := rtx.Exec(ctx, "DECLARE pgshard_delete NO SCROLL CURSOR FOR SELECT ctid::text FROM "+qualified(t.Name)+
			" r WHERE "+e.cfg.Move.filterOn("r."+quoteIdent(t.KeyColumn))); err != nil {
			return err
		}
		del := "DELETE FROM " + qualified(t.Name) + " WHERE ctid = ANY ($1::tid[])"
		fetch := "FETCH " + strconv.Itoa(opts.BatchSize) + " FROM pgshard_delete"
		for {
			rows, err := rtx.Query(ctx, fetch)
			if err != nil {
				return err
			}
			ctids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			if len(ctids) == 0 {
				return nil
			}
			var n int64
			err = pgx.BeginFunc(ctx, writer, func(tx pgx.Tx) error {
				// The fence does not fire for session_replication_role
				// = replica.
				if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
					return err
				}
				tag, err := tx.Exec(ctx, del, ctids)
				n = tag.RowsAffected()
				return err
			})
			if err != nil {
				return err
			}
			*deleted += n
			*total += n
			if opts.Progress != nil {
				opts.Progress(DeleteProgress{Table: t.Name, Deleted: *deleted, Total: *total})
			}
			if opts.Pause > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(opts.Pause):
				}
			}
		}
	})
}

// StopForward drops the forward replication (DropReplication) at
// cutover, after Fence and WaitCaughtUp. It must precede StartReverse:
// PostgreSQL 15 subscriptions have no origin filter, so with both
// directions running the source would send the target's own changes back
// to it.
func (e *Engine) StopForward(ctx context.Context) error { return e.DropReplication(ctx) }

// StartReverse starts the replication of the interval from the target
// back to the source, without an initial copy (the source has the rows up
// to the cutover): a publication on the target, a subscription on the
// source. Run it at cutover, after StopForward and before the new owner
// takes writes, so a rollback (Reverse().Fence, Reverse().WaitCaughtUp,
// Unfence) loses nothing. The source's fence does not stop it (its apply
// worker runs with session_replication_role = replica). Idempotent.
func (e *Engine) StartReverse(ctx context.Context) error {
	var fwd bool
	err := e.withConn(ctx, e.target(), func(conn *pgx.Conn) error {
		var err error
		fwd, err = exists(ctx, conn, "SELECT EXISTS (SELECT FROM pg_subscription WHERE subname = $1)", e.names.Subscription)
		return err
	})
	if err != nil {
		return fmt.Errorf("reshard: start reverse replication: %s: %w", e.target(), err)
	}
	if fwd {
		return fmt.Errorf("reshard: start reverse replication of %s: the forward subscription %s still exists on %s: stop it first (StopForward), or changes would loop", e.cfg.Move, e.names.Subscription, e.target())
	}
	if err := e.Reverse().startReplication(ctx, false); err != nil {
		return fmt.Errorf("reshard: start reverse replication of %s: %w", e.cfg.Move, err)
	}
	return nil
}

// Cleanup ends a move that is cut over: it drops the replication objects
// of both directions on both servers and deletes the interval's rows from
// the source (DeleteMoved), keeping the fence. After it, a rollback is no
// longer possible. Idempotent.
func (e *Engine) Cleanup(ctx context.Context, opts DeleteOptions) (int64, error) {
	if err := e.Reverse().DropReplication(ctx); err != nil {
		return 0, err
	}
	if err := e.DropReplication(ctx); err != nil {
		return 0, err
	}
	return e.DeleteMoved(ctx, opts)
}

// Cancel abandons a move before its cutover: it drops the replication
// objects of both directions on both servers, deletes the rows the copy
// put on the target (in batches, as DeleteMoved) and removes the source's
// fence. Never after cutover, when the target's rows are the only copy of
// the latest writes: roll back first. Idempotent; a Cancel that finds
// nothing succeeds.
func (e *Engine) Cancel(ctx context.Context, opts DeleteOptions) error {
	if err := e.Reverse().DropReplication(ctx); err != nil {
		return err
	}
	if err := e.DropReplication(ctx); err != nil {
		return err
	}
	var missing bool
	err := e.withConn(ctx, e.target(), func(conn *pgx.Conn) error {
		for _, t := range e.cfg.Move.Tables {
			ok, err := exists(ctx, conn, "SELECT to_regclass($1) IS NULL", qualified(t.Name))
			if err != nil {
				return err
			}
			missing = missing || ok
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reshard: cancel: %s: %w", e.target(), err)
	}
	if !missing {
		if _, err := e.deleteInterval(ctx, e.target(), opts); err != nil {
			return fmt.Errorf("reshard: cancel: %w", err)
		}
	}
	return e.Unfence(ctx)
}
