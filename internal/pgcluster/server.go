package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// EnvKeepData names the environment variable that, when "1", keeps data
// directories after servers are destroyed, for debugging.
const EnvKeepData = "PGSHARD_KEEP_DATA"

// Options configure [Start] and [StartCluster]. The zero value starts one
// primary with scram-sha-256 host authentication and no TLS.
type Options struct {
	// Name labels the server in directory names and logs; default "pg".
	// Replicas are named Name-r1, Name-r2, ...; cluster shards Name0, Name1, ...
	// (default "shard0", "shard1", ...).
	Name string

	// Settings are extra postgresql.conf settings, written verbatim as
	// `key = value` after the defaults, which they override. Quote string
	// values: {"search_path": "'app'"}.
	//
	// The defaults favour speed over durability: fsync, synchronous_commit
	// and full_page_writes are off, so a commit may be lost when a server is
	// killed with [Server.Kill] (set synchronous_commit to on in the session
	// when that matters). wal_level is logical, with 10 WAL senders and 10
	// replication slots; max_prepared_transactions is 64 (two-phase commit).
	Settings map[string]string

	// HostAuth is the pg_hba.conf method for TCP connections from
	// 127.0.0.1, including replication: AuthScram (default), AuthMD5 or
	// AuthTrust. Passwords of Users and of the superuser are stored with the
	// matching password_encryption (md5 for AuthMD5, else scram-sha-256).
	// Unix socket connections are always trusted.
	HostAuth string

	// TLS turns ssl on with a certificate for 127.0.0.1 and localhost signed
	// by a throwaway CA; [Server.CACertPath] names the CA's PEM file, and
	// DSNs use sslmode=require. Clients may still connect without TLS.
	TLS bool

	// CertUsers are roles (of Users) that log in over TLS with a client
	// certificate signed by the server's CA (pg_hba method cert; see
	// [Server.ClientCert]); TLS is turned on for them.
	CertUsers []string

	// TrustUsers are roles that log in over TCP from 127.0.0.1 without a
	// password (pg_hba method trust): a pooler that authenticates them
	// itself and connects as them (pgshard's auth_query roles).
	TrustUsers []string

	// Replicas is the number of streaming replicas of each primary, made with
	// pg_basebackup; Start returns once each one is streaming.
	Replicas int

	// Users are login roles created on each primary before its replicas are
	// made. They are not superusers and get no grants.
	Users []User
}

// User is a login role to create with [Options.Users].
type User struct {
	Name     string
	Password string
}

// Server is one running (or stopped) PostgreSQL server started by [Start]:
// a primary, or one of its streaming replicas. Its methods are safe for
// concurrent use.
type Server struct {
	// Name labels the server, see [Options.Name].
	Name string
	// Host is the address the server listens on: always "127.0.0.1".
	Host string
	// Port is the TCP port the server listens on; it is kept across
	// [Server.Restart].
	Port int
	// DataDir is the server's data directory; postgres.log is in it.
	DataDir string
	// Replicas are a primary's streaming replicas; nil for a replica.
	Replicas []*Server
	// Primary is the server a replica streams from; nil for a primary.
	Primary *Server

	bin  string
	opts Options

	mu      sync.Mutex
	cmd     *exec.Cmd     // the running postmaster, nil when stopped
	done    chan struct{} // closed when cmd has exited and been reaped
	orphans []proc        // children of a postmaster killed with SIGKILL
}

// Start starts a new primary with opts (and its replicas), waits until every
// server accepts connections and each replica streams, and returns it. On
// error nothing is left running. The servers run until [Server.Destroy]
// (or [Server.Stop]) or until the calling process dies.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Name == "" {
		opts.Name = "pg"
	}
	if _, err := opts.hostAuth(); err != nil {
		return nil, err
	}
	bin, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	root, err := RootDir()
	if err != nil {
		return nil, err
	}
	tmpl, err := templateDir(ctx, bin)
	if err != nil {
		return nil, err
	}
	s, err := newServer(root, bin, opts.Name, opts)
	if err != nil {
		return nil, err
	}
	if err := s.init(ctx, tmpl); err != nil {
		if derr := s.Destroy(context.WithoutCancel(ctx)); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	return s, nil
}

