package auth

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgshard/pgshard/wire"
)

// Error is an authentication failure to report to the client. Message is
// safe to send (it is what PostgreSQL would send); Err holds the internal
// cause for logs and is never sent. Neither contains a password.
type Error struct {
	Code    string // SQLSTATE: wire.SQLStateInvalidPassword or wire.SQLStateProtocolViolation
	Message string // client-visible message
	Err     error  // internal cause; may be nil
}

// Error implements the error interface.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("auth: %s (SQLSTATE %s): %v", e.Message, e.Code, e.Err)
	}
	return fmt.Sprintf("auth: %s (SQLSTATE %s)", e.Message, e.Code)
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Err }

// ErrorResponse returns the FATAL ErrorResponse the caller should send to
// the client before closing the connection. It carries only Code and
// Message, never the internal cause.
func (e *Error) ErrorResponse() *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{
		Severity:            "FATAL",
		SeverityUnlocalized: "FATAL",
		Code:                e.Code,
		Message:             e.Message,
	}
}

// authFailed returns the error PostgreSQL reports for any failed password
// check, whatever the cause, so the client learns nothing more.
func authFailed(user string, cause error) *Error {
	return &Error{
		Code:    wire.SQLStateInvalidPassword,
		Message: fmt.Sprintf("password authentication failed for user %q", user),
		Err:     cause,
	}
}

// protocolViolation returns a 08P01 error with a client-visible message.
func protocolViolation(cause error, format string, args ...any) *Error {
	return &Error{
		Code:    wire.SQLStateProtocolViolation,
		Message: fmt.Sprintf(format, args...),
		Err:     cause,
	}
}
