package pgadmin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseConninfo(t *testing.T) {
	tests := []struct {
		name, in string
		want     conninfo
		err      string // substring of the error; "" for none
	}{
		{"empty", "", nil, ""},
		{"blanks", " \t\n", nil, ""},
		{"plain", "host=a port=5432", conninfo{{"host", "a"}, {"port", "5432"}}, ""},
		{"blanks around =", "host = a\tport\n=\n5432", conninfo{{"host", "a"}, {"port", "5432"}}, ""},
		{"sql-style doubled quote", `application_name='my app' password='it''s'`, nil, `missing "=" after keyword "'s'"`},
		{"quoted escapes", `application_name='my \'app\' \\ x' user=u`, conninfo{{"application_name", `my 'app' \ x`}, {"user", "u"}}, ""},
		{"empty quoted", `password='' user=u`, conninfo{{"password", ""}, {"user", "u"}}, ""},
		{"unquoted escape", `password=a\ b\\c`, conninfo{{"password", `a b\c`}}, ""},
		{"value after quote without blank", `a='x'b=y`, conninfo{{"a", "x"}, {"b", "y"}}, ""},
		// libpq skips blanks after '=' and takes the next word as the value.
		{"empty unquoted takes next word", "host= port=1", conninfo{{"host", "port=1"}}, ""},
		{"value with =", "options=-c\\ a=b", conninfo{{"options", "-c a=b"}}, ""},
		{"missing =", "host a", nil, `missing "=" after keyword "host"`},
		{"trailing keyword", "host=a port", nil, `missing "=" after keyword "port"`},
		{"empty keyword", "=a", nil, "empty keyword"},
		{"unterminated", "password='secret", nil, "unterminated"},
		{"duplicate keys kept in order", "host=a host=b", conninfo{{"host", "a"}, {"host", "b"}}, ""},
		{"uri", "postgresql://us%40r:p%3Ass@db.example:6432/app?sslmode=require&application_name=x%20y",
			conninfo{{"user", "us@r"}, {"password", "p:ss"}, {"host", "db.example"}, {"port", "6432"}, {"dbname", "app"},
				{"sslmode", "require"}, {"application_name", "x y"}}, ""},
		{"uri multi-host ipv6", "postgres://[::1]:5432,h2/", conninfo{{"host", "::1,h2"}, {"port", "5432,"}}, ""},
		{"uri bare", "postgres://", nil, ""},
		{"uri ssl alias", "postgres://h?ssl=true", conninfo{{"host", "h"}, {"sslmode", "require"}}, ""},
		{"uri bad escape", "postgres://u:%zz@h", nil, "percent-encoding"},
		{"uri bad keyword", "postgres://h?a%20b=1", nil, "invalid URI query keyword"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConninfo(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseConninfo(%q) = %v, %v; want error with %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || !got.equal(tt.want) {
				t.Fatalf("parseConninfo(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseConninfoErrorsHideValues(t *testing.T) {
	for _, in := range []string{"password='s3cr3t", "password=s3cr3t x", "postgres://u:s3cr3t%zz@h"} {
		if _, err := parseConninfo(in); err == nil || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("parseConninfo(%q): error %v, want one without the password", in, err)
		}
	}
}

func TestConninfoFormat(t *testing.T) {
	ci := conninfo{{"host", "h"}, {"password", `it's a \ secret`}, {"application_name", ""}, {"user", "u"}}
	want := `host=h password='it\'s a \\ secret' application_name='' user=u`
	if got := ci.String(); got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
	if got, want := ci.Masked(), "host=h password=******** application_name='' user=u"; got != want {
		t.Errorf("Masked() = %s, want %s", got, want)
	}
	back, err := parseConninfo(ci.String())
	if err != nil || !back.equal(ci) {
		t.Errorf("round trip: %q, %v; want %q", back, err, ci)
	}
}

func TestConninfoWithAddr(t *testing.T) {
	tests := []struct{ in, addr, want string }{
		{"user=u host=old port=1 application_name=r1", "10.0.0.2:5433", "user=u host=10.0.0.2 port=5433 application_name=r1"},
		{"user=u port=1 hostaddr=10.0.0.1 host=old sslmode=verify-full", "new:2", "user=u host=new port=2 sslmode=verify-full"},
		{"user=u", "[::1]:5432", "user=u host=::1 port=5432"},
		{"host=a,b port=1,2 target_session_attrs=read-write", "c:3", "host=c port=3 target_session_attrs=read-write"},
		{"", "h:1", "host=h port=1"},
	}
	for _, tt := range tests {
		ci, err := parseConninfo(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ci.withAddr(tt.addr)
		if err != nil || got.String() != tt.want {
			t.Errorf("withAddr(%q, %q) = %s, %v; want %s", tt.in, tt.addr, got, err, tt.want)
		}
		again, _ := got.withAddr(tt.addr)
		if !again.equal(got) {
			t.Errorf("withAddr(%q) twice = %s, want %s (idempotent)", tt.addr, again, got)
		}
	}
	if _, err := (conninfo{}).withAddr("no-port"); err == nil {
		t.Error("withAddr without a port: no error")
	}
}

func FuzzConninfoRoundTrip(f *testing.F) {
	for _, s := range []string{
		"host=a port=5432 user=u password='p w' application_name='x\\'y'",
		`password=a\ b\\c`, "a='x'b=y", "postgres://u:p@h:1/db?sslmode=disable",
		"host= port=1", "k='\\", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ci, err := parseConninfo(s)
		if err != nil {
			return
		}
		text := ci.String()
		back, err := parseConninfo(text)
		if err != nil {
			t.Fatalf("parse of formatted %q: %v", text, err)
		}
		if !back.equal(ci) {
			t.Fatalf("round trip of %q: %q, then %q", s, ci, back)
		}
	})
}

func TestQuoteLiteral(t *testing.T) {
	if got, want := quoteLiteral(`a'b\c`), `E'a''b\\c'`; got != want {
		t.Errorf("quoteLiteral = %s, want %s", got, want)
	}
}

func TestSetAutoConf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "postgresql.auto.conf")
	old := "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n" +
		"work_mem = '8MB'\nprimary_conninfo = 'host=old'\nDefault_Transaction_Read_Only = 'on'\n" +
		"primary_slot_name = 's1'\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	own, err := ownerOf(dir)
	if err != nil {
		t.Fatal(err)
	}
	err = setAutoConf(dir, own, map[string]string{
		"primary_conninfo":              `host=new password='it\'s'`,
		"default_transaction_read_only": "",
	})
	if err != nil {
		t.Fatal(err)
	}
	got := string(readFile(t, path))
	want := "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n" +
		"work_mem = '8MB'\nprimary_slot_name = 's1'\n" +
		`primary_conninfo = 'host=new password=''it\\''s'''` + "\n"
	if got != want {
		t.Errorf("postgresql.auto.conf:\n%s\nwant:\n%s", got, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestMoveAside(t *testing.T) {
	root := t.TempDir()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	var names []string
	for range 2 {
		dir := filepath.Join(root, "data")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		name, err := moveAside(dir, now)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Base(name))
	}
	if want := []string{"data.old-20250102T030405Z", "data.old-20250102T030405Z-2"}; strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("moved to %v, want %v", names, want)
	}
}

func TestPostmasterRunning(t *testing.T) {
	dir := t.TempDir()
	if _, running, err := postmasterRunning(dir); running || err != nil {
		t.Errorf("no postmaster.pid: running=%v err=%v", running, err)
	}
	// This test process is alive but not postgres: a stale file.
	if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(itoa(os.Getpid())+"\n/data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, running, err := postmasterRunning(dir); running || err != nil {
		t.Errorf("pid of a non-postgres process: running=%v err=%v", running, err)
	}
}

func TestRebuildRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, cfg := range []RebuildConfig{
		{DataDir: dir, Primary: "h:1", Method: "copy"},
		{Primary: "h:1"},
		{DataDir: dir, Primary: "no-port"},
		{DataDir: filepath.Join(dir, "missing"), Primary: "h:1"},
	} {
		if _, err := Rebuild(t.Context(), cfg); err == nil {
			t.Errorf("Rebuild(%+v): no error", cfg)
		}
	}
}
