package difftest

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Modes are the ways the corpus is sent: the simple protocol, and the
// extended protocol with pgx's statement cache (Parse, Describe, then
// Bind/Execute of a named statement, results mostly binary) and without
// it (unnamed statement in one round trip, results in text).
var Modes = []pgx.QueryExecMode{
	pgx.QueryExecModeSimpleProtocol,
	pgx.QueryExecModeCacheStatement,
	pgx.QueryExecModeExec,
}

// Outcome is how a statement fared in one mode.
type Outcome int

// Outcomes, from best to worst.
const (
	Identical         Outcome = iota // same answer as the reference
	RefusedAsExpected                // refused with the SQLSTATE (and message) the corpus expects
	KnownBug                         // differs from the reference, as the corpus says it does
	Failed                           // differs from the reference or from the expectation
)

var outcomeNames = [...]string{"identical", "refused as expected", "known bug", "failed"}

// String returns the outcome's name.
func (o Outcome) String() string { return outcomeNames[o] }

// Runner runs a corpus on a reference server and through pgshard and
// compares the answers. Reads run once per mode on each side; writes run
// once on each side, in the modes in turn, in corpus order, and on the
// reference only when pgshard ran them (so both hold the same data).
type Runner struct {
	Ref, Proxy *pgx.Conn
	// Sharded says pgshard routes by a shard map: expected refusals and
	// known bugs of the corpus apply. Otherwise every answer must match.
	Sharded bool
	Modes   []pgx.QueryExecMode // default Modes
	// Logf, when set, reports known bugs as they happen.
	Logf func(format string, args ...any)

	writes int
}

// Report is what a corpus run found.
type Report struct {
	// Statements counts corpus statements by their worst outcome over
	// the modes they ran in.
	Statements [Failed + 1]int
	// Runs counts (statement, mode) runs by outcome, per mode.
	Runs map[pgx.QueryExecMode]*[Failed + 1]int
	// Failures describe every failed run.
	Failures []string
	// KnownBugs describe every statement marked as a known bug, with how
	// its answer differed.
	KnownBugs []string
}

// Total is the number of statements run.
func (r *Report) Total() int {
	n := 0
	for _, c := range r.Statements {
		n += c
	}
	return n
}

// String summarizes the report on a few lines.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d statements:", r.Total())
	for o, n := range r.Statements {
		fmt.Fprintf(&b, " %d %s;", n, Outcome(o))
	}
	modes := make([]pgx.QueryExecMode, 0, len(r.Runs))
	for m := range r.Runs {
		modes = append(modes, m)
	}
	slices.Sort(modes)
	for _, m := range modes {
		fmt.Fprintf(&b, "\n  %s:", m)
		for o, n := range r.Runs[m] {
			fmt.Fprintf(&b, " %d %s;", n, Outcome(o))
		}
	}
	return b.String()
}

// Run runs the corpus. The error is for what stops the run (a broken
// connection); differences go to the report.
func (r *Runner) Run(ctx context.Context, corpus []Query) (*Report, error) {
	rep := &Report{Runs: make(map[pgx.QueryExecMode]*[Failed + 1]int)}
	modes := r.Modes
	if len(modes) == 0 {
		modes = Modes
	}
	for _, q := range corpus {
		worst := Identical
		record := func(mode pgx.QueryExecMode, o Outcome, detail string) {
			if rep.Runs[mode] == nil {
				rep.Runs[mode] = new([Failed + 1]int)
			}
			rep.Runs[mode][o]++
			worst = max(worst, o)
			where := fmt.Sprintf("corpus line %d (%s)", q.Line, mode)
			switch o {
			case Failed:
				rep.Failures = append(rep.Failures, fmt.Sprintf("%s: %s\n\t%s", where, detail, OneLine(q.SQL)))
			case KnownBug:
				rep.KnownBugs = append(rep.KnownBugs, fmt.Sprintf("%s: %s: %s\n\t%s", where, q.KnownBug, detail, OneLine(q.SQL)))
				r.logf("known bug, %s: %s: %s", where, q.KnownBug, detail)
			}
		}
		if q.Write {
			mode := modes[r.writes%len(modes)]
			r.writes++
			if err := r.write(ctx, q, mode, record); err != nil {
				return rep, fmt.Errorf("corpus line %d (%s): %w", q.Line, mode, err)
			}
		} else {
			for _, mode := range modes {
				o, detail, err := r.read(ctx, q, mode)
				if err != nil {
					return rep, fmt.Errorf("corpus line %d (%s): %w", q.Line, mode, err)
				}
				record(mode, o, detail)
			}
		}
		rep.Statements[worst]++
	}
	return rep, nil
}

