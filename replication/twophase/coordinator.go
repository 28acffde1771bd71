package twophase

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/wire"
)

// Participant is one shard's open transaction in a session that commits
// over several shards: the proxy passes its server connections (see
// [Conn]). The coordinator runs statements on it one at a time, and on
// different participants in parallel.
type Participant interface {
	// Shard names the participant's shard.
	Shard() string
	// ReadOnly reports whether the transaction wrote nothing there: it
	// then commits in one phase.
	ReadOnly() bool
	// Exec runs sql with the simple protocol (one or more statements) and
	// returns the command tag of the last one, or the first error.
	Exec(ctx context.Context, sql string) (string, error)
}

// Conn is a Participant over a pgconn connection in an open transaction.
type Conn struct {
	ShardName string
	PG        *pgconn.PgConn
	// Wrote says the transaction wrote on this shard (else it commits in
	// one phase).
	Wrote bool
}

// Shard implements Participant.
func (c *Conn) Shard() string { return c.ShardName }

// ReadOnly implements Participant.
func (c *Conn) ReadOnly() bool { return !c.Wrote }

// Exec implements Participant.
func (c *Conn) Exec(ctx context.Context, sql string) (string, error) {
	rs, err := c.PG.Exec(ctx, sql).ReadAll()
	if err != nil {
		return "", err
	}
	if len(rs) == 0 {
		return "", nil
	}
	return rs[len(rs)-1].CommandTag.String(), nil
}

// DecisionStore makes a commit decision durable (see doc.go for the
// choice). The coordinator picks one prepared participant, the decision
// participant, whose shard the GID names.
type DecisionStore interface {
	// RecordSQL is SQL the coordinator runs in the decision participant's
	// transaction just before its PREPARE TRANSACTION, in the same round
	// trip ("" for none).
	RecordSQL(gid GID) string
	// Decide makes the decision to commit gid durable, once every
	// participant is prepared; dp is the decision participant. It says
	// whether it committed dp's prepared transaction itself. An error
	// that wraps ErrUncertain leaves the decision unknown (recovery will
	// find it); any other error means the decision was not made, and the
	// coordinator rolls every participant back.
	Decide(ctx context.Context, gid GID, dp Participant) (dpCommitted bool, err error)
}

// ErrUncertain is wrapped by errors whose outcome is unknown: the server
// did not answer.
var ErrUncertain = errors.New("outcome unknown")

// Options tune a Coordinator. Zero values take the defaults.
type Options struct {
	// FinishTimeout bounds the rollback, or the commit of every participant
	// after the decision; they run even when the caller's context has
	// ended (default 10 s).
	FinishTimeout time.Duration
	// CommitAttempts is how often COMMIT PREPARED is tried on one
	// participant whose server answers with an error before it is left
	// to recovery (default 3).
	CommitAttempts int
	// RetryDelay is the pause before the second attempt, doubled for each
	// next (default 50 ms).
	RetryDelay time.Duration
	// Incarnation is the one the coordinator's GIDs carry (12 hex digits;
	// default: the process's, Incarnation()). It must be the one the
	// proxy's meta heartbeats carry.
	Incarnation string
	// TableWait bounds how long the decision participant waits for the
	// decision table to appear (the meta leader's recovery creates it
	// within a round after a map or a database appears) before the
	// commit fails with 42P01 (default 10 s).
	TableWait time.Duration
}

// Coordinator commits transactions over several shards. It is safe for
// concurrent use; it holds no connection.
type Coordinator struct {
	proxyID string
	store   DecisionStore
	opts    Options
	log     *slog.Logger
	// OnOutcome, when set before use, is called with every Commit's
	// outcome (metrics).
	OnOutcome func(Outcome)
}

