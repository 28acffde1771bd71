package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// PgBouncer database names: the same PostgreSQL database, pooled per
// transaction (the comparison) or per session (a labelled reference for the
// prepared mode, which PgBouncer before 1.21 cannot pool per transaction).
const (
	bouncerDBTx      = "postgres"
	bouncerDBSession = "postgres_session"
)

// ensurePgBouncer returns the path of the pgbouncer binary, installing the
// Debian package when it is missing. The package's service is not started
// (the benchmark runs its own instance); on Debian images with a
// policy-rc.d that forbids it, the package does not start it either.
func ensurePgBouncer(ctx context.Context, logf func(string, ...any)) (string, error) {
	if p, err := findPgBouncer(); err == nil {
		return p, nil
	}
	logf("pgbouncer not found: installing it with apt-get")
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "--no-install-recommends", "pgbouncer")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get install pgbouncer: %w\n%s", err, lastLines(string(out), 15))
		}
		return nil
	}
	if err := install(); err != nil {
		logf("%v; running apt-get update and retrying", err)
		upd := exec.CommandContext(ctx, "apt-get", "update")
		upd.Env = env
		if out, err := upd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get update: %w\n%s", err, lastLines(string(out), 15))
		}
		if err := install(); err != nil {
			return "", err
		}
	}
	return findPgBouncer()
}

func findPgBouncer() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("pgbouncer not found in PATH, /usr/sbin or /usr/bin")
}

// pgbouncerVersion returns the version of the binary, like "1.18.0".
func pgbouncerVersion(ctx context.Context, bin string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", bin, err)
	}
	m := regexp.MustCompile(`PgBouncer (\d+\.\d+(?:\.\d+)?)`).FindStringSubmatch(string(out))
	if m == nil {
		return "", fmt.Errorf("%s --version: unexpected output %q", bin, out)
	}
	return m[1], nil
}

// versionAtLeast reports whether dotted version v is at least major.minor.
func versionAtLeast(v string, major, minor int) bool {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// startPgBouncerMax writes a configuration and user list into dir (given
// to the postgres OS user when running as root, as PgBouncer refuses to run
// as root) and starts PgBouncer in front of pgHost:pgPort: transaction
// pooling with poolSize server connections, up to maxClients clients, user
// authenticated with authType (md5 or scram-sha-256; the user list holds
// the password), TCP on 127.0.0.1 only.
func startPgBouncerMax(ctx context.Context, bin, dir, pgHost string, pgPort, poolSize int, user, password string, maxClients int, authType string) (*child, string, error) {
	cred, err := postgresUser()
	if err != nil {
		return nil, "", err
	}
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	userlist := filepath.Join(dir, "userlist.txt")
	server := fmt.Sprintf("host=%s port=%d dbname=postgres", pgHost, pgPort)
	ini := fmt.Sprintf(`;; Written by pgshard's benchmark (integration/bench).
[databases]
%s = %s pool_mode=transaction
%s = %s pool_mode=session

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = %s
auth_file = %s
pool_mode = transaction
default_pool_size = %d
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = %d
max_db_connections = 0
server_tls_sslmode = disable
client_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
`, bouncerDBTx, server, bouncerDBSession, server, port, authType, userlist, poolSize, maxClients)
	// A plain password lets PgBouncer run SCRAM with both the client and
	// the server.
	users := bouncerQuote(user) + " " + bouncerQuote(password) + "\n"
	cfgPath := filepath.Join(dir, "pgbouncer.ini")
	for path, text := range map[string]string{cfgPath: ini, userlist: users} {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			return nil, "", fmt.Errorf("write %s: %w", path, err)
		}
	}
	logPath := filepath.Join(dir, "pgbouncer.log")
	if cred != nil {
		for _, p := range []string{dir, cfgPath, userlist} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, "", fmt.Errorf("chown %s: %w", p, err)
			}
		}
	}
	cmd := exec.Command(bin, cfgPath)
	cmd.Dir = dir
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	c, err := startChild("pgbouncer", cmd, logPath)
	if err != nil {
		return nil, "", err
	}
	if err := c.waitListening(ctx, addr); err != nil {
		c.stop(0)
		return nil, "", err
	}
	return c, addr, nil
}

// bouncerQuote quotes s for PgBouncer's auth_file: in double quotes, with
// double quotes doubled.
func bouncerQuote(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
