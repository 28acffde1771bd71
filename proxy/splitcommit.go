package proxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pgshard/pgshard/proxy/scatter"
	"github.com/pgshard/pgshard/replication/twophase"
	"github.com/pgshard/pgshard/router"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// Statements that write on several shards outside a transaction — a
// split multi-row INSERT, UPDATE or DELETE without a key
// (broadcast_writes: allow), COPY FROM split over shards, DDL — run in a
// transaction per shard. With transactions.cross_shard: two_phase those
// transactions commit as one through the two-phase coordinator (PREPARE
// TRANSACTION everywhere, the commit record, COMMIT PREPARED): a failure
// before the decision, a deferred constraint's at PREPARE included, rolls
// every shard back. With refuse, each shard commits on its own in shard
// name order (a split INSERT, COPY and DDL; UPDATE and DELETE without a
// key run in autocommit on each shard), and a COMMIT that fails — a
// deferred constraint — leaves the shards before it committed. Inside a
// transaction over several shards, split writes run in the session's
// transaction (multitx.go), DDL (utility.go) and COPY FROM (copyin.go,
// withSessionTx) included. A user with cross_shard_writes: refuse writes
// on one shard per statement and per transaction.

// The users[].cross_shard_writes values.
const (
	CrossShardWritesAllow  = "allow"  // as transactions.cross_shard says (default)
	CrossShardWritesRefuse = "refuse" // writes over several shards: 0A000
)

// refusesCrossShardWrites reports whether the session's user may not
// write on several shards in one statement or transaction.
func (s *session) refusesCrossShardWrites() bool {
	return s.user != nil && s.user.cfg.CrossShardWrites == CrossShardWritesRefuse
}

// crossShardWriteRefusal is the error of a statement that would make the
// user's statement or transaction write on shards.
func (s *session) crossShardWriteRefusal(shards []string) *wire.Error {
	shards = slices.Compact(slices.Sorted(slices.Values(shards)))
	return &wire.Error{Code: wire.SQLStateFeatureNotSupported,
		Message: fmt.Sprintf("user %q is not allowed cross-shard writes: this would write on shards %s in one statement or transaction",
			s.user.cfg.Name, strings.Join(shards, ", ")),
		Hint: "Write each shard's rows in a statement and transaction of its own, or add a condition on the sharding key " +
			"(users[].cross_shard_writes: refuse)."}
}

// splitCommit says how the per-shard transactions of an autocommit
// statement that writes on shards commit: nil, each on its own (one
// shard, or two-phase commit off), or through the two-phase coordinator.
// A user who may not write on several shards gets the refusal.
func (s *session) splitCommit(shards []string) (scatter.CommitFunc, error) {
	if len(shards) < 2 {
		return nil, nil
	}
	if s.refusesCrossShardWrites() {
		return nil, s.crossShardWriteRefusal(shards)
	}
	if !s.srv.runtime().twoPhase {
		return nil, nil
	}
	return func(ctx context.Context, txs []scatter.Tx) error { return s.commitTxs(ctx, txs, nil) }, nil
}

// splitWrite prepares req, a statement routed as plan over several
// shards outside a transaction, when it writes: in a transaction on
// every shard, committed as splitCommit says. A read, or a statement in
// the session's transaction over several shards, is left alone.
func (s *session) splitWrite(plan rplan.Plan, req *scatter.Request) error {
	switch {
	case plan.ReadOnly || plan.Kind != rplan.Scatter:
		return nil
	case !plan.Atomic && plan.Stmt != rplan.StmtInsert && plan.Stmt != rplan.StmtUpdate && plan.Stmt != rplan.StmtDelete:
		return nil // a SELECT calling functions that may write: as always
	}
	s.mu.Lock()
	inTx := s.st.inTxOverShards()
	s.mu.Unlock()
	if inTx {
		return nil
	}
	commit, err := s.splitCommit(req.Shards)
	if err != nil {
		return err
	}
	if commit != nil {
		req.Atomic, req.Commit = true, commit
	}
	return nil
}

