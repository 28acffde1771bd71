package auth

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/xdg-go/stringprep"
)

// SCRAM verifier parameters, as in PostgreSQL.
const (
	// DefaultIterations is the PBKDF2 iteration count NewSCRAMVerifier uses
	// when given 0, PostgreSQL's default scram_iterations.
	DefaultIterations = 4096
	// SaltLen is the salt length NewSCRAMVerifier generates.
	SaltLen = 16

	scramKeyLen    = sha256.Size
	scramPrefix    = "SCRAM-SHA-256$"
	maxIterations  = math.MaxInt32
	maxVerifierLen = 1024 // far above any real verifier; bounds parsing work
)

// SCRAMVerifier is a stored SCRAM-SHA-256 secret: what the server needs to
// check a client's proof and to prove itself, without the password.
type SCRAMVerifier struct {
	Iterations int    // PBKDF2 iteration count, > 0
	Salt       []byte // raw salt, non-empty
	StoredKey  []byte // H(HMAC(SaltedPassword, "Client Key")), 32 bytes
	ServerKey  []byte // HMAC(SaltedPassword, "Server Key"), 32 bytes
}

// ParseSCRAMVerifier parses a verifier in PostgreSQL's pg_authid format
//
//	SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
//
// with standard, padded base64. It is strict: the iteration count is
// decimal digits only, base64 must be canonical and the keys 32 bytes.
func ParseSCRAMVerifier(s string) (SCRAMVerifier, error) {
	v, err := parseSCRAMVerifier(s)
	if err != nil {
		// Never echo s: it is a secret.
		return SCRAMVerifier{}, fmt.Errorf("auth: parse SCRAM verifier: %w", err)
	}
	return v, nil
}

func parseSCRAMVerifier(s string) (SCRAMVerifier, error) {
	if len(s) > maxVerifierLen {
		return SCRAMVerifier{}, errors.New("too long")
	}
	rest, ok := strings.CutPrefix(s, scramPrefix)
	if !ok {
		return SCRAMVerifier{}, errors.New("missing \"SCRAM-SHA-256$\" prefix")
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return SCRAMVerifier{}, errors.New("missing '$' before keys")
	}
	iterStr, saltStr, ok := strings.Cut(params, ":")
	if !ok {
		return SCRAMVerifier{}, errors.New("missing ':' between iterations and salt")
	}
	storedStr, serverStr, ok := strings.Cut(keys, ":")
	if !ok {
		return SCRAMVerifier{}, errors.New("missing ':' between StoredKey and ServerKey")
	}

	iter, err := parseIterations(iterStr)
	if err != nil {
		return SCRAMVerifier{}, err
	}
	var v SCRAMVerifier
	v.Iterations = iter
	if v.Salt, err = decodeB64(saltStr, "salt"); err != nil {
		return SCRAMVerifier{}, err
	}
	if v.StoredKey, err = decodeB64(storedStr, "StoredKey"); err != nil {
		return SCRAMVerifier{}, err
	}
	if v.ServerKey, err = decodeB64(serverStr, "ServerKey"); err != nil {
		return SCRAMVerifier{}, err
	}
	if err := v.validate(); err != nil {
		return SCRAMVerifier{}, err
	}
	return v, nil
}

func parseIterations(s string) (int, error) {
	if s == "" || len(s) > 10 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errors.New("iteration count is not a decimal number")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("iteration count: %w", err)
	}
	if n < 1 || n > maxIterations {
		return 0, fmt.Errorf("iteration count %d out of range [1, %d]", n, maxIterations)
	}
	return int(n), nil
}

// decodeB64 decodes canonical, padded standard base64. It rejects the
// CR and LF that encoding/base64 would otherwise skip.
func decodeB64(s, what string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=') {
			return nil, fmt.Errorf("%s is not valid base64: bad byte at offset %d", what, i)
		}
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%s is not valid base64: %w", what, err)
	}
	return b, nil
}

