package pgcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// addReplica makes a streaming replica of s with pg_basebackup, starts it
// and waits until s reports it streaming. The returned server, if not nil,
// must be destroyed by the caller also on error.
func (s *Server) addReplica(ctx context.Context, name string) (*Server, error) {
	root, err := RootDir()
	if err != nil {
		return nil, err
	}
	r, err := newServer(root, s.bin, name, s.opts)
	if err != nil {
		return nil, err
	}
	r.Primary = s
	r.opts.Replicas = 0
	r.opts.Users = nil

	conninfo := strings.Join([]string{
		"host=" + s.Host,
		"port=" + strconv.Itoa(s.Port),
		"user=" + SuperuserName,
		"password=" + SuperuserPassword,
		"application_name=" + quoteConninfo(name),
	}, " ")
	args := []string{"-D", r.DataDir, "-d", conninfo, "-R", "-X", "stream", "-c", "fast", "--no-sync"}
	if out, err := runTool(ctx, s.bin, r.DataDir, "pg_basebackup", args...); err != nil {
		return r, fmt.Errorf("pgcluster: pg_basebackup for %s: %w\n%s", name, err, out)
	}
	// The copy holds the primary's log and settings (its socket directory).
	if err := writeOwned(filepath.Join(r.DataDir, logFile), nil, 0o644); err != nil {
		return r, err
	}
	if err := writeConfig(r.DataDir, r.opts, false); err != nil {
		return r, err
	}
	if err := os.Chmod(r.DataDir, 0o700); err != nil {
		return r, fmt.Errorf("pgcluster: chmod %s: %w", r.DataDir, err)
	}
	if err := r.startOnFreePort(ctx); err != nil {
		return r, err
	}
	if err := s.waitStreaming(ctx, name); err != nil {
		return r, err
	}
	return r, nil
}

// quoteConninfo quotes a libpq keyword/value connection string value.
func quoteConninfo(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// waitStreaming polls s's pg_stat_replication until the standby with
// application_name name is streaming.
func (s *Server) waitStreaming(ctx context.Context, name string) error {
	ctx, cancel := withDefaultTimeout(ctx, time.Minute)
	defer cancel()
	q := "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name = " + quoteLiteral(name)
	err := poll(ctx, func() (bool, error) {
		v, err := s.QueryValue(ctx, q)
		return err == nil && v == "1", nil
	})
	if err != nil {
		return fmt.Errorf("pgcluster: wait for %s to stream from %s: %w", name, s.Name, err)
	}
	return nil
}

// WaitReplayed waits until every replica of the primary s has replayed the
// WAL up to the primary's current WAL position, taken when it is called, so
// that everything committed before the call is visible on the replicas.
func (s *Server) WaitReplayed(ctx context.Context) error {
	if s.Primary != nil {
		return fmt.Errorf("pgcluster: WaitReplayed on %s: not a primary", s.Name)
	}
	lsn, err := s.flushedLSN(ctx)
	if err != nil {
		return fmt.Errorf("pgcluster: WaitReplayed: %w", err)
	}
	ctx, cancel := withDefaultTimeout(ctx, time.Minute)
	defer cancel()
	q := "SELECT coalesce(pg_last_wal_replay_lsn() >= " + quoteLiteral(lsn) + "::pg_lsn, false)"
	for _, r := range s.Replicas {
		err := poll(ctx, func() (bool, error) {
			v, err := r.QueryValue(ctx, q)
			return err == nil && v == "t", nil
		})
		if err != nil {
			return fmt.Errorf("pgcluster: wait for %s to replay %s: %w", r.Name, lsn, err)
		}
	}
	return nil
}

// Promote turns a replica into a primary (pg_promote) and waits until it
// accepts writes. It does not change Primary or Replicas fields.
func (s *Server) Promote(ctx context.Context) error {
	if err := s.Exec(ctx, "SELECT pg_promote(true, 60)"); err != nil {
		return fmt.Errorf("pgcluster: promote %s: %w", s.Name, err)
	}
	return nil
}

// withDefaultTimeout bounds ctx by d unless it already has a deadline.
func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// flushedLSN flushes the WAL written so far on s and returns the position it
// was written up to. With synchronous_commit off, recent commits may still
// be only in WAL buffers, which replicas cannot see. Committing, with
// synchronous_commit on, a transaction that wrote a WAL record flushes them
// (one that only took an xid, like txid_current(), does not); a
// transactional logical message is such a record that touches no table.
func (s *Server) flushedLSN(ctx context.Context) (string, error) {
	conn, err := connect(ctx, s.SuperDSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("%s: %w", s.Name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "SET synchronous_commit = on; SELECT pg_logical_emit_message(true, 'pgcluster', 'flush')").ReadAll(); err != nil {
		return "", fmt.Errorf("%s: flush WAL: %w", s.Name, err)
	}
	res, err := conn.Exec(ctx, "SELECT pg_current_wal_lsn()").ReadAll()
	if err != nil {
		return "", fmt.Errorf("%s: read WAL position: %w", s.Name, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 {
		return "", fmt.Errorf("%s: read WAL position: no row", s.Name)
	}
	return string(res[0].Rows[0][0]), nil
}
