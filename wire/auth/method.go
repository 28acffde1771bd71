package auth

import (
	"fmt"
	"strings"
)

// Method is a client authentication method, named as in pg_hba.conf.
type Method string

// Supported authentication methods.
const (
	// SCRAMSHA256 is SASL SCRAM-SHA-256, with SCRAM-SHA-256-PLUS channel
	// binding offered when the connection uses TLS.
	SCRAMSHA256 Method = "scram-sha-256"
	// MD5 is the md5 challenge-response. As in PostgreSQL, a user whose
	// only verifier is SCRAM is authenticated with SCRAM instead.
	MD5 Method = "md5"
	// Trust accepts the client without any exchange.
	Trust Method = "trust"
)

// ParseMethod parses a method name as written in configuration. It is
// case-insensitive and ignores surrounding spaces.
func ParseMethod(s string) (Method, error) {
	switch m := Method(strings.ToLower(strings.TrimSpace(s))); m {
	case SCRAMSHA256, MD5, Trust:
		return m, nil
	default:
		return "", fmt.Errorf("auth: unknown authentication method %q (want %q, %q or %q)", s, SCRAMSHA256, MD5, Trust)
	}
}

// String returns the method name.
func (m Method) String() string { return string(m) }
