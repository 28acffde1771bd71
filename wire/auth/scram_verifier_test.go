package auth

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"testing/iotest"
)

// Verifiers stored by PostgreSQL 15.x for known passwords (initdb +
// CREATE ROLE ... PASSWORD with password_encryption = 'scram-sha-256',
// then SELECT rolpassword FROM pg_authid). Recomputing them in Go from
// their salt and iteration count must give identical keys.
var pgSCRAMVectors = []struct {
	name, password, stored string
}{
	{
		name:     "ASCII",
		password: "secret",
		stored:   "SCRAM-SHA-256$4096:qhAPPasNRx9sdbCSnp4MAw==$JnmKCbD6sAQIJh0s2D6DJEhSHuxdmurLVvOOHAnIgy4=:O3Knqf6X/LFapLV2EIwurC/CigqaAndQyPCKn0Hjs00=",
	},
	{
		name:     "non-ASCII, NFKC no-op",
		password: "pässwörd",
		stored:   "SCRAM-SHA-256$4096:+V1cYJ8Cu+MaVm0A08QaGw==$p5ig1rS6gDxMg5AUoiQ7DrpYkIXbTLd1b9URvx0dmfA=:23LiNrMHATte+Klaul5cUngN24aQw3DKlRlU3luYvzE=",
	},
	{
		name:     "soft hyphen mapped to nothing by SASLprep",
		password: "I\u00adX",
		stored:   "SCRAM-SHA-256$4096:36ATujshzfl9klaMrkvPVw==$HQR4PWv2tE8uej93+dYBqseRROCneqrMqf9sQux1FI4=:bXmLGOE14fM5PfVh5C6xsrQvTnzqaLAfcKJvHwavtqw=",
	},
	{
		name:     "prohibited control character used raw",
		password: "a\u0007b",
		stored:   "SCRAM-SHA-256$4096:b9rA5JyglXCGsYiiabg42Q==$ibdhh/WmEuoA/J6NBq2KqwLdDyAMkiq+o7z9iBKwGVM=:W+VIKVdRQIo3OEt1BRYhzvQsMaQkwkYmbqoT09PfAFU=",
	},
}

func TestSCRAMVerifierMatchesPostgreSQL(t *testing.T) {
	for _, tc := range pgSCRAMVectors {
		t.Run(tc.name, func(t *testing.T) {
			pg, err := ParseSCRAMVerifier(tc.stored)
			if err != nil {
				t.Fatal(err)
			}
			got, err := scramVerifierWithSalt(tc.password, pg.Salt, pg.Iterations)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.stored {
				t.Errorf("Go verifier differs from PostgreSQL's\n got %s\nwant %s", got, tc.stored)
			}
			// Same through the public constructor with the salt as rand.
			got2, err := NewSCRAMVerifier(tc.password, bytes.NewReader(pg.Salt), pg.Iterations)
			if err != nil {
				t.Fatal(err)
			}
			if got2.String() != tc.stored {
				t.Errorf("NewSCRAMVerifier = %s, want %s", got2, tc.stored)
			}
		})
	}
}

