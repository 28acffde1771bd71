package copysplit

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pgshard/pgshard/wire"
)

// SQLSTATEs the splitter reports.

// maxDisplay is PostgreSQL's MAX_COPY_DATA_DISPLAY: how many bytes of a
// line or value an error context quotes before it adds "...".
const maxDisplay = 100

// Error is a COPY error worded as PostgreSQL 15 words it. The proxy sends
// Code, Message and Hint in the client's ErrorResponse, and Where(table)
// as its CONTEXT (the "W" field), which PostgreSQL words
// `COPY users, line 3: "1	2	3"`.
type Error struct {
	Code    string // SQLSTATE
	Message string // primary message
	Detail  string // "" when none
	Hint    string // "" when none
	// Line is PostgreSQL's line counter at the error: text and csv count
	// lines from 1 (a header line included, and newlines inside quoted csv
	// fields as PostgreSQL counts them); binary counts tuples from 1. 0
	// means the error has no context, as for option and binary header
	// errors.
	Line int64
	// Column is the column the context names ("column id"), "" when it
	// names none. It is the name given WithColumnNames, else "#n" with n
	// the 1-based position in the COPY column list.
	Column string
	// Data is the text the context quotes, already shortened like
	// PostgreSQL does (100 bytes, then "..."): the line without its
	// terminator for a malformed line, or the column's value for an error
	// about a column. HasData says whether there is any; Null is set
	// instead when the column's value is NULL ("null input").
	Data    string
	HasData bool
	Null    bool
	// Err is the error the route callback returned, when it caused this one.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	s := e.Message + " (SQLSTATE " + e.Code + ")"
	if c := e.context(); c != "" {
		s += "; " + c
	}
	return s
}

// SQLState returns the error's SQLSTATE, the method the proxy looks for
// with errors.As.
func (e *Error) SQLState() string { return e.Code }

// Unwrap returns the route callback's error, if any.
func (e *Error) Unwrap() error { return e.Err }

// Where returns the CONTEXT line PostgreSQL would send for this error in
// COPY into table, e.g. `COPY users, line 3, column id: "x"`, or "" when
// PostgreSQL sends none.
func (e *Error) Where(table string) string {
	c := e.context()
	if c == "" {
		return ""
	}
	return "COPY " + table + ", " + c
}

// context is Where without its "COPY table, " prefix.
func (e *Error) context() string {
	if e.Line <= 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("line ")
	b.WriteString(strconv.FormatInt(e.Line, 10))
	if e.Column != "" {
		b.WriteString(", column ")
		b.WriteString(e.Column)
	}
	switch {
	case e.Null:
		b.WriteString(": null input")
	case e.HasData:
		b.WriteString(`: "`)
		b.WriteString(e.Data)
		b.WriteString(`"`)
	}
	return b.String()
}

// InvalidInput returns the error PostgreSQL reports for a value that its
// type's input function rejects, such as `invalid input syntax for type
// bigint: "abc"` (22P02). A route callback may return it for a key it
// cannot decode; the splitter adds the line and column context.
func InvalidInput(typeName string, value []byte) *Error {
	return &Error{Code: wire.SQLStateInvalidTextRepresentation,
		Message: fmt.Sprintf("invalid input syntax for type %s: %q", typeName, string(value))}
}

// display shortens b like PostgreSQL's limit_printout_length: at most 100
// bytes, cut at a UTF-8 character boundary, then "...".
func display(b []byte) string {
	if len(b) <= maxDisplay {
		return string(b)
	}
	n := maxDisplay
	for n > 0 && n > maxDisplay-utf8.UTFMax && !utf8.RuneStart(b[n]) {
		n--
	}
	return string(b[:n]) + "..."
}

// formatError returns a 22P04 error at line with no quoted text.
func formatError(line int64, msg, hint string) *Error {
	return &Error{Code: wire.SQLStateBadCopyFileFormat, Message: msg, Hint: hint, Line: line}
}

// lineError returns a 22P04 error quoting the line's data.
func lineError(line int64, data []byte, msg string) *Error {
	return &Error{Code: wire.SQLStateBadCopyFileFormat, Message: msg, Line: line, Data: display(data), HasData: true}
}

// routeError wraps the route callback's error with the key's context: the
// SQLSTATE, message, detail and hint of an error that has them (an
// *Error, or any error with a SQLState method such as pgconn.PgError),
// else internal_error.
func routeError(err error, line int64, column string, key []byte, null, binary bool) *Error {
	e := &Error{Code: wire.SQLStateInternalError, Message: err.Error(), Line: line, Column: column, Err: err}
	var ce *Error
	var st interface{ SQLState() string }
	switch {
	case errors.As(err, &ce):
		e.Code, e.Message, e.Detail, e.Hint = ce.Code, ce.Message, ce.Detail, ce.Hint
	case errors.As(err, &st):
		e.Code = st.SQLState()
	}
	switch {
	case binary:
		// PostgreSQL quotes no value for binary columns.
	case null:
		e.Null = true
	default:
		e.Data, e.HasData = display(key), true
	}
	return e
}
