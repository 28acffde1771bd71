package difftest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// Query is one corpus entry.
type Query struct {
	SQL  string
	Line int // in the corpus file
	// Ordered: the query fixes the row order (compare as sequences);
	// otherwise rows are compared as multisets.
	Ordered bool
	// Write marks a statement that changes data: it runs once on each
	// side (not once per protocol: the protocols take turns), in the
	// order of the corpus, and on the reference only when pgshard ran it
	// too.
	Write bool
	// InTransaction runs the statement between BEGIN and COMMIT, which
	// go in the simple protocol (as pgx.Conn.Begin sends them).
	InTransaction bool
	// Refused, when set, is the SQLSTATE pgshard must answer with instead
	// of rows when it routes by a shard map (the reference is not asked).
	// Without a map pgshard must answer like the reference.
	Refused string
	// RefusedMessage is a fragment the refusal's message must contain.
	RefusedMessage string
	// KnownBug, when set, describes a known pgshard bug: over a shard map
	// the answer is expected to differ from the reference, and the test
	// fails when it no longer does (so the marker goes when the bug does).
	KnownBug string
	// KnownBugIn limits KnownBug to the simple ("simple") or the extended
	// ("extended") protocol; elsewhere the answer must match. "" is both.
	KnownBugIn string
	// Steps, for a paragraph of several statements, holds them in order:
	// they run one after the other on each side and the last one's answer
	// is compared (or the first error). SQL holds the whole paragraph.
	Steps []string
}

// Directives, on their own lines before a statement.
const (
	dirOrdered       = "-- ordered"
	dirWrite         = "-- write"
	dirInTransaction = "-- in-transaction"
	dirSteps         = "-- steps"
	dirRefused       = "-- refused "
	dirKnownBug      = "-- known-bug"
)

// ParseCorpus reads a corpus: one statement per paragraph (blank lines
// separate entries), with optional directive comments before it:
//
//	-- ordered                      rows must come back in the same order
//	-- write                        the statement changes data (runs once)
//	-- in-transaction               run it between BEGIN and COMMIT
//	-- refused 0A000 [fragment]     over a shard map pgshard must refuse it
//	                                with this SQLSTATE (and a message
//	                                containing fragment)
//	-- known-bug: description       over a shard map pgshard answers
//	                                differently from the reference, a bug
//	-- known-bug(extended): desc    the same, in the extended (or simple)
//	                                protocol only
//	-- steps                        the paragraph holds several statements,
//	                                each ending with ';' at the end of a
//	                                line, run in order; the last is compared
//
// A statement ends with ';' on its last line. Other comments are kept;
// paragraphs of comments only are skipped.
func ParseCorpus(r io.Reader) ([]Query, error) {
	var out []Query
	var cur Query
	var text strings.Builder
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	line, dirLine := 0, 0
	flush := func() error {
		sql := strings.TrimSpace(text.String())
		text.Reset()
		defer func() { cur, dirLine = Query{}, 0 }()
		if sql == "" || commentOnly(sql) {
			if dirLine != 0 {
				return fmt.Errorf("line %d: directive without a statement", dirLine)
			}
			return nil
		}
		if !strings.HasSuffix(sql, ";") {
			return fmt.Errorf("line %d: statement does not end with ';'", cur.Line)
		}
		if cur.Refused != "" && cur.KnownBug != "" {
			return fmt.Errorf("line %d: a statement is either refused or a known bug", cur.Line)
		}
		cur.SQL = strings.TrimSuffix(sql, ";")
		if cur.Steps != nil {
			cur.Steps = splitSteps(cur.SQL)
			if len(cur.Steps) < 2 {
				return fmt.Errorf("line %d: steps need several statements", cur.Line)
			}
		}
		out = append(out, cur)
		return nil
	}
	for sc.Scan() {
		line++
		l := sc.Text()
		trimmed := strings.TrimSpace(l)
		isDirective := true
		switch {
		case trimmed == "":
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		case trimmed == dirOrdered:
			cur.Ordered = true
		case trimmed == dirWrite:
			cur.Write = true
		case trimmed == dirInTransaction:
			cur.InTransaction = true
		case trimmed == dirSteps:
			cur.Steps = []string{}
		case strings.HasPrefix(trimmed, dirRefused):
			code, msg, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(trimmed, dirRefused)), " ")
			if len(code) != 5 {
				return nil, fmt.Errorf("line %d: %q is not a SQLSTATE", line, code)
			}
			cur.Refused, cur.RefusedMessage = code, strings.TrimSpace(msg)
		case strings.HasPrefix(trimmed, dirKnownBug+":") || strings.HasPrefix(trimmed, dirKnownBug+"("):
			scope, desc, ok := strings.Cut(strings.TrimPrefix(trimmed, dirKnownBug), ":")
			scope = strings.TrimSuffix(strings.TrimPrefix(scope, "("), ")")
			if !ok || strings.TrimSpace(desc) == "" || (scope != "" && scope != "simple" && scope != "extended") {
				return nil, fmt.Errorf("line %d: malformed directive %q (want -- known-bug: description, or known-bug(simple|extended): ...)", line, trimmed)
			}
			cur.KnownBug, cur.KnownBugIn = strings.TrimSpace(desc), scope
		case looksLikeDirective(trimmed):
			return nil, fmt.Errorf("line %d: malformed directive %q", line, trimmed)
		default:
			isDirective = false
		}
		if isDirective {
			if text.Len() > 0 && !commentOnly(strings.TrimSpace(text.String())) {
				return nil, fmt.Errorf("line %d: directive inside a statement", line)
			}
			if dirLine == 0 {
				dirLine = line
			}
			continue
		}
		if cur.Line == 0 {
			cur.Line = line
		}
		text.WriteString(l)
		text.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read corpus: %w", err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// LoadCorpus reads a corpus file.
func LoadCorpus(path string) ([]Query, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open corpus: %w", err)
	}
	defer f.Close()
	return ParseCorpus(f)
}

// splitSteps splits a paragraph at the lines that end with ';' (the last
// statement's ';' is already gone), keeping comment lines with the
// statement they precede.
func splitSteps(sql string) []string {
	var steps []string
	var cur strings.Builder
	for _, l := range strings.Split(sql, "\n") {
		cur.WriteString(l)
		t := strings.TrimSpace(l)
		if strings.HasSuffix(t, ";") && !strings.HasPrefix(t, "--") {
			steps = append(steps, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
			continue
		}
		cur.WriteByte('\n')
	}
	if last := strings.TrimSpace(cur.String()); last != "" {
		steps = append(steps, last)
	}
	return steps
}

// looksLikeDirective reports whether comment line l names a directive
// that takes arguments, such as a "-- refused" without a SQLSTATE.
func looksLikeDirective(l string) bool {
	f := strings.Fields(l)
	return len(f) >= 2 && f[0] == "--" && (f[1] == "refused" || strings.HasPrefix(f[1], "known-bug"))
}

// commentOnly reports whether every line of s is a -- comment.
func commentOnly(s string) bool {
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			return false
		}
	}
	return true
}

// OneLine is sql on one line, with runs of white space collapsed and
// comment lines dropped, for reports.
func OneLine(sql string) string {
	var b strings.Builder
	for _, l := range strings.Split(sql, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "--") {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strings.Join(strings.Fields(l), " "))
	}
	return b.String()
}
