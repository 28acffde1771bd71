package pgcluster

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
)

// runAs is the OS identity the PostgreSQL processes run as: the `postgres`
// user when this process is root, else nil (the current user).
type runAs struct {
	uid, gid uint32
}

var (
	osUserOnce sync.Once
	osUser     *runAs
	osUserErr  error
)

// serverUser returns the identity to run PostgreSQL binaries as, or nil to
// run them as the current user.
func serverUser() (*runAs, error) {
	osUserOnce.Do(func() {
		if os.Geteuid() != 0 {
			return
		}
		u, err := user.Lookup("postgres")
		if err != nil {
			osUserErr = fmt.Errorf("pgcluster: running as root needs the OS user postgres to run the servers "+
				"(create it with `useradd --system postgres` or install the postgresql package): %w", err)
			return
		}
		uid, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			osUserErr = fmt.Errorf("pgcluster: parse uid of user postgres: %w", err)
			return
		}
		gid, err := strconv.ParseUint(u.Gid, 10, 32)
		if err != nil {
			osUserErr = fmt.Errorf("pgcluster: parse gid of user postgres: %w", err)
			return
		}
		osUser = &runAs{uid: uint32(uid), gid: uint32(gid)}
	})
	return osUser, osUserErr
}

// sysProcAttr returns the attributes for a PostgreSQL child process: its own
// process group, the server user's credentials and, for long-running
// servers, a parent-death signal.
func sysProcAttr(daemon bool) (*syscall.SysProcAttr, error) {
	ru, err := serverUser()
	if err != nil {
		return nil, err
	}
	attr := &syscall.SysProcAttr{Setpgid: true}
	if ru != nil {
		attr.Credential = &syscall.Credential{Uid: ru.uid, Gid: ru.gid}
	}
	if daemon {
		// SIGQUIT makes the postmaster do an immediate shutdown, which also
		// stops its children.
		attr.Pdeathsig = syscall.SIGQUIT
	}
	return attr, nil
}

// chown gives path to the server user when this process is root.
func chown(path string) error {
	ru, err := serverUser()
	if err != nil || ru == nil {
		return err
	}
	if err := os.Lchown(path, int(ru.uid), int(ru.gid)); err != nil {
		return fmt.Errorf("pgcluster: chown %s: %w", path, err)
	}
	return nil
}

// chownTree gives every file under root to the server user when this process
// is root.
func chownTree(root string) error {
	ru, err := serverUser()
	if err != nil || ru == nil {
		return err
	}
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, int(ru.uid), int(ru.gid)); err != nil {
			return fmt.Errorf("pgcluster: chown %s: %w", p, err)
		}
		return nil
	})
}

// writeOwned writes a file and gives it to the server user.
func writeOwned(path string, data []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("pgcluster: write %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("pgcluster: chmod %s: %w", path, err)
	}
	return chown(path)
}

// Linux sends a child's parent-death signal when the OS thread that forked
// it exits, not when the process does. Go may retire threads, so servers are
// forked from one goroutine locked to a thread that never exits.
var (
	spawnOnce sync.Once
	spawnCh   chan func()
)

// StartOnSpawner runs cmd.Start on a dedicated OS thread that lives as
// long as the process, so a Pdeathsig set in cmd.SysProcAttr fires when
// the process dies (not when some thread exits).
func StartOnSpawner(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for f := range spawnCh {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnCh <- func() { errc <- cmd.Start() }
	return <-errc
}