// newServer makes the data directory for a server named name.
func newServer(root, bin, name string, opts Options) (*Server, error) {
	safe := strings.Map(func(r rune) rune {
		if r == '/' || r == 0 || r == ' ' {
			return '_'
		}
		return r
	}, name)
	dir, err := os.MkdirTemp(root, safe+"-")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: create data directory: %w", err)
	}
	if err := chown(dir); err != nil {
		return nil, err
	}
	return &Server{Name: name, Host: "127.0.0.1", DataDir: dir, bin: bin, opts: opts}, nil
}

// init fills a primary's data directory from the template, starts it, creates
// the users and makes the replicas.
func (s *Server) init(ctx context.Context, tmpl string) error {
	if err := copyTemplate(ctx, tmpl, s.DataDir); err != nil {
		return err
	}
	if s.opts.TLS || len(s.opts.CertUsers) > 0 {
		if err := writeTLS(s.DataDir); err != nil {
			return err
		}
	}
	if err := writeConfig(s.DataDir, s.opts, true); err != nil {
		return err
	}
	if err := s.startOnFreePort(ctx); err != nil {
		return err
	}
	if err := s.setupRoles(ctx); err != nil {
		return err
	}
	for i := 1; i <= s.opts.Replicas; i++ {
		r, err := s.addReplica(ctx, fmt.Sprintf("%s-r%d", s.Name, i))
		if r != nil {
			s.Replicas = append(s.Replicas, r)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// setupRoles stores the superuser password with the configured encryption
// and creates Options.Users.
func (s *Server) setupRoles(ctx context.Context) error {
	var b strings.Builder
	fmt.Fprintf(&b, "SET password_encryption = %s;\n", quoteLiteral(s.opts.passwordEncryption()))
	if s.opts.passwordEncryption() != "scram-sha-256" {
		// initdb stored a scram secret.
		fmt.Fprintf(&b, "ALTER ROLE %s PASSWORD %s;\n", quoteIdent(SuperuserName), quoteLiteral(SuperuserPassword))
	}
	for _, u := range s.opts.Users {
		fmt.Fprintf(&b, "CREATE ROLE %s LOGIN PASSWORD %s;\n", quoteIdent(u.Name), quoteLiteral(u.Password))
	}
	if err := s.Exec(ctx, b.String()); err != nil {
		return fmt.Errorf("pgcluster: create roles on %s: %w", s.Name, err)
	}
	return nil
}

// startOnFreePort starts the postmaster on a free port, retrying with
// another port when one is taken between choosing and binding it.
func (s *Server) startOnFreePort(ctx context.Context) error {
	var err error
	for range 5 {
		var port int
		port, err = freePort()
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.Port = port
		err = s.startLocked(ctx)
		s.mu.Unlock()
		if !errors.Is(err, errPortInUse) {
			return err
		}
	}
	return err
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("pgcluster: find a free port: %w", err)
	}
	return port, nil
}

var errPortInUse = errors.New("port already in use")

// startLocked launches the postmaster on s.Port and waits until it accepts
// connections. s.mu is held.
func (s *Server) startLocked(ctx context.Context) error {
	if s.cmd != nil {
		return fmt.Errorf("pgcluster: %s is already running (pid %d)", s.Name, s.cmd.Process.Pid)
	}
	if len(s.orphans) > 0 {
		// After a SIGKILL of the postmaster, its children keep the old shared
		// memory attached until they notice and exit; postgres refuses to
		// start until then.
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := waitGone(wctx, s.orphans)
		cancel()
		if err != nil {
			return fmt.Errorf("pgcluster: wait for processes of the previous %s postmaster to exit: %w", s.Name, err)
		}
		s.orphans = nil
	}
	logPath := filepath.Join(s.DataDir, logFile)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgcluster: open %s: %w", logPath, err)
	}
	defer logf.Close()
	if err := chown(logPath); err != nil {
		return err
	}
	logStart, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("pgcluster: seek %s: %w", logPath, err)
	}
	attr, err := sysProcAttr(true)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", s.DataDir, "-p", strconv.Itoa(s.Port))
	cmd.Dir = s.DataDir
	cmd.Env = toolEnv()
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = attr
	if err := StartOnSpawner(cmd); err != nil {
		return fmt.Errorf("pgcluster: start postgres for %s: %w", s.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done

	if err := s.waitReady(ctx, done); err != nil {
		newLog := s.logSince(logStart)
		select {
		case <-done:
			s.cmd = nil
			if strings.Contains(newLog, "Address already in use") {
				return fmt.Errorf("pgcluster: start %s on port %d: %w", s.Name, s.Port, errPortInUse)
			}
		default:
			_ = s.stopLocked(context.WithoutCancel(ctx))
		}
		return fmt.Errorf("pgcluster: start %s on port %d: %w\n--- %s ---\n%s", s.Name, s.Port, err, logPath, lastLines(newLog, 30))
	}
	return nil
}

// waitReady polls until the server accepts a superuser connection, the
// postmaster exits, or ctx ends (at most a minute when ctx has no deadline).
func (s *Server) waitReady(ctx context.Context, done <-chan struct{}) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	var lastErr error
	err := poll(ctx, func() (bool, error) {
		select {
		case <-done:
			return false, errors.New("postgres exited during startup")
		default:
		}
		conn, err := connect(ctx, s.SuperDSN("postgres"))
		if err != nil {
			lastErr = err
			return false, nil
		}
		_ = conn.Close(ctx)
		return true, nil
	})
	if err != nil && lastErr != nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w (last connection error: %v)", err, lastErr)
	}
	return err
}

