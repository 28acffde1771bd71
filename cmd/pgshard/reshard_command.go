package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/replication/reshard"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// `pgshard reshard ...` and `pgshard shards add`: resharding through the
// meta leader's resharding controller (replication/reshard). The RPCs
// only create a move or record a request; the commands then follow the
// move's record (ListMoves) until what was asked is done, with a
// progress bar on a terminal and plain lines otherwise.

// defaultReshardWait bounds how long a reshard command follows its move.
const defaultReshardWait = time.Hour

// reshardPoll is how often a following command reads the move (a
// variable for tests).
var reshardPoll = 500 * time.Millisecond

func newReshardCommand(stdout io.Writer) *cobra.Command {
	cmd := groupCommand("reshard", "Split key intervals and move them to other shards, online, verified, with cutover and rollback")
	cmd.AddCommand(
		newReshardSplitCommand(stdout),
		newReshardMoveCommand(stdout),
		newReshardStatusCommand(stdout),
	)
	for _, a := range []struct{ action, short, long string }{
		{reshard.ActionVerify, "Compare the interval's rows on both shards (counts, checksums, differing keys)",
			"Compare, per table, the row count and an order-independent checksum of the interval's\nrows on the source and the target (after cutover: the target and the source), and\nlist the differing keys (bounded). A cutover refuses to start after a failed verify\nunless --force."},
		{reshard.ActionCutover, "Give the interval to the target: hold, fence, catch up, verify, switch",
			"Cut the move over: refused while the replication lag is above the meta member's\n--reshard-max-lag; then an epoch holds the interval in the proxies, the source is\nfenced for it (writes there fail with SQLSTATE PS001), the target catches up,\nthe rows are verified (a mismatch aborts unless --force), the forward\nreplication stops, the target's sequences move past the source's, a reverse\nreplication starts (for rollback), and an epoch gives the interval to the target.\nA cutover that does not finish within --reshard-cutover-timeout aborts back to the\nsource with nothing lost. Before the copy ends, it asks for a cutover as soon as\ncopied."},
		{reshard.ActionRollback, "Give a cut-over interval back to its source, without loss (until cleanup)",
			"Roll a cut-over move back: the same held cutover in the other direction, over the\nreverse replication started at cutover; then the source's fence is lifted and the\ninterval's rows are deleted from the target."},
		{reshard.ActionCancel, "Abandon a move that is not cut over: drop its replication, delete the copied rows",
			"Cancel a move before its cutover (a running cutover is aborted first): its\npublication, subscription and replication slot are dropped on both shards and the\nrows copied to the target are deleted. After cutover, roll back instead."},
		{reshard.ActionCleanup, "Finish a cut-over move: drop replication, delete the moved rows from the source",
			"Clean a cut-over move up: the replication objects of both directions are dropped\nand the interval's rows deleted from the source in throttled batches; the source's\nfence stays. No rollback is possible afterwards."},
	} {
		cmd.AddCommand(newReshardActionCommand(stdout, a.action, a.short, a.long))
	}
	return cmd
}

// moveRefOptions name a move: an argument (its id) or --distribution and
// --interval.
type moveRefOptions struct {
	distribution string
	interval     string
}

func (o *moveRefOptions) addFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&o.distribution, "distribution", "", "the move's distribution (with --interval, instead of the move's id)")
	fs.StringVar(&o.interval, "interval", "", "the move's interval, [LO,HI) (with --distribution)")
}

// ref resolves the move reference of args.
func (o *moveRefOptions) ref(args []string, optional bool) (metarpc.MoveRef, error) {
	switch {
	case len(args) == 1 && (o.distribution != "" || o.interval != ""):
		return metarpc.MoveRef{}, usageError{errors.New("name the move by its id or by --distribution and --interval, not both")}
	case len(args) == 1:
		return metarpc.MoveRef{ID: args[0]}, nil
	case o.distribution != "" && o.interval != "":
		return metarpc.MoveRef{Distribution: o.distribution, Interval: o.interval}, nil
	case o.distribution != "" || o.interval != "":
		return metarpc.MoveRef{}, usageError{errors.New("--distribution and --interval go together")}
	case optional:
		return metarpc.MoveRef{}, nil
	}
	return metarpc.MoveRef{}, usageError{errors.New("name the move: its id (see pgshard reshard status), or --distribution and --interval")}
}

// --- shards add ---

type shardsAddOptions struct {
	conn     metaConnOptions
	primary  string
	replicas []string
	stdout   io.Writer
}

