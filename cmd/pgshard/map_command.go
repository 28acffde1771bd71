package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// Limits of map history, as the server applies them.
const (
	defaultHistoryLimit = 20
	maxHistoryLimit     = 1000
)

// newMapCommand is `pgshard map`: the shard map in the meta cluster.
func newMapCommand(stdin io.Reader, stdout io.Writer) *cobra.Command {
	cmd := groupCommand("map", "Show, compare and change the shard map held by the meta cluster")
	cmd.AddCommand(
		newMapShowCommand(stdout),
		newMapApplyCommand(stdin, stdout),
		newMapDiffCommand(stdin, stdout),
		newMapHistoryCommand(stdout),
	)
	return cmd
}

// addFileFlag registers -f FILE, completed with YAML files.
func addFileFlag(cmd *cobra.Command, file *string) {
	cmd.Flags().StringVarP(file, "file", "f", "", `shard map YAML file ("-" for standard input)`)
	_ = cmd.MarkFlagFilename("file", "yaml", "yml")
}

// readMapFile reads and parses the map in file ("-" reads stdin). The
// map is not validated. Its epoch line is optional (Epoch 0 without one):
// the meta cluster assigns the epoch.
func readMapFile(file string, stdin io.Reader) (*shardmap.Map, error) {
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, fmt.Errorf("read the map: %w", err)
	}
	m, err := shardmap.ParseYAMLWithoutEpoch(data)
	if err != nil {
		return nil, fmt.Errorf("%s is not a shard map:%s", fileName(file), bulletList(err))
	}
	return m, nil
}

// fileName names -f's file in messages.
func fileName(file string) string {
	if file == "-" {
		return "standard input"
	}
	return file
}

// bulletList formats the problems an error joins (one per line) as an
// indented list.
func bulletList(err error) string {
	var b strings.Builder
	for _, line := range strings.Split(err.Error(), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			b.WriteString("\n  - ")
			b.WriteString(line)
		}
	}
	return b.String()
}

// --- map show

type mapShowOptions struct {
	conn   metaConnOptions
	stdout io.Writer
}

func newMapShowCommand(stdout io.Writer) *cobra.Command {
	o := &mapShowOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Print the current shard map",
		Long: `Print the current shard map: its epoch, when it was applied, its comment and
its YAML. The table output is a valid map file (the header lines are YAML
comments): edit it and give it to "pgshard map apply -f". -o json prints an
object with epoch, applied_at, comment, map_yaml and map (the map as a
structure; interval bounds are strings written as in the YAML).`,
		Args:              usageArgs(cobra.NoArgs),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              o.conn.runE(o.Run),
	}
	o.conn.addFlags(cmd)
	return cmd
}

// mapShowResult is the output of map show.
type mapShowResult struct {
	Epoch     uint64    `json:"epoch"`
	AppliedAt time.Time `json:"applied_at,omitzero"`
	Comment   string    `json:"comment"`
	MapYAML   string    `json:"map_yaml"`
	Map       *mapJSON  `json:"map"`
}

