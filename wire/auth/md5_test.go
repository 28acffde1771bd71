package auth

import "testing"

func TestMD5Verifier(t *testing.T) {
	// Stored by PostgreSQL 15 for CREATE ROLE m PASSWORD 'secret' with
	// password_encryption = 'md5'.
	const pg = "md5b52328d7451bfeace80c4b8c338106f9"
	if got := MD5Verifier("m", "secret"); got != pg {
		t.Errorf("MD5Verifier = %q, want %q", got, pg)
	}
	if err := ValidateMD5Verifier(pg); err != nil {
		t.Errorf("ValidateMD5Verifier(%q): %v", pg, err)
	}
}

func TestValidateMD5VerifierErrors(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"plain text", "secret"},
		{"prefix only", "md5"},
		{"upper-case hex", "md5B52328D7451BFEACE80C4B8C338106F9"},
		{"upper-case prefix", "MD5b52328d7451bfeace80c4b8c338106f9"},
		{"short", "md5b52328d7451bfeace80c4b8c338106f"},
		{"long", "md5b52328d7451bfeace80c4b8c338106f90"},
		{"non-hex", "md5g52328d7451bfeace80c4b8c338106f9"},
		{"NUL", "md5b52328d7451bfeace80c4b8c338106\x00"},
		{"SCRAM", "SCRAM-SHA-256$4096:c2FsdA==$a:b"},
	}
	for _, tc := range tests {
		if err := ValidateMD5Verifier(tc.in); err == nil {
			t.Errorf("%s: ValidateMD5Verifier(%q) succeeded", tc.name, tc.in)
		}
	}
}

func TestMD5Response(t *testing.T) {
	// What libpq sends for user "m", password "secret", salt 01 02 03 04:
	// "md5" + md5(md5(password+user) hex + salt) hex.
	got := md5Response(MD5Verifier("m", "secret"), [4]byte{1, 2, 3, 4})
	if len(got) != md5VerifierLen || got[:3] != "md5" {
		t.Fatalf("md5Response = %q", got)
	}
	if got == md5Response(MD5Verifier("m", "secret"), [4]byte{1, 2, 3, 5}) {
		t.Error("salt does not change the response")
	}
}

func TestParseMethod(t *testing.T) {
	for in, want := range map[string]Method{"scram-sha-256": SCRAMSHA256, " MD5 ": MD5, "trust": Trust} {
		got, err := ParseMethod(in)
		if err != nil || got != want {
			t.Errorf("ParseMethod(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "password", "scram", "cert", "md5 trust"} {
		if _, err := ParseMethod(in); err == nil {
			t.Errorf("ParseMethod(%q) succeeded", in)
		}
	}
}

func TestParseCredential(t *testing.T) {
	c, err := ParseCredential(pgSCRAMVectors[0].stored)
	if err != nil || c.SCRAM == nil || c.MD5 != "" {
		t.Errorf("SCRAM: %+v, %v", c, err)
	}
	c, err = ParseCredential("md5b52328d7451bfeace80c4b8c338106f9")
	if err != nil || c.SCRAM != nil || c.MD5 == "" {
		t.Errorf("md5: %+v, %v", c, err)
	}
	for _, in := range []string{"", "secret", "md5xyz", "SCRAM-SHA-256$1:AA==$AA==:AA=="} {
		if _, err := ParseCredential(in); err == nil {
			t.Errorf("ParseCredential(%q) succeeded", in)
		}
	}
}
