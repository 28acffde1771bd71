package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/replication/reshard"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// How the reshard commands show a move: its table and JSON views, and
// following it with a progress bar on a terminal or plain lines.

// moveView is a move as the commands print it (-o json).
type moveView struct {
	ID        string        `json:"id"`
	Version   uint64        `json:"version"`
	UpdatedAt time.Time     `json:"updated_at"`
	Interval  string        `json:"interval"`
	State     reshard.State `json:"state"`
}

func decodeMove(m metarpc.ReshardMove) (moveView, error) {
	var st reshard.State
	if err := json.Unmarshal(m.State, &st); err != nil {
		return moveView{}, fmt.Errorf("move %s: cannot read its state: %w", m.ID, err)
	}
	return moveView{ID: m.ID, Version: m.Version, UpdatedAt: m.UpdatedAt, Interval: st.Interval(), State: st}, nil
}

func (v *moveView) writeTable(w io.Writer) error {
	st := &v.State
	var b strings.Builder
	fmt.Fprintf(&b, "Move %s: %s of distribution %s, %s -> %s\n", v.ID, v.Interval, st.Distribution, st.From, st.To)
	fmt.Fprintf(&b, "  phase:    %s", st.Phase)
	if st.Request != "" {
		fmt.Fprintf(&b, " (requested: %s)", st.Request)
	}
	fmt.Fprintf(&b, ", cutover %s\n", st.Cutover)
	fmt.Fprintf(&b, "  copied:   %s\n", copiedText(&st.Progress))
	fmt.Fprintf(&b, "  lag:      %s\n", lagText(st.Progress.LagBytes))
	if st.Progress.Deleted > 0 {
		fmt.Fprintf(&b, "  deleted:  %d rows\n", st.Progress.Deleted)
	}
	if st.HoldEpoch > 0 {
		fmt.Fprintf(&b, "  epochs:   hold %d, cutover %s, rollback %s\n", st.HoldEpoch, epochText(st.CutoverEpoch), epochText(st.RollbackEpoch))
	}
	if r := st.Verify; r != nil {
		res := "equal"
		if !r.Equal {
			res = "DIFFERENT"
		}
		fenced := ""
		if r.Fenced {
			fenced = ", fenced (exact)"
		}
		fmt.Fprintf(&b, "  verify:   %s%s\n", res, fenced)
		for _, t := range r.Tables {
			fmt.Fprintf(&b, "    %s: %d rows on the source, %d on the target", t.Table, t.SourceRows, t.TargetRows)
			if !t.Equal {
				fmt.Fprintf(&b, ", checksums %s / %s, differing keys %s", t.SourceChecksum, t.TargetChecksum, strings.Join(t.DiffKeys, " "))
				if t.MoreDiffKeys {
					b.WriteString(" ...")
				}
			}
			b.WriteString("\n")
		}
	}
	if st.LastError != "" {
		fmt.Fprintf(&b, "  error:    %s (%s, attempt %d)\n", st.LastError, formatTime(st.ErrorAt), st.Attempts)
	}
	fmt.Fprintf(&b, "  updated:  %s\n", formatTime(v.UpdatedAt))
	_, err := io.WriteString(w, b.String())
	return err
}

func epochText(e uint64) string {
	if e == 0 {
		return "-"
	}
	return fmt.Sprint(e)
}

func copiedText(p *reshard.CopyProgress) string {
	s := fmt.Sprintf("%d rows, %s", p.RowsCopied, bytesText(p.BytesCopied))
	switch {
	case p.Tables > 0 && p.TablesCopied == p.Tables && p.RowsCopied == 0 && p.RowsTotal > 0:
		// The copy ended before the leader sampled its counters (a small
		// interval): only the count taken when it started is known.
		s = fmt.Sprintf("%d rows (counted at the start; the copy ended before it was sampled)", p.RowsTotal)
	case p.RowsTotal > 0:
		s = fmt.Sprintf("%d of %d rows (%d%%), %s", p.RowsCopied, p.RowsTotal, min(100, 100*p.RowsCopied/p.RowsTotal), bytesText(p.BytesCopied))
	}
	if p.Tables > 0 {
		s += fmt.Sprintf(", %d of %d tables done", p.TablesCopied, p.Tables)
	}
	return s
}