func (r *mapShowResult) writeTable(w io.Writer) error {
	if r.Map == nil {
		_, err := io.WriteString(w, "# no shard map has been applied yet\n")
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# epoch:      %d\n# applied at: %s\n", r.Epoch, formatTime(r.AppliedAt))
	for i, line := range strings.Split(r.Comment, "\n") {
		if i == 0 {
			fmt.Fprintf(&b, "# comment:    %s\n", line)
		} else {
			fmt.Fprintf(&b, "#             %s\n", line)
		}
	}
	b.WriteString(r.MapYAML)
	_, err := io.WriteString(w, b.String())
	return err
}

func (o *mapShowOptions) Run(ctx context.Context) error {
	return o.conn.withClient(ctx, func(cctx context.Context, c *metarpc.Client) error {
		v, err := c.GetMap(cctx)
		if err != nil {
			return o.conn.explain("read the map", err)
		}
		r := &mapShowResult{Epoch: v.Epoch, AppliedAt: v.AppliedAt, Comment: v.Comment, MapYAML: string(v.YAML), Map: mapToJSON(v.Map)}
		if v.Map != nil && len(v.YAML) == 0 {
			y, err := v.Map.YAML()
			if err != nil {
				return fmt.Errorf("encode the map: %w", err)
			}
			r.MapYAML = string(y)
		}
		return newPrinter(o.conn.output, o.stdout).print(r)
	})
}

// --- map apply

type mapApplyOptions struct {
	conn        metaConnOptions
	file        string
	expectEpoch uint64
	expectSet   bool // --expect-epoch was given
	comment     string
	force       bool
	noDataCheck bool
	wait        time.Duration
	stdin       io.Reader
	stdout      io.Writer
}

func newMapApplyCommand(stdin io.Reader, stdout io.Writer) *cobra.Command {
	o := &mapApplyOptions{stdin: stdin, stdout: stdout}
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Make a map file the next epoch of the shard map",
		Long: `Make the map in FILE the next epoch of the shard map, if the map is still at
the epoch the change is based on: --expect-epoch, or else the epoch read just
before applying (so that a change made by someone else in between is not
overwritten). The file needs no epoch line: the meta cluster assigns the
next epoch, and an epoch in the file is ignored. The meta cluster validates
the map and refuses it with every problem it finds; nothing changes then.

It also refuses an unsafe map (exit 4, nothing changes): one that makes a
shard's primary a server the current map fences (a former primary that a
failover replaced) or a server its health checks see in recovery (a
replica), or that drops a fence (only "pgshard shards rejoin" lifts one,
after rebuilding the server). Re-applying an old map file after a failover
is the usual way to get there. --force applies it anyway: it risks
acknowledged writes on a server that is not the shard's real primary
(split brain) — writes that the real primary never sees.

It refuses a map that gives a key interval holding rows to another shard
(exit 4, nothing changes): the meta leader counts, on the current primary of
the old owner (in every database that has the table), the rows of each table
of the distribution in every interval that changes owner, and names the
interval, both shards and the count per table. The proxies would route those
keys to the new owner, where the rows are not: reads miss them. An interval
without rows moves freely; adding a shard without intervals, removing an
unused one, or splitting an interval on its owner contacts no server. An old
owner that cannot be reached refuses the map too. --no-data-check skips the
count. DANGEROUS: use only when the rows are already on the new owner.

With --wait, wait up to that long for every live proxy to route with the new
epoch, and fail (exit 1, the map staying applied) naming those that did not.
Review a change first with "pgshard map diff -f FILE".`,
		Args:              usageArgs(cobra.NoArgs),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.conn.Complete(cmd)
			o.expectSet = cmd.Flags().Changed("expect-epoch")
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.conn.addFlags(cmd)
	addFileFlag(cmd, &o.file)
	cmd.Flags().Uint64Var(&o.expectEpoch, "expect-epoch", 0, "apply only if the map is at this epoch (0: no map yet); default: the current epoch")
	cmd.Flags().StringVar(&o.comment, "comment", "", "what the change is for, kept in the map history")
	cmd.Flags().BoolVar(&o.force, "force", false, "apply a map the meta cluster refuses as unsafe (a fenced or recovering server as primary, a dropped fence): "+
		"RISKS SPLIT BRAIN, acknowledged writes on a server that is not the real primary")
	cmd.Flags().BoolVar(&o.noDataCheck, "no-data-check", false, "apply a map that gives key intervals to other shards without counting their rows on the old owner: "+
		"DANGEROUS, use only when the rows are already on the new owner (rows left behind disappear from queries)")
	cmd.Flags().DurationVar(&o.wait, "wait", 0, "after applying, wait up to this long for every live proxy to apply the new epoch (at most 10m)")
	for _, f := range []string{"expect-epoch", "comment", "wait"} {
		_ = cmd.RegisterFlagCompletionFunc(f, cobra.NoFileCompletions)
	}
	return cmd
}

// Validate checks the flags.
func (o *mapApplyOptions) Validate() error {
	if err := o.conn.Validate(); err != nil {
		return err
	}
	if o.file == "" {
		return usageError{errors.New("-f FILE is required")}
	}
	if o.wait < 0 {
		return usageError{errors.New("--wait must not be negative")}
	}
	return nil
}

// mapApplyResult is the output of map apply.
type mapApplyResult struct {
	File          string `json:"file"`
	PreviousEpoch uint64 `json:"previous_epoch"`
	Epoch         uint64 `json:"epoch"`
	Comment       string `json:"comment"`
	// Unchanged is set when the file was the map in force: nothing was
	// applied and Epoch is PreviousEpoch.
	Unchanged bool        `json:"unchanged"`
	Wait      *waitResult `json:"wait,omitempty"`
}

// waitResult is the outcome of apply --wait.
type waitResult struct {
	Timeout string `json:"timeout"`
	// Applied is whether every live proxy applied the epoch in time.
	Applied bool        `json:"applied"`
	Lagging []proxyJSON `json:"lagging"`
	now     time.Time   // when the wait ended, for "last seen"
}

func (r *mapApplyResult) writeTable(w io.Writer) error {
	if r.Unchanged {
		if _, err := fmt.Fprintf(w, "Unchanged: %s is the map in force at epoch %d; nothing applied.\n", r.File, r.Epoch); err != nil {
			return err
		}
	} else if _, err := fmt.Fprintf(w, "Applied %s as epoch %d (was %d).\n", r.File, r.Epoch, r.PreviousEpoch); err != nil {
		return err
	}
	switch {
	case r.Wait == nil:
		return nil
	case r.Wait.Applied:
		_, err := fmt.Fprintf(w, "Every live proxy routes with epoch %d.\n", r.Epoch)
		return err
	}
	lagging := fmt.Sprintf("%d live proxies still route", len(r.Wait.Lagging))
	if len(r.Wait.Lagging) == 1 {
		lagging = "1 live proxy still routes"
	}
	if _, err := fmt.Fprintf(w, "After %s, %s with an older epoch:\n", r.Wait.Timeout, lagging); err != nil {
		return err
	}
	return writeProxyTable(w, r.Wait.now, r.Wait.Lagging)
}

func (o *mapApplyOptions) Run(ctx context.Context) (err error) {
	m, err := readMapFile(o.file, o.stdin)
	if err != nil {
		return err
	}
	c, err := o.conn.client()
	if err != nil {
		return err
	}
	defer closeClient(c, &err)
	expect := o.expectEpoch
	if !o.expectSet {
		cctx, cancel := o.conn.callContext(ctx, 0)
		cur, err := c.GetMap(cctx)
		cancel()
		if err != nil {
			return o.conn.explain("read the current epoch", err)
		}
		expect = cur.Epoch
	}
	cctx, cancel := o.conn.callContext(ctx, 0)
	epoch, err := c.ApplyMapWith(cctx, m, expect, metarpc.ApplyMapOptions{Comment: o.comment, Force: o.force, NoDataCheck: o.noDataCheck})
	cancel()
	if err != nil {
		err = o.applyError(err)
		if o.conn.output == formatJSON {
			if perr := newPrinter(o.conn.output, o.stdout).print(newApplyErrorResult(err)); perr != nil {
				return perr
			}
		}
		return err
	}
	r := &mapApplyResult{File: fileName(o.file), PreviousEpoch: expect, Epoch: epoch, Comment: o.comment, Unchanged: epoch == expect}
	var lagging *metarpc.LaggingError
	if o.wait > 0 {
		cctx, cancel := o.conn.callContext(ctx, o.wait)
		werr := c.WaitApplied(cctx, epoch, o.wait)
		cancel()
		r.Wait = &waitResult{Timeout: o.wait.String(), Applied: werr == nil, Lagging: []proxyJSON{}, now: time.Now()}
		switch {
		case errors.As(werr, &lagging):
			for _, p := range lagging.Proxies {
				r.Wait.Lagging = append(r.Wait.Lagging, proxyToJSON(p))
			}
		case werr != nil:
			if perr := newPrinter(o.conn.output, o.stdout).print(r); perr != nil {
				return perr
			}
			return o.conn.explain(fmt.Sprintf("epoch %d is applied, but waiting for the proxies failed", epoch), werr)
		}
	}
	if err := newPrinter(o.conn.output, o.stdout).print(r); err != nil {
		return err
	}
	if lagging != nil {
		return fmt.Errorf("epoch %d is applied, but not yet everywhere: %w", epoch, lagging)
	}
	return nil
}

// applyErrorResult is what map apply -o json prints when the map was not
// applied, besides the message on standard error.
type applyErrorResult struct {
	Error applyErrorJSON `json:"error"`
}

type applyErrorJSON struct {
	// Reason is DATA_NOT_MOVED, UNSAFE_MAP, STALE_EPOCH, INVALID_MAP or
	// ERROR.
	Reason   string `json:"reason"`
	Message  string `json:"message"`
	ExitCode int    `json:"exit_code"`
	// Moves are the refused intervals with their row counts
	// (DATA_NOT_MOVED).
	Moves []metarpc.MovedRows `json:"moves,omitempty"`
	// Hazards are the problems of an unsafe map (UNSAFE_MAP).
	Hazards []string `json:"hazards,omitempty"`
}

func newApplyErrorResult(err error) *applyErrorResult {
	r := &applyErrorResult{Error: applyErrorJSON{Reason: "ERROR", Message: err.Error(), ExitCode: exitCode(err)}}
	var dn *metarpc.DataNotMovedError
	var ue *metarpc.UnsafeMapError
	var se *metarpc.StaleEpochError
	var ia *metarpc.InvalidArgumentError
	switch {
	case errors.As(err, &dn):
		r.Error.Reason, r.Error.Moves = "DATA_NOT_MOVED", dn.Moves
	case errors.As(err, &ue):
		r.Error.Reason = "UNSAFE_MAP"
		for _, h := range ue.Hazards {
			r.Error.Hazards = append(r.Error.Hazards, h.String())
		}
	case errors.As(err, &se):
		r.Error.Reason = "STALE_EPOCH"
	case errors.As(err, &ia):
		r.Error.Reason = "INVALID_MAP"
	}
	return r
}

func (r *applyErrorResult) writeTable(w io.Writer) error {
	_, err := fmt.Fprintln(w, r.Error.Message)
	return err
}

// applyError explains why ApplyMap failed; a stale epoch says what to do
// with this file.
func (o *mapApplyOptions) applyError(err error) error {
	what := "apply " + fileName(o.file)
	var ue *metarpc.UnsafeMapError
	if errors.As(err, &ue) {
		var b strings.Builder
		fmt.Fprintf(&b, "%s: the meta cluster refused the map as unsafe; nothing was applied:", what)
		for _, h := range ue.Hazards {
			b.WriteString("\n  - ")
			b.WriteString(h.String())
		}
		b.WriteString("\nReview the current map (pgshard map show, pgshard shards list). --force applies the map anyway, " +
			"at the risk of split brain: acknowledged writes on a server that is not the shard's real primary.")
		return refusedError{&explainedError{b.String(), err}}
	}
	var dn *metarpc.DataNotMovedError
	if errors.As(err, &dn) {
		var b strings.Builder
		fmt.Fprintf(&b, "%s: the meta cluster refused the map: it gives key intervals that hold rows to another shard; nothing was applied:", what)
		unreachable := false
		for _, m := range dn.Moves {
			b.WriteString("\n  - ")
			b.WriteString(m.String())
			unreachable = unreachable || m.Error != ""
		}
		b.WriteString("\nThe proxies would send those keys to the new owner, where the rows are not: copy the rows there first.")
		if unreachable {
			b.WriteString(" The meta leader could not count the rows on a server named above: make it reachable for the meta cluster's --pg-user.")
		}
		b.WriteString(" Only if you know the rows are already on the new owner, re-run with --no-data-check.")
		return refusedError{&explainedError{b.String(), err}}
	}
	var se *metarpc.StaleEpochError
	if !errors.As(err, &se) {
		return o.conn.explain(what, err)
	}
	why := fmt.Sprintf("it changed after it was read, at epoch %d", se.Expected)
	if o.expectSet {
		why = fmt.Sprintf("--expect-epoch %d is not the current epoch", se.Expected)
	}
	diff := "pgshard map diff -f " + o.file
	if o.file == "-" {
		diff = "pgshard map diff"
	}
	return &explainedError{fmt.Sprintf("%s: stale epoch: the map is at epoch %d, not %d as expected (%s); nothing was applied. "+
		"Review the current map (%s), then re-run pgshard map apply with --expect-epoch %d",
		what, se.Current, se.Expected, why, diff, se.Current), err}
}

// --- map diff

// errMapsDiffer is map diff's error when the maps differ: exit 1, like
// diff(1).
type errMapsDiffer struct{ from, to string }

func (e *errMapsDiffer) Error() string { return e.from + " and " + e.to + " differ" }

// diffTrouble marks an error of map diff that is not a difference. Like
// diff(1), map diff exits 2 for trouble, so that exit 1 always means
// "different"; run() exits 2 for usage errors, so trouble is one.
func diffTrouble(err error) error {
	var ue usageError
	if err == nil || errors.As(err, &ue) {
		return err
	}
	return usageError{err}
}

type mapDiffOptions struct {
	conn   metaConnOptions
	file   string
	stdin  io.Reader
	stdout io.Writer
}

func newMapDiffCommand(stdin io.Reader, stdout io.Writer) *cobra.Command {
	o := &mapDiffOptions{stdin: stdin, stdout: stdout}
	cmd := &cobra.Command{
		Use:   "diff -f FILE",
		Short: "Compare the current shard map with a map file",
		Long: `Compare the current shard map with the map in FILE by meaning: shards added,
removed or changed (endpoints, state), distributions added, removed or changed
— for intervals, which key ranges move from which shard to which — and tables
added, removed or changed. The order of elements and the epoch do not count.
FILE must be a valid map.

Exit status, as diff(1): 0 when the maps are equal, 1 when they differ, 2 on
trouble (a bad file, the meta cluster unreachable, a usage error).`,
		Args:              usageArgs(cobra.NoArgs),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.conn.Complete(cmd)
			if err := o.Validate(); err != nil {
				return err
			}
			err := o.Run(cmd.Context())
			var differ *errMapsDiffer
			if errors.As(err, &differ) {
				return err
			}
			return diffTrouble(err)
		},
	}
	o.conn.addFlags(cmd)
	addFileFlag(cmd, &o.file)
	return cmd
}

