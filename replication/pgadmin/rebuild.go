package pgadmin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Rebuild methods.
const (
	MethodAuto       = "auto"
	MethodRewind     = "rewind"
	MethodBasebackup = "basebackup"
)

// RebuildConfig says which stopped data directory to turn into a replica of
// which primary, and how.
type RebuildConfig struct {
	// BinDir holds the PostgreSQL binaries (pg_rewind, pg_basebackup,
	// pg_controldata). Default: a directory in PATH holding both pg_rewind
	// and pg_basebackup, then /usr/lib/postgresql/<major of DataDir>/bin,
	// then the newest /usr/lib/postgresql/*/bin.
	BinDir string
	// DataDir is the fenced server's data directory.
	DataDir string
	// Primary is the host:port of the shard's current primary.
	Primary string
	// User and Password are the role for pg_rewind and pg_basebackup
	// (replication and superuser in practice) and for streaming.
	User, Password string
	// ApplicationName goes into primary_conninfo (the name the primary
	// shows in pg_stat_replication); default the host name.
	ApplicationName string
	// Method is MethodRewind (pg_rewind; needs wal_log_hints or data
	// checksums on the old primary and full_page_writes on the new one),
	// MethodBasebackup (move the old data directory aside to
	// DataDir+".old-<time>" and take a fresh pg_basebackup -R -X stream) or
	// MethodAuto (default: rewind, and basebackup if rewind fails or is
	// impossible).
	Method string
}

// Rebuild turns the stopped former primary in DataDir into a streaming
// replica of Primary and returns the method it used (MethodRewind or
// MethodBasebackup). Afterwards the data directory has standby.signal,
// primary_conninfo in postgresql.auto.conf pointing at Primary (host, port,
// user, password, application_name), and no default_transaction_read_only
// there (a Fence is lifted); start the server and it streams.
//
// The node keeps its own configuration: the *.conf files and TLS files
// (*.crt, *.key, *.pem, *.crl) at the top of DataDir are put back after
// pg_rewind or pg_basebackup, which copy the primary's. Tablespaces outside
// the data directory are not handled.
//
// It refuses when the server in DataDir is running (postmaster.pid names a
// live postgres process). When the process runs as root, the tools run as
// the owner of DataDir, since PostgreSQL refuses to run as root. The
// password reaches them through a temporary password file, never a
// command line, and no error holds it.
func Rebuild(ctx context.Context, cfg RebuildConfig) (method string, err error) {
	r, err := newRebuild(cfg)
	if err != nil {
		return "", fmt.Errorf("pgadmin: rebuild %s: %w", cfg.DataDir, err)
	}
	defer r.close()
	method, err = r.run(ctx)
	if err != nil {
		return "", fmt.Errorf("pgadmin: rebuild %s as a replica of %s: %w", cfg.DataDir, cfg.Primary, r.redact(err))
	}
	return method, nil
}

// rebuild is one Rebuild in progress.
type rebuild struct {
	cfg   RebuildConfig
	owner owner       // of DataDir: the tools run as it
	tools *toolRunner // runs the PostgreSQL programs
	keep  []keptFile  // the node's configuration, put back afterwards
}