func lagText(lag int64) string {
	if lag < 0 {
		return "-"
	}
	return bytesText(lag)
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// movesView is the output of reshard status without a move named.
type movesView struct {
	Moves []moveView `json:"moves"`
}

func (v *movesView) writeTable(w io.Writer) error {
	if len(v.Moves) == 0 {
		_, err := fmt.Fprintln(w, "No moves.")
		return err
	}
	t := newTable(w, "ID", "DISTRIBUTION", "INTERVAL", "FROM", "TO", "PHASE", "COPIED", "LAG", "UPDATED", "ERROR")
	for _, m := range v.Moves {
		st := &m.State
		phase := string(st.Phase)
		if st.Request != "" {
			phase += " (" + st.Request + ")"
		}
		t.row(m.ID, st.Distribution, m.Interval, st.From, st.To, phase, fmt.Sprintf("%d rows", st.Progress.RowsCopied),
			lagText(st.Progress.LagBytes), formatTime(m.UpdatedAt), orDash(st.LastError))
	}
	return t.flush()
}

// reshardFollow follows a move until done says so, printing progress to
// the terminal (a bar) or as plain lines; quiet prints nothing.
type reshardFollow struct {
	conn   *metaConnOptions
	out    io.Writer
	quiet  bool
	wait   time.Duration
	tty    bool
	last   string
	start  time.Time
	rows0  int64
	lastNL bool
}

// isTerminal reports whether w is a terminal (a character device: a
// pipe, a file or a buffer is not).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// follow reads the move every reshardPoll until done returns true (the
// move reached what was asked) or an error (it cannot).
func (f *reshardFollow) follow(ctx context.Context, c *metarpc.Client, id string, done func(*moveView) (bool, error)) (*moveView, error) {
	ctx, cancel := context.WithTimeout(ctx, f.wait)
	defer cancel()
	f.start = time.Now()
	f.rows0 = -1
	for {
		cctx, ccancel := f.conn.callContext(ctx, 0)
		mvs, err := c.ListMoves(cctx, metarpc.MoveRef{ID: id})
		ccancel()
		if err != nil {
			f.endLine()
			return nil, err
		}
		if len(mvs) != 1 {
			f.endLine()
			return nil, fmt.Errorf("move %s: not found", id)
		}
		v, err := decodeMove(mvs[0])
		if err != nil {
			f.endLine()
			return nil, err
		}
		f.show(&v)
		ok, err := done(&v)
		if ok || err != nil {
			f.endLine()
			return &v, err
		}
		select {
		case <-ctx.Done():
			f.endLine()
			return &v, fmt.Errorf("move %s is still %s after --wait %s (it goes on in the meta cluster; follow it with pgshard reshard status %s)", id, v.State.Phase, f.wait, id)
		case <-time.After(reshardPoll):
		}
	}
}

// show prints the move's progress if it changed.
func (f *reshardFollow) show(v *moveView) {
	if f.quiet {
		return
	}
	st := &v.State
	p := &st.Progress
	if f.rows0 < 0 {
		f.rows0 = p.RowsCopied
	}
	var line string
	if st.Phase == reshard.PhaseCopying || st.Phase == reshard.PhaseCopy || st.Phase == reshard.PhasePrepare {
		eta := ""
		if el := time.Since(f.start).Seconds(); p.RowsTotal > 0 && p.RowsCopied > f.rows0 && el > 0 {
			rate := float64(p.RowsCopied-f.rows0) / el
			if left := p.RowsTotal - p.RowsCopied; left > 0 && rate > 0 {
				eta = fmt.Sprintf(", ETA %s", (time.Duration(float64(left)/rate) * time.Second).Round(time.Second))
			}
		}
		bar := ""
		if f.tty && p.RowsTotal > 0 {
			const width = 24
			n := int(min(width, width*p.RowsCopied/p.RowsTotal))
			bar = "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "] "
		}
		line = fmt.Sprintf("%smove %s %s: %s, lag %s%s", bar, v.ID, st.Phase, copiedText(p), lagText(p.LagBytes), eta)
	} else {
		line = fmt.Sprintf("move %s %s, lag %s", v.ID, st.Phase, lagText(p.LagBytes))
		if p.Deleted > 0 {
			line += fmt.Sprintf(", %d rows deleted", p.Deleted)
		}
	}
	if st.LastError != "" {
		line += " (last error: " + st.LastError + ")"
	}
	if line == f.last {
		return
	}
	f.last = line
	if f.tty {
		fmt.Fprintf(f.out, "\r\033[K%s", line)
		f.lastNL = false
		return
	}
	fmt.Fprintf(f.out, "%s %s\n", time.Now().UTC().Format("15:04:05"), line)
}

func (f *reshardFollow) endLine() {
	if f.tty && !f.lastNL && f.last != "" {
		fmt.Fprintln(f.out)
		f.lastNL = true
	}
}

// followFlags adds --wait, --detach to cmd.
type followOptions struct {
	detach bool
	wait   time.Duration
}

func (o *followOptions) addFlags(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&o.detach, "detach", false, "return once the request is recorded; follow with pgshard reshard status")
	cmd.Flags().DurationVar(&o.wait, "wait", defaultReshardWait, "how long to follow the move before returning (it goes on in the meta cluster)")
}

func (o *followOptions) follower(conn *metaConnOptions, out io.Writer) *reshardFollow {
	quiet := conn.output == formatJSON
	w := out
	if quiet {
		w = io.Discard
	}
	return &reshardFollow{conn: conn, out: w, quiet: quiet, wait: o.wait, tty: !quiet && isTerminal(out)}
}

// explainReshard rephrases a resharding RPC's error.
func explainReshard(conn *metaConnOptions, what string, err error) error {
	msg := status.Convert(unwrapStatus(err)).Message()
	switch {
	case errors.Is(err, metarpc.ErrNotFound):
		return &explainedError{fmt.Sprintf("%s: %s (see pgshard reshard status, pgshard shards list)", what, msg), err}
	case errors.Is(err, metarpc.ErrFailedPrecondition):
		return &explainedError{fmt.Sprintf("%s: refused, nothing was changed: %s", what, msg), err}
	case errors.Is(err, metarpc.ErrUnimplemented):
		return &explainedError{fmt.Sprintf("%s: %s", what, msg), err}
	}
	return conn.explain(what, err)
}