func newShardsAddCommand(stdout io.Writer) *cobra.Command {
	o := &shardsAddOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:   "add NAME --primary HOST:PORT [--replica HOST:PORT]...",
		Short: "Register a new, empty shard (owning no interval); its tables are created from an existing shard",
		Long: `Register a new shard in the shard map. It owns no key interval, so no data
moves: it is a plain map change. Before committing it, the meta leader
creates on its primary the sharded tables of every distribution, from a shard
that has them (pg_dump --schema-only of those tables, as the meta member's
PostgreSQL role); types, functions and referenced tables they need must exist
there already. Then move intervals onto it with pgshard reshard move.`,
		Example:           `  pgshard shards add s3 --primary 10.0.0.30:5432 --replica 10.0.0.31:5432`,
		Args:              usageArgs(cobra.ExactArgs(1)),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.conn.Complete(cmd)
			if err := o.conn.Validate(); err != nil {
				return err
			}
			if _, _, err := net.SplitHostPort(o.primary); err != nil {
				return usageError{fmt.Errorf("shards add: --primary %q is not host:port", o.primary)}
			}
			return o.Run(cmd.Context(), args[0])
		},
	}
	o.conn.addFlags(cmd)
	o.conn.timeout = 2 * time.Minute
	if f := cmd.Flags().Lookup("timeout"); f != nil {
		f.DefValue = o.conn.timeout.String()
	}
	cmd.Flags().StringVar(&o.primary, "primary", "", "the shard's primary, host:port as the meta members and proxies reach it (required)")
	cmd.Flags().StringArrayVar(&o.replicas, "replica", nil, "a streaming replica of the primary, host:port (repeatable)")
	return cmd
}

type shardsAddResult struct {
	Shard string `json:"shard"`
	Epoch uint64 `json:"epoch"`
}

func (r *shardsAddResult) writeTable(w io.Writer) error {
	_, err := fmt.Fprintf(w, "Shard %s registered (map epoch %d); it owns no interval yet: move some with pgshard reshard move --to %s.\n", r.Shard, r.Epoch, r.Shard)
	return err
}

func (o *shardsAddOptions) Run(ctx context.Context, name string) error {
	return o.conn.withClient(ctx, func(cctx context.Context, c *metarpc.Client) error {
		epoch, err := c.AddShard(cctx, name, o.primary, o.replicas)
		if err != nil {
			return explainReshard(&o.conn, "shards add "+name, err)
		}
		return newPrinter(o.conn.output, o.stdout).print(&shardsAddResult{Shard: name, Epoch: epoch})
	})
}

// --- reshard split ---

type reshardSplitOptions struct {
	conn         metaConnOptions
	distribution string
	at           string
	stdout       io.Writer
}

func newReshardSplitCommand(stdout io.Writer) *cobra.Command {
	o := &reshardSplitOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:   "split --distribution D --at VALUE",
		Short: "Split the interval holding VALUE in two, on the same shard (no data moves)",
		Long: `Split the interval of a distribution that holds VALUE into [lo, VALUE) and
[VALUE, hi), both on the interval's shard: a plain map change, no data moves.
VALUE is a key (range distribution) or a hash value (hash distribution, a
bigint). Then move one half with pgshard reshard move.`,
		Example:           `  pgshard reshard split --distribution users --at 401`,
		Args:              usageArgs(cobra.NoArgs),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.conn.Complete(cmd)
			if err := o.conn.Validate(); err != nil {
				return err
			}
			if o.distribution == "" || o.at == "" {
				return usageError{errors.New("reshard split: --distribution and --at are required")}
			}
			return o.conn.withClient(cmd.Context(), func(cctx context.Context, c *metarpc.Client) error {
				epoch, err := c.SplitInterval(cctx, o.distribution, o.at)
				if err != nil {
					return explainReshard(&o.conn, "reshard split", err)
				}
				return newPrinter(o.conn.output, o.stdout).print(&splitResult{Distribution: o.distribution, At: o.at, Epoch: epoch})
			})
		},
	}
	o.conn.addFlags(cmd)
	cmd.Flags().StringVar(&o.distribution, "distribution", "", "the distribution (required)")
	cmd.Flags().StringVar(&o.at, "at", "", "the value where the new interval starts (required)")
	return cmd
}

type splitResult struct {
	Distribution string `json:"distribution"`
	At           string `json:"at"`
	Epoch        uint64 `json:"epoch"`
}

func (r *splitResult) writeTable(w io.Writer) error {
	_, err := fmt.Fprintf(w, "Distribution %s split at %s (map epoch %d).\n", r.Distribution, r.At, r.Epoch)
	return err
}

// --- reshard move ---

type reshardMoveOptions struct {
	conn         metaConnOptions
	follow       followOptions
	distribution string
	interval     string
	to           string
	cutover      string
	id           string
	stdout       io.Writer
}

