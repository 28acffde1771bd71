package pgadmin

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// owner is the uid and gid that own a data directory.
type owner struct {
	uid, gid uint32
}

// ownerOf returns the owner of the data directory dir, which must exist.
func ownerOf(dir string) (owner, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return owner{}, fmt.Errorf("data directory: %w", err)
	}
	if !fi.IsDir() {
		return owner{}, fmt.Errorf("data directory %s is not a directory", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return owner{}, fmt.Errorf("data directory %s: no owner information", dir)
	}
	return owner{uid: st.Uid, gid: st.Gid}, nil
}

// chown gives path to o when this process may (runs as root); otherwise
// files are the caller's already.
func (o owner) chown(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	if err := os.Lchown(path, int(o.uid), int(o.gid)); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

// postmasterRunning reads dir/postmaster.pid and reports whether the
// process it names is a live postgres process.
func postmasterRunning(dir string) (int, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, false, nil // a torn or empty file: no server got as far as writing it
	}
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return pid, false, nil
	}
	// The pid exists. A stale file may name a process that reused the
	// pid: only a postgres process counts. When its command line cannot be
	// read, assume it is the server.
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return pid, !errors.Is(err, os.ErrNotExist), nil
	}
	if st, ok := procState(pid); ok && st == 'Z' {
		return pid, false, nil
	}
	cmd := string(cmdline)
	return pid, strings.Contains(cmd, "postgres") || strings.Contains(cmd, "postmaster"), nil
}

// procState returns the state letter of /proc/pid/stat (R, S, Z, ...).
func procState(pid int) (byte, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0, false
	}
	return b[i+2], true
}

// keptFile is a file of the node's own configuration, held in memory while
// the data directory is replaced.
type keptFile struct {
	name string
	mode os.FileMode
	data []byte
}

// keptSuffixes name the top-level files that are the node's own
// configuration rather than data: configuration and TLS files.
var keptSuffixes = []string{".conf", ".crt", ".key", ".pem", ".crl"}

// maxKeptFile bounds the size of a kept file; configuration is small.
const maxKeptFile = 16 << 20

// readKeptFiles reads the node's configuration files at the top of dir.
// The temporary file ALTER SYSTEM writes is not configuration.
func readKeptFiles(dir string) ([]keptFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read data directory: %w", err)
	}
	var kept []keptFile
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !hasAnySuffix(name, keptSuffixes) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("stat %s: %w", name, err)
		}
		if fi.Size() > maxKeptFile {
			return nil, fmt.Errorf("%s is larger than %d bytes: not a configuration file", name, maxKeptFile)
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		kept = append(kept, keptFile{name: name, mode: fi.Mode().Perm(), data: data})
	}
	return kept, nil
}

func hasAnySuffix(s string, suffixes []string) bool {
	for _, suf := range suffixes {
		if strings.HasSuffix(s, suf) {
			return true
		}
	}
	return false
}

// writeKeptFiles puts the kept files back into dir, owned by o.
func writeKeptFiles(dir string, kept []keptFile, o owner) error {
	for _, k := range kept {
		if err := writeFileAs(filepath.Join(dir, k.name), k.data, k.mode, o); err != nil {
			return err
		}
	}
	return nil
}

// writeFileAs replaces path with data atomically (a temporary file renamed
// over it), with mode and owner o.
func writeFileAs(path string, data []byte, mode os.FileMode, o owner) error {
	tmp := path + ".pgshard-tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	err := os.Chmod(tmp, mode)
	if err == nil {
		err = o.chown(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// setAutoConf edits dir/postgresql.auto.conf: each key of set is removed
// and, when its value is not "", written again at the end with that value
// (quoted as ALTER SYSTEM quotes it). Other lines stay as they are.
func setAutoConf(dir string, o owner, set map[string]string) error {
	path := filepath.Join(dir, "postgresql.auto.conf")
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read postgresql.auto.conf: %w", err)
	}
	if len(old) == 0 {
		old = []byte("# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n")
	}
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(old)))
	sc.Buffer(make([]byte, 0, 64<<10), maxKeptFile)
	for sc.Scan() {
		line := sc.Text()
		if _, ok := set[confKey(line)]; ok {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read postgresql.auto.conf: %w", err)
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if v := set[k]; v != "" {
			fmt.Fprintf(&b, "%s = %s\n", k, quoteConf(v))
		}
	}
	return writeFileAs(path, []byte(b.String()), 0o600, o)
}

// confKey returns the lower-cased setting name of a postgresql.conf line,
// or "" for a blank or comment line.
func confKey(line string) string {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return ""
	}
	end := strings.IndexAny(line, "= \t")
	if end < 0 {
		end = len(line)
	}
	return strings.ToLower(line[:end])
}

// quoteConf quotes a postgresql.conf string value the way ALTER SYSTEM
// does: quotes and backslashes doubled.
func quoteConf(v string) string {
	return "'" + strings.NewReplacer(`'`, `''`, `\`, `\\`).Replace(v) + "'"
}

// moveAside renames dir to dir.old-<time> (with a counter if that exists)
// and returns the new name.
func moveAside(dir string, now time.Time) (string, error) {
	base := dir + ".old-" + now.UTC().Format("20060102T150405Z")
	name := base
	for i := 2; ; i++ {
		if _, err := os.Lstat(name); errors.Is(err, os.ErrNotExist) {
			break
		}
		name = base + "-" + strconv.Itoa(i)
	}
	if err := os.Rename(dir, name); err != nil {
		return "", fmt.Errorf("move the old data directory aside: %w", err)
	}
	return name, nil
}

// parseControlData reads pg_controldata output ("Name:   value" lines).
func parseControlData(out string) map[string]string {
	m := make(map[string]string)
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m
}

// redactError returns err, or an error with the same text with secret
// masked when the text holds it.
func redactError(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), secret, maskedPassword))
}
