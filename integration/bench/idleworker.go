package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// idleWorkerCmd is the first argument that makes this program a load
// generator of the idle-clients comparison (idle.go) instead of the
// benchmark: the benchmark starts several of them so that neither it nor
// one generator holds all the client connections (the machine allows
// 20,000 open files per process).
const idleWorkerCmd = "idle-worker"

// idleWorker opens -n connections to -dsn, each authenticating and
// running one query, and reports "ready OK FAILED FIRST-ERROR" on stdout.
// It then holds them idle; each line "check" on stdin runs one more query
// on every connection and reports "checked OK FAILED FIRST-ERROR". At the
// end of stdin it closes them and exits.
func idleWorker(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet(idleWorkerCmd, flag.ContinueOnError)
	dsn := fs.String("dsn", "", "connection string")
	n := fs.Int("n", 0, "connections to open")
	par := fs.Int("parallel", 16, "connections opened at the same time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := pgconn.ParseConfig(*dsn)
	if err != nil {
		return fmt.Errorf("parse -dsn: %w", err)
	}
	cfg.ConnectTimeout = time.Minute
	ctx := context.Background()
	conns := make([]*pgconn.PgConn, *n)
	var tally idleTally
	eachParallel(len(conns), *par, func(i int) {
		c, err := pgconn.ConnectConfig(ctx, cfg)
		if err == nil {
			err = idleQuery(ctx, c)
		}
		if err != nil {
			tally.fail(err)
			if c != nil {
				_ = c.Close(ctx)
			}
			return
		}
		conns[i] = c
		tally.ok.Add(1)
	})
	fmt.Fprintf(stdout, "ready %s\n", tally.String())
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close(ctx)
			}
		}
	}()
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		if sc.Text() != "check" {
			continue
		}
		var t idleTally
		eachParallel(len(conns), *par, func(i int) {
			if conns[i] == nil {
				return // failed to connect: counted at ready
			}
			if err := idleQuery(ctx, conns[i]); err != nil {
				t.fail(err)
				return
			}
			t.ok.Add(1)
		})
		fmt.Fprintf(stdout, "checked %s\n", t.String())
	}
	return sc.Err()
}

// eachParallel calls f(i) for every i in [0, n) from par goroutines (at
// least one) and returns when all calls have returned.
func eachParallel(n, par int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(par, 1) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}

// idleQuery runs the query every idle client runs once after connecting
// and again at the check.
func idleQuery(ctx context.Context, c *pgconn.PgConn) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := c.Exec(ctx, "SELECT 1").ReadAll()
	if err != nil {
		return err
	}
	if len(res) == 1 && res[0].Err == nil && len(res[0].Rows) == 1 {
		return nil
	}
	return errors.New("SELECT 1 did not return one row")
}

// idleTally counts connections that worked and failed.
type idleTally struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	first      string
}

func (t *idleTally) fail(err error) {
	t.failed.Add(1)
	t.mu.Lock()
	if t.first == "" {
		t.first = err.Error()
	}
	t.mu.Unlock()
}

func (t *idleTally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	first := t.first
	if first == "" {
		first = "-"
	}
	return fmt.Sprintf("%d %d %s", t.ok.Load(), t.failed.Load(), first)
}
