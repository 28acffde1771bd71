package auth

import (
	"crypto/md5" // md5 is the protocol here, not a choice
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

const (
	md5Prefix      = "md5"
	md5VerifierLen = len(md5Prefix) + 2*md5.Size
)

// MD5Verifier returns the md5 verifier PostgreSQL stores for user with
// password: "md5" followed by hex(md5(password + user)). The result is
// password-equivalent for the md5 method; store it, do not log it.
func MD5Verifier(user, password string) string {
	sum := md5.Sum([]byte(password + user))
	return md5Prefix + hex.EncodeToString(sum[:])
}

// ValidateMD5Verifier reports whether s is an md5 verifier in the form
// PostgreSQL recognises: "md5" followed by 32 lowercase hex digits.
func ValidateMD5Verifier(s string) error {
	if err := validateMD5Verifier(s); err != nil {
		// Never echo s: it is a secret.
		return fmt.Errorf("auth: parse md5 verifier: %w", err)
	}
	return nil
}

func validateMD5Verifier(s string) error {
	if !strings.HasPrefix(s, md5Prefix) {
		return errors.New("missing \"md5\" prefix")
	}
	if len(s) != md5VerifierLen {
		return fmt.Errorf("length %d, want %d", len(s), md5VerifierLen)
	}
	for i := len(md5Prefix); i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return errors.New("not lowercase hex after \"md5\"")
		}
	}
	return nil
}

// md5Response computes what a client that knows the password sends for
// the given verifier and salt: "md5" + hex(md5(hex-part-of-verifier + salt)).
func md5Response(verifier string, salt [4]byte) string {
	h := md5.New()
	h.Write([]byte(verifier[len(md5Prefix):]))
	h.Write(salt[:])
	return md5Prefix + hex.EncodeToString(h.Sum(nil))
}
