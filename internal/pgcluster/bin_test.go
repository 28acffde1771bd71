package pgcluster

import (
	"errors"
	"strings"
	"testing"
)

func TestFindBinDirMissing(t *testing.T) {
	t.Setenv(EnvPGBin, t.TempDir())
	_, err := findBinDir()
	var e *ErrNoPostgres
	if !errors.As(err, &e) {
		t.Fatalf("got %v, want *ErrNoPostgres", err)
	}
	for _, want := range []string{"apt-get install -y postgresql", EnvPGBin} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
}

func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 5, "a\nb\nc"},
		{"", 3, ""},
		{"a\nb", 0, ""},
	} {
		if got := lastLines(tc.in, tc.n); got != tc.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

func TestSettingsOverride(t *testing.T) {
	o := Options{Settings: map[string]string{"fsync": "on", "work_mem": "'8MB'"}}
	got := map[string]string{}
	for _, kv := range o.settings("/tmp/x") {
		got[kv[0]] = kv[1]
	}
	if got["fsync"] != "on" || got["work_mem"] != "'8MB'" || got["wal_level"] != "logical" {
		t.Errorf("settings = %v", got)
	}
	long := "/" + strings.Repeat("d", 120)
	for _, kv := range o.settings(long) {
		if kv[0] == "unix_socket_directories" && kv[1] != "''" {
			t.Errorf("socket dir for a long path = %s, want ''", kv[1])
		}
	}
}
