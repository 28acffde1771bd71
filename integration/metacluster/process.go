package metacluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pgshard/pgshard/internal/pgcluster"
)

// Process is a child process started by this package: a pgshard command
// in its own process group, its stdout and stderr appended to a log file.
// Its methods are safe for concurrent use.
type Process struct {
	Name    string
	LogPath string

	cmd     *exec.Cmd
	done    chan struct{} // closed once the process was waited for
	waitErr error         // valid once done is closed
}

// running is every Process started and not yet reaped, for Running.
var (
	runningMu sync.Mutex
	running   = map[*Process]struct{}{}
)

// Running returns the pids of the processes this package started that
// have not exited yet. TestMain can check it is empty after the tests.
func Running() []int {
	runningMu.Lock()
	defer runningMu.Unlock()
	var pids []int
	for p := range running {
		pids = append(pids, p.Pid())
	}
	slices.Sort(pids)
	return pids
}

// Env returns this process's environment without the PGSHARD_ variables
// (a token, a meta address or an admin token of the person running the
// tests would change what the commands do), with extra added.
func Env(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PGSHARD_") {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// StartProcess runs bin with args in the environment Env(env...), its
// output appended to logPath. The process gets SIGKILL if the test
// process dies, so it never outlives it.
func StartProcess(name, logPath, bin string, env []string, args ...string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("metacluster: %s: open log: %w", name, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = Env(env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// The parent-death signal fires when the forking thread exits: fork
	// from the harness's thread that lives as long as the process.
	if err := pgcluster.StartOnSpawner(cmd); err != nil {
		return nil, fmt.Errorf("metacluster: start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	runningMu.Lock()
	running[p] = struct{}{}
	runningMu.Unlock()
	go func() {
		p.waitErr = cmd.Wait()
		runningMu.Lock()
		delete(running, p)
		runningMu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process ID (also its process group ID).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitErr returns how the process ended (nil for exit status 0); call it
// after Done is closed.
func (p *Process) ExitErr() error {
	<-p.done
	return p.waitErr
}

// Signal sends sig to the process's group; a process that has exited
// already is not an error.
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := syscall.Kill(-p.Pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("metacluster: %s: signal %v: %w", p.Name, sig, err)
	}
	return nil
}

// Kill sends SIGKILL and waits until the process is gone.
func (p *Process) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return nil
}

// Stop asks the process to stop (SIGCONT in case it was paused, then
// SIGTERM) and waits up to grace before killing it. It returns how the
// process exited, or an error saying it had to be killed. It may be
// called more than once.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.Signal(syscall.SIGCONT)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		if p.waitErr != nil {
			return fmt.Errorf("metacluster: %s exited after SIGTERM with %w", p.Name, p.waitErr)
		}
		return nil
	case <-t.C:
	}
	if err := p.Kill(); err != nil {
		return err
	}
	return fmt.Errorf("metacluster: %s did not stop within %s of SIGTERM and was killed", p.Name, grace)
}

// WaitListening waits until addr accepts TCP connections, failing early
// if the process exits.
func (p *Process) WaitListening(ctx context.Context, addr string) error {
	var d net.Dialer
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := d.DialContext(dctx, "tcp", addr)
		cancel()
		if err == nil {
			return c.Close()
		}
		select {
		case <-p.done:
			return fmt.Errorf("metacluster: %s exited (%v) before listening on %s; log:\n%s", p.Name, p.waitErr, addr, LogTail(p.LogPath, 30))
		case <-ctx.Done():
			return fmt.Errorf("metacluster: %s does not listen on %s: %w; log:\n%s", p.Name, addr, ctx.Err(), LogTail(p.LogPath, 30))
		case <-t.C:
		}
	}
}

// LogTail returns the last n lines of the file at path (or why it cannot).
func LogTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// FreeAddr returns a 127.0.0.1 address with a port nothing listens on
// now. Another process may take it before the caller binds it, which
// the ports handed out by the kernel make unlikely.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("metacluster: free port: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("metacluster: free port: %w", err)
	}
	return addr, nil
}
