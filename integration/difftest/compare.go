package difftest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Field is what a result says about one of its columns: everything of a
// RowDescription field except the source table, whose OID differs from
// server to server.
type Field struct {
	Name         string
	TypeOID      uint32
	TypeSize     int16
	TypeModifier int32
	Format       int16 // 0 text, 1 binary
}

// Result is what one side returned for a statement.
type Result struct {
	Fields []Field
	// Rows hold the raw values as the client received them (text or
	// binary, as Fields say); a nil value is NULL.
	Rows    [][][]byte
	Tag     string
	Code    string // SQLSTATE when the statement failed
	Message string // the error message when it failed
	// EndTag is the command tag of the COMMIT that ended the statement's
	// transaction (Query.InTransaction only): "ROLLBACK" after an error.
	EndTag string
}

// Refused reports whether the result is an error with SQLSTATE code
// whose message contains fragment.
func (r Result) Refused(code, fragment string) bool {
	return r.Code == code && strings.Contains(r.Message, fragment)
}

// Run executes sql on c in the given pgx query mode, with the values of
// its parameters if any, and returns the raw result values; a PostgreSQL
// error is a Result with Code set, other errors (the connection broke)
// are returned.
func Run(ctx context.Context, c *pgx.Conn, sql string, mode pgx.QueryExecMode, args ...any) (Result, error) {
	rows, err := c.Query(ctx, sql, append([]any{mode}, args...)...)
	if err != nil {
		return resultOf(err)
	}
	defer rows.Close()
	var res Result
	for _, f := range rows.FieldDescriptions() {
		res.Fields = append(res.Fields, Field{Name: f.Name, TypeOID: f.DataTypeOID, TypeSize: f.DataTypeSize,
			TypeModifier: f.TypeModifier, Format: f.Format})
	}
	for rows.Next() {
		// Raw values: the exact bytes the server (or pgshard's merger)
		// sent, text or binary, so the comparison is as strict as it
		// gets: both sides run in the same mode, so they are asked for
		// the same formats.
		raw := rows.RawValues()
		row := make([][]byte, len(raw))
		for i, v := range raw {
			if v != nil {
				row[i] = make([]byte, len(v)) // non-nil even when empty
				copy(row[i], v)
			}
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return resultOf(err)
	}
	res.Tag = rows.CommandTag().String()
	return res, nil
}

// RunQuery executes q on c in mode: q.SQL, or q.Steps in order (the
// answer is the last one's, or the first error), between BEGIN and
// COMMIT for q.InTransaction (the COMMIT's tag goes to Result.EndTag).
// BEGIN and COMMIT go through the simple protocol, as pgx.Conn.Begin
// sends them.
func RunQuery(ctx context.Context, c *pgx.Conn, q Query, mode pgx.QueryExecMode) (Result, error) {
	if !q.InTransaction {
		return runSteps(ctx, c, q, mode)
	}
	begin, err := Run(ctx, c, "BEGIN", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return Result{}, err
	}
	if begin.Code != "" {
		return Result{}, fmt.Errorf("BEGIN: %s %s", begin.Code, begin.Message)
	}
	res, err := runSteps(ctx, c, q, mode)
	if err != nil {
		return Result{}, err
	}
	end, err := Run(ctx, c, "COMMIT", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return Result{}, err
	}
	if end.Code != "" {
		return Result{}, fmt.Errorf("COMMIT: %s %s", end.Code, end.Message)
	}
	res.EndTag = end.Tag
	return res, nil
}

// runSteps runs q.SQL, or each of q.Steps until one fails.
func runSteps(ctx context.Context, c *pgx.Conn, q Query, mode pgx.QueryExecMode) (Result, error) {
	if len(q.Steps) == 0 {
		return Run(ctx, c, q.SQL, mode)
	}
	var res Result
	for _, s := range q.Steps {
		var err error
		if res, err = Run(ctx, c, s, mode); err != nil || res.Code != "" {
			return res, err
		}
	}
	return res, nil
}

func resultOf(err error) (Result, error) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return Result{Code: pgErr.Code, Message: pgErr.Message}, nil
	}
	return Result{}, err
}

// Diff compares a reference result with pgshard's and describes the
// first difference ("" when they agree): SQLSTATE, columns with their
// types and formats, command tags, then the rows, as a sequence when
// ordered and as a multiset otherwise.
func Diff(ref, got Result, ordered bool) string {
	if ref.Code != got.Code {
		return fmt.Sprintf("reference SQLSTATE %q, pgshard %q (%s)", ref.Code, got.Code, got.Message)
	}
	if ref.EndTag != got.EndTag {
		return fmt.Sprintf("transaction end: reference %q, pgshard %q", ref.EndTag, got.EndTag)
	}
	if ref.Code != "" {
		return "" // failed alike; messages may name a shard
	}
	if !slices.Equal(ref.Fields, got.Fields) {
		return fmt.Sprintf("columns: reference %+v, pgshard %+v", ref.Fields, got.Fields)
	}
	if ref.Tag != got.Tag {
		return fmt.Sprintf("command tag: reference %q, pgshard %q", ref.Tag, got.Tag)
	}
	if len(ref.Rows) != len(got.Rows) {
		return fmt.Sprintf("row count: reference %d, pgshard %d", len(ref.Rows), len(got.Rows))
	}
	a, b := keys(ref.Rows), keys(got.Rows)
	if !ordered {
		byKey := func(x, y rowKey) int { return strings.Compare(x.key, y.key) }
		slices.SortFunc(a, byKey)
		slices.SortFunc(b, byKey)
	}
	for i := range a {
		if a[i].key != b[i].key {
			return fmt.Sprintf("row %d: reference %s, pgshard %s", i, a[i], b[i])
		}
	}
	return ""
}

// rowKey is a row encoded so that two rows are equal exactly when their
// keys are: every value length-prefixed, NULL distinct from every value.
type rowKey struct {
	key string
	row [][]byte
}

func (k rowKey) String() string {
	var b strings.Builder
	b.WriteByte('(')
	for i, v := range k.row {
		if i > 0 {
			b.WriteString(", ")
		}
		if v == nil {
			b.WriteString("NULL")
		} else {
			fmt.Fprintf(&b, "%q", v)
		}
	}
	b.WriteByte(')')
	return b.String()
}

func keys(rows [][][]byte) []rowKey {
	out := make([]rowKey, len(rows))
	var b strings.Builder
	for i, r := range rows {
		b.Reset()
		for _, v := range r {
			if v == nil {
				b.WriteString("N;")
				continue
			}
			b.WriteString("V" + strconv.Itoa(len(v)) + ":")
			b.Write(v)
		}
		out[i] = rowKey{key: b.String(), row: r}
	}
	return out
}