// New returns a coordinator for the proxy proxyID (the ID it heartbeats
// meta with, so that recovery can judge its lease) with store.
func New(proxyID string, store DecisionStore, opts Options, log *slog.Logger) *Coordinator {
	if opts.FinishTimeout <= 0 {
		opts.FinishTimeout = 10 * time.Second
	}
	if opts.CommitAttempts <= 0 {
		opts.CommitAttempts = 3
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = 50 * time.Millisecond
	}
	if !validIncarnation(opts.Incarnation) {
		opts.Incarnation = processIncarnation
	}
	if opts.TableWait <= 0 {
		opts.TableWait = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	return &Coordinator{proxyID: proxyID, store: store, opts: opts, log: log}
}

// Outcome says how a Commit went.
type Outcome struct {
	// GID names the transaction; "" when it committed in one phase.
	GID GID
	// Committed: the transaction is (or will be, by recovery) committed
	// everywhere. False: it is rolled back everywhere, or, with
	// InDoubt, not known yet.
	Committed bool
	// InDoubt: the decision's outcome is unknown; recovery resolves it.
	InDoubt bool
	// Pending are the shards whose prepared transaction this commit left
	// to recovery (decided, but COMMIT PREPARED or ROLLBACK PREPARED did
	// not go through).
	Pending []string
	// LetGo is the shard where the coordinator recorded that it let go of
	// a transaction it left to recovery without a decision it knows (an
	// abort with participants in an unknown state, or InDoubt): recovery
	// resolves it at once (doc.go). "" when none was needed or none could
	// be written.
	LetGo string
	// Prepare, Decide and Finish are the phases' durations (zero when not
	// run).
	Prepare, Decide, Finish time.Duration
}

// AbortError says the transaction was rolled back on every participant
// (or left prepared for recovery to roll back, see Outcome.Pending)
// because Shard failed before the decision. It unwraps to the shard's
// error, so errors.As finds the server's *pgconn.PgError.
type AbortError struct {
	Shard string
	Err   error
}

// Error implements error.
func (e *AbortError) Error() string {
	msg := fmt.Sprintf("transaction rolled back on every shard: shard %s could not prepare to commit: %v", e.Shard, e.Err)
	var pe *pgconn.PgError
	if errors.As(e.Err, &pe) && pe.Code == wire.SQLStateUndefinedTable {
		msg += " (the meta leader's two-phase recovery creates " + DecisionTable + " on every primary: does the meta cluster have a PostgreSQL role?)"
	}
	if errors.As(e.Err, &pe) && pe.Code == wire.SQLStateInsufficientPrivilege {
		msg += " (the server user inserts the commit record into " + DecisionTable + ": GRANT " + CoordinatorRole + " TO it on every shard)"
	}
	return msg
}

// Unwrap returns the shard's error.
func (e *AbortError) Unwrap() error { return e.Err }

// SQLState is the server's SQLSTATE, else 40000 (transaction_rollback).
func (e *AbortError) SQLState() string {
	var pe *pgconn.PgError
	if errors.As(e.Err, &pe) {
		return pe.Code
	}
	return wire.SQLStateTransactionRollback
}

// InDoubtError says that the decision could not be confirmed: the
// transaction is committed or rolled back everywhere once recovery has
// run (within its interval after the proxy's lease, or the age bound).
// SQLSTATE 08007 (transaction_resolution_unknown).
type InDoubtError struct {
	GID GID
	Err error
}

// Error implements error.
func (e *InDoubtError) Error() string {
	return fmt.Sprintf("the outcome of transaction %s is unknown (the commit decision could not be confirmed; recovery resolves it): %v", e.GID, e.Err)
}

// Unwrap returns the cause.
func (e *InDoubtError) Unwrap() error { return e.Err }

// SQLState is 08007.
func (e *InDoubtError) SQLState() string { return wire.SQLStateTransactionResolutionUnknown }

// uncertain reports whether err leaves the statement's outcome unknown:
// anything but an answer from the server.
func uncertain(err error) bool {
	var pe *pgconn.PgError
	return err != nil && !errors.As(err, &pe)
}

// errRolledBack is returned when a statement meant to prepare or commit
// was answered with ROLLBACK: the transaction had failed before.
var errRolledBack = &pgconn.PgError{Severity: "ERROR", Code: wire.SQLStateInFailedTransaction,
	Message: "the transaction had failed on this shard and was rolled back"}

// run executes sql on p and checks that the last command tag is want.
func run(ctx context.Context, p Participant, sql, want string) error {
	tag, err := p.Exec(ctx, sql)
	switch {
	case err != nil:
		return err
	case tag == "ROLLBACK" && want != "ROLLBACK":
		return errRolledBack
	}
	return nil
}

// Commit commits the open transactions ps as one: with one writer (or
// none) in one phase, else by two-phase commit (doc.go). nil error: the
// transaction is committed (Outcome.Pending names the shards whose commit
// recovery finishes). *AbortError: rolled back. *InDoubtError: recovery
// decides. Afterwards no participant is in a transaction block, except
// those whose connection failed (the caller should close those: check
// the connection).
func (c *Coordinator) Commit(ctx context.Context, ps []Participant) (Outcome, error) {
	out, err := c.commit(ctx, ps)
	if c.OnOutcome != nil {
		c.OnOutcome(out)
	}
	return out, err
}

func (c *Coordinator) commit(ctx context.Context, ps []Participant) (Outcome, error) {
	var writers, readers []Participant
	for _, p := range ps {
		if p.ReadOnly() {
			readers = append(readers, p)
		} else {
			writers = append(writers, p)
		}
	}
	if len(writers) <= 1 {
		return c.onePhase(ctx, readers, writers)
	}
	var out Outcome
	dp := writers[0]
	gid := newGID(c.opts.Incarnation, c.proxyID, dp.Shard())
	out.GID = gid
	prepare := "PREPARE TRANSACTION " + quoteLiteral(string(gid))
	rec := c.store.RecordSQL(gid)

	// Phase 1: prepare the writers, commit the readers.
	start := time.Now()
	errs := make([]error, len(ps))
	parallel(ps, func(i int, p Participant) {
		switch {
		case p.ReadOnly():
			errs[i] = run(ctx, p, "COMMIT", "COMMIT")
		case p == dp:
			errs[i] = c.prepareDecision(ctx, gid, p, rec, prepare)
		default:
			errs[i] = run(ctx, p, prepare, "PREPARE TRANSACTION")
		}
	})
	out.Prepare = time.Since(start)
	for i, err := range errs {
		if err != nil {
			c.abort(ctx, gid, ps, errs, &out)
			c.letGo(ctx, gid, dp, ps, errs, &out)
			return out, &AbortError{Shard: ps[i].Shard(), Err: err}
		}
	}

	// The decision.
	start = time.Now()
	dpDone, err := c.store.Decide(ctx, gid, dp)
	out.Decide = time.Since(start)
	if err != nil {
		if errors.Is(err, ErrUncertain) {
			out.InDoubt = true
			for _, p := range writers {
				out.Pending = append(out.Pending, p.Shard())
			}
			for i, p := range ps {
				if p == dp {
					errs[i] = err // its connection is in doubt
				}
			}
			c.letGo(ctx, gid, dp, ps, errs, &out)
			c.log.Warn("two-phase commit: decision unknown; left to recovery", "gid", gid, "err", err)
			return out, &InDoubtError{GID: gid, Err: err}
		}
		// Not decided: every writer is prepared, roll them all back.
		for i := range errs {
			if !ps[i].ReadOnly() {
				errs[i] = nil
			}
		}
		c.abort(ctx, gid, ps, errs, &out)
		c.letGo(ctx, gid, dp, ps, errs, &out)
		return out, &AbortError{Shard: dp.Shard(), Err: fmt.Errorf("recording the commit decision: %w", err)}
	}
	out.Committed = true

	// Phase 2: commit every prepared participant, retrying; what does
	// not go through is left to recovery, which commits it (decided).
	start = time.Now()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.FinishTimeout)
	defer cancel()
	commitPrepared := "COMMIT PREPARED " + quoteLiteral(string(gid))
	rest := writers[1:]
	if !dpDone {
		rest = writers
	}
	left := make([]bool, len(rest))
	parallel(rest, func(i int, p Participant) {
		delay := c.opts.RetryDelay
		for attempt := 1; ; attempt++ {
			err := run(fctx, p, commitPrepared, "COMMIT PREPARED")
			var pe *pgconn.PgError
			switch {
			case err == nil:
				return
			case errors.As(err, &pe) && pe.Code == wire.SQLStateUndefinedObject:
				return // recovery committed it already
			case uncertain(err) || attempt >= c.opts.CommitAttempts:
				c.log.Warn("two-phase commit: COMMIT PREPARED failed; recovery commits it", "gid", gid, "shard", p.Shard(), "err", err)
				left[i] = true
				return
			}
			select {
			case <-fctx.Done():
				left[i] = true
				return
			case <-time.After(delay):
			}
			delay *= 2
		}
	})
	for i, l := range left {
		if l {
			out.Pending = append(out.Pending, rest[i].Shard())
		}
	}
	out.Finish = time.Since(start)
	return out, nil
}

