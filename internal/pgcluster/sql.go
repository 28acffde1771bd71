package pgcluster

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// connect opens one connection with a bounded connect timeout.
func connect(ctx context.Context, dsn string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: parse DSN: %w", err)
	}
	cfg.ConnectTimeout = 5 * time.Second
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: connect: %w", err)
	}
	return conn, nil
}

// Exec runs sql (one or more statements, simple protocol) as the superuser
// in database postgres, on a new connection.
func (s *Server) Exec(ctx context.Context, sql string) error {
	_, err := s.query(ctx, sql)
	return err
}

// QueryValue runs sql as the superuser in database postgres and returns the
// first column of the first row of its last statement as text ("" for
// NULL). It is an error when there is no row.
func (s *Server) QueryValue(ctx context.Context, sql string) (string, error) {
	res, err := s.query(ctx, sql)
	if err != nil {
		return "", err
	}
	if len(res) == 0 || len(res[len(res)-1].Rows) == 0 || len(res[len(res)-1].Rows[0]) == 0 {
		return "", fmt.Errorf("pgcluster: %s: query returned no rows: %s", s.Name, sql)
	}
	return string(res[len(res)-1].Rows[0][0]), nil
}

func (s *Server) query(ctx context.Context, sql string) ([]*pgconn.Result, error) {
	conn, err := connect(ctx, s.SuperDSN("postgres"))
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %s: %w", s.Name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %s: exec: %w", s.Name, err)
	}
	return res, nil
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// quoteLiteral quotes an SQL string literal (standard_conforming_strings on).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
