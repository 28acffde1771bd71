package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// TemplateVersion is bumped whenever the way the cached initdb template is
// made changes, so stale caches are not reused.
const TemplateVersion = 1

// SuperuserName is the PostgreSQL superuser of every server.
const SuperuserName = "postgres"

// SuperuserPassword is the password of [SuperuserName] on every server.
const SuperuserPassword = "postgres"

// templateDir returns the data directory of the cached initdb template for
// the PostgreSQL binaries in bin, making it on first use. Concurrent callers,
// also in other processes, are serialised by a flock(2) lock; the template is
// built under a temporary name and renamed into place, so a reader never
// sees half of it.
func templateDir(ctx context.Context, bin string) (string, error) {
	version, err := serverVersion(ctx, bin)
	if err != nil {
		return "", err
	}
	base := baseDir()
	if err := mkdirShared(base); err != nil {
		return "", err
	}
	name := fmt.Sprintf("tmpl-pg%s-v%d", version, TemplateVersion)
	final := filepath.Join(base, name)
	data := filepath.Join(final, "data")
	if isFile(filepath.Join(data, "PG_VERSION")) {
		return data, nil
	}

	unlock, err := lockFile(ctx, final+".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if isFile(filepath.Join(data, "PG_VERSION")) {
		return data, nil // another process made it while we waited
	}

	build := final + ".tmp" + strconv.Itoa(os.Getpid())
	if err := os.RemoveAll(build); err != nil {
		return "", fmt.Errorf("pgcluster: clear %s: %w", build, err)
	}
	if err := mkdirShared(build); err != nil {
		return "", err
	}
	defer os.RemoveAll(build) // a no-op after the rename
	if err := chown(build); err != nil {
		return "", err
	}
	pwfile := filepath.Join(build, "pwfile")
	if err := writeOwned(pwfile, []byte(SuperuserPassword+"\n"), 0o600); err != nil {
		return "", err
	}
	args := []string{
		"-D", filepath.Join(build, "data"),
		"-U", SuperuserName,
		"--auth-local=trust",
		"--auth-host=scram-sha-256",
		"--pwfile=" + pwfile,
		"-E", "UTF8",
		"--locale=C",
		"--no-sync",
		"--no-instructions",
	}
	if out, err := runTool(ctx, bin, build, "initdb", args...); err != nil {
		return "", fmt.Errorf("pgcluster: initdb template: %w\n%s", err, out)
	}
	if err := os.Remove(pwfile); err != nil {
		return "", fmt.Errorf("pgcluster: remove pwfile: %w", err)
	}
	if err := os.RemoveAll(final); err != nil {
		return "", fmt.Errorf("pgcluster: clear %s: %w", final, err)
	}
	if err := os.Rename(build, final); err != nil {
		return "", fmt.Errorf("pgcluster: install template: %w", err)
	}
	return data, nil
}

// lockFile takes an exclusive flock(2) on path, polling so that ctx can
// cancel the wait. The returned function releases it.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: open lock %s: %w", path, err)
	}
	err = poll(ctx, func() (bool, error) {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EINTR) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pgcluster: lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// runTool runs a short-lived PostgreSQL program from bin as the server user,
// in directory dir, and returns its combined output.
func runTool(ctx context.Context, bin, dir, name string, args ...string) (string, error) {
	attr, err := sysProcAttr(false)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
	cmd.Dir = dir
	cmd.Env = toolEnv()
	cmd.SysProcAttr = attr
	if attr.Setpgid {
		// On cancel kill the whole process group: pg_basebackup forks a
		// WAL streamer that would otherwise keep the output pipe open.
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return strings.TrimSpace(string(out)), fmt.Errorf("%s: %w", name, err)
	}
	return string(out), nil
}

// toolEnv is the environment of PostgreSQL child processes: ours without
// libpq variables that could redirect them, and with a C locale.
func toolEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LANG=C")
}

// copyTemplate copies the template data directory into dst, which must
// exist, preserving modes, and gives it to the server user.
func copyTemplate(ctx context.Context, tmpl, dst string) error {
	out, err := exec.CommandContext(ctx, "cp", "-a", tmpl+"/.", dst+"/").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgcluster: copy template to %s: %w: %s", dst, err, strings.TrimSpace(string(out)))
	}
	if err := os.Chmod(dst, 0o700); err != nil {
		return fmt.Errorf("pgcluster: chmod %s: %w", dst, err)
	}
	return chownTree(dst)
}
