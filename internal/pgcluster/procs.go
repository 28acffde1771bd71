package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// baseDir is the harness directory shared by all processes of one OS user:
// it holds the cached initdb template and one root per process. Its name is
// short because Unix socket paths are limited to 107 bytes.
func baseDir() string {
	tmp := os.TempDir()
	if os.Geteuid() == 0 && !traversableByOthers(tmp) {
		// The postgres user must reach its data directories.
		tmp = "/tmp"
	}
	return filepath.Join(tmp, "pgsh"+strconv.Itoa(os.Geteuid()))
}

// traversableByOthers reports whether every directory from / to dir can be
// entered by any user.
func traversableByOthers(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

// mkdirShared makes dir (and parents) readable and enterable by the server
// user.
func mkdirShared(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("pgcluster: create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("pgcluster: chmod %s: %w", dir, err)
	}
	return nil
}

// RootDir returns this process's harness directory, creating it if needed.
// Every data directory made by this package in this process lives under it,
// and [Running] looks for postmasters whose data directory is under it.
// Roots left behind by processes that no longer exist are removed the first
// time it is called.
func RootDir() (string, error) {
	root, err := rootPath()
	if err != nil {
		return "", err
	}
	if err := mkdirShared(root); err != nil {
		return "", err
	}
	return root, nil
}

// RemoveRootDir removes this process's harness directory if it is empty
// (data directories are kept with PGSHARD_KEEP_DATA=1). Call it when the
// process is done with servers, for example at the end of TestMain.
func RemoveRootDir() error {
	root, err := rootPath()
	if err != nil {
		return err
	}
	if err := os.Remove(root); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pgcluster: remove %s: %w", root, err)
	}
	return nil
}

// rootPath computes this process's root once, clearing stale roots.
func rootPath() (string, error) {
	rootOnce.Do(func() {
		base := baseDir()
		if err := mkdirShared(base); err != nil {
			rootErr = err
			return
		}
		removeStaleRoots(base)
		rootDir = filepath.Join(base, strconv.Itoa(os.Getpid()))
		if err := os.RemoveAll(rootDir); err != nil {
			rootErr = fmt.Errorf("pgcluster: clear %s: %w", rootDir, err)
		}
	})
	return rootDir, rootErr
}

// removeStaleRoots deletes per-process roots under base whose process is gone
// and that no live postmaster uses.
func removeStaleRoots(base string) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !e.IsDir() || pid == os.Getpid() || processExists(pid) {
			continue
		}
		dir := filepath.Join(base, e.Name())
		if pids, err := postmastersUnder(dir); err == nil && len(pids) == 0 {
			_ = os.RemoveAll(dir)
		}
	}
}

func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

// Running returns the PIDs of the postmasters whose data directory is under
// this process's [RootDir], that is the servers this process started and has
// not stopped yet. Tests use it to check that nothing was leaked.
func Running() ([]int, error) {
	root, err := rootPath()
	if err != nil {
		return nil, err
	}
	return postmastersUnder(root)
}

// postmastersUnder scans /proc for postgres processes started with
// `-D <dir>` where dir is under root.
func postmastersUnder(root string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: list processes: %w", err)
	}
	prefix := filepath.Clean(root) + string(filepath.Separator)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00")
		if len(args) == 1 {
			// A process that rewrote its title joins arguments with spaces.
			args = strings.Fields(args[0])
		}
		if !strings.Contains(filepath.Base(args[0]), "postgres") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-D" && strings.HasPrefix(filepath.Clean(args[i+1])+string(filepath.Separator), prefix) {
				if st, ok := procState(pid); ok && st != 'Z' {
					pids = append(pids, pid)
				}
				break
			}
		}
	}
	return pids, nil
}

// procInfo is what the harness reads from /proc/pid/stat.
type procInfo struct {
	state     byte   // R, S, D, Z, T, ...
	ppid      int    // parent process
	startTime uint64 // clock ticks after boot; with the pid it identifies a process
}

// readProc parses /proc/pid/stat.
func readProc(pid int) (procInfo, bool) {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procInfo{}, false
	}
	// The command name is in parentheses and may contain spaces; fields
	// after it start with the state (field 3 of proc(5)).
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 20 {
		return procInfo{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	start, err2 := strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil || len(f[0]) == 0 {
		return procInfo{}, false
	}
	return procInfo{state: f[0][0], ppid: ppid, startTime: start}, true
}

func procState(pid int) (byte, bool) {
	p, ok := readProc(pid)
	return p.state, ok
}

// proc identifies one process across pid reuse.
type proc struct {
	pid       int
	startTime uint64
}

// alive reports whether p still exists and is not a zombie.
func (p proc) alive() bool {
	info, ok := readProc(p.pid)
	return ok && info.startTime == p.startTime && info.state != 'Z'
}

// childrenOf lists the live children of pid.
func childrenOf(pid int) []proc {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []proc
	for _, e := range entries {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if info, ok := readProc(cpid); ok && info.ppid == pid && info.state != 'Z' {
			kids = append(kids, proc{cpid, info.startTime})
		}
	}
	return kids
}

// waitGone waits until none of procs is alive, polling with capped backoff.
func waitGone(ctx context.Context, procs []proc) error {
	return poll(ctx, func() (bool, error) {
		for _, p := range procs {
			if p.alive() {
				return false, nil
			}
		}
		return true, nil
	})
}

// poll calls f with capped exponential backoff until it reports done, returns
// an error, or ctx ends.
func poll(ctx context.Context, f func() (bool, error)) error {
	delay := 5 * time.Millisecond
	const maxDelay = 250 * time.Millisecond
	for {
		done, err := f()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, maxDelay)
	}
}
