package twophase

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/wire"
)

// PGLogin is how recovery connects to the primaries: a role that may
// finish any prepared transaction and create the decision table (a
// superuser in practice), libpq's sslmode and sslrootcert.
type PGLogin struct {
	User, Password       string
	SSLMode, SSLRootCert string
	// ConnectTimeout: default 3 s.
	ConnectTimeout time.Duration
}

// NewPGAdmin returns the Admin that acts on PostgreSQL servers as login.
// It opens a connection per call and closes it before returning.
func NewPGAdmin(login PGLogin) Admin {
	if login.SSLMode == "" {
		login.SSLMode = "prefer"
	}
	if login.ConnectTimeout <= 0 {
		login.ConnectTimeout = 3 * time.Second
	}
	return pgAdmin{l: login, tables: new(sync.Map)}
}

type pgAdmin struct {
	l PGLogin
	// tables holds "addr/db" of the databases known to have the
	// decision table, so that Scan does not connect to each of them every
	// round to check.
	tables *sync.Map
}

// recoveryLockTimeout bounds recovery's wait for a lock on a decision
// record being written.
const recoveryLockTimeout = "1s"

// maintenanceDB is where recovery lists prepared transactions.
const maintenanceDB = "postgres"

func conninfoValue(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

func (a pgAdmin) connect(ctx context.Context, addr, db string) (*pgconn.PgConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	ci := "host=" + conninfoValue(host) + " port=" + conninfoValue(port) + " dbname=" + conninfoValue(db) +
		" sslmode=" + conninfoValue(a.l.SSLMode) + " application_name=pgshard-meta-2pc-recovery"
	if a.l.User != "" {
		ci += " user=" + conninfoValue(a.l.User)
	}
	if a.l.SSLRootCert != "" {
		ci += " sslrootcert=" + conninfoValue(a.l.SSLRootCert)
	}
	cfg, err := pgconn.ParseConfig(ci)
	if err != nil {
		return nil, fmt.Errorf("connection settings for %s: %w", addr, err)
	}
	if a.l.Password != "" {
		cfg.Password = a.l.Password
	}
	cfg.ConnectTimeout = a.l.ConnectTimeout
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s database %s: %w", addr, db, err)
	}
	return conn, nil
}

func (a pgAdmin) with(ctx context.Context, addr, db string, f func(*pgconn.PgConn) error) error {
	conn, err := a.connect(ctx, addr, db)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.l.ConnectTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	return f(conn)
}

func rows(ctx context.Context, conn *pgconn.PgConn, sql string) ([][][]byte, error) {
	rs, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, nil
	}
	return rs[len(rs)-1].Rows, nil
}

// Scan implements Admin.
func (a pgAdmin) Scan(ctx context.Context, addr string) (ServerScan, error) {
	var sc ServerScan
	err := a.with(ctx, addr, maintenanceDB, func(conn *pgconn.PgConn) error {
		rs, err := rows(ctx, conn, "SELECT current_setting('max_prepared_transactions')::int")
		if err != nil {
			return err
		}
		if sc.MaxPrepared, err = strconv.Atoi(string(rs[0][0])); err != nil {
			return err
		}
		rs, err = rows(ctx, conn, "SELECT gid, database, extract(epoch FROM now() - prepared)::float8 FROM pg_catalog.pg_prepared_xacts WHERE gid LIKE 'pgshard/%' ORDER BY gid")
		if err != nil {
			return fmt.Errorf("list prepared transactions: %w", err)
		}
		for _, r := range rs {
			secs, err := strconv.ParseFloat(string(r[2]), 64)
			if err != nil {
				return err
			}
			sc.Xacts = append(sc.Xacts, PreparedXact{GID: string(r[0]), Database: string(r[1]), Age: time.Duration(secs * float64(time.Second))})
		}
		rs, err = rows(ctx, conn, "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")
		if err != nil {
			return fmt.Errorf("list databases: %w", err)
		}
		for _, r := range rs {
			sc.Databases = append(sc.Databases, string(r[0]))
		}
		return nil
	})
	if err != nil {
		return ServerScan{}, fmt.Errorf("scan %s: %w", addr, err)
	}
	for _, db := range sc.Databases {
		if _, ok := a.tables.Load(addr + "/" + db); ok {
			continue
		}
		err := a.with(ctx, addr, db, func(conn *pgconn.PgConn) error {
			rs, err := rows(ctx, conn, NeedsSchemaSQL)
			switch {
			case err != nil:
			case string(rs[0][0]) == "t":
				sc.NoTable = append(sc.NoTable, db)
			default:
				a.tables.Store(addr+"/"+db, true)
			}
			return err
		})
		if err != nil {
			return ServerScan{}, fmt.Errorf("scan %s: %w", addr, err)
		}
	}
	return sc, nil
}

