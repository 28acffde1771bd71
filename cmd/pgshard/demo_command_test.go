package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/demo"
	"github.com/pgshard/pgshard/internal/pgcluster"
)

// syncBuffer is a bytes.Buffer safe for a running command (the demo,
// a proxy) and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDemoServesSampleDataAndCleansUp(t *testing.T) {
	integration.SkipIfNoPostgres(t)
	var stdout, stderr syncBuffer
	type readyInfo struct {
		addr     string
		dataDirs []string
	}
	ready := make(chan readyInfo, 1)
	metaAddr := freeAddr(t)
	o := &demoOptions{
		listen:      "127.0.0.1:0",
		adminListen: "",
		metaListen:  metaAddr,
		stdout:      &stdout,
		stderr:      &stderr,
		ready: func(addr string, cl *pgcluster.Cluster) {
			var dirs []string
			for _, s := range cl.Servers() {
				dirs = append(dirs, s.DataDir)
			}
			ready <- readyInfo{addr, dirs}
		},
	}
	if err := o.Complete(); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()

	var info readyInfo
	select {
	case info = <-ready:
	case err := <-done:
		t.Fatalf("demo returned before it was ready: %v\nstderr:\n%s", err, stderr.String())
	case <-time.After(time.Minute):
		cancel()
		<-done
		t.Fatalf("demo not ready after a minute\nstderr:\n%s", stderr.String())
	}

	addr := info.addr
	// Before the banner stderr holds the progress lines and nothing else:
	// no log line (the embedded meta's Raft election included), counts
	// in the singular or plural they need.
	progress := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(progress) != 2 || progress[0] != "Starting PostgreSQL (2 shards, each a primary and 1 streaming replica)..." ||
		!strings.HasPrefix(progress[1], "Loading 1000 sample users (and their orders) into 2 shards, checking them through the proxy at ") {
		t.Errorf("stderr before the banner, want the two progress lines only:\n%s", stderr.String())
	}
	if len(info.dataDirs) != 4 {
		t.Errorf("demo runs %d servers, want two shards of a primary and a replica", len(info.dataDirs))
	}
	banner := stdout.String()
	for _, want := range []string{
		`psql "` + demo.ConnString(addr) + `"`,
		"primary  127.0.0.1:",
		"replica  127.0.0.1:",
		"SELECT count(*), avg(amount) FROM orders;",
		"Press Ctrl-C to stop.",
	} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	if strings.Contains(banner, "/metrics") {
		t.Errorf("banner shows a metrics URL with --admin-listen \"\":\n%s", banner)
	}

	qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
	// psql's protocol: reads over both shards are merged in it.
	conn, err := pgx.Connect(qctx, demo.ConnString(addr)+"?sslmode=disable&default_query_exec_mode=simple_protocol")
	if err != nil {
		qcancel()
		t.Fatalf("connect to the proxy as %s: %v", demo.User, err)
	}
	var n int64
	err = conn.QueryRow(qctx, "SELECT count(*) FROM users").Scan(&n)
	_ = conn.Close(qctx)
	qcancel()
	if err != nil {
		t.Fatalf("count users through the proxy: %v", err)
	}
	if n != demo.SampleRows {
		t.Errorf("users has %d rows, want %d", n, demo.SampleRows)
	}
	// users is cacheable: repeated reads of a row become hits, which the
	// banner says where to watch.
	if !strings.Contains(banner, "-c 'SHOW CACHE'") {
		t.Errorf("banner does not say how to watch the cache:\n%s", banner)
	}
	demoCacheHits(t, ctx, addr)
	// The embedded meta cluster answers the DBA CLI with no flags but
	// its address, and holds the demo's map.
	var out, errOut bytes.Buffer
	if code := run(ctx, []string{"map", "show", "--meta", metaAddr, "-o", "json"}, strings.NewReader(""), &out, &errOut); code != 0 || !strings.Contains(out.String(), `"epoch": 1`) {
		t.Errorf("map show against the demo: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	out.Reset()
	if code := run(ctx, []string{"proxies", "list", "--meta", metaAddr}, strings.NewReader(""), &out, &errOut); code != 0 || !strings.Contains(out.String(), "embedded-proxy") {
		t.Errorf("proxies list against the demo: exit %d\n%s%s", code, out.String(), errOut.String())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo returned %v after cancel, want nil\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("demo did not stop within a minute of cancel\nstderr:\n%s", stderr.String())
	}
	pids, err := pgcluster.Running()
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) != 0 {
		t.Errorf("postgres servers still running after the demo stopped: pids %v", pids)
	}
	for _, d := range info.dataDirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("data directory %s still exists after the demo stopped (stat: %v)", d, err)
		}
	}
}

func TestDemoRejectsBadListenAddress(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"demo", "--listen", "no-port", "--admin-listen", ""}, strings.NewReader(""), &stdout, &stderr)
	if code != exitUsage {
		t.Fatalf("exit code %d, want %d (stderr: %s)", code, exitUsage, stderr.String())
	}
	if !strings.Contains(stderr.String(), "--listen") {
		t.Errorf("stderr does not name the flag: %s", stderr.String())
	}
	if pids, err := pgcluster.Running(); err == nil && len(pids) != 0 {
		t.Errorf("postgres started for an invalid command line: pids %v", pids)
	}
}

// demoCacheHits reads one user through the demo proxy until the admin
// console's SHOW CACHE counts hits.
func demoCacheHits(t *testing.T, ctx context.Context, addr string) {
	t.Helper()
	qctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(qctx, demo.ConnString(addr)+"?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	console, err := pgx.Connect(qctx, demo.ConsoleConnString(addr)+"?sslmode=disable&default_query_exec_mode=simple_protocol")
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close(context.Background())
	var last string
	for qctx.Err() == nil {
		var name string
		if err := conn.QueryRow(qctx, "SELECT name FROM users WHERE id = $1", 42).Scan(&name); err != nil {
			t.Fatal(err)
		}
		var hits, all string
		rows, err := console.Query(qctx, "SHOW CACHE")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				t.Fatal(err)
			}
			if k == "hits" {
				hits = v
			}
			all += k + ": " + v + "\n"
		}
		rows.Close()
		if hits != "" && hits != "0" {
			return
		}
		if qctx.Err() == nil {
			last = all
		}
		time.Sleep(50 * time.Millisecond) // the stream comes up within a second: poll
	}
	t.Fatalf("no cache hit through the demo proxy within 20s; SHOW CACHE:\n%s", last)
}
