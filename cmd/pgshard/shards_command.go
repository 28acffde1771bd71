package main

import (
	"context"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// newShardsCommand is `pgshard shards`: the shards of the current map.
func newShardsCommand(stdout io.Writer) *cobra.Command {
	cmd := groupCommand("shards", "List the shards of the current shard map")
	cmd.AddCommand(newShardsListCommand(stdout))
	return cmd
}

type shardsListOptions struct {
	conn   metaConnOptions
	stdout io.Writer
}

func newShardsListCommand(stdout io.Writer) *cobra.Command {
	o := &shardsListOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the shards of the current map: name, primary, replicas, state",
		Long: `List the shards of the current shard map: name, primary, replicas and state
(active, readonly or offline). -o json prints an object with the map's epoch
and the shards.`,
		Args:              usageArgs(cobra.NoArgs),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              o.conn.runE(o.Run),
	}
	o.conn.addFlags(cmd)
	return cmd
}

// shardsListResult is the output of shards list.
type shardsListResult struct {
	// Epoch is the epoch of the map the shards are from; 0 when there is
	// no map yet.
	Epoch  uint64      `json:"epoch"`
	Shards []shardJSON `json:"shards"`
}

func (r *shardsListResult) writeTable(w io.Writer) error {
	if r.Epoch == 0 {
		_, err := io.WriteString(w, "No shard map has been applied yet.\n")
		return err
	}
	t := newTable(w, "NAME", "PRIMARY", "REPLICAS", "STATE")
	for _, s := range r.Shards {
		t.row(s.Name, s.Primary, orDash(strings.Join(s.Replicas, ",")), s.State)
	}
	return t.flush()
}

func (o *shardsListOptions) Run(ctx context.Context) error {
	return o.conn.withClient(ctx, func(cctx context.Context, c *metarpc.Client) error {
		epoch, shards, err := c.ListShards(cctx)
		if err != nil {
			return o.conn.explain("list the shards", err)
		}
		r := &shardsListResult{Epoch: epoch, Shards: make([]shardJSON, 0, len(shards))}
		for i := range shards {
			r.Shards = append(r.Shards, shardToJSON(&shards[i]))
		}
		return newPrinter(o.conn.output, o.stdout).print(r)
	})
}