// EnsureSchema implements Admin.
func (a pgAdmin) EnsureSchema(ctx context.Context, addr, db string) error {
	return a.with(ctx, addr, db, func(conn *pgconn.PgConn) error {
		_, err := conn.Exec(ctx, SchemaSQL).ReadAll()
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == wire.SQLStateUniqueViolation {
			err = nil // created concurrently
		}
		if err == nil {
			a.tables.Store(addr+"/"+db, true)
		}
		return err
	})
}

// Finish implements Admin.
func (a pgAdmin) Finish(ctx context.Context, addr, db, gid string, commit bool) error {
	verb := "ROLLBACK PREPARED "
	if commit {
		verb = "COMMIT PREPARED "
	}
	return a.with(ctx, addr, db, func(conn *pgconn.PgConn) error {
		_, err := conn.Exec(ctx, verb+quoteLiteral(gid)).ReadAll()
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == wire.SQLStateUndefinedObject {
			return fmt.Errorf("%s: %w", gid, ErrNotPrepared) // finished meanwhile
		}
		return err
	})
}

// Decide implements Admin.
func (a pgAdmin) Decide(ctx context.Context, addr, db, gid string) (bool, error) {
	var committed bool
	err := a.with(ctx, addr, db, func(conn *pgconn.PgConn) error {
		rs, err := rows(ctx, conn, "SET lock_timeout = '"+recoveryLockTimeout+"'; "+DecisionSQL(gid))
		if err != nil {
			return err
		}
		if len(rs) != 1 {
			return fmt.Errorf("no decision record for %s after recording one", gid)
		}
		committed = string(rs[0][0]) == "t"
		return nil
	})
	return committed, err
}

// Lookup implements Admin.
func (a pgAdmin) Lookup(ctx context.Context, addr, db, gid string) (found, committed bool, err error) {
	err = a.with(ctx, addr, db, func(conn *pgconn.PgConn) error {
		rs, err := rows(ctx, conn, "SELECT committed FROM "+DecisionTable+" WHERE gid = "+quoteLiteral(gid))
		if err != nil {
			return err
		}
		if len(rs) == 1 {
			found, committed = true, string(rs[0][0]) == "t"
		}
		return nil
	})
	return found, committed, err
}

// Decisions implements Admin.
func (a pgAdmin) Decisions(ctx context.Context, addr, db string, limit int, keep map[string]bool, olderThan time.Duration) (_ []Decision, err error) {
	var out []Decision
	defer func() {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == wire.SQLStateUndefinedTable {
			a.tables.Delete(addr + "/" + db) // dropped: the next Scan sees it
		}
	}()
	err = a.with(ctx, addr, db, func(conn *pgconn.PgConn) error {
		if keep != nil {
			var b strings.Builder
			b.WriteString("DELETE FROM " + DecisionTable + " WHERE decided_at < now() - interval '")
			b.WriteString(strconv.FormatInt(olderThan.Milliseconds(), 10))
			b.WriteString(" milliseconds'")
			if len(keep) > 0 {
				b.WriteString(" AND gid NOT IN (")
				first := true
				for gid := range keep {
					if !first {
						b.WriteString(", ")
					}
					first = false
					b.WriteString(quoteLiteral(gid))
				}
				b.WriteString(")")
			}
			if _, err := conn.Exec(ctx, b.String()).ReadAll(); err != nil {
				return fmt.Errorf("delete old decisions: %w", err)
			}
		}
		rs, err := rows(ctx, conn, "SELECT gid, committed, to_char(decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM "+
			DecisionTable+" WHERE gid NOT LIKE '%"+letGoSuffix+"' ORDER BY decided_at DESC LIMIT "+strconv.Itoa(limit))
		if err != nil {
			return err
		}
		for _, r := range rs {
			at, err := time.Parse(time.RFC3339Nano, string(r[2]))
			if err != nil {
				return err
			}
			out = append(out, Decision{Database: db, GID: string(r[0]), Committed: string(r[1]) == "t", At: at})
		}
		return nil
	})
	return out, err
}
