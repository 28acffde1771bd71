package shardbench_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/shardbench"
	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
)

// TestMain checks that no PostgreSQL server and no goroutine of the
// in-process proxies outlives the tests.
func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaksOrGoroutines(m)) }

// The test's workload: small enough for a 2-core machine running the race
// detector, big enough that every shard gets transactions in every mode.
const (
	shards       = 4
	scale        = 1
	clients      = 8
	jobs         = 2
	transactions = 100 // per client, script and mode
)

// modes are pgbench's query modes (-M).
var modes = []string{"simple", "extended", "prepared"}

// runTimeout bounds one pgbench run; the runs take a few seconds at most.
const runTimeout = 15 * time.Second

// TestPgbenchShardedAccounts runs pgbench's accounts workload (update an
// account, read it back, log the change in the history; as one
// transaction and as autocommit statements) through pgshard over four
// shards, with the accounts and their history range- and hash-sharded by
// aid, in every query mode. pgbench must process every transaction
// without a failure, and afterwards every row must sit on the shard the
// map names and every balance must equal the sum of its logged deltas.
func TestPgbenchShardedAccounts(t *testing.T) {
	integration.SkipIfNoPostgres(t)
	bin, err := shardbench.FindPgbench()
	if err != nil {
		t.Fatal(err)
	}
	for _, strategy := range []shardmap.Strategy{shardmap.Range, shardmap.Hash} {
		t.Run(string(strategy), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			cl := integration.NewCluster(t, integration.Shards(shards), integration.Name("sb-"+string(strategy)))
			setup, err := shardbench.NewSetup(strategy, cl.Shards, scale)
			if err != nil {
				t.Fatal(err)
			}
			if err := setup.Load(ctx); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			mapPath := filepath.Join(dir, "shardmap.yaml")
			if err := setup.WriteMap(mapPath); err != nil {
				t.Fatal(err)
			}
			cfg := testproxy.Config(t, cl.Shards[0])
			cfg.Shards = nil // the map's
			cfg.ShardMapFile = mapPath
			p := testproxy.Start(t, cfg)
			host, port := splitAddr(t, p.Addr)

			var committed int64 // transactions pgbench processed, over all runs
			uncounted := false  // a run was killed: committed is a lower bound
			var cutOff int64    // accounts a killed autocommit run may have left unbalanced
			for _, script := range shardbench.ScriptNames {
				path, err := shardbench.WriteScript(dir, script)
				if err != nil {
					t.Fatal(err)
				}
				for _, mode := range modes {
					t.Run(script+"/"+mode, func(t *testing.T) {
						ctx, cancel := context.WithTimeout(ctx, runTimeout)
						defer cancel()
						out, err := shardbench.Pgbench{
							Bin: bin, Host: host, Port: port,
							User: testproxy.User, Password: testproxy.Password, Database: "postgres",
							Script: path, Mode: mode, Clients: clients, Jobs: jobs,
							Transactions: transactions, Scale: scale,
						}.Run(ctx)
						if err != nil {
							// A client got no answer. Its committed
							// transactions are unknown now; and a session
							// stuck on a server connection keeps the
							// proxy from shutting down until the server
							// ends that connection.
							uncounted = true
							if script == shardbench.Autocommit {
								// A client cut off between its UPDATE and
								// its INSERT leaves its account unbalanced.
								cutOff += clients
							}
							stacks := proxyStacks()
							terminateClients(t, cl.Shards)
							t.Fatalf("%v: the proxy stopped answering a client\npgbench so far:\n%s\nproxy goroutines:\n%s", err, out.Text, stacks)
						}
						committed += out.Processed
						checkRun(t, out)
					})
				}
			}

			tot, err := setup.Check(ctx)
			switch {
			case err == nil:
			case tot.Misplaced == 0 && tot.Missing == 0 && tot.Duplicated == 0 && tot.Unbalanced <= cutOff:
				t.Logf("%v (%d clients of an autocommit run were cut off mid-script)", err, cutOff)
			default:
				t.Error(err)
			}
			if tot.Accounts != setup.Accounts() {
				t.Errorf("%d accounts over the shards, want %d", tot.Accounts, setup.Accounts())
			}
			if tot.History != committed && !uncounted {
				t.Errorf("%d history rows over the shards, want one per transaction pgbench processed, %d", tot.History, committed)
			}
			for _, st := range tot.Shards {
				t.Logf("shard %s: %d accounts, %d history rows, sum(abalance) %d", st.Name, st.Accounts, st.History, st.Balance)
				// Thousands of random aids over four even shards: each
				// shard gets some.
				if st.Accounts == 0 || st.History == 0 {
					t.Errorf("shard %s has %d accounts and %d history rows; the map spreads both over every shard", st.Name, st.Accounts, st.History)
				}
			}
		})
	}
}

// checkRun fails the test unless pgbench processed every transaction of the
// run without a failure.
func checkRun(t *testing.T, out shardbench.Output) {
	t.Helper()
	want := int64(clients * transactions)
	var problem string
	switch {
	case out.ExitErr != nil:
		problem = fmt.Sprintf("pgbench %v", out.ExitErr)
	case !out.HaveProcessed || !out.HaveFailed || !out.HaveTPS:
		problem = "pgbench printed no summary"
	case out.Failed != 0 || out.Processed != want || out.Planned != want:
		problem = fmt.Sprintf("%d/%d transactions processed, %d failed; want %d, 0 failed", out.Processed, out.Planned, out.Failed, want)
	}
	if problem != "" {
		t.Errorf("%s:\n%s", problem, out.Text)
		return
	}
	t.Logf("%d transactions, %.0f tps, latency %.3f ms", out.Processed, out.TPS, out.LatencyMs)
}

// terminateClients ends every client connection of the servers, the
// proxy's included.
func terminateClients(t *testing.T, servers []*pgcluster.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range servers {
		err := s.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
		if err != nil {
			t.Errorf("end the proxy's connections to %s: %v", s.Name, err)
		}
	}
}

// proxyStacks returns the stacks of the in-process proxy's goroutines,
// for a run that hung.
func proxyStacks() string {
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		return err.Error()
	}
	var keep []string
	for g := range strings.SplitSeq(b.String(), "\n\n") {
		if strings.Contains(g, "pgshard/proxy") || strings.Contains(g, "pgshard/router") {
			keep = append(keep, g)
		}
	}
	return strings.Join(keep, "\n\n")
}

// splitAddr splits the proxy's "host:port" for pgbench's -h and -p.
func splitAddr(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("proxy address: %v", err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("proxy address %q: %v", addr, err)
	}
	return host, port
}
