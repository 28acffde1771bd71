package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// defaultFailoverTimeout is how long `pgshard failover` lets the leader
// take unless --timeout says otherwise.
const defaultFailoverTimeout = 60 * time.Second

type failoverOptions struct {
	conn   metaConnOptions
	shard  string
	to     string
	stdout io.Writer
}

// newFailoverCommand is `pgshard failover`: make a replica of a shard its
// primary, through the meta leader's failover controller.
func newFailoverCommand(stdout io.Writer) *cobra.Command {
	o := &failoverOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:   "failover --shard SHARD [--to HOST:PORT]",
		Short: "Make a replica the primary of a shard (a switchover, or a failover if the primary is down)",
		Long: `Ask the leader of the meta cluster to make a replica the primary of a shard.
This is a planned switchover that loses nothing: proxies hold the shard's
writes, open transactions on the primary finish (up to the leader's
--switchover-drain, then they are ended), the replica replays everything,
then it is promoted and the proxies send the held writes to it. The old
primary is fenced: it gets no traffic until it is re-joined as a replica
(pgshard shards rejoin). A primary that is down is not switched over: the
meta leader fails it over by itself.

--to names the replica to promote (host:port as in the map); without it the
leader chooses. --timeout bounds the whole switch. The command prints the new
primary and the map epoch that has it.

Exit status: 0 when the shard has its new primary; 1 when it was refused (the
primary is unchanged); 3 when the outcome is unknown (the
answer was lost): check with "pgshard shards list" before running it again.`,
		Example: `  pgshard failover --shard s1
  pgshard failover --shard s1 --to 10.0.0.12:5432 --timeout 2m`,
		Args:              usageArgs(cobra.NoArgs),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.conn.Complete(cmd)
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.conn.addFlags(cmd)
	// Here --timeout bounds the whole switchover, not one quick call.
	o.conn.timeout = defaultFailoverTimeout
	if f := cmd.Flags().Lookup("timeout"); f != nil {
		f.DefValue = defaultFailoverTimeout.String()
		f.Usage = "how long the switchover may take, finding the leader included"
	}
	fs := cmd.Flags()
	fs.StringVar(&o.shard, "shard", "", "the shard whose primary changes (required)")
	fs.StringVar(&o.to, "to", "", "the replica to promote, host:port (default: the leader chooses)")
	_ = cmd.RegisterFlagCompletionFunc("shard", func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		return o.complete(cmd, func(s *metarpc.ShardStatus) []string {
			return []string{s.Name + "\tprimary " + s.Primary.String()}
		})
	})
	_ = cmd.RegisterFlagCompletionFunc("to", func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		return o.complete(cmd, func(s *metarpc.ShardStatus) []string {
			if s.Name != o.shard {
				return nil
			}
			out := make([]string, 0, len(s.Replicas))
			for _, r := range s.Replicas {
				out = append(out, r.String()+"\treplica of "+s.Name)
			}
			return out
		})
	})
	return cmd
}

// Validate checks the flags.
func (o *failoverOptions) Validate() error {
	if err := o.conn.Validate(); err != nil {
		return err
	}
	if strings.TrimSpace(o.shard) == "" {
		return usageError{errors.New("failover: --shard is required")}
	}
	if o.to != "" {
		if _, _, err := net.SplitHostPort(o.to); err != nil {
			return usageError{fmt.Errorf("failover: --to %q is not host:port: %w", o.to, err)}
		}
	}
	return nil
}

// failoverResult is the output of failover.
type failoverResult struct {
	Shard      string `json:"shard"`
	NewPrimary string `json:"new_primary"`
	// Epoch is the epoch of the map that has the new primary.
	Epoch uint64 `json:"epoch"`
}

func (r *failoverResult) writeTable(w io.Writer) error {
	_, err := fmt.Fprintf(w, "Shard %s: the primary is now %s (map epoch %d).\n", r.Shard, r.NewPrimary, r.Epoch)
	return err
}

func (o *failoverOptions) Run(ctx context.Context) error {
	return o.conn.withClient(ctx, func(cctx context.Context, c *metarpc.Client) error {
		epoch, primary, err := c.Switchover(cctx, o.shard, o.to)
		if err != nil {
			return o.explain(err)
		}
		return newPrinter(o.conn.output, o.stdout).print(&failoverResult{Shard: o.shard, NewPrimary: primary, Epoch: epoch})
	})
}

// explain rephrases a Switchover error: whether anything changed, and
// what to do.
func (o *failoverOptions) explain(err error) error {
	what := "failover of shard " + o.shard
	msg := func() string {
		var se interface{ GRPCStatus() *status.Status }
		switch {
		case errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded:
			return "it did not finish within --timeout " + o.conn.timeout.String()
		case errors.Is(err, context.Canceled):
			return "interrupted"
		case errors.As(err, &se):
			return se.GRPCStatus().Message()
		}
		return err.Error()
	}
	switch {
	case errors.Is(err, metarpc.ErrMaybeStarted):
		return uncertainError{&explainedError{fmt.Sprintf("%s: the outcome is unknown (%s): it may have started, and the meta cluster "+
			"finishes or rolls back what it started; check the shard's primary and switch with \"pgshard shards list\" before running it again",
			what, msg()), err}}
	case errors.Is(err, metarpc.ErrNotFound):
		return &explainedError{fmt.Sprintf("%s: %s (see pgshard shards list)", what, msg()), err}
	case errors.Is(err, metarpc.ErrFailedPrecondition):
		return &explainedError{fmt.Sprintf("%s: refused, nothing was changed: %s", what, msg()), err}
	case errors.Is(err, metarpc.ErrAborted):
		return &explainedError{fmt.Sprintf("%s: aborted and rolled back, the primary is unchanged: %s", what, msg()), err}
	case errors.Is(err, metarpc.ErrUnimplemented):
		return &explainedError{fmt.Sprintf("%s: the meta cluster cannot switch primaries: %s", what, msg()), err}
	}
	var ia *metarpc.InvalidArgumentError
	if errors.As(err, &ia) && ia.Field == "to" {
		return &explainedError{fmt.Sprintf("%s: the meta cluster refused --to: %s", what, strings.Join(ia.Problems, "; ")), err}
	}
	return o.conn.explain(what, err)
}

// complete completes a flag from the shards of the current map, with the
// connection flags given so far.
func (o *failoverOptions) complete(cmd *cobra.Command, values func(*metarpc.ShardStatus) []string) ([]string, cobra.ShellCompDirective) {
	const fail = cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	conn := o.conn
	conn.Complete(cmd)
	if err := conn.Validate(); err != nil {
		return nil, fail
	}
	conn.timeout = min(conn.timeout, completionTimeout)
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	var out []string
	err := conn.withClient(ctx, func(cctx context.Context, c *metarpc.Client) error {
		_, shards, err := c.ListShards(cctx)
		for i := range shards {
			out = append(out, values(&shards[i])...)
		}
		return err
	})
	if err != nil {
		return nil, fail
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