func newReshardMoveCommand(stdout io.Writer) *cobra.Command {
	o := &reshardMoveOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:   "move --distribution D --interval [LO,HI) --to SHARD [--cutover auto|manual]",
		Short: "Move a key interval to another shard: copy, catch up, then cut over (auto) or wait (manual)",
		Long: `Move the key interval [LO,HI) of a distribution (hash values for a hash
distribution) from the shard that owns it to SHARD, while traffic flows. The
interval must lie inside one interval of the distribution (split first).
The meta leader creates the tables on the target if needed, then copies the
interval's rows with PostgreSQL logical replication (one publication with a
row filter on the source, one subscription on the target) and keeps them in
sync. With --cutover auto it then cuts over by itself (see pgshard reshard
cutover); with manual (the default) it waits for pgshard reshard cutover.

The command follows the move until it is copied (manual) or cut over (auto):
a progress bar on a terminal, plain lines otherwise, nothing with -o json
(the final state is printed). --detach returns at once. The move goes on in
the meta cluster whatever happens to the command; a new meta leader resumes
it.`,
		Example: `  pgshard reshard move --distribution users --interval '[401,501)' --to s3 --cutover auto
  pgshard reshard move --distribution events --interval '[0,+inf)' --to s3`,
		Args:              usageArgs(cobra.NoArgs),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.conn.Complete(cmd)
			if err := o.conn.Validate(); err != nil {
				return err
			}
			if o.distribution == "" || o.interval == "" || o.to == "" {
				return usageError{errors.New("reshard move: --distribution, --interval and --to are required")}
			}
			if o.cutover != string(reshard.CutoverAuto) && o.cutover != string(reshard.CutoverManual) {
				return usageError{fmt.Errorf("reshard move: --cutover %q: want auto or manual", o.cutover)}
			}
			return o.Run(cmd.Context())
		},
	}
	o.conn.addFlags(cmd)
	o.follow.addFlags(cmd)
	fs := cmd.Flags()
	fs.StringVar(&o.distribution, "distribution", "", "the distribution (required)")
	fs.StringVar(&o.interval, "interval", "", "the interval to move, [LO,HI) with -inf/+inf allowed (required)")
	fs.StringVar(&o.to, "to", "", "the shard that gets the interval (required)")
	fs.StringVar(&o.cutover, "cutover", string(reshard.CutoverManual), "auto: cut over as soon as copied; manual: wait for pgshard reshard cutover")
	fs.StringVar(&o.id, "id", "", "the move's id (a-z, 0-9, _; default: chosen by the leader)")
	return cmd
}

func (o *reshardMoveOptions) Run(ctx context.Context) error {
	c, err := o.conn.client()
	if err != nil {
		return err
	}
	defer closeClient(c, &err)
	cctx, cancel := o.conn.callContext(ctx, 0)
	mv, err := c.StartMove(cctx, metarpc.MoveRequest{ID: o.id, Distribution: o.distribution, Interval: o.interval, To: o.to, Cutover: o.cutover})
	cancel()
	if err != nil {
		return explainReshard(&o.conn, "reshard move", err)
	}
	v, err := decodeMove(mv)
	if err != nil {
		return err
	}
	if o.follow.detach {
		return newPrinter(o.conn.output, o.stdout).print(&v)
	}
	f := o.follow.follower(&o.conn, o.stdout)
	goal := reshard.PhaseCopied
	if o.cutover == string(reshard.CutoverAuto) {
		goal = reshard.PhaseCutOver
	}
	got, err := f.follow(ctx, c, v.ID, func(v *moveView) (bool, error) {
		switch p := v.State.Phase; {
		case p == goal && v.State.Request == "":
			return true, nil
		case goal == reshard.PhaseCutOver && p == reshard.PhaseCopied && v.State.Cutover == reshard.CutoverManual && v.State.LastError != "":
			return true, fmt.Errorf("move %s: copied, but the automatic cutover did not happen: %s", v.ID, v.State.LastError)
		case p.Terminal():
			return true, fmt.Errorf("move %s ended %s", v.ID, p)
		}
		return false, nil
	})
	if got != nil {
		if perr := newPrinter(o.conn.output, o.stdout).print(got); perr != nil {
			return perr
		}
	}
	return err
}

// --- reshard status ---

type reshardStatusOptions struct {
	conn   metaConnOptions
	ref    moveRefOptions
	stdout io.Writer
}