func (r *Runner) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}

// read runs a read in one mode on both sides.
func (r *Runner) read(ctx context.Context, q Query, mode pgx.QueryExecMode) (Outcome, string, error) {
	got, err := RunQuery(ctx, r.Proxy, q, mode)
	if err != nil {
		return 0, "", fmt.Errorf("through pgshard: %w", err)
	}
	if o, detail, ok := r.refusal(q, mode, got); ok {
		return o, detail, nil
	}
	want, err := RunQuery(ctx, r.Ref, q, mode)
	if err != nil {
		return 0, "", fmt.Errorf("on the reference: %w", err)
	}
	o, detail := r.compare(q, mode, want, got)
	return o, detail, nil
}

// write runs a write once on each side: through pgshard first, then on
// the reference unless pgshard refused it as expected.
func (r *Runner) write(ctx context.Context, q Query, mode pgx.QueryExecMode, record func(pgx.QueryExecMode, Outcome, string)) error {
	got, err := RunQuery(ctx, r.Proxy, q, mode)
	if err != nil {
		return fmt.Errorf("through pgshard: %w", err)
	}
	o, detail, refused := r.refusal(q, mode, got)
	if refused && (o != Failed || got.Code != "") {
		// It did not run through pgshard: neither may it on the
		// reference. (When pgshard ran a write it had to refuse, the
		// reference runs it too, so that both keep the same data.)
		record(mode, o, detail)
		return nil
	}
	want, err := RunQuery(ctx, r.Ref, q, mode)
	if err != nil {
		return fmt.Errorf("on the reference: %w", err)
	}
	if !refused {
		o, detail = r.compare(q, mode, want, got)
	}
	record(mode, o, detail)
	return nil
}

// refusal judges an answer that is, or had to be, a refusal: ok reports
// whether it did (and the reference need not be asked for a read).
func (r *Runner) refusal(q Query, mode pgx.QueryExecMode, got Result) (o Outcome, detail string, ok bool) {
	if !r.Sharded || q.Refused == "" {
		return 0, "", false
	}
	switch {
	case !got.Refused(q.Refused, q.RefusedMessage):
		if got.Code == "" {
			return Failed, fmt.Sprintf("want refusal %s %q, got %d rows (%s)", q.Refused, q.RefusedMessage, len(got.Rows), got.Tag), true
		}
		return Failed, fmt.Sprintf("want refusal %s %q, got %s %q", q.Refused, q.RefusedMessage, got.Code, got.Message), true
	case q.InTransaction && got.EndTag != "ROLLBACK":
		return Failed, fmt.Sprintf("refused, but the COMMIT after it answered %q, not ROLLBACK", got.EndTag), true
	}
	return RefusedAsExpected, "", true
}

// compare judges an answer in mode against the reference's.
func (r *Runner) compare(q Query, mode pgx.QueryExecMode, want, got Result) (Outcome, string) {
	d := Diff(want, got, q.Ordered)
	bug := r.Sharded && q.KnownBug != ""
	switch q.KnownBugIn {
	case "simple":
		bug = bug && mode == pgx.QueryExecModeSimpleProtocol
	case "extended":
		bug = bug && mode != pgx.QueryExecModeSimpleProtocol
	}
	switch {
	case bug && d == "":
		return Failed, "known bug no longer reproduces (answer identical to the reference): remove its known-bug marker"
	case bug:
		return KnownBug, d
	case d != "":
		return Failed, d
	}
	return Identical, ""
}