// Addr returns the server's TCP address, "127.0.0.1:port".
func (s *Server) Addr() string {
	return net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
}

// DSN returns a postgres:// URL for user, password and database (empty
// database means the user's name). It has sslmode=require for a TLS server
// and sslmode=disable otherwise.
func (s *Server) DSN(user, password, database string) string {
	u := url.URL{Scheme: "postgres", Host: s.Addr()}
	if password != "" {
		u.User = url.UserPassword(user, password)
	} else {
		u.User = url.User(user)
	}
	if database != "" {
		u.Path = "/" + database
	}
	if s.opts.TLS {
		u.RawQuery = "sslmode=require"
	} else {
		u.RawQuery = "sslmode=disable"
	}
	return u.String()
}

// SuperDSN returns the DSN of the superuser for database.
func (s *Server) SuperDSN(database string) string {
	return s.DSN(SuperuserName, SuperuserPassword, database)
}

// ClientCert writes a client certificate for user, signed by the server's
// CA, and its key into dir, and returns their paths (for sslcert and
// sslkey). The server must have TLS.
func (s *Server) ClientCert(dir, user string) (certFile, keyFile string, err error) {
	if !s.opts.TLS && len(s.opts.CertUsers) == 0 {
		return "", "", fmt.Errorf("pgcluster: ClientCert on %s: the server has no TLS", s.Name)
	}
	return writeClientCert(s.DataDir, dir, user)
}

// CACertPath returns the PEM file of the CA that signed a TLS server's
// certificate, for sslrootcert; "" when the server has no TLS.
func (s *Server) CACertPath() string {
	if !s.opts.TLS && len(s.opts.CertUsers) == 0 {
		return ""
	}
	return filepath.Join(s.DataDir, caCertFile)
}

// PID returns the postmaster's process ID, or 0 when it is not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Stop shuts the server down: a smart shutdown (SIGTERM), upgraded to a fast
// shutdown (SIGINT) if clients are still connected shortly after, then to an
// immediate one (SIGQUIT) and finally SIGKILL if it does not finish in time
// or ctx ends. Stopping a stopped server does nothing. Replicas of a primary
// are not stopped; see [Server.Destroy].
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked(ctx)
}

