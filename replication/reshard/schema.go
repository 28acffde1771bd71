package reshard

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// defaultPgDump is where Debian and Ubuntu install PostgreSQL 15's pg_dump.
const defaultPgDump = "/usr/lib/postgresql/15/bin/pg_dump"

// PrepareTarget creates on the target the move's tables that it lacks,
// from the source's definitions, and checks that the tables it has have
// the source's columns (names and types, in order): the subscription and
// the row checksums of Verify rely on it.
//
// The definitions come from `pg_dump --schema-only --no-owner
// --no-privileges -t TABLE...` of the source, run in one transaction on
// the target (so a failure leaves no table behind and a repeat starts
// over). pg_dump rather than DDL built from the catalogs because it
// reproduces every detail a table can have — defaults, CHECK and foreign
// keys, indexes, identity and generated columns, owned sequences,
// partitioning, storage parameters, comments — exactly as PostgreSQL
// itself restores it; rebuilding that from pg_catalog would be a partial
// copy of pg_dump. Consequences: pg_dump (version 15 or later) must be
// installed where the engine runs, and objects the tables depend on but
// that are not tables of the move (types, functions of defaults or
// triggers, tables that foreign keys reference) must already exist on the
// target, or the step fails with the server's error. Schemas are created
// when missing. Idempotent: when every table exists, it only checks them.
func (e *Engine) PrepareTarget(ctx context.Context) error {
	tgt, src := e.target(), e.source()
	var missing []Table
	err := e.withConn(ctx, tgt, func(conn *pgx.Conn) error {
		for _, t := range e.cfg.Move.Tables {
			ok, err := exists(ctx, conn, "SELECT to_regclass($1) IS NOT NULL", qualified(t.Name))
			if err != nil {
				return fmt.Errorf("%s: look up %s: %w", tgt, t.Name, err)
			}
			if !ok {
				missing = append(missing, t)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reshard: prepare target: %w", err)
	}
	if len(missing) > 0 {
		ddl, err := e.dumpSchema(ctx, missing)
		if err != nil {
			return fmt.Errorf("reshard: prepare target: %w", err)
		}
		var b strings.Builder
		b.WriteString("BEGIN;\n")
		schemas := map[string]bool{}
		for _, t := range missing {
			s, _, _ := splitName(t.Name)
			if !schemas[s] {
				schemas[s] = true
				b.WriteString("CREATE SCHEMA IF NOT EXISTS " + quoteIdent(s) + ";\n")
			}
		}
		b.WriteString(ddl)
		b.WriteString("\nCOMMIT;\n")
		err = e.withConn(ctx, tgt, func(conn *pgx.Conn) error {
			// Simple protocol: the dump is many statements.
			return conn.PgConn().Exec(ctx, b.String()).Close()
		})
		if err != nil {
			return fmt.Errorf("reshard: prepare target: create %s on %s: %w", tableNames(missing), tgt, err)
		}
		e.log.Info("reshard: created tables on the target", "tables", tableNames(missing))
	}
	// Every table exists now: compare the columns.
	for _, t := range e.cfg.Move.Tables {
		var sc, tc []string
		err := e.withConn(ctx, src, func(conn *pgx.Conn) error {
			var err error
			sc, err = columns(ctx, conn, t)
			return err
		})
		if err != nil {
			return fmt.Errorf("reshard: prepare target: %s: %w", src, err)
		}
		err = e.withConn(ctx, tgt, func(conn *pgx.Conn) error {
			var err error
			tc, err = columns(ctx, conn, t)
			return err
		})
		if err != nil {
			return fmt.Errorf("reshard: prepare target: %s: %w", tgt, err)
		}
		if !slices.Equal(sc, tc) {
			return fmt.Errorf("reshard: prepare target: table %s differs: source has columns (%s), target (%s)",
				t.Name, strings.Join(sc, ", "), strings.Join(tc, ", "))
		}
	}
	return nil
}

// columns lists "name type" of t's live columns in order; an error when
// the table or its key column is missing.
func columns(ctx context.Context, conn *pgx.Conn, t Table) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, qualified(t.Name))
	if err != nil {
		return nil, err
	}
	var out []string
	hasKey := false
	for rows.Next() {
		var n, ty string
		if err := rows.Scan(&n, &ty); err != nil {
			return nil, err
		}
		hasKey = hasKey || n == t.KeyColumn
		out = append(out, n+" "+ty)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no table %s", t.Name)
	}
	if !hasKey {
		return nil, fmt.Errorf("table %s has no key column %q", t.Name, t.KeyColumn)
	}
	return out, nil
}

func tableNames(ts []Table) string {
	n := make([]string, len(ts))
	for i, t := range ts {
		n[i] = t.Name
	}
	return strings.Join(n, ", ")
}

// pgDump returns the pg_dump binary to run.
func (e *Engine) pgDump() string {
	if e.cfg.PgDump != "" {
		return e.cfg.PgDump
	}
	if _, err := os.Stat(defaultPgDump); err == nil {
		return defaultPgDump
	}
	return "pg_dump"
}

// dumpSchema returns the source's DDL of tables. The password goes
// through PGPASSWORD, not the command line.
func (e *Engine) dumpSchema(ctx context.Context, tables []Table) (string, error) {
	cfg, err := pgconn.ParseConfig(e.cfg.Source.DSN)
	if err != nil {
		return "", err
	}
	ci := []string{"host=" + conninfoValue(cfg.Host), "port=" + strconv.Itoa(int(cfg.Port)),
		"user=" + conninfoValue(cfg.User), "dbname=" + conninfoValue(cfg.Database)}
	if cfg.TLSConfig == nil {
		ci = append(ci, "sslmode=disable")
	} else {
		ci = append(ci, "sslmode=require")
	}
	args := []string{"--schema-only", "--no-owner", "--no-privileges", "--no-publications",
		"--no-subscriptions", "--no-security-labels", "--no-tablespaces", "--strict-names",
		"--dbname=" + strings.Join(ci, " ")}
	for _, t := range tables {
		args = append(args, "--table="+qualified(t.Name))
	}
	cmd := exec.CommandContext(ctx, e.pgDump(), args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+cfg.Password, "PGCONNECT_TIMEOUT=10")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("pg_dump of %s on %s: %w: %s", tableNames(tables), e.source(), err, strings.TrimSpace(stderr.String()))
	}
	return stripMetaCommands(out.String()), nil
}

// stripMetaCommands drops psql meta-command lines (pg_dump 15.14 and later
// wrap plain output in \restrict ... \unrestrict), which are not SQL.
func stripMetaCommands(s string) string {
	lines := strings.Split(s, "\n")
	out := lines[:0]
	for _, l := range lines {
		if strings.HasPrefix(l, `\`) {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
