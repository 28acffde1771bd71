package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/shardmap/metarpc"
)

func TestTransactionsList(t *testing.T) {
	// A cluster without recovery says so.
	c := startCtlMeta(t, ctlMapYAML, ctlTokenOpts)
	r := c.cli(t, "transactions", "list").want(t, exitError)
	ctlWantContains(t, "stderr", r.stderr, "no two-phase recovery")

	now := time.Now()
	opts := ctlTokenOpts
	opts.Transactions = func() (metarpc.TransactionsReport, bool) {
		return metarpc.TransactionsReport{
			ScannedAt: now.Add(-time.Second),
			InDoubt: []metarpc.InDoubtTransaction{{GID: "pgshard/1/aa/s1/proxy-a", Shard: "s2", Addr: "10.0.0.3:5432", Database: "app",
				Age: 3 * time.Second, Proxy: "proxy-a", ProxyAlive: true, State: "in progress"}},
			Decisions: []metarpc.TransactionDecision{{GID: "pgshard/1/bb/s1/proxy-a", Shard: "s1", Database: "app", Committed: true, DecidedAt: now.Add(-2 * time.Second)}},
			Problems:  []metarpc.TransactionProblem{{Shard: "s2", Addr: "10.0.0.3:5432", Error: "max_prepared_transactions = 0: ..."}},
		}, true
	}
	c = startCtlMeta(t, ctlMapYAML, opts)
	r = c.cli(t, "transactions", "list").want(t, exitOK)
	for _, want := range []string{"max_prepared_transactions = 0", "pgshard/1/aa/s1/proxy-a", "in progress", "pgshard/1/bb/s1/proxy-a", "committed"} {
		ctlWantContains(t, "stdout", r.stdout, want)
	}
	r = c.cli(t, "transactions", "list", "-o", "json").want(t, exitOK)
	var got metarpc.TransactionsReport
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if len(got.InDoubt) != 1 || got.InDoubt[0].Age != 3*time.Second || !got.InDoubt[0].ProxyAlive ||
		len(got.Decisions) != 1 || !got.Decisions[0].Committed || len(got.Problems) != 1 || !strings.Contains(r.stdout, `"age_ns"`) {
		t.Errorf("json: %+v\n%s", got, r.stdout)
	}
}

func TestShardsListTwoPhaseProblems(t *testing.T) {
	opts := ctlTokenOpts
	opts.Transactions = func() (metarpc.TransactionsReport, bool) {
		return metarpc.TransactionsReport{ScannedAt: time.Now(), Problems: []metarpc.TransactionProblem{
			{Shard: "s2", Addr: "10.0.0.3:5432", Error: "max_prepared_transactions = 0: set it"}}}, true
	}
	c := startCtlMeta(t, ctlMapYAML, opts)
	r := c.cli(t, "shards", "list").want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout, "s2 (10.0.0.3:5432): max_prepared_transactions = 0: set it")
	r = c.cli(t, "shards", "list", "-o", "json").want(t, exitOK)
	var got shardsListResult
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if len(got.TwoPhaseProblems) != 1 || got.TwoPhaseProblems[0].Shard != "s2" {
		t.Errorf("json: %+v", got)
	}
}
