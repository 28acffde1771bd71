package pgcluster

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Host authentication methods accepted in [Options.HostAuth].
const (
	AuthScram = "scram-sha-256"
	AuthMD5   = "md5"
	AuthTrust = "trust"
)

// confFile is the file, included from postgresql.conf, that holds the
// harness's settings.
const confFile = "pgshard.conf"

// logFile is the server log inside the data directory; the postmaster's
// stderr is redirected to it.
const logFile = "postgres.log"

// maxSocketPath is the longest Unix socket path Linux accepts.
const maxSocketPath = 107

func (o Options) hostAuth() (string, error) {
	switch o.HostAuth {
	case "":
		return AuthScram, nil
	case AuthScram, AuthMD5, AuthTrust:
		return o.HostAuth, nil
	}
	return "", fmt.Errorf("pgcluster: unsupported HostAuth %q (want %q, %q or %q)", o.HostAuth, AuthScram, AuthMD5, AuthTrust)
}

// passwordEncryption is the password_encryption matching the host auth
// method, so created roles can log in with it.
func (o Options) passwordEncryption() string {
	if o.HostAuth == AuthMD5 {
		return "md5"
	}
	return "scram-sha-256"
}

// settings returns the postgresql.conf lines for a server with data
// directory dataDir, defaults first and then Options.Settings, which
// override defaults of the same name.
func (o Options) settings(dataDir string) [][2]string {
	socketDir := quoteConf(dataDir)
	if len(dataDir)+len("/.s.PGSQL.65535") > maxSocketPath {
		socketDir = "''" // too long for a socket path: TCP only
	}
	kv := [][2]string{
		{"listen_addresses", "'127.0.0.1'"},
		{"unix_socket_directories", socketDir},
		{"max_connections", "200"},
		{"max_prepared_transactions", "64"}, // two-phase commit across shards
		{"shared_buffers", "32MB"},
		{"fsync", "off"},
		{"synchronous_commit", "off"},
		{"full_page_writes", "off"},
		{"wal_level", "logical"},
		{"max_wal_senders", "10"},
		{"max_replication_slots", "10"},
		{"wal_keep_size", "'256MB'"},
		{"hot_standby", "on"},
		{"logging_collector", "off"},
		{"log_min_messages", "warning"},
		{"log_line_prefix", "'%m [%p] %q%u@%d '"},
		{"password_encryption", quoteConf(o.passwordEncryption())},
	}
	if o.TLS || len(o.CertUsers) > 0 {
		kv = append(kv,
			[2]string{"ssl", "on"},
			[2]string{"ssl_cert_file", quoteConf(serverCertFile)},
			[2]string{"ssl_key_file", quoteConf(serverKeyFile)},
		)
	}
	if len(o.CertUsers) > 0 {
		kv = append(kv, [2]string{"ssl_ca_file", quoteConf(caCertFile)})
	}
	keys := make([]string, 0, len(o.Settings))
	for k := range o.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		replaced := false
		for i := range kv {
			if kv[i][0] == k {
				kv[i][1] = o.Settings[k]
				replaced = true
			}
		}
		if !replaced {
			kv = append(kv, [2]string{k, o.Settings[k]})
		}
	}
	return kv
}

// quoteConf quotes a string value for postgresql.conf.
func quoteConf(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// writeConfig writes the harness settings and pg_hba.conf into dataDir. When
// includeFromMain is set it also makes postgresql.conf include them (a
// replica's copy already does).
func writeConfig(dataDir string, o Options, includeFromMain bool) error {
	auth, err := o.hostAuth()
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("# Written by pgshard's test harness (internal/pgcluster).\n")
	for _, kv := range o.settings(dataDir) {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
	}
	if err := writeOwned(filepath.Join(dataDir, confFile), []byte(b.String()), 0o600); err != nil {
		return err
	}
	if includeFromMain {
		f, err := os.OpenFile(filepath.Join(dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("pgcluster: open postgresql.conf: %w", err)
		}
		_, err = fmt.Fprintf(f, "\ninclude '%s'\n", confFile)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("pgcluster: append to postgresql.conf: %w", err)
		}
	}
	certLines := ""
	for _, u := range o.TrustUsers {
		certLines += fmt.Sprintf("host    all          %s   127.0.0.1/32  trust\n", u)
	}
	for _, u := range o.CertUsers {
		certLines += fmt.Sprintf("hostssl all          %s   127.0.0.1/32  cert\nhost    all          %s   127.0.0.1/32  reject\n", u, u)
	}
	hba := fmt.Sprintf(`# Written by pgshard's test harness (internal/pgcluster).
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 trust
local   replication  all                 trust
%[2]shost    all          all   127.0.0.1/32  %[1]s
host    replication  all   127.0.0.1/32  %[1]s
`, auth, certLines)
	return writeOwned(filepath.Join(dataDir, "pg_hba.conf"), []byte(hba), 0o600)
}
