package auth

import (
	"bytes"
	"testing"
)

// FuzzParseSCRAMVerifier checks that ParseSCRAMVerifier never panics, that
// whatever it accepts satisfies the documented invariants, and that String
// and ParseSCRAMVerifier are inverses on accepted values.
func FuzzParseSCRAMVerifier(f *testing.F) {
	for _, tc := range pgSCRAMVectors {
		f.Add(tc.stored)
	}
	f.Add("SCRAM-SHA-256$1:AA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	f.Add("SCRAM-SHA-256$04096:AA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	f.Add("SCRAM-SHA-256$")
	f.Add("md5b52328d7451bfeace80c4b8c338106f9")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSCRAMVerifier(s)
		if err != nil {
			return
		}
		if err := v.validate(); err != nil {
			t.Fatalf("accepted %q violating invariants: %v", s, err)
		}
		out := v.String()
		back, err := ParseSCRAMVerifier(out)
		if err != nil {
			t.Fatalf("String() of accepted %q does not parse: %q: %v", s, out, err)
		}
		if back.Iterations != v.Iterations || !bytes.Equal(back.Salt, v.Salt) ||
			!bytes.Equal(back.StoredKey, v.StoredKey) || !bytes.Equal(back.ServerKey, v.ServerKey) {
			t.Fatalf("round trip of %q changed the verifier: %q", s, out)
		}
		if back.String() != out {
			t.Fatalf("String is not canonical: %q then %q", out, back.String())
		}
	})
}