// newRebuild checks cfg and the data directory and prepares the tools.
func newRebuild(cfg RebuildConfig) (*rebuild, error) {
	if cfg.Method == "" {
		cfg.Method = MethodAuto
	}
	switch cfg.Method {
	case MethodAuto, MethodRewind, MethodBasebackup:
	default:
		return nil, fmt.Errorf("unknown method %q (want %q, %q or %q)", cfg.Method, MethodAuto, MethodRewind, MethodBasebackup)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("no data directory")
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	cfg.DataDir = filepath.Clean(dir)
	if _, _, err := net.SplitHostPort(cfg.Primary); err != nil {
		return nil, fmt.Errorf("primary address %q: %w", cfg.Primary, err)
	}
	if cfg.ApplicationName == "" {
		cfg.ApplicationName = defaultApplicationName()
	}
	own, err := ownerOf(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if pid, running, err := postmasterRunning(cfg.DataDir); err != nil {
		return nil, err
	} else if running {
		return nil, fmt.Errorf("the server is running (postmaster pid %d): stop it first", pid)
	}
	bin, err := findBinDir(cfg.BinDir, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	keep, err := readKeptFiles(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	tools, err := newToolRunner(bin, cfg.DataDir, own, cfg.User, cfg.Password)
	if err != nil {
		return nil, err
	}
	return &rebuild{cfg: cfg, owner: own, tools: tools, keep: keep}, nil
}

// close removes the temporary password file.
func (r *rebuild) close() { r.tools.close() }

// redact masks the password in err's text (tool output may echo a
// connection string); the error chain is lost only when it had to.
func (r *rebuild) redact(err error) error {
	return redactError(err, r.cfg.Password)
}

// run applies the method and then the standby configuration.
func (r *rebuild) run(ctx context.Context) (string, error) {
	method := r.cfg.Method
	switch method {
	case MethodRewind:
		if err := r.rewind(ctx); err != nil {
			return "", err
		}
	case MethodBasebackup:
		if err := r.basebackup(ctx); err != nil {
			return "", err
		}
	default:
		rerr := r.rewind(ctx)
		if rerr == nil {
			method = MethodRewind
			break
		}
		if ctx.Err() != nil {
			return "", rerr
		}
		if err := r.basebackup(ctx); err != nil {
			return "", fmt.Errorf("%w (after %v)", err, rerr)
		}
		method = MethodBasebackup
	}
	if err := r.configureStandby(); err != nil {
		return "", err
	}
	return method, nil
}

// rewind runs pg_rewind against the primary. pg_rewind first runs crash
// recovery in single-user mode when the old primary was not shut down
// cleanly.
func (r *rebuild) rewind(ctx context.Context) error {
	if err := r.checkRewindable(ctx); err != nil {
		return fmt.Errorf("rewind impossible: %w", err)
	}
	// pg_rewind learns the primary's timeline from its control file, which
	// a promotion updates only at its next checkpoint; until then pg_rewind
	// sees no fork and does nothing.
	if err := r.checkpointPrimary(ctx); err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	out, err := r.tools.run(ctx, r.cfg.DataDir, "pg_rewind",
		"--target-pgdata="+r.cfg.DataDir,
		"--source-server="+r.sourceConninfo("postgres").String())
	if err != nil {
		return fmt.Errorf("rewind (the data directory may be partly rewound; the basebackup method rebuilds it anyway): %w\n%s", err, out)
	}
	return nil
}

// checkpointPrimary runs CHECKPOINT on the primary.
func (r *rebuild) checkpointPrimary(ctx context.Context) error {
	a := New(Config{User: r.cfg.User, Password: r.cfg.Password, ConnectTimeout: 10 * time.Second})
	return a.withConn(ctx, r.cfg.Primary, func(conn *pgconn.PgConn) error {
		if err := execSQL(ctx, conn, "CHECKPOINT"); err != nil {
			return fmt.Errorf("checkpoint on %s: %w", r.cfg.Primary, err)
		}
		return nil
	})
}

// checkRewindable reads the old primary's control file: pg_rewind needs
// wal_log_hints or data checksums there.
func (r *rebuild) checkRewindable(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(r.cfg.DataDir, "global", "pg_control")); err != nil {
		return fmt.Errorf("no control file: %w", err)
	}
	out, err := r.tools.run(ctx, r.cfg.DataDir, "pg_controldata", "-D", r.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	c := parseControlData(out)
	if c["wal_log_hints setting"] != "on" && c["Data page checksum version"] == "0" {
		return errors.New("the data directory has neither data checksums nor wal_log_hints = on")
	}
	return nil
}

// basebackup moves the data directory aside and takes a fresh copy of the
// primary into a new one with the same owner. When that fails, the old
// data directory is put back, so that Rebuild can be run again.
func (r *rebuild) basebackup(ctx context.Context) error {
	dir := r.cfg.DataDir
	old, err := moveAside(dir, time.Now())
	if err != nil {
		return err
	}
	err = os.Mkdir(dir, 0o700)
	if err == nil {
		err = r.owner.chown(dir)
	}
	if err == nil {
		var out string
		out, err = r.tools.run(ctx, dir, "pg_basebackup",
			"-D", dir, "-d", r.sourceConninfo("").String(),
			"-X", "stream", "-c", "fast", "-R", "-w", "-l", "pgshard rejoin")
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, out)
		}
	}
	if err == nil {
		return nil
	}
	// The new directory holds only what pg_basebackup copied.
	if rerr := os.RemoveAll(dir); rerr != nil {
		return fmt.Errorf("basebackup: %w (and removing the partial copy failed: %v; the old data directory is in %s)", err, rerr, old)
	}
	if rerr := os.Rename(old, dir); rerr != nil {
		return fmt.Errorf("basebackup: %w (and moving the old data directory back from %s failed: %v)", err, old, rerr)
	}
	return fmt.Errorf("basebackup (the old data directory is back in place): %w", err)
}

// sourceConninfo is how the tools connect to the primary; the password
// comes from the password file.
func (r *rebuild) sourceConninfo(dbname string) conninfo {
	host, port, _ := net.SplitHostPort(r.cfg.Primary) // checked in newRebuild
	ci := conninfo{{"host", host}, {"port", port}}
	if r.cfg.User != "" {
		ci = append(ci, setting{"user", r.cfg.User})
	}
	if dbname != "" {
		ci = append(ci, setting{"dbname", dbname})
	}
	return append(ci, setting{"application_name", r.cfg.ApplicationName}, setting{"connect_timeout", "10"})
}

// configureStandby puts the node's configuration back and makes it a
// standby of the primary.
func (r *rebuild) configureStandby() error {
	dir := r.cfg.DataDir
	if err := writeKeptFiles(dir, r.keep, r.owner); err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(r.cfg.Primary)
	ci := conninfo{{"host", host}, {"port", port}}
	if r.cfg.User != "" {
		ci = append(ci, setting{"user", r.cfg.User})
	}
	if r.cfg.Password != "" {
		ci = append(ci, setting{"password", r.cfg.Password})
	}
	ci = append(ci, setting{"application_name", r.cfg.ApplicationName})
	if err := setAutoConf(dir, r.owner, map[string]string{
		"primary_conninfo":              ci.String(),
		"default_transaction_read_only": "", // removed
	}); err != nil {
		return err
	}
	return writeFileAs(filepath.Join(dir, "standby.signal"), nil, 0o600, r.owner)
}

// defaultApplicationName is the host name, or "pgshard" without one.
func defaultApplicationName() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "pgshard"
}
