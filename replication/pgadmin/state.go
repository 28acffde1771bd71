package pgadmin

import (
	"context"
	"fmt"
	"net"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/replication/health"
)

// State is what a server says about itself.
type State struct {
	InRecovery bool
	CurrentLSN health.LSN // primary: pg_current_wal_lsn(); 0 on a replica
	// ReceiveLSN and ReplayLSN are a replica's pg_last_wal_receive_lsn()
	// and pg_last_wal_replay_lsn(); 0 on a primary.
	ReceiveLSN, ReplayLSN health.LSN
	ReadOnly              bool   // default_transaction_read_only is on (a fenced/quiesced primary)
	UpstreamAddr          string // replica: host:port it streams from now (pg_stat_wal_receiver sender_host/sender_port), "" if not streaming
}

// stateSQL reads a State in one statement. pg_current_wal_lsn() fails
// during recovery, so the CASE keeps it off replicas; receive and replay
// positions stay set after a promotion, so the CASEs hide them on a
// primary. default_transaction_read_only is read in a fresh session, so it
// is the server's configured value (unless a role or database setting
// overrides it). pg_stat_wal_receiver has at most one row.
const stateSQL = `SELECT r,
	CASE WHEN r THEN NULL ELSE pg_current_wal_lsn() END,
	CASE WHEN r THEN pg_last_wal_receive_lsn() END,
	CASE WHEN r THEN pg_last_wal_replay_lsn() END,
	current_setting('default_transaction_read_only'),
	(SELECT sender_host FROM pg_stat_wal_receiver WHERE status = 'streaming'),
	(SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming')
FROM (SELECT pg_is_in_recovery() AS r) s`

// State reports what the server at addr says about itself.
func (a *Admin) State(ctx context.Context, addr string) (State, error) {
	var st State
	err := a.withConn(ctx, addr, func(conn *pgconn.PgConn) error {
		row, err := queryRow(ctx, conn, stateSQL, 7)
		if err != nil {
			return err
		}
		st, err = parseState(row)
		return err
	})
	if err != nil {
		return State{}, fmt.Errorf("pgadmin: state of %s: %w", addr, err)
	}
	return st, nil
}

// parseState reads a row of stateSQL.
func parseState(row [][]byte) (State, error) {
	var st State
	var err error
	if st.InRecovery, err = parseBool(row[0]); err != nil {
		return State{}, fmt.Errorf("pg_is_in_recovery: %w", err)
	}
	for i, dst := range []*health.LSN{&st.CurrentLSN, &st.ReceiveLSN, &st.ReplayLSN} {
		if row[1+i] == nil {
			continue
		}
		if *dst, err = health.ParseLSN(string(row[1+i])); err != nil {
			return State{}, err
		}
	}
	if st.ReadOnly, err = parseBool(row[4]); err != nil {
		return State{}, fmt.Errorf("default_transaction_read_only: %w", err)
	}
	if row[5] != nil && row[6] != nil {
		st.UpstreamAddr = net.JoinHostPort(string(row[5]), string(row[6]))
	}
	return st, nil
}