// onePhase commits the readers, then the writer, if any: a reader that
// fails to commit (a serialization failure) rolls the writer back.
func (c *Coordinator) onePhase(ctx context.Context, readers, writers []Participant) (Outcome, error) {
	var out Outcome
	start := time.Now()
	errs := make([]error, len(readers))
	parallel(readers, func(i int, p Participant) { errs[i] = run(ctx, p, "COMMIT", "COMMIT") })
	for i, err := range errs {
		if err != nil {
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.FinishTimeout)
			defer cancel()
			for _, w := range writers {
				_, _ = w.Exec(fctx, "ROLLBACK")
			}
			parallel(readers, func(j int, p Participant) {
				if errs[j] == nil {
					return // committed
				}
				_, _ = p.Exec(fctx, "ROLLBACK")
			})
			out.Prepare = time.Since(start)
			return out, &AbortError{Shard: readers[i].Shard(), Err: err}
		}
	}
	for _, w := range writers {
		if err := run(ctx, w, "COMMIT", "COMMIT"); err != nil {
			out.Finish = time.Since(start)
			if uncertain(err) {
				out.InDoubt = true
				return out, &InDoubtError{GID: "", Err: fmt.Errorf("shard %s: %w", w.Shard(), err)}
			}
			return out, &AbortError{Shard: w.Shard(), Err: err}
		}
	}
	out.Committed = true
	out.Finish = time.Since(start)
	return out, nil
}