func newReshardStatusCommand(stdout io.Writer) *cobra.Command {
	o := &reshardStatusOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:   "status [ID | --distribution D --interval [LO,HI)]",
		Short: "Show the moves, or one move: phase, rows and bytes copied, lag, verify, errors",
		Long: `Without a move named, list every move (finished ones too). With one, show its
phase, the copy's progress (rows and bytes, of the interval's rows counted when
the copy started), the replication lag, the epochs it committed, the last
verify and the last error. Any meta member answers, from its replicated state.`,
		Args:              usageArgs(cobra.MaximumNArgs(1)),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.conn.Complete(cmd)
			if err := o.conn.Validate(); err != nil {
				return err
			}
			ref, err := o.ref.ref(args, true)
			if err != nil {
				return err
			}
			return o.conn.withClient(cmd.Context(), func(cctx context.Context, c *metarpc.Client) error {
				mvs, err := c.ListMoves(cctx, ref)
				if err != nil {
					return explainReshard(&o.conn, "reshard status", err)
				}
				var vs []moveView
				for _, m := range mvs {
					v, err := decodeMove(m)
					if err != nil {
						return err
					}
					vs = append(vs, v)
				}
				p := newPrinter(o.conn.output, o.stdout)
				if ref != (metarpc.MoveRef{}) && len(vs) == 1 {
					return p.print(&vs[0])
				}
				if vs == nil {
					vs = []moveView{}
				}
				return p.print(&movesView{Moves: vs})
			})
		},
	}
	o.conn.addFlags(cmd)
	o.ref.addFlags(cmd)
	return cmd
}

// --- reshard verify|cutover|rollback|cancel|cleanup ---

type reshardActionOptions struct {
	conn   metaConnOptions
	ref    moveRefOptions
	follow followOptions
	force  bool
	action string
	stdout io.Writer
}

func newReshardActionCommand(stdout io.Writer, action, short, long string) *cobra.Command {
	o := &reshardActionOptions{stdout: stdout, action: action}
	cmd := &cobra.Command{
		Use:   action + " [ID | --distribution D --interval [LO,HI)]",
		Short: short,
		Long: long + `

The command records the request in the move and follows it until done (a
progress bar on a terminal, plain lines otherwise; -o json prints the final
state); --detach returns once it is recorded.`,
		Args:              usageArgs(cobra.MaximumNArgs(1)),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.conn.Complete(cmd)
			if err := o.conn.Validate(); err != nil {
				return err
			}
			ref, err := o.ref.ref(args, false)
			if err != nil {
				return err
			}
			return o.Run(cmd.Context(), ref)
		},
	}
	o.conn.addFlags(cmd)
	o.ref.addFlags(cmd)
	o.follow.addFlags(cmd)
	if action == reshard.ActionCutover || action == reshard.ActionRollback {
		cmd.Flags().BoolVar(&o.force, "force", false, "go on even if the verify finds differences (rows on the target that differ are kept as they are)")
	}
	return cmd
}

func (o *reshardActionOptions) Run(ctx context.Context, ref metarpc.MoveRef) (err error) {
	c, err := o.conn.client()
	if err != nil {
		return err
	}
	defer closeClient(c, &err)
	cctx, cancel := o.conn.callContext(ctx, 0)
	mv, err := c.ReshardAction(cctx, ref, o.action, o.force)
	cancel()
	what := "reshard " + o.action
	if err != nil {
		return explainReshard(&o.conn, what, err)
	}
	v, err := decodeMove(mv)
	if err != nil {
		return err
	}
	if o.follow.detach {
		return newPrinter(o.conn.output, o.stdout).print(&v)
	}
	startVersion := v.Version
	f := o.follow.follower(&o.conn, o.stdout)
	got, err := f.follow(ctx, c, v.ID, func(v *moveView) (bool, error) {
		st := &v.State
		pending := st.Request == o.action || (o.action == reshard.ActionCutover && st.Phase != reshard.PhaseCopied && !st.Phase.InCutover() && st.Phase != reshard.PhaseCutOver && !st.Phase.Terminal())
		switch o.action {
		case reshard.ActionVerify:
			if !pending && v.Version > startVersion {
				if st.Verify != nil && !st.Verify.Equal {
					return true, fmt.Errorf("move %s: verify found differences (see the tables above)", v.ID)
				}
				return true, nil
			}
		case reshard.ActionCutover:
			switch {
			case st.Phase == reshard.PhaseCutOver:
				return true, nil
			case st.Phase == reshard.PhaseCopied && !pending && st.LastError != "":
				return true, fmt.Errorf("move %s: %s; the interval stays on %s", v.ID, st.LastError, st.From)
			}
		case reshard.ActionRollback:
			switch {
			case st.Phase == reshard.PhaseRolledBack:
				return true, nil
			case st.Phase == reshard.PhaseCutOver && !pending && st.LastError != "":
				return true, fmt.Errorf("move %s: %s; the interval stays on %s", v.ID, st.LastError, st.To)
			}
		case reshard.ActionCancel:
			if st.Phase == reshard.PhaseCancelled {
				return true, nil
			}
		case reshard.ActionCleanup:
			if st.Phase == reshard.PhaseDone {
				return true, nil
			}
		}
		if st.Phase.Terminal() {
			return true, fmt.Errorf("move %s ended %s", v.ID, st.Phase)
		}
		return false, nil
	})
	if got != nil {
		if perr := newPrinter(o.conn.output, o.stdout).print(got); perr != nil {
			return perr
		}
	}
	return err
}