func TestSCRAMVerifierRoundTrip(t *testing.T) {
	for _, tc := range pgSCRAMVectors {
		v, err := ParseSCRAMVerifier(tc.stored)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := v.String(); got != tc.stored {
			t.Errorf("%s: String() = %q, want %q", tc.name, got, tc.stored)
		}
	}
	v, err := NewSCRAMVerifier("pw", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if v.Iterations != DefaultIterations || len(v.Salt) != SaltLen {
		t.Errorf("defaults: iterations %d salt %d bytes", v.Iterations, len(v.Salt))
	}
	back, err := ParseSCRAMVerifier(v.String())
	if err != nil {
		t.Fatal(err)
	}
	if back.String() != v.String() {
		t.Errorf("round trip changed verifier")
	}
}

func TestParseSCRAMVerifierErrors(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	short := base64.StdEncoding.EncodeToString(make([]byte, 31))
	good := "SCRAM-SHA-256$4096:c2FsdA==$" + key + ":" + key
	if _, err := ParseSCRAMVerifier(good); err != nil {
		t.Fatalf("baseline %q: %v", good, err)
	}
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"plain text password", "secret"},
		{"md5 verifier", "md5b52328d7451bfeace80c4b8c338106f9"},
		{"SHA-1 mechanism", "SCRAM-SHA-1$4096:c2FsdA==$" + key + ":" + key},
		{"lower-case prefix", "scram-sha-256$4096:c2FsdA==$" + key + ":" + key},
		{"no keys", "SCRAM-SHA-256$4096:c2FsdA=="},
		{"no salt separator", "SCRAM-SHA-256$4096$" + key + ":" + key},
		{"no key separator", "SCRAM-SHA-256$4096:c2FsdA==$" + key + key},
		{"extra dollar", good + "$"},
		{"extra colon in keys", good + ":" + key},
		{"zero iterations", "SCRAM-SHA-256$0:c2FsdA==$" + key + ":" + key},
		{"negative iterations", "SCRAM-SHA-256$-1:c2FsdA==$" + key + ":" + key},
		{"plus sign iterations", "SCRAM-SHA-256$+4096:c2FsdA==$" + key + ":" + key},
		{"iterations over int32", "SCRAM-SHA-256$2147483648:c2FsdA==$" + key + ":" + key},
		{"iterations 2^64", "SCRAM-SHA-256$18446744073709551616:c2FsdA==$" + key + ":" + key},
		{"hex iterations", "SCRAM-SHA-256$0x10:c2FsdA==$" + key + ":" + key},
		{"space in iterations", "SCRAM-SHA-256$ 4096:c2FsdA==$" + key + ":" + key},
		{"empty iterations", "SCRAM-SHA-256$:c2FsdA==$" + key + ":" + key},
		{"empty salt", "SCRAM-SHA-256$4096:$" + key + ":" + key},
		{"salt not base64", "SCRAM-SHA-256$4096:s@lt$" + key + ":" + key},
		{"salt unpadded", "SCRAM-SHA-256$4096:c2FsdA$" + key + ":" + key},
		{"salt non-canonical bits", "SCRAM-SHA-256$4096:c2FsdB==$" + key + ":" + key},
		{"salt URL alphabet", "SCRAM-SHA-256$4096:-_-_$" + key + ":" + key},
		{"StoredKey 31 bytes", "SCRAM-SHA-256$4096:c2FsdA==$" + short + ":" + key},
		{"ServerKey 31 bytes", "SCRAM-SHA-256$4096:c2FsdA==$" + key + ":" + short},
		{"empty ServerKey", "SCRAM-SHA-256$4096:c2FsdA==$" + key + ":"},
		{"newline in key", "SCRAM-SHA-256$4096:c2FsdA==$" + key[:10] + "\n" + key[10:] + ":" + key},
		{"NUL byte", "SCRAM-SHA-256$4096:c2FsdA==\x00$" + key + ":" + key},
		{"trailing newline", good + "\n"},
		{"huge input", "SCRAM-SHA-256$4096:" + strings.Repeat("A", 1<<20) + "$" + key + ":" + key},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSCRAMVerifier(tc.in)
			if err == nil {
				t.Fatalf("ParseSCRAMVerifier(%q) succeeded", tc.in)
			}
			if len(tc.in) > 20 && strings.Contains(err.Error(), tc.in) {
				t.Errorf("error echoes the secret: %v", err)
			}
		})
	}
}

func TestNewSCRAMVerifierErrors(t *testing.T) {
	readErr := errors.New("entropy exhausted")
	if _, err := NewSCRAMVerifier("pw", iotest.ErrReader(readErr), 0); !errors.Is(err, readErr) {
		t.Errorf("rand failure: err = %v, want wrapping %v", err, readErr)
	}
	if _, err := NewSCRAMVerifier("pw", nil, -1); err == nil {
		t.Error("negative iterations accepted")
	}
	a, _ := NewSCRAMVerifier("pw", nil, 1)
	b, _ := NewSCRAMVerifier("pw", nil, 1)
	if bytes.Equal(a.Salt, b.Salt) {
		t.Error("two verifiers got the same salt")
	}
}

func TestSASLPrep(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"ASCII unchanged", "secret", "secret"},
		{"ASCII control kept", "a\x07b", "a\x07b"},
		{"soft hyphen removed", "I\u00adX", "IX"},
		{"non-ASCII space mapped", "a\u00a0b", "a b"},
		{"NFKC", "\u2168", "IX"},
		{"invalid UTF-8 raw", "a\xffb", "a\xffb"},
		{"prohibited raw", "a\u0007\u00e9", "a\u0007\u00e9"},
		{"bidi violation raw", "\u0627a", "\u0627a"},
	}
	for _, tc := range tests {
		if got := saslPrep(tc.in); got != tc.want {
			t.Errorf("%s: saslPrep(%q) = %q, want %q", tc.name, tc.in, got, tc.want)
		}
	}
}