// abort rolls back every writer before the decision: ROLLBACK PREPARED
// where PREPARE went through, ROLLBACK where it failed (the server has
// rolled back already; this ends the block if not). A participant whose
// PREPARE has an unknown outcome is left to recovery (Outcome.Pending),
// as is one whose rollback fails.
func (c *Coordinator) abort(ctx context.Context, gid GID, ps []Participant, errs []error, out *Outcome) {
	start := time.Now()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.FinishTimeout)
	defer cancel()
	rollbackPrepared := "ROLLBACK PREPARED " + quoteLiteral(string(gid))
	left := make([]bool, len(ps))
	parallel(ps, func(i int, p Participant) {
		if p.ReadOnly() {
			if errs[i] != nil && !uncertain(errs[i]) {
				_, _ = p.Exec(fctx, "ROLLBACK")
			}
			return
		}
		var err error
		switch {
		case errs[i] == nil:
			err = run(fctx, p, rollbackPrepared, "ROLLBACK PREPARED")
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == wire.SQLStateUndefinedObject {
				err = nil // rolled back by recovery already
			}
		case uncertain(errs[i]):
			left[i] = true // perhaps prepared: recovery rolls it back
			return
		default:
			_, err = p.Exec(fctx, "ROLLBACK")
			if !uncertain(err) {
				err = nil
			}
		}
		if err != nil {
			c.log.Warn("two-phase commit: rollback failed; recovery rolls it back", "gid", gid, "shard", p.Shard(), "err", err)
			left[i] = true
		}
	})
	for i, l := range left {
		if l {
			out.Pending = append(out.Pending, ps[i].Shard())
		}
	}
	out.Finish = time.Since(start)
}

// recordSavepoint guards the commit record's INSERT in the decision
// participant's transaction: where the decision table does not exist yet,
// the INSERT fails without failing the transaction.
const recordSavepoint = "pgshard_record"

// tablePoll is how often the decision participant retries its commit
// record while the decision table does not exist.
const tablePoll = 100 * time.Millisecond

