package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// newTransactionsCommand is `pgshard transactions`: transactions over
// several shards (two-phase commit) as the meta leader's recovery sees
// them.
func newTransactionsCommand(stdout io.Writer) *cobra.Command {
	cmd := groupCommand("transactions", "Show transactions over several shards (two-phase commit)")
	cmd.AddCommand(newTransactionsListCommand(stdout))
	return cmd
}

type transactionsListOptions struct {
	conn   metaConnOptions
	stdout io.Writer
}

func newTransactionsListCommand(stdout io.Writer) *cobra.Command {
	o := &transactionsListOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List in-doubt prepared transactions, recent commit decisions and shards that cannot take part",
		Long: `List what the meta leader's two-phase recovery saw in its last round (every few
seconds): the pgshard prepared transactions on each shard primary (in doubt:
their proxy is still committing them, or recovery resolved them in that round,
or cannot now and says why), the recent commit and abort decisions recorded
on the decision shards, and the shards where two-phase commit cannot work
(unreachable, or max_prepared_transactions = 0).`,
		Args:              usageArgs(cobra.NoArgs),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              o.conn.runE(o.Run),
	}
	o.conn.addFlags(cmd)
	return cmd
}

// transactionsListResult is the output of transactions list.
type transactionsListResult struct {
	metarpc.TransactionsReport
	now time.Time
}

func (r *transactionsListResult) writeTable(w io.Writer) error {
	fmt.Fprintf(w, "Last recovery round: %s\n\n", formatAge(r.now, r.ScannedAt))
	if len(r.Problems) > 0 {
		t := newTable(w, "SHARD", "PRIMARY", "PROBLEM")
		for _, p := range r.Problems {
			t.row(p.Shard, p.Addr, p.Error)
		}
		if err := t.flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	if len(r.InDoubt) == 0 {
		fmt.Fprintln(w, "No prepared transaction is in doubt.")
	} else {
		t := newTable(w, "GID", "SHARD", "DATABASE", "AGE", "PROXY ALIVE", "STATE")
		for _, d := range r.InDoubt {
			t.row(d.GID, d.Shard, d.Database, d.Age.Round(time.Millisecond).String(), yesNo(d.ProxyAlive), d.State)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)
	if len(r.Decisions) == 0 {
		_, err := io.WriteString(w, "No recent decision.\n")
		return err
	}
	t := newTable(w, "DECIDED", "GID", "DECISION SHARD", "DATABASE", "OUTCOME")
	for _, d := range r.Decisions {
		outcome := "rolled back"
		if d.Committed {
			outcome = "committed"
		}
		t.row(formatAge(r.now, d.DecidedAt), d.GID, d.Shard, d.Database, outcome)
	}
	return t.flush()
}

func (o *transactionsListOptions) Run(ctx context.Context) error {
	return o.conn.withClient(ctx, func(cctx context.Context, c *metarpc.Client) error {
		rep, err := c.ListTransactions(cctx)
		if err != nil {
			return o.conn.explain("list the transactions", err)
		}
		if rep.InDoubt == nil {
			rep.InDoubt = []metarpc.InDoubtTransaction{}
		}
		if rep.Decisions == nil {
			rep.Decisions = []metarpc.TransactionDecision{}
		}
		if rep.Problems == nil {
			rep.Problems = []metarpc.TransactionProblem{}
		}
		return newPrinter(o.conn.output, o.stdout).print(&transactionsListResult{TransactionsReport: rep, now: time.Now()})
	})
}
