package auth

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgshard/pgshard/wire"
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

// FuzzAuthenticate feeds arbitrary client bytes to an md5 and a SCRAM
// exchange over a FrameConn: it must never panic, never accept, and fail
// either with an *Error (sent to the client as an ErrorResponse) or with
// the connection's I/O error.
func FuzzAuthenticate(f *testing.F) {
	f.Add(false, wire.AppendString(nil, 'p', "md5"+strings.Repeat("0", 32)))
	initial, _ := (&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=abcdefghijklmnopqrstuvwx")}).Encode(nil)
	f.Add(true, initial)
	f.Add(true, append(initial, 'p', 0, 0, 0, 9, 'c', '=', 'b', 'i', 'w'))
	f.Add(true, []byte{'X', 0, 0, 0, 4})
	f.Add(false, []byte{'Q', 0, 0, 0, 9, 's', 'e', 'l', 'e', 0})
	f.Add(false, []byte{'p', 0xff, 0xff, 0xff, 0xff})
	f.Add(true, []byte{'p', 0, 0, 0, 2})
	scram, err := NewSCRAMVerifier("pw", nil, 16)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, useSCRAM bool, in []byte) {
		method, cred := MD5, Credential{MD5: MD5Verifier("bob", "pw")}
		if useSCRAM {
			method, cred = SCRAMSHA256, Credential{SCRAM: &scram}
		}
		fc := NewFrameConn(wire.NewFrameReader(bufio.NewReader(bytes.NewReader(in)), 65535), io.Discard)
		err := Authenticate(context.Background(), fc, method, "bob", cred, Options{})
		if err == nil {
			t.Fatalf("accepted %q", in)
		}
		var ae *Error
		if !errors.As(err, &ae) && !isIOError(err) {
			t.Fatalf("error is neither an auth error nor an I/O error: %v", err)
		}
	})
}
