package wire

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Startup packet codes (the int32 after the length in an untyped packet).
const (
	ProtocolVersion30  = 196608   // 3.0
	ProtocolVersion32  = 196610   // 3.2
	sslRequestCode     = 80877103 // SSLRequest
	gssEncRequestCode  = 80877104 // GSSENCRequest
	cancelRequestCode  = 80877102 // CancelRequest
	maxStartupPacketSz = 10000    // PostgreSQL's MAX_STARTUP_PACKET_LENGTH
)

// StartupKind says which untyped packet a client sent first.
type StartupKind int

// Kinds of startup packet.
const (
	KindStartup StartupKind = iota + 1
	KindSSLRequest
	KindGSSENCRequest
	KindCancelRequest
)

// Startup is a decoded untyped packet. Exactly one of the pointer fields is
// set, according to Kind.
type Startup struct {
	Kind    StartupKind
	Message *pgproto3.StartupMessage // KindStartup
	Cancel  *pgproto3.CancelRequest  // KindCancelRequest

	// Negotiate is set when the client asked for a newer 3.x minor version
	// or sent protocol options (_pq_.*): the server must answer with
	// NegotiateProtocolVersion before authentication.
	Negotiate *pgproto3.NegotiateProtocolVersion
}

// ReadStartup reads one untyped startup packet from r. Errors are *Error
// values with SQLSTATE 08P01 (or 0A000 for unsupported protocol versions)
// when the client sent something invalid, or the raw I/O error.
func ReadStartup(r io.Reader) (Startup, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Startup{}, fmt.Errorf("read startup length: %w", err)
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[:])))
	if n < 8 || n > maxStartupPacketSz {
		return Startup{}, Fatalf(SQLStateProtocolViolation, "invalid length of startup packet")
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return Startup{}, fmt.Errorf("read startup packet: %w", unexpected(err))
	}
	return DecodeStartup(body)
}

// DecodeStartup decodes the body of an untyped startup packet (everything
// after the length word).
func DecodeStartup(body []byte) (Startup, error) {
	if len(body) < 4 {
		return Startup{}, Fatalf(SQLStateProtocolViolation, "invalid length of startup packet")
	}
	code := binary.BigEndian.Uint32(body)
	switch code {
	case sslRequestCode:
		if len(body) != 4 {
			return Startup{}, Fatalf(SQLStateProtocolViolation, "invalid length of SSLRequest")
		}
		return Startup{Kind: KindSSLRequest}, nil
	case gssEncRequestCode:
		if len(body) != 4 {
			return Startup{}, Fatalf(SQLStateProtocolViolation, "invalid length of GSSENCRequest")
		}
		return Startup{Kind: KindGSSENCRequest}, nil
	case cancelRequestCode:
		var c pgproto3.CancelRequest
		if err := c.Decode(body); err != nil {
			return Startup{}, &Error{Severity: "FATAL", Code: SQLStateProtocolViolation, Message: "invalid CancelRequest", Err: err}
		}
		return Startup{Kind: KindCancelRequest, Cancel: &c}, nil
	}
	major := code >> 16
	if major != 3 {
		return Startup{}, Fatalf(SQLStateFeatureNotSupported,
			"unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", major, code&0xffff)
	}
	if len(body) == 5 && body[4] == 0 { // no parameters at all
		return Startup{}, Fatalf(SQLStateInvalidAuthorization, "no PostgreSQL user name specified in startup packet")
	}
	if err := validateStartupParams(body[4:]); err != nil {
		return Startup{}, err
	}
	// pgproto3 only decodes 3.0 and 3.2; we speak 3.0 and negotiate down.
	v30 := make([]byte, len(body))
	copy(v30, body)
	binary.BigEndian.PutUint32(v30, ProtocolVersion30)
	var m pgproto3.StartupMessage
	if err := m.Decode(v30); err != nil {
		return Startup{}, &Error{Severity: "FATAL", Code: SQLStateProtocolViolation, Message: "invalid startup packet layout", Err: err}
	}
	var neg *pgproto3.NegotiateProtocolVersion
	for k := range m.Parameters {
		if strings.HasPrefix(k, "_pq_.") {
			if neg == nil {
				neg = &pgproto3.NegotiateProtocolVersion{}
			}
			neg.UnrecognizedOptions = append(neg.UnrecognizedOptions, k)
			delete(m.Parameters, k)
		}
	}
	if code&0xffff != 0 && neg == nil {
		neg = &pgproto3.NegotiateProtocolVersion{}
	}
	if neg != nil {
		sort.Strings(neg.UnrecognizedOptions)
	}
	if m.Parameters["user"] == "" {
		return Startup{}, Fatalf(SQLStateInvalidAuthorization, "no PostgreSQL user name specified in startup packet")
	}
	return Startup{Kind: KindStartup, Message: &m, Negotiate: neg}, nil
}

// validateStartupParams checks the name/value list is NUL-terminated pairs
// ending in an empty name, as PostgreSQL requires.
func validateStartupParams(b []byte) error {
	bad := Fatalf(SQLStateProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
	if len(b) == 0 || b[len(b)-1] != 0 {
		return bad
	}
	strs := 0
	start := 0
	for i, c := range b {
		if c != 0 {
			continue
		}
		if i == start && strs%2 == 0 { // empty name: must be the final terminator
			if i != len(b)-1 {
				return bad
			}
			return nil
		}
		strs++
		start = i + 1
	}
	return bad
}
