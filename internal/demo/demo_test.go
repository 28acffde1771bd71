package demo

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/internal/pgcluster"
)

func TestInstallHelp(t *testing.T) {
	err := fmt.Errorf("start PostgreSQL: %w", &pgcluster.ErrNoPostgres{Searched: []string{"$PGSHARD_PG_BIN", "/usr/lib/postgresql/*/bin"}})
	help, ok := InstallHelp(err)
	if !ok {
		t.Fatal("InstallHelp did not recognise a wrapped *ErrNoPostgres")
	}
	for _, want := range []string{"initdb", "/usr/lib/postgresql/*/bin", "sudo apt-get install -y postgresql", pgcluster.EnvPGBin} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
	if _, ok := InstallHelp(fmt.Errorf("other")); ok {
		t.Error("InstallHelp recognised an unrelated error")
	}
}

func TestConnString(t *testing.T) {
	if got, want := ConnString("127.0.0.1:6432"), "postgres://demo:demo@127.0.0.1:6432/postgres"; got != want {
		t.Errorf("ConnString = %q, want %q", got, want)
	}
}

func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:6432": "127.0.0.1:6432",
		":6432":          "127.0.0.1:6432",
		"0.0.0.0:6432":   "127.0.0.1:6432",
		"[::]:6432":      "127.0.0.1:6432",
		"[::1]:6432":     "[::1]:6432",
		"localhost:7000": "localhost:7000",
	} {
		if got := DialAddr(in); got != want {
			t.Errorf("DialAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
