package wire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Error is an error the proxy reports to a client as an ErrorResponse.
type Error struct {
	Severity string // "ERROR" or "FATAL"; empty means "ERROR"
	Code     string // SQLSTATE
	Message  string
	Detail   string
	Hint     string
	Where    string // context ("COPY users, line 3"); "" when none
	Err      error  // underlying cause, never sent to the client
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s (%s): %v", e.Message, e.Code, e.Err)
	}
	return fmt.Sprintf("%s (%s)", e.Message, e.Code)
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an ERROR-severity *Error with the given SQLSTATE.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Fatalf returns a FATAL-severity *Error with the given SQLSTATE.
func Fatalf(code, format string, args ...any) *Error {
	return &Error{Severity: "FATAL", Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError returns err as an *Error when it is one (or wraps one), else an
// internal error with a generic message so no internals leak to clients.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: SQLStateInternalError, Message: "internal error in pgshard", Err: err}
}

// AppendErrorResponse appends e as an ErrorResponse frame to dst.
func AppendErrorResponse(dst []byte, e *Error) []byte {
	sev := e.Severity
	if sev == "" {
		sev = "ERROR"
	}
	msg := pgproto3.ErrorResponse{
		Severity:            sev,
		SeverityUnlocalized: sev,
		Code:                e.Code,
		Message:             e.Message,
		Detail:              e.Detail,
		Hint:                e.Hint,
		Where:               e.Where,
	}
	out, err := msg.Encode(dst)
	if err != nil {
		// Encode only fails on absurd lengths; the fields are ours.
		panic(fmt.Sprintf("wire: encode ErrorResponse: %v", err))
	}
	return out
}

// AppendReadyForQuery appends a ReadyForQuery frame with the given
// transaction status ('I', 'T' or 'E').
func AppendReadyForQuery(dst []byte, status byte) []byte {
	return append(dst, 'Z', 0, 0, 0, 5, status)
}

// AppendParameterStatus appends a ParameterStatus frame.
func AppendParameterStatus(dst []byte, name, value string) []byte {
	out, _ := (&pgproto3.ParameterStatus{Name: name, Value: value}).Encode(dst)
	return out
}

// ErrorCode returns the SQLSTATE (field 'C') of an ErrorResponse or
// NoticeResponse frame (header included), or "" when the frame has none.
func ErrorCode(frame []byte) string { return ErrorField(frame, 'C') }

// ErrorField returns field f of an ErrorResponse or NoticeResponse frame
// (header included), or "" when absent.
func ErrorField(frame []byte, f byte) string {
	if len(frame) < HeaderLen {
		return ""
	}
	b := frame[HeaderLen:]
	for len(b) > 0 && b[0] != 0 {
		field := b[0]
		b = b[1:]
		end := 0
		for end < len(b) && b[end] != 0 {
			end++
		}
		if field == f {
			return string(b[:end])
		}
		if end >= len(b) {
			return ""
		}
		b = b[end+1:]
	}
	return ""
}

// AppendString appends a frame of type typ whose body is one
// NUL-terminated string: Query ('Q') or CommandComplete ('C').
func AppendString(dst []byte, typ byte, s string) []byte {
	start := len(dst)
	dst = append(dst, typ, 0, 0, 0, 0)
	dst = append(dst, s...)
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}
