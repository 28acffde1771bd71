package difffuzz

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration/difftest"
	"github.com/pgshard/pgshard/wire"
)

// Target is a pgshard configuration under test: a connection through a
// proxy whose database holds the dataset.
type Target struct {
	Name string // e.g. "range-4"
	Conn *pgx.Conn
}

// Fuzzer runs generated statements on a reference server and on every
// target, and compares.
type Fuzzer struct {
	Ref     *pgx.Conn
	Targets []Target
	// StatementTimeout bounds one statement on one side.
	StatementTimeout time.Duration

	Stats Stats
}

// Stats is what a run found.
type Stats struct {
	Statements int
	// Runs counts (statement, target) runs by protocol mode.
	Runs map[pgx.QueryExecMode]int
	// Identical counts runs answered as the reference did, rows or the
	// same error; RefErrors counts statements the reference failed,
	// by SQLSTATE (pgshard then answered with the same SQLSTATE or a
	// refusal).
	Identical int
	RefErrors map[string]int
	// Refusals counts runs pgshard refused (0A000 where the reference
	// answered), by reason (the message without names and numbers).
	Refusals map[string]int
	// Failures describe every silent difference, with seed, mode,
	// target and statement.
	Failures []string
	// Examples hold the first statement of each reference error and
	// refusal reason, for tuning the generator.
	Examples map[string]string
}

// Mode is the protocol mode statement seed runs in: by pairs of seeds
// (which share a shape), half in the simple protocol, half in the
// extended one, alternately with a named (cached, binary results) and
// the unnamed statement (text).
func Mode(seed uint64) pgx.QueryExecMode {
	switch seed / 2 % 4 {
	case 1:
		return pgx.QueryExecModeCacheStatement
	case 3:
		return pgx.QueryExecModeExec
	}
	return pgx.QueryExecModeSimpleProtocol
}

// Run runs the statement of seed on every target (and on the reference
// unless every target refused it). The error is for what stops the run
// (a broken connection, a timeout); differences go to Stats.
func (f *Fuzzer) Run(ctx context.Context, seed uint64) error {
	st := Generate(seed)
	mode := Mode(seed)
	s := &f.Stats
	if s.Runs == nil {
		s.Runs = map[pgx.QueryExecMode]int{}
		s.RefErrors = map[string]int{}
		s.Refusals = map[string]int{}
		s.Examples = map[string]string{}
	}
	example := func(what, detail string) {
		if _, ok := s.Examples[what]; !ok {
			s.Examples[what] = Describe(st, detail)
		}
	}
	s.Statements++
	var ref *difftest.Result
	for _, t := range f.Targets {
		got, err := f.run(ctx, t.Conn, st, mode)
		if err != nil {
			return fmt.Errorf("%s: %s", t.Name, Describe(st, err.Error()))
		}
		s.Runs[mode]++
		if ref == nil {
			want, err := f.run(ctx, f.Ref, st, mode)
			if err != nil {
				return fmt.Errorf("reference: %s", Describe(st, err.Error()))
			}
			ref = &want
			if want.Code != "" {
				s.RefErrors[want.Code]++
				example(want.Code, want.Message)
			}
		}
		if got.Code == wire.SQLStateFeatureNotSupported && ref.Code != wire.SQLStateFeatureNotSupported { // a refusal, even of what PostgreSQL rejects
			r := Reason(got.Message)
			s.Refusals[r]++
			example(r, got.Message)
			continue
		}
		if d := difftest.Diff(*ref, got, st.Ordered); d != "" {
			s.Failures = append(s.Failures, fmt.Sprintf("%s: %s", t.Name, Describe(st, d)))
			continue
		}
		s.Identical++
	}
	return nil
}

func (f *Fuzzer) run(ctx context.Context, c *pgx.Conn, st Statement, mode pgx.QueryExecMode) (difftest.Result, error) {
	if f.StatementTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.StatementTimeout)
		defer cancel()
	}
	return difftest.Run(ctx, c, st.SQL, mode, st.Args...)
}

// Describe names a statement so that it can be run again: its seed,
// protocol mode, comparison and SQL.
func Describe(st Statement, what string) string {
	cmp := "as multisets"
	if st.Ordered {
		cmp = "in order"
	}
	args := ""
	if len(st.Args) > 0 {
		args = fmt.Sprintf("\n\targuments %v", st.Args)
	}
	return fmt.Sprintf("seed %d (%s, rows compared %s): %s\n\t%s%s", st.Seed, Mode(st.Seed), cmp, what, st.SQL, args)
}

var (
	reasonNames   = regexp.MustCompile(`\b(users|orders|public\.users|public\.orders)\b`)
	reasonNumbers = regexp.MustCompile(`\b[0-9]+\b`)
	reasonGroupBy = regexp.MustCompile(`GROUP BY [a-z0-9_.]+, which`)
	reasonKeys    = regexp.MustCompile(`sharding keys \([a-z_]+, [a-z_]+\)`)
	reasonColumn  = regexp.MustCompile(`column "[^"]*"`)
)

// Reason is a refusal's message without the names of tables and
// numbers, cut before the part that explains it (after ';' or " (").
func Reason(msg string) string {
	if i := strings.Index(msg, " cannot be merged exactly from several shards"); i >= 0 {
		msg = msg[:i] + " cannot be merged"
	}
	if i := strings.Index(msg, ";"); i >= 0 {
		msg = msg[:i]
	}
	msg = reasonGroupBy.ReplaceAllString(msg, "GROUP BY <name>, which")
	msg = reasonKeys.ReplaceAllString(msg, "sharding keys")
	msg = reasonColumn.ReplaceAllString(msg, "column")
	msg = reasonNames.ReplaceAllString(msg, "<table>")
	return reasonNumbers.ReplaceAllString(msg, "N")
}

// Report summarizes the stats on a few lines: counts, then refusals by
// reason, most frequent first.
func (s *Stats) Report() string {
	var b strings.Builder
	runs := 0
	for _, n := range s.Runs {
		runs += n
	}
	refused := 0
	for _, n := range s.Refusals {
		refused += n
	}
	fmt.Fprintf(&b, "%d statements, %d runs (simple %d, extended: cached statement %d, unnamed %d): %d identical, %d refused, %d silent differences\n",
		s.Statements, runs, s.Runs[pgx.QueryExecModeSimpleProtocol], s.Runs[pgx.QueryExecModeCacheStatement],
		s.Runs[pgx.QueryExecModeExec], s.Identical, refused, len(s.Failures))
	fmt.Fprintf(&b, "reference errors by SQLSTATE: %v\n", s.RefErrors)
	b.WriteString("refusals by reason:\n")
	for _, r := range sortedByCount(s.Refusals) {
		fmt.Fprintf(&b, "  %7d  %s\n", s.Refusals[r], r)
	}
	return b.String()
}

func sortedByCount(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	return keys
}
