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

// TestWriteBanner: the banner shows the spare shard, the transfer and a
// move onto the spare with the meta flag the DBA commands need; without
// the embedded meta cluster it shows no command that needs it.
func TestWriteBanner(t *testing.T) {
	srv := func(name string, port int) *pgcluster.Server {
		return &pgcluster.Server{Name: name, Host: "127.0.0.1", Port: port}
	}
	cl := &pgcluster.Cluster{Shards: []*pgcluster.Server{srv("shard0", 5001), srv("shard1", 5002), srv(SpareShard, 5003)}}
	banner := func(b Banner) string {
		var sb strings.Builder
		b.Cluster, b.ProxyAddr = cl, "127.0.0.1:6432"
		if err := WriteBanner(&sb, b); err != nil {
			t.Fatal(err)
		}
		return sb.String()
	}
	got := banner(Banner{MetaAddr: "127.0.0.1:7000", MetaFlag: " --meta 127.0.0.1:7000"})
	for _, want := range []string{
		"shard spare   primary  127.0.0.1:5003  (the schema, no data: owns no interval yet)",
		"BEGIN; UPDATE users SET balance = balance - 10 WHERE id = 42; UPDATE users SET balance = balance + 10 WHERE id = 942; COMMIT;",
		"pgshard transactions list --meta 127.0.0.1:7000",
		`printf '\\set id random(1, 1000)\nUPDATE users SET created_at = now() WHERE id = :id;\n' > writes.sql`,
		"pgshard reshard move --distribution users --interval '[250,501)' --to spare --cutover auto --meta 127.0.0.1:7000",
		"pgshard reshard cleanup --distribution users --interval '[250,501)' --meta 127.0.0.1:7000",
		"Idle clients are cheap",
		`psql "postgres://postgres:postgres@127.0.0.1:5003/postgres?sslmode=disable" -c 'SELECT min(id), max(id), count(*) FROM users'`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("banner lacks %q:\n%s", want, got)
		}
	}
	if got := banner(Banner{MetaAddr: "127.0.0.1:6440"}); !strings.Contains(got, "pgshard reshard status\n") {
		t.Errorf("banner at the CLI's default meta address names one:\n%s", got)
	}
	got = banner(Banner{})
	if strings.Contains(got, "pgshard reshard") || strings.Contains(got, "transactions list") || !strings.Contains(got, "--meta-listen") {
		t.Errorf("banner without a meta cluster:\n%s", got)
	}
}
