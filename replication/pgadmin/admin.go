package pgadmin

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Defaults of [Config].
const (
	DefaultDatabase       = "postgres"
	DefaultSSLMode        = "prefer"
	DefaultConnectTimeout = 3 * time.Second
)

// applicationName labels the package's sessions in pg_stat_activity.
const applicationName = "pgshard-admin"

// pollInterval is how often waits look at the server again.
const pollInterval = 20 * time.Millisecond

// reloadTimeout bounds the wait for a configuration reload to reach the
// session that asked for it; a reload takes milliseconds.
const reloadTimeout = 10 * time.Second

// Config says how to connect: a role allowed to run pg_promote, ALTER
// SYSTEM, pg_reload_conf, pg_terminate_backend and CHECKPOINT (a superuser
// in practice).
type Config struct {
	User, Password, Database string        // Database default "postgres"
	SSLMode, SSLRootCert     string        // libpq-style; default "prefer"
	ConnectTimeout           time.Duration // default 3s
}

// Admin runs failover actions on PostgreSQL servers. It holds no
// connection: every call opens its own to the server it acts on and closes
// it before returning, so an Admin is safe for concurrent use and needs no
// Close.
type Admin struct {
	cfg Config
}

// New returns an Admin that connects with cfg, defaults filled in.
func New(cfg Config) *Admin {
	if cfg.Database == "" {
		cfg.Database = DefaultDatabase
	}
	if cfg.SSLMode == "" {
		cfg.SSLMode = DefaultSSLMode
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	return &Admin{cfg: cfg}
}

// connect opens a session on the server at addr. The password never goes
// through a connection string, so no parse error can show it.
func (a *Admin) connect(ctx context.Context, addr string) (*pgconn.PgConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("pgadmin: address %q: %w", addr, err)
	}
	ci := conninfo{
		{"host", host}, {"port", port}, {"dbname", a.cfg.Database},
		{"sslmode", a.cfg.SSLMode}, {"application_name", applicationName},
	}
	if a.cfg.User != "" {
		ci = append(ci, setting{"user", a.cfg.User})
	}
	if a.cfg.SSLRootCert != "" {
		ci = append(ci, setting{"sslrootcert", a.cfg.SSLRootCert})
	}
	pcfg, err := pgconn.ParseConfig(ci.String())
	if err != nil {
		return nil, fmt.Errorf("pgadmin: connection settings for %s: %w", addr, err)
	}
	if a.cfg.Password != "" {
		pcfg.Password = a.cfg.Password
	}
	pcfg.ConnectTimeout = a.cfg.ConnectTimeout
	conn, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("pgadmin: connect to %s: %w", addr, err)
	}
	return conn, nil
}

// withConn runs f on a new session on addr and closes it afterwards, also
// when ctx has ended.
func (a *Admin) withConn(ctx context.Context, addr string, f func(*pgconn.PgConn) error) error {
	conn, err := a.connect(ctx, addr)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ConnectTimeout)
		defer cancel()
		_ = conn.Close(cctx) // best effort: the server drops the session anyway
	}()
	return f(conn)
}

// execSQL runs sql (simple protocol, possibly several statements) and
// discards the results.
func execSQL(ctx context.Context, conn *pgconn.PgConn, sql string) error {
	_, err := conn.Exec(ctx, sql).ReadAll()
	return err
}

// queryRows runs one statement and returns its rows as text.
func queryRows(ctx context.Context, conn *pgconn.PgConn, sql string) ([][][]byte, error) {
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(res) != 1 {
		return nil, fmt.Errorf("got %d results, want 1", len(res))
	}
	return res[0].Rows, nil
}

// queryRow runs one statement that returns exactly one row of ncols
// columns.
func queryRow(ctx context.Context, conn *pgconn.PgConn, sql string, ncols int) ([][]byte, error) {
	rows, err := queryRows(ctx, conn, sql)
	if err != nil {
		return nil, err
	}
	if len(rows) != 1 || len(rows[0]) != ncols {
		return nil, fmt.Errorf("unexpected result shape: %d rows", len(rows))
	}
	return rows[0], nil
}

// queryValue runs one statement that returns one row with one column and
// returns it as text; NULL is "".
func queryValue(ctx context.Context, conn *pgconn.PgConn, sql string) (string, error) {
	row, err := queryRow(ctx, conn, sql, 1)
	if err != nil {
		return "", err
	}
	return string(row[0]), nil
}

// parseBool reads a boolean in text format.
func parseBool(v []byte) (bool, error) {
	switch string(v) {
	case "t", "on", "true":
		return true, nil
	case "f", "off", "false":
		return false, nil
	}
	return false, fmt.Errorf("unexpected boolean %q", v)
}

// isInRecovery asks the server whether it is a replica.
func isInRecovery(ctx context.Context, conn *pgconn.PgConn) (bool, error) {
	v, err := queryValue(ctx, conn, "SELECT pg_is_in_recovery()")
	if err != nil {
		return false, fmt.Errorf("pg_is_in_recovery: %w", err)
	}
	return parseBool([]byte(v))
}

// sqlState returns the SQLSTATE of a server error, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// quoteLiteral quotes s as an SQL escape-string literal (E'...'), which
// reads the same whatever standard_conforming_strings is.
func quoteLiteral(s string) string {
	b := make([]byte, 0, len(s)+3)
	b = append(b, 'E', '\'')
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\'', '\\':
			b = append(b, s[i])
		}
		b = append(b, s[i])
	}
	return string(append(b, '\''))
}

// poll calls f every pollInterval until it reports done, returns an error,
// or ctx ends (then it returns ctx's error).
func poll(ctx context.Context, f func() (bool, error)) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// waitSeconds is the whole number of seconds, between 1 and limit, left
// before ctx's deadline; limit without a deadline.
func waitSeconds(ctx context.Context, limit int) int {
	d, ok := ctx.Deadline()
	if !ok {
		return limit
	}
	s := int(math.Ceil(time.Until(d).Seconds()))
	return min(max(s, 1), limit)
}

// itoa formats an int for SQL text.
func itoa(i int) string { return strconv.Itoa(i) }