func (s *Server) stopLocked(ctx context.Context) error {
	if s.cmd == nil {
		return s.reapOrphansLocked(ctx)
	}
	pid, done := s.cmd.Process.Pid, s.done
	steps := []struct {
		sig  syscall.Signal
		wait time.Duration
	}{
		{syscall.SIGTERM, 300 * time.Millisecond},
		{syscall.SIGINT, 20 * time.Second},
		{syscall.SIGQUIT, 5 * time.Second},
	}
	for _, st := range steps {
		if err := syscall.Kill(pid, st.sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("pgcluster: signal %s (pid %d): %w", s.Name, pid, err)
		}
		t := time.NewTimer(st.wait)
		select {
		case <-done:
			t.Stop()
			s.cmd = nil
			return nil
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil {
			break
		}
	}
	s.killLocked()
	return s.reapOrphansLocked(ctx)
}

// killLocked sends SIGKILL to the running postmaster and waits for it,
// remembering its children, which outlive it for a moment. The postmaster
// is stopped first so that it forks no child while they are listed.
func (s *Server) killLocked() {
	pid := s.cmd.Process.Pid
	if syscall.Kill(pid, syscall.SIGSTOP) == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = poll(ctx, func() (bool, error) {
			st, ok := procState(pid)
			return !ok || st == 'T' || st == 'Z', nil
		})
		cancel()
	}
	s.orphans = append(s.orphans, childrenOf(pid)...)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// reapOrphansLocked kills the children left by a killed postmaster and waits
// until they are gone.
func (s *Server) reapOrphansLocked(ctx context.Context) error {
	if len(s.orphans) == 0 {
		return nil
	}
	for _, p := range s.orphans {
		if p.alive() {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := waitGone(wctx, s.orphans); err != nil {
		return fmt.Errorf("pgcluster: wait for processes of %s to exit: %w", s.Name, err)
	}
	s.orphans = nil
	return nil
}

// Kill sends SIGKILL to the postmaster only, simulating a crash, and waits
// until it has exited. Its children notice and exit on their own (Restart,
// Stop and Destroy make sure they are gone); a commit not yet written to WAL
// may be lost (see [Options.Settings]).
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return fmt.Errorf("pgcluster: kill %s: not running", s.Name)
	}
	s.killLocked()
	return nil
}

// Restart starts the server again on the same port and data directory,
// stopping it first if it is running, and waits until it accepts
// connections. After [Server.Kill] this runs crash recovery.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(ctx); err != nil {
		return err
	}
	return s.startLocked(ctx)
}

// Destroy stops the server and its replicas (replicas first) and removes
// their data directories, unless PGSHARD_KEEP_DATA=1. It is idempotent.
func (s *Server) Destroy(ctx context.Context) error {
	var errs []error
	for _, r := range s.Replicas {
		errs = append(errs, r.Destroy(ctx))
	}
	errs = append(errs, s.Stop(ctx))
	if os.Getenv(EnvKeepData) != "1" {
		if err := os.RemoveAll(s.DataDir); err != nil {
			errs = append(errs, fmt.Errorf("pgcluster: remove %s: %w", s.DataDir, err))
		}
	}
	return errors.Join(errs...)
}

// LogTail returns the last n lines of the server's postgres.log.
func (s *Server) LogTail(n int) string {
	f, err := os.Open(filepath.Join(s.DataDir, logFile))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const maxRead = 256 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > maxRead {
		_, _ = f.Seek(-maxRead, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return lastLines(string(b), n)
}

// logSince returns the log written after byte offset off.
func (s *Server) logSince(off int64) string {
	b, err := os.ReadFile(filepath.Join(s.DataDir, logFile))
	if err != nil || int64(len(b)) < off {
		return ""
	}
	return string(b[off:])
}

func lastLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	if n <= 0 || s == "" {
		return ""
	}
	b := []byte(s)
	i := len(b)
	for range n {
		j := bytes.LastIndexByte(b[:i], '\n')
		if j < 0 {
			return s
		}
		i = j
	}
	return s[i+1:]
}
