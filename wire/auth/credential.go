package auth

import (
	"errors"
	"fmt"
	"strings"
)

// Credential holds the stored verifiers of one user. The zero Credential
// means the user is unknown or has no password; Authenticate then runs a
// fake SCRAM exchange that always fails.
type Credential struct {
	SCRAM *SCRAMVerifier // nil if the user has no SCRAM verifier
	MD5   string         // md5 verifier as from MD5Verifier; "" if none
}

// ParseCredential parses one stored verifier in either of PostgreSQL's
// formats (as in pg_authid.rolpassword) into a Credential.
func ParseCredential(s string) (Credential, error) {
	switch {
	case strings.HasPrefix(s, scramPrefix):
		v, err := ParseSCRAMVerifier(s)
		if err != nil {
			return Credential{}, err
		}
		return Credential{SCRAM: &v}, nil
	case strings.HasPrefix(s, md5Prefix):
		if err := ValidateMD5Verifier(s); err != nil {
			return Credential{}, err
		}
		return Credential{MD5: s}, nil
	default:
		// Plain-text passwords are refused on purpose: only verifiers
		// are stored.
		return Credential{}, errors.New("auth: parse credential: not a SCRAM-SHA-256 or md5 verifier")
	}
}

// validate checks that whatever verifiers are set are well formed.
func (c Credential) validate() error {
	if c.SCRAM != nil {
		if err := c.SCRAM.validate(); err != nil {
			return fmt.Errorf("SCRAM verifier: %w", err)
		}
	}
	if c.MD5 != "" {
		if err := validateMD5Verifier(c.MD5); err != nil {
			return fmt.Errorf("md5 verifier: %w", err)
		}
	}
	return nil
}