// prepareDecision prepares the decision participant p with the commit
// record rec. Where the decision table is missing (the meta leader's
// recovery has not created it in this database yet: it does within a
// round after the map or the database appears) it rolls the INSERT back
// to its savepoint and retries, up to Options.TableWait: the table is
// created by a role that may, outside any application transaction, never
// inside a transaction that is about to be prepared (its locks would be
// held until the commit, and the application's role may not create it).
func (c *Coordinator) prepareDecision(ctx context.Context, gid GID, p Participant, rec, prepare string) error {
	if rec == "" {
		return run(ctx, p, prepare, "PREPARE TRANSACTION")
	}
	sql := "SAVEPOINT " + recordSavepoint + "; " + rec + "; RELEASE SAVEPOINT " + recordSavepoint + "; " + prepare
	deadline := time.Now().Add(c.opts.TableWait)
	for waited := false; ; waited = true {
		err := run(ctx, p, sql, "PREPARE TRANSACTION")
		if !missingTable(err) || !time.Now().Before(deadline) {
			if waited && err == nil {
				c.log.Info("two-phase commit: the decision table appeared; committing", "gid", gid, "shard", p.Shard())
			}
			return err
		}
		if !waited {
			c.log.Warn("two-phase commit: "+DecisionTable+" does not exist yet on the decision shard; waiting for the meta leader's recovery to create it",
				"gid", gid, "shard", p.Shard(), "wait", c.opts.TableWait)
		}
		if _, rerr := p.Exec(ctx, "ROLLBACK TO SAVEPOINT "+recordSavepoint+"; RELEASE SAVEPOINT "+recordSavepoint); rerr != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(tablePoll):
		}
	}
}

// missingTable reports whether err says the decision table (or its
// schema) does not exist.
func missingTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == wire.SQLStateUndefinedTable || pe.Code == wire.SQLStateInvalidSchemaName)
}

// letGo records, when the coordinator leaves gid to recovery without a
// decision it knows — it aborted while some writer's state is unknown
// (its PREPARE or ROLLBACK PREPARED got no answer: it may hold a prepared
// transaction), or the decision itself is in doubt —, that it lets go of
// gid: a let-go record (LetGoKey), inserted in a transaction of its own
// on the first participant whose connection answers. It tells recovery
// that the coordinator will not act on gid any more, so that its
// decision shard's state decides it at once (doc.go) instead of after the
// age bound. errs are phase 1's errors.
func (c *Coordinator) letGo(ctx context.Context, gid GID, dp Participant, ps []Participant, errs []error, out *Outcome) {
	if len(out.Pending) == 0 && !out.InDoubt {
		return
	}
	store, ok := c.store.(interface{ LetGoSQL(GID) string })
	if !ok {
		return
	}
	pending := make(map[string]bool, len(out.Pending))
	for _, s := range out.Pending {
		pending[s] = true
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.FinishTimeout)
	defer cancel()
	sql := store.LetGoSQL(gid)
	for i, p := range ps {
		switch {
		case uncertain(errs[i]), out.InDoubt && p == dp:
			continue // its connection did not answer
		case !out.InDoubt && pending[p.Shard()] && !p.ReadOnly():
			continue // its rollback did not go through
		}
		if _, err := p.Exec(fctx, sql); err != nil {
			c.log.Debug("two-phase commit: could not record letting go", "gid", gid, "shard", p.Shard(), "err", err)
			continue
		}
		out.LetGo = p.Shard()
		c.log.Warn("two-phase commit: transaction left to recovery; recorded that its coordinator let go of it", "gid", gid, "shard", p.Shard(), "pending", out.Pending)
		return
	}
	c.log.Warn("two-phase commit: transaction left to recovery; no participant could record it (recovery resolves it after the age bound)", "gid", gid, "pending", out.Pending)
}

// parallel calls f for every participant, each in a goroutine of its own
// (the first in the caller's), and waits for all.
func parallel(ps []Participant, f func(i int, p Participant)) {
	if len(ps) == 0 {
		return
	}
	var wg sync.WaitGroup
	for i := 1; i < len(ps); i++ {
		wg.Go(func() { f(i, ps[i]) })
	}
	f(0, ps[0])
	wg.Wait()
}
