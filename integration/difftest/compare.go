package difftest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Result is what one side returned for a query, in text form.
type Result struct {
	Columns []string
	Rows    [][]string // NULL is "\x00NULL"
	Tag     string
	Code    string // SQLSTATE when the statement failed
}

const null = "\x00NULL"

// Run executes sql on c in the given pgx query mode and returns the raw
// result values.
func Run(ctx context.Context, c *pgx.Conn, sql string, mode pgx.QueryExecMode) (Result, error) {
	rows, err := c.Query(ctx, sql, mode)
	if err != nil {
		return resultOf(err)
	}
	defer rows.Close()
	var res Result
	for _, f := range rows.FieldDescriptions() {
		res.Columns = append(res.Columns, f.Name)
	}
	for rows.Next() {
		// Raw values: the exact bytes the server (or pgshard's merger)
		// sent, text or binary, so the comparison is as strict as it gets.
		raw := rows.RawValues()
		row := make([]string, len(raw))
		for i := range raw {
			if raw[i] == nil {
				row[i] = null
				continue
			}
			row[i] = string(raw[i])
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return resultOf(err)
	}
	res.Tag = rows.CommandTag().String()
	return res, nil
}

func resultOf(err error) (Result, error) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return Result{Code: pgErr.Code}, nil
	}
	return Result{}, err
}

// Diff compares a reference result with pgshard's for q and describes the
// first difference ("" when they agree).
func Diff(q Query, ref, got Result) string {
	if q.Refused != "" {
		if got.Code != q.Refused {
			return fmt.Sprintf("want refusal %s, got code %q with %d rows", q.Refused, got.Code, len(got.Rows))
		}
		return ""
	}
	if ref.Code != got.Code {
		return fmt.Sprintf("reference SQLSTATE %q, pgshard %q", ref.Code, got.Code)
	}
	if q.Write {
		if ref.Tag != got.Tag {
			return fmt.Sprintf("command tag: reference %q, pgshard %q", ref.Tag, got.Tag)
		}
		return ""
	}
	if !slices.Equal(ref.Columns, got.Columns) {
		return fmt.Sprintf("columns: reference %v, pgshard %v", ref.Columns, got.Columns)
	}
	if len(ref.Rows) != len(got.Rows) {
		return fmt.Sprintf("row count: reference %d, pgshard %d", len(ref.Rows), len(got.Rows))
	}
	a, b := keys(ref.Rows), keys(got.Rows)
	if !q.Ordered {
		slices.Sort(a)
		slices.Sort(b)
	}
	for i := range a {
		if a[i] != b[i] {
			return fmt.Sprintf("row %d: reference %q, pgshard %q", i, a[i], b[i])
		}
	}
	return ""
}

func keys(rows [][]string) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = strings.Join(r, "\x1f")
	}
	return out
}
