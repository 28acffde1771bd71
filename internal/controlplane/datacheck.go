package controlplane

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// The data check of map apply on a meta member: before a map gives a key
// interval to another shard, the leader counts the interval's rows on the
// old owner's primary (metarpc ServerOptions.CountRows), connecting as the
// member's PostgreSQL role.

// PGLogin is how a meta member connects to the PostgreSQL servers of the
// map: the role (a superuser in practice, or one that may read every
// sharded table), its password, and libpq's sslmode and sslrootcert.
type PGLogin struct {
	User, Password       string
	SSLMode, SSLRootCert string
}

// The data check's connection settings.
const (
	dataCheckConnectTimeout = 3 * time.Second
	dataCheckAppName        = "pgshard-meta-datacheck"
	// dataCheckMaintenanceDB is where the databases of a server are
	// listed, as the health monitor connects.
	dataCheckMaintenanceDB = "postgres"
)

// rowCounter counts rows on servers as a PGLogin.
type rowCounter struct{ login PGLogin }

// count is the CountRows hook: for each query, the rows of its table that
// match its condition, summed over every database of the server at addr
// that allows connections and has the table. It reads in one read-only
// transaction per database.
func (c rowCounter) count(ctx context.Context, addr string, qs []metarpc.RowQuery) ([]int64, error) {
	dbs, err := c.databases(ctx, addr)
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(qs))
	for _, db := range dbs {
		if err := c.countIn(ctx, addr, db, qs, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// databases lists the databases of the server at addr that accept
// connections, templates excepted.
func (c rowCounter) databases(ctx context.Context, addr string) ([]string, error) {
	conn, err := c.connect(ctx, addr, dataCheckMaintenanceDB)
	if err != nil {
		return nil, err
	}
	defer closeConn(ctx, conn)
	res := conn.ExecParams(ctx, "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname", nil, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, fmt.Errorf("list the databases of %s: %w", addr, res.Err)
	}
	dbs := make([]string, 0, len(res.Rows))
	for _, r := range res.Rows {
		dbs = append(dbs, string(r[0]))
	}
	return dbs, nil
}

// countIn adds to out, for each query, its count in database db of addr
// (nothing for a table the database does not have).
func (c rowCounter) countIn(ctx context.Context, addr, db string, qs []metarpc.RowQuery, out []int64) error {
	conn, err := c.connect(ctx, addr, db)
	if err != nil {
		return err
	}
	defer closeConn(ctx, conn)
	// One snapshot for every table, so that the counts belong together.
	if err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").Close(); err != nil {
		return fmt.Errorf("database %s on %s: %w", db, addr, err)
	}
	for i, q := range qs {
		quoted := shardmap.QuoteTable(q.Table)
		res := conn.ExecParams(ctx, "SELECT pg_catalog.to_regclass($1) IS NOT NULL", [][]byte{[]byte(quoted)}, nil, nil, nil).Read()
		if res.Err != nil {
			return fmt.Errorf("database %s on %s: look up table %s: %w", db, addr, q.Table, res.Err)
		}
		if len(res.Rows) != 1 || string(res.Rows[0][0]) != "t" {
			continue
		}
		res = conn.ExecParams(ctx, "SELECT count(*) FROM "+quoted+" WHERE "+q.Where, nil, nil, nil, nil).Read()
		if res.Err != nil {
			return fmt.Errorf("database %s on %s: count the rows of %s: %w", db, addr, q.Table, res.Err)
		}
		n, err := strconv.ParseInt(string(res.Rows[0][0]), 10, 64)
		if err != nil {
			return fmt.Errorf("database %s on %s: count of %s: %w", db, addr, q.Table, err)
		}
		out[i] += n
	}
	return conn.Exec(ctx, "COMMIT").Close()
}

// connect opens a session on database db of the server at addr. The
// password never goes through a connection string, so no parse error can
// show it.
func (c rowCounter) connect(ctx context.Context, addr, db string) (*pgconn.PgConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	sslmode := c.login.SSLMode
	if sslmode == "" {
		sslmode = "prefer"
	}
	kv := [][2]string{{"host", host}, {"port", port}, {"dbname", db}, {"sslmode", sslmode}, {"application_name", dataCheckAppName}}
	if c.login.User != "" {
		kv = append(kv, [2]string{"user", c.login.User})
	}
	if c.login.SSLRootCert != "" {
		kv = append(kv, [2]string{"sslrootcert", c.login.SSLRootCert})
	}
	s := ""
	for _, p := range kv {
		s += p[0] + "=" + quoteConninfo(p[1]) + " "
	}
	cfg, err := pgconn.ParseConfig(s)
	if err != nil {
		return nil, fmt.Errorf("connection settings for %s: %w", addr, err)
	}
	if c.login.Password != "" {
		cfg.Password = c.login.Password
	}
	cfg.ConnectTimeout = dataCheckConnectTimeout
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s (database %s) as %s: %w", addr, db, orDefault(c.login.User), err)
	}
	return conn, nil
}

// closeConn closes conn, also when ctx has ended.
func closeConn(ctx context.Context, conn *pgconn.PgConn) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dataCheckConnectTimeout)
	defer cancel()
	_ = conn.Close(cctx) // best effort: the server drops the session anyway
}

// quoteConninfo quotes a libpq connection string value.
func quoteConninfo(v string) string {
	out := []byte{'\''}
	for i := 0; i < len(v); i++ {
		if v[i] == '\'' || v[i] == '\\' {
			out = append(out, '\\')
		}
		out = append(out, v[i])
	}
	return string(append(out, '\''))
}

func orDefault(user string) string {
	if user == "" {
		return "the default role"
	}
	return user
}
