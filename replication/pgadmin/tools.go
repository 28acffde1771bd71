package pgadmin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pgLibDirs is where Debian and Ubuntu install each PostgreSQL major
// version's binaries.
const pgLibDirs = "/usr/lib/postgresql/*/bin"

// requiredTools must all be in the binary directory.
var requiredTools = []string{"pg_rewind", "pg_basebackup", "pg_controldata"}

// findBinDir returns dir if set, else the first directory in PATH holding
// the required tools, else /usr/lib/postgresql/<major>/bin for the major
// version in dataDir/PG_VERSION, else the newest /usr/lib/postgresql/*/bin
// holding them.
func findBinDir(dir, dataDir string) (string, error) {
	if dir != "" {
		if !hasTools(dir) {
			return "", fmt.Errorf("binary directory %s lacks one of %s", dir, strings.Join(requiredTools, ", "))
		}
		return dir, nil
	}
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		if d != "" && hasTools(d) {
			return d, nil
		}
	}
	if v, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION")); err == nil {
		d := filepath.Join("/usr/lib/postgresql", strings.TrimSpace(string(v)), "bin")
		if hasTools(d) {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob(pgLibDirs)
	major := func(d string) float64 {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		if err != nil {
			return -1
		}
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int {
		ma, mb := major(a), major(b)
		switch {
		case ma > mb:
			return -1
		case ma < mb:
			return 1
		}
		return 0
	})
	for _, d := range dirs {
		if hasTools(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("no directory with %s found in PATH or %s: set BinDir", strings.Join(requiredTools, ", "), pgLibDirs)
}

func hasTools(dir string) bool {
	for _, t := range requiredTools {
		fi, err := os.Stat(filepath.Join(dir, t))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// toolRunner runs PostgreSQL programs from one directory as the owner of
// the data directory, with a private password file.
type toolRunner struct {
	bin     string
	cred    *syscall.Credential // nil: run as this process
	env     []string
	tmpDir  string // holds the password file; removed by close
	secrets []string
}

// newToolRunner prepares to run the tools as own (when this process is
// root) with user's password in a temporary password file only they can
// read. As root the file goes next to dataDir, where own can reach it (the
// system temporary directory may be private to root).
func newToolRunner(bin, dataDir string, own owner, user, password string) (*toolRunner, error) {
	r := &toolRunner{bin: bin}
	if password != "" {
		r.secrets = append(r.secrets, password)
	}
	home := ""
	if os.Geteuid() == 0 {
		if own.uid == 0 {
			return nil, errors.New("the data directory is owned by root; PostgreSQL tools refuse to run as root")
		}
		r.cred = &syscall.Credential{Uid: own.uid, Gid: own.gid}
		home = homeOf(own.uid)
	}
	r.env = toolEnv(home, r.cred != nil)
	if password == "" {
		return r, nil
	}
	parent := ""
	if r.cred != nil {
		parent = filepath.Dir(dataDir)
	}
	dir, err := os.MkdirTemp(parent, ".pgshard-rebuild-")
	if err != nil {
		return nil, fmt.Errorf("password file: %w", err)
	}
	r.tmpDir = dir
	passfile := filepath.Join(dir, "pgpass")
	line := "*:*:*:" + escapePassfile(user) + ":" + escapePassfile(password) + "\n"
	err = own.chown(dir)
	if err == nil {
		err = writeFileAs(passfile, []byte(line), 0o600, own)
	}
	if err != nil {
		r.close()
		return nil, fmt.Errorf("password file: %w", err)
	}
	r.env = append(r.env, "PGPASSFILE="+passfile)
	return r, nil
}

// close removes the password file.
func (r *toolRunner) close() {
	if r.tmpDir != "" {
		_ = os.RemoveAll(r.tmpDir)
	}
}

// escapePassfile escapes a .pgpass field.
func escapePassfile(s string) string {
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(s)
}

// homeOf returns the home directory of uid, or "".
func homeOf(uid uint32) string {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return ""
	}
	return u.HomeDir
}

// toolEnv is the tools' environment: ours without libpq variables, which
// could send them elsewhere, with a C locale (their output is parsed) and,
// when they run as another user, that user's HOME (libpq looks for files
// there and must not trip over ours).
func toolEnv(home string, otherUser bool) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") ||
			(otherUser && strings.HasPrefix(kv, "HOME=")) {
			continue
		}
		env = append(env, kv)
	}
	if otherUser && home != "" {
		env = append(env, "HOME="+home)
	}
	return append(env, "LC_ALL=C", "LANG=C")
}

// run runs the program name from the binary directory in dir and returns
// its combined output, secrets masked. When ctx ends the program's whole
// process group is killed (pg_basebackup forks a WAL streamer, pg_rewind
// a single-user postgres).
func (r *toolRunner) run(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(r.bin, name), args...)
	cmd.Dir = dir
	cmd.Env = r.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: r.cred}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	text := strings.TrimSpace(string(out))
	for _, s := range r.secrets {
		text = strings.ReplaceAll(text, s, maskedPassword)
	}
	if err != nil {
		if ctx.Err() != nil {
			return text, fmt.Errorf("%s: %w (%v)", name, ctx.Err(), err)
		}
		return text, fmt.Errorf("%s: %w", name, err)
	}
	return text, nil
}
