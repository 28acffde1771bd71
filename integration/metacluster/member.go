package metacluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// errNotRunning is returned for operations on a member never started.
var errNotRunning = errors.New("metacluster: the member was never started")

// Member is one member of a Cluster: a `pgshard meta run` process with a
// fixed ID, Raft and API address and data directory, which survive
// restarts. Its methods are safe for concurrent use.
type Member struct {
	ID       string
	RaftAddr string // --raft-addr
	APIAddr  string // --api-addr
	DataDir  string // --data-dir
	LogPath  string // stdout and stderr of every run, appended

	c *Cluster

	mu     sync.Mutex
	proc   *Process        // the current run; nil before the first
	client *metarpc.Client // of this member only, made on first use
}

// start runs the member (with --bootstrap if asked) and waits until its
// API answers. The token goes in the environment, off the process list.
func (m *Member) start(ctx context.Context, bootstrap bool) error {
	m.mu.Lock()
	if m.proc != nil {
		select {
		case <-m.proc.Done():
		default:
			m.mu.Unlock()
			return fmt.Errorf("metacluster: %s is running already", m.ID)
		}
	}
	args := []string{"meta", "run", "--id", m.ID, "--raft-addr", m.RaftAddr, "--api-addr", m.APIAddr,
		"--data-dir", m.DataDir, "--log-level", m.c.logLevel}
	if bootstrap {
		args = append(args, "--bootstrap")
	}
	args = append(args, m.c.args...)
	env := append([]string{"PGSHARD_META_TOKEN=" + m.c.Token}, m.c.env...)
	p, err := StartProcess("meta member "+m.ID, m.LogPath, m.c.bin, env, args...)
	if err == nil {
		m.proc = p
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	if err := p.WaitListening(ctx, m.APIAddr); err != nil {
		return err
	}
	// The API listens before the Raft node is open; it serves once it is.
	for {
		_, err := m.Status(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("metacluster: %s exited (%v) before serving; log:\n%s", m.ID, p.ExitErr(), LogTail(m.LogPath, 30))
		default:
		}
		if serr := sleep(ctx, pollEvery); serr != nil {
			return fmt.Errorf("metacluster: %s does not serve: %w (last: %v)", m.ID, serr, err)
		}
	}
}

// Restart starts a stopped (or killed) member again with the same ID,
// addresses and data directory, without --bootstrap, and waits until its
// API answers.
func (m *Member) Restart(ctx context.Context) error { return m.start(ctx, false) }

// process returns the current run, or an error when there is none.
func (m *Member) process() (*Process, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return nil, errNotRunning
	}
	return m.proc, nil
}

// Kill sends SIGKILL and waits until the process is gone: a crash.
func (m *Member) Kill() error {
	p, err := m.process()
	if err != nil {
		return err
	}
	return p.Kill()
}

// Pause freezes the member with SIGSTOP: it keeps its sockets open but
// answers nothing, like a member on the far side of a partition (or
// stuck on a dying disk).
func (m *Member) Pause() error {
	p, err := m.process()
	if err != nil {
		return err
	}
	return p.Signal(syscall.SIGSTOP)
}

// Resume ends a Pause with SIGCONT.
func (m *Member) Resume() error {
	p, err := m.process()
	if err != nil {
		return err
	}
	return p.Signal(syscall.SIGCONT)
}

// Stop stops the member gracefully (SIGTERM), killing it if it takes
// longer than stopGrace; an error says it did not stop cleanly. Stopping
// a stopped member does nothing.
func (m *Member) Stop() error {
	p, err := m.process()
	if err != nil {
		return nil
	}
	return p.Stop(stopGrace)
}

// Running reports whether the member's process is alive (paused counts).
func (m *Member) Running() bool {
	p, err := m.process()
	if err != nil {
		return false
	}
	select {
	case <-p.Done():
		return false
	default:
		return true
	}
}

// Client returns the member's own client, for the calls a member answers
// from its own state: MemberStatus, GetMap, MapHistory, ListShards,
// ListProxies. Do not use it for calls only the leader serves (use
// NewClient): the client would follow the redirect and prefer the leader
// from then on, so its reads would no longer come from this member. The
// cluster closes it when the test ends.
func (m *Member) Client() *metarpc.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.client == nil {
		// NewClient fails only for bad addresses or options, which are ours.
		c, err := metarpc.NewClient([]string{m.APIAddr}, m.c.ClientOptions())
		if err != nil {
			panic(fmt.Sprintf("metacluster: client of %s: %v", m.ID, err))
		}
		m.client = c
	}
	return m.client
}

// NewClient returns a new client that knows only this member's address
// (it follows the member's redirects to the leader); the caller closes it.
func (m *Member) NewClient() (*metarpc.Client, error) {
	return metarpc.NewClient([]string{m.APIAddr}, m.c.ClientOptions())
}

func (m *Member) closeClient() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.client != nil {
		_ = m.client.Close()
		m.client = nil
	}
}

// Status returns the member's MemberStatus, waiting at most
// statusTimeout (a paused member does not answer).
func (m *Member) Status(ctx context.Context) (metarpc.NodeStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	st, err := m.Client().MemberStatus(ctx)
	if err != nil {
		return st, fmt.Errorf("MemberStatus of %s: %w", m.ID, err)
	}
	return st, nil
}