// Validate checks the flags.
func (o *mapDiffOptions) Validate() error {
	if err := o.conn.Validate(); err != nil {
		return err
	}
	if o.file == "" {
		return usageError{errors.New("-f FILE is required")}
	}
	return nil
}

func (o *mapDiffOptions) Run(ctx context.Context) (err error) {
	m, err := readMapFile(o.file, o.stdin)
	if err != nil {
		return err
	}
	c, err := o.conn.client()
	if err != nil {
		return err
	}
	defer closeClient(c, &err)
	cctx, cancel := o.conn.callContext(ctx, 0)
	defer cancel()
	cur, err := c.GetMap(cctx)
	if err != nil {
		return o.conn.explain("read the map", err)
	}
	// Validate as apply would: at the next epoch.
	m.Epoch = cur.Epoch + 1
	if err := m.Validate(); err != nil {
		return fmt.Errorf("%s is not a valid map:%s", fileName(o.file), bulletList(err))
	}
	from := "the meta cluster (no map yet)"
	if cur.Map != nil {
		from = fmt.Sprintf("the map at epoch %d", cur.Epoch)
	}
	d := diffMaps(cur.Map, m, from, fileName(o.file))
	if err := newPrinter(o.conn.output, o.stdout).print(d); err != nil {
		return err
	}
	if !d.Equal {
		return &errMapsDiffer{from: from, to: d.To}
	}
	return nil
}

