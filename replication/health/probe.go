package health

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// probeSQL is the probe. The CASE keeps pg_current_wal_lsn(), which fails
// during recovery, off replicas. replay_age is measured on the server, so
// clock skew between hosts does not matter; it is NULL on a primary and on
// a replica that has replayed no transaction since it started.
const probeSQL = `SELECT pg_is_in_recovery(),
	CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
	extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8`

// observation is what one successful probe saw.
type observation struct {
	inRecovery  bool
	lsn         LSN     // current WAL position (primary) or replayed one (replica); 0 if NULL
	replayAge   float64 // seconds since the last replayed transaction committed
	replayKnown bool    // replayAge is set
}

// probeLoop probes ep once per interval until ctx ends, over one
// connection that it opens again after a failure, and closes it at the end.
func (m *Monitor) probeLoop(ctx context.Context, ep *endpoint) {
	m.mu.Lock()
	addr := ep.target.Addr
	m.mu.Unlock()

	var conn *pgconn.PgConn
	defer func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.timeout)
			defer cancel()
			_ = conn.Close(cctx) // best effort: the server drops it anyway
		}
	}()
	ticker := time.NewTicker(m.interval)
	defer ticker.Stop()
	for {
		var obs observation
		var err error
		conn, obs, err = m.probe(ctx, addr, conn)
		if ctx.Err() != nil {
			return // stopping: a failure now is ours, not the endpoint's
		}
		m.record(ep, obs, err)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// probe runs one probe of addr on conn, connecting first when conn is nil.
// It returns the connection to use next time: nil after a failure, when it
// has closed the connection.
func (m *Monitor) probe(ctx context.Context, addr string, conn *pgconn.PgConn) (*pgconn.PgConn, observation, error) {
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	if conn == nil {
		c, err := m.dial(ctx, addr)
		if err != nil {
			return nil, observation{}, fmt.Errorf("health: connect to %s: %w", addr, err)
		}
		conn = c
	}
	res, err := conn.Exec(ctx, probeSQL).ReadAll()
	if err == nil {
		var obs observation
		if obs, err = parseProbe(res); err == nil {
			return conn, obs, nil
		}
	}
	// Closes the socket even when ctx has ended.
	_ = conn.Close(ctx)
	return nil, observation{}, fmt.Errorf("health: probe %s: %w", addr, err)
}

// parseProbe reads the row of probeSQL (text format).
func parseProbe(res []*pgconn.Result) (observation, error) {
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 3 {
		return observation{}, fmt.Errorf("unexpected result shape")
	}
	row := res[0].Rows[0]
	var obs observation
	switch string(row[0]) {
	case "t":
		obs.inRecovery = true
	case "f":
	default:
		return observation{}, fmt.Errorf("pg_is_in_recovery: unexpected value %q", row[0])
	}
	if row[1] != nil {
		lsn, err := ParseLSN(string(row[1]))
		if err != nil {
			return observation{}, err
		}
		obs.lsn = lsn
	}
	if row[2] != nil {
		age, err := strconv.ParseFloat(string(row[2]), 64)
		if err != nil {
			return observation{}, fmt.Errorf("replay age: %w", err)
		}
		obs.replayAge, obs.replayKnown = age, true
	}
	return obs, nil
}

// record stores the outcome of a probe of ep.
func (m *Monitor) record(ep *endpoint, obs observation, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ep.lastProbe = time.Now()
	ep.lastErr = err
	if err != nil {
		ep.up = false
		ep.consecutive++
		ep.failures++
		return
	}
	ep.up = true
	ep.consecutive = 0
	ep.obs, ep.hasObs = obs, true
}