// validate checks the invariants documented on the fields.
func (v SCRAMVerifier) validate() error {
	switch {
	case v.Iterations < 1 || v.Iterations > maxIterations:
		return fmt.Errorf("iteration count %d out of range [1, %d]", v.Iterations, maxIterations)
	case len(v.Salt) == 0:
		return errors.New("empty salt")
	case len(v.StoredKey) != scramKeyLen:
		return fmt.Errorf("StoredKey is %d bytes, want %d", len(v.StoredKey), scramKeyLen)
	case len(v.ServerKey) != scramKeyLen:
		return fmt.Errorf("ServerKey is %d bytes, want %d", len(v.ServerKey), scramKeyLen)
	}
	return nil
}

// String formats v in PostgreSQL's pg_authid format, the inverse of
// ParseSCRAMVerifier. The result is a secret (it allows offline guessing
// of the password); store it, do not log it.
func (v SCRAMVerifier) String() string {
	enc := base64.StdEncoding
	return scramPrefix + strconv.Itoa(v.Iterations) + ":" + enc.EncodeToString(v.Salt) +
		"$" + enc.EncodeToString(v.StoredKey) + ":" + enc.EncodeToString(v.ServerKey)
}

// NewSCRAMVerifier computes the SCRAM-SHA-256 verifier of password with a
// fresh SaltLen-byte salt read from rand (crypto/rand when nil) and the
// given iteration count (DefaultIterations when 0). The password is
// normalised with SASLprep exactly as PostgreSQL does, so the result is
// interchangeable with what PostgreSQL stores for the same password and
// salt.
func NewSCRAMVerifier(password string, rand io.Reader, iterations int) (SCRAMVerifier, error) {
	if rand == nil {
		rand = cryptoRand
	}
	salt := make([]byte, SaltLen)
	if _, err := io.ReadFull(rand, salt); err != nil {
		return SCRAMVerifier{}, fmt.Errorf("auth: new SCRAM verifier: read salt: %w", err)
	}
	v, err := scramVerifierWithSalt(password, salt, iterations)
	if err != nil {
		return SCRAMVerifier{}, fmt.Errorf("auth: new SCRAM verifier: %w", err)
	}
	return v, nil
}

var cryptoRand io.Reader = rand.Reader

// scramVerifierWithSalt derives the verifier for a given salt (RFC 5802
// section 3, RFC 7677).
func scramVerifierWithSalt(password string, salt []byte, iterations int) (SCRAMVerifier, error) {
	if iterations == 0 {
		iterations = DefaultIterations
	}
	if iterations < 1 || iterations > maxIterations {
		return SCRAMVerifier{}, fmt.Errorf("iteration count %d out of range [1, %d]", iterations, maxIterations)
	}
	if len(salt) == 0 {
		return SCRAMVerifier{}, errors.New("empty salt")
	}
	salted, err := pbkdf2.Key(sha256.New, saslPrep(password), salt, iterations, scramKeyLen)
	if err != nil {
		return SCRAMVerifier{}, fmt.Errorf("derive salted password: %w", err)
	}
	clientKey := hmacSHA256(salted, []byte("Client Key"))
	storedKey := sha256.Sum256(clientKey)
	return SCRAMVerifier{
		Iterations: iterations,
		Salt:       append([]byte(nil), salt...),
		StoredKey:  storedKey[:],
		ServerKey:  hmacSHA256(salted, []byte("Server Key")),
	}, nil
}

// saslPrep normalises a password the way PostgreSQL's pg_saslprep is used
// by the server: pure ASCII is used as is, otherwise RFC 4013 SASLprep is
// applied, and when that fails (invalid UTF-8, prohibited or unassigned
// characters) the raw password is used.
func saslPrep(password string) string {
	ascii := true
	for i := 0; i < len(password); i++ {
		if password[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii || !utf8.ValidString(password) {
		return password
	}
	prepped, err := stringprep.SASLprep.Prepare(password)
	if err != nil {
		return password
	}
	return prepped
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}