// --- map history

type mapHistoryOptions struct {
	conn   metaConnOptions
	limit  int
	stdout io.Writer
}

func newMapHistoryCommand(stdout io.Writer) *cobra.Command {
	o := &mapHistoryOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:               "history",
		Short:             "List the latest epochs of the shard map, newest first",
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
	cmd.Flags().IntVar(&o.limit, "limit", defaultHistoryLimit, fmt.Sprintf("how many epochs to list (1 to %d)", maxHistoryLimit))
	_ = cmd.RegisterFlagCompletionFunc("limit", cobra.NoFileCompletions)
	return cmd
}

// Validate checks the flags.
func (o *mapHistoryOptions) Validate() error {
	if err := o.conn.Validate(); err != nil {
		return err
	}
	if o.limit < 1 || o.limit > maxHistoryLimit {
		return usageError{fmt.Errorf("--limit %d: want 1 to %d", o.limit, maxHistoryLimit)}
	}
	return nil
}

// mapHistoryResult is the output of map history.
type mapHistoryResult struct {
	Versions []mapVersionJSON `json:"versions"`
}

type mapVersionJSON struct {
	Epoch     uint64    `json:"epoch"`
	AppliedAt time.Time `json:"applied_at,omitzero"`
	Comment   string    `json:"comment"`
}

func (r *mapHistoryResult) writeTable(w io.Writer) error {
	if len(r.Versions) == 0 {
		_, err := io.WriteString(w, "No shard map has been applied yet.\n")
		return err
	}
	t := newTable(w, "EPOCH", "APPLIED AT", "COMMENT")
	for _, v := range r.Versions {
		t.row(fmt.Sprint(v.Epoch), formatTime(v.AppliedAt), orDash(strings.Join(strings.Fields(v.Comment), " ")))
	}
	return t.flush()
}

func (o *mapHistoryOptions) Run(ctx context.Context) error {
	return o.conn.withClient(ctx, func(cctx context.Context, c *metarpc.Client) error {
		vs, err := c.MapHistory(cctx, o.limit, false)
		if err != nil {
			return o.conn.explain("read the map history", err)
		}
		r := &mapHistoryResult{Versions: make([]mapVersionJSON, 0, len(vs))}
		for _, v := range vs {
			r.Versions = append(r.Versions, mapVersionJSON{Epoch: v.Epoch, AppliedAt: v.AppliedAt, Comment: v.Comment})
		}
		return newPrinter(o.conn.output, o.stdout).print(r)
	})
}