// commitTxs commits the open transactions txs of one statement through
// the two-phase coordinator (those of readOnly shards in one phase) and
// returns the client's error. Every connection ends outside a
// transaction block, or broken.
func (s *session) commitTxs(ctx context.Context, txs []scatter.Tx, readOnly map[string]bool) error {
	ps := make([]twophase.Participant, len(txs))
	for i, tx := range txs {
		ps[i] = &txParticipant{shard: tx.Name, be: tx.Conn, wrote: !readOnly[tx.Name]}
	}
	_, err := s.srv.tpc.coordinator(s.srv).Commit(ctx, ps)
	var ae *twophase.AbortError
	var ie *twophase.InDoubtError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ie):
		return &wire.Error{Code: ie.SQLState(), Message: ie.Error(),
			Hint: "The statement is committed or rolled back on every shard once recovery has resolved it; check before retrying."}
	case errors.As(err, &ae):
		return &wire.Error{Code: ae.SQLState(), Message: ae.Error()}
	}
	return wire.Errorf(wire.SQLStateConnectionFailure, "commit over several shards: %v", err)
}

// txWriteRefusal refuses, for a user who may not write on several
// shards, a statement routed as plan that would write on shard in a
// transaction that wrote on another. Callers hold s.mu.
func (s *session) txWriteRefusal(plan rplan.Plan, q router.Query, shard string) *wire.Error {
	if !s.refusesCrossShardWrites() || plan.ReadOnly || q.Bind == nil && s.curType != 'Q' {
		return nil
	}
	for _, a := range s.st.atts {
		if a.wrote && a.shard != shard {
			return s.crossShardWriteRefusal([]string{a.shard, shard})
		}
	}
	return nil
}

// txScatterWriteRefusal is txWriteRefusal for a statement over several
// shards in the session's transaction.
func (s *session) txScatterWriteRefusal(plan rplan.Plan) error {
	if !s.refusesCrossShardWrites() || plan.ReadOnly && plan.Kind != rplan.Utility || plan.Kind == rplan.CopyIn {
		return nil // (COPY FROM: by the shards that got rows, copyIn.complete)
	}
	if len(plan.Shards) > 1 {
		return s.crossShardWriteRefusal(plan.Shards)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.st.atts {
		if a.wrote && !slices.Contains(plan.Shards, a.shard) {
			return s.crossShardWriteRefusal(append([]string{a.shard}, plan.Shards...))
		}
	}
	return nil
}

// withSessionTx runs f, a statement over several shards that runs on the
// session's connections in its transaction over several shards (lent by
// f's txBackends, opened on the shards it had none on): a Scatter
// (scatterInTx), DDL or COPY FROM. Nothing of the session's is in
// flight; a failure fails the transaction.
func (s *session) withSessionTx(ctx context.Context, write bool, f func(tb *txBackends) error) error {
	s.mu.Lock()
	cur := s.st.conn()
	deferred := s.st.deferredBegin
	if deferred != "" {
		s.st.beginSent() // the transaction starts on the shards now
	}
	s.mu.Unlock()
	if cur != nil && !cur.ClearHandler(s) {
		return wire.Fatalf(wire.SQLStateConnectionFailure, "server connection lost during the transaction")
	}
	s.relay = relayState{out: s.relay.out[:0]}
	// The deadlock detector sees the statement waiting and every shard
	// of the transaction tagged, the current one included (deadlock.go).
	ran := s.dtxScatter()
	err := s.dtxTagCurrent(ctx)
	if err == nil {
		err = f(&txBackends{scatterBackends: scatterBackends{srv: s.srv, user: s.user, db: s.db}, s: s, write: write})
	}
	err = ran(err)
	s.mu.Lock()
	if len(s.st.atts) == 0 && deferred != "" {
		// No shard was reached: the transaction is still the proxy's.
		s.st.openDeferred(deferred)
		s.st.txBegin = ""
	}
	if err != nil {
		s.st.failDeferred()
	}
	first := s.st.conn()
	s.queue.reset()
	s.unsynced = false
	s.mu.Unlock()
	if first != nil && first.SetHandler(s) != nil {
		return wire.Fatalf(wire.SQLStateConnectionFailure, "server connection lost during the transaction")
	}
	return err
}
