package pgadmin

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/internal/testutil"
)

// TestRebuildAuto rebuilds a fenced, killed primary after a failover. The
// harness runs without wal_log_hints and with full_page_writes off, so
// rewind is impossible and auto falls back to pg_basebackup.
func TestRebuildAuto(t *testing.T) {
	t.Parallel()
	p := startShard(t, "pgadmin-rebuild", 1)
	r := p.Replicas[0]
	a := newAdmin()
	ctx := testCtx(t)
	t.Cleanup(func() { removeOldDirs(t, p.DataDir) })

	lsn := writeSync(t, p, "CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, 'before' FROM generate_series(1, 100) g")
	if err := a.WaitReplayed(ctx, r.Addr(), lsn); err != nil {
		t.Fatal(err)
	}
	cfg := RebuildConfig{DataDir: p.DataDir, Primary: r.Addr(), User: adminUser.Name, Password: adminUser.Password, ApplicationName: "old-primary"}
	if _, err := Rebuild(ctx, cfg); err == nil || !strings.Contains(err.Error(), "running") {
		t.Errorf("Rebuild of a running server: %v, want a refusal", err)
	}

	// Fence the primary (its postgresql.auto.conf now makes it read-only),
	// then it crashes; the replica takes over and takes writes.
	if err := a.Fence(ctx, p.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(ctx); err != nil { // waits until the killed postmaster's children are gone
		t.Fatal(err)
	}
	if err := a.Promote(ctx, r.Addr()); err != nil {
		t.Fatal(err)
	}
	writeSync(t, r, "INSERT INTO t SELECT g, 'after' FROM generate_series(101, 200) g")
	ownConf := readFile(t, filepath.Join(p.DataDir, "pgshard.conf"))

	// rewind alone is impossible here, and says so without the password.
	cfg.Method = MethodRewind
	_, err := Rebuild(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "wal_log_hints") {
		t.Errorf("Rebuild with rewind: %v, want rewind impossible for lack of wal_log_hints", err)
	}
	noSecret(t, err)
	if dirs, _ := filepath.Glob(p.DataDir + ".old-*"); len(dirs) != 0 {
		t.Errorf("a failed rewind moved the data directory aside: %v", dirs)
	}

	// A basebackup that fails puts the old data directory back.
	bad := cfg
	bad.Method, bad.Primary = MethodBasebackup, "127.0.0.1:1"
	_, err = Rebuild(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "back in place") {
		t.Errorf("Rebuild from a closed port: %v, want a basebackup error", err)
	}
	noSecret(t, err)
	if dirs, _ := filepath.Glob(p.DataDir + ".old-*"); len(dirs) != 0 || !bytes.Equal(readFile(t, filepath.Join(p.DataDir, "pgshard.conf")), ownConf) {
		t.Errorf("after a failed basebackup: old directories %v, want the data directory back in place", dirs)
	}

	cfg.Method = ""
	start := time.Now()
	method, err := Rebuild(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Rebuild took %v", time.Since(start))
	if method != MethodBasebackup {
		t.Errorf("Rebuild used %q, want %q", method, MethodBasebackup)
	}
	if dirs, _ := filepath.Glob(p.DataDir + ".old-*"); len(dirs) != 1 || !isFile(filepath.Join(dirs[0], "PG_VERSION")) {
		t.Errorf("old data directories: %v, want the old one moved aside", dirs)
	}
	if got := readFile(t, filepath.Join(p.DataDir, "pgshard.conf")); !bytes.Equal(got, ownConf) {
		t.Errorf("the node's own pgshard.conf was not kept:\n%s\nwant:\n%s", got, ownConf)
	}
	checkStandbyConfig(t, p.DataDir, r.Addr(), cfg.ApplicationName)

	checkFollows(t, a, p, r, "basebackup", 200)
}

// TestRebuildRewind rebuilds with pg_rewind a former primary that went on
// taking writes after the failover (split brain): they are undone.
//
// pg_rewind needs wal_log_hints (the harness's initdb makes no checksums)
// and full_page_writes. It also copies every file of the primary's data
// directory and fails on a Unix socket there, where the harness puts them
// by default: the servers listen on TCP only.
func TestRebuildRewind(t *testing.T) {
	t.Parallel()
	p := startShard(t, "pgadmin-rewind", 1, integration.Settings(map[string]string{
		"wal_log_hints": "on", "full_page_writes": "on", "unix_socket_directories": "''",
	}))
	r := p.Replicas[0]
	a := newAdmin()
	ctx := testCtx(t)
	t.Cleanup(func() { removeOldDirs(t, p.DataDir) })

	lsn := writeSync(t, p, "CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, 'before' FROM generate_series(1, 100) g")
	if err := a.WaitReplayed(ctx, r.Addr(), lsn); err != nil {
		t.Fatal(err)
	}
	if err := a.Promote(ctx, r.Addr()); err != nil {
		t.Fatal(err)
	}
	writeSync(t, p, "INSERT INTO t SELECT g, 'diverged' FROM generate_series(1001, 2000) g")
	writeSync(t, r, "INSERT INTO t SELECT g, 'after' FROM generate_series(101, 200) g")
	// Fenced, as the meta leader does to a former primary: the rebuilt
	// replica must not keep the read-only default (checkStandbyConfig),
	// or it would stay read-only once promoted.
	if err := a.Fence(ctx, p.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	method, err := Rebuild(ctx, RebuildConfig{DataDir: p.DataDir, Primary: r.Addr(), User: adminUser.Name, Password: adminUser.Password, Method: MethodRewind})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Rebuild took %v", time.Since(start))
	if method != MethodRewind {
		t.Errorf("Rebuild used %q, want %q", method, MethodRewind)
	}
	if dirs, _ := filepath.Glob(p.DataDir + ".old-*"); len(dirs) != 0 {
		t.Errorf("rewind moved the data directory aside: %v", dirs)
	}
	host, _ := os.Hostname()
	checkStandbyConfig(t, p.DataDir, r.Addr(), host)

	checkFollows(t, a, p, r, "rewind", 200)
	if got := mustValue(t, p, "SELECT count(*) FROM t WHERE note = 'diverged'"); got != "0" {
		t.Errorf("%s rows of the old primary's diverged writes survived the rewind, want 0", got)
	}
}

// checkStandbyConfig checks the files Rebuild leaves in dir.
func checkStandbyConfig(t *testing.T, dir, primary, appName string) {
	t.Helper()
	if !isFile(filepath.Join(dir, "standby.signal")) {
		t.Error("no standby.signal")
	}
	auto := string(readFile(t, filepath.Join(dir, "postgresql.auto.conf")))
	if strings.Contains(auto, "default_transaction_read_only") {
		t.Errorf("postgresql.auto.conf still sets default_transaction_read_only:\n%s", auto)
	}
	var lines []string
	for _, l := range strings.Split(auto, "\n") {
		if confKey(l) == "primary_conninfo" {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("postgresql.auto.conf has %d primary_conninfo lines, want 1:\n%s", len(lines), auto)
	}
	_, value, _ := strings.Cut(lines[0], "=")
	value = strings.TrimSpace(value)
	value = strings.ReplaceAll(value[1:len(value)-1], "''", "'")
	ci, err := parseConninfo(value)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := conninfo{{"user", adminUser.Name}, {"password", adminUser.Password}, {"application_name", appName}}.withAddr(primary)
	if !sameSettings(ci, want) {
		t.Errorf("primary_conninfo = %s, want the settings of %s", ci.Masked(), want.Masked())
	}
	if fi, err := os.Stat(filepath.Join(dir, "postgresql.auto.conf")); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("postgresql.auto.conf mode %v, want 0600", fi.Mode().Perm())
	}
}

// checkFollows starts the rebuilt old primary and checks it streams from
// the new one and has its rows.
func checkFollows(t *testing.T, a *Admin, old, primary *pgcluster.Server, note string, rows int) {
	t.Helper()
	ctx := testCtx(t)
	if err := old.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the rebuilt server to stream from the new primary", func() (bool, string) {
		st, err := a.State(ctx, old.Addr())
		if err != nil {
			return false, err.Error()
		}
		return st.InRecovery && !st.ReadOnly && st.UpstreamAddr == primary.Addr(), ""
	})
	lsn := writeSync(t, primary, "INSERT INTO t VALUES (5000, '"+note+"')")
	if err := a.WaitReplayed(ctx, old.Addr(), lsn); err != nil {
		t.Fatal(err)
	}
	want := note + " " + itoa(rows+1)
	if got := mustValue(t, old, "SELECT note || ' ' || (SELECT count(*) FROM t WHERE id <= 5000) FROM t WHERE id = 5000"); got != want {
		t.Errorf("on the rebuilt server: %q, want %q", got, want)
	}
}

// sameSettings reports whether a and b hold the same settings, in any
// order.
func sameSettings(a, b conninfo) bool {
	if len(a) != len(b) {
		return false
	}
	for _, s := range b {
		found := false
		for _, o := range a {
			found = found || o == s
		}
		if !found {
			return false
		}
	}
	return true
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// removeOldDirs removes the data directories Rebuild moved aside, which
// the harness does not know about.
func removeOldDirs(t *testing.T, dataDir string) {
	dirs, _ := filepath.Glob(dataDir + ".old-*")
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			t.Errorf("remove %s: %v", d, err)
		}
	}
}
