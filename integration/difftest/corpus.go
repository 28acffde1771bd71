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
	// Refused, when set, is the SQLSTATE pgshard must answer with instead
	// of rows (the reference is not asked).
	Refused string
	// Write marks a statement that changes data: it runs on both sides
	// and its command tag (row count) must match.
	Write bool
}

// ParseCorpus reads a corpus: one statement per paragraph (blank lines
// separate entries), with optional directive comments before it:
//
//	-- ordered            rows must come back in the same order
//	-- refused 0A000      pgshard must refuse with this SQLSTATE
//	-- write              compare command tags, not rows
//
// A statement ends with ';' on its last line. Other comments are kept;
// paragraphs of comments only are skipped.
func ParseCorpus(r io.Reader) ([]Query, error) {
	var out []Query
	var cur Query
	var text strings.Builder
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	line := 0
	flush := func() error {
		sql := strings.TrimSpace(text.String())
		text.Reset()
		if sql == "" || commentOnly(sql) {
			cur = Query{}
			return nil
		}
		if !strings.HasSuffix(sql, ";") {
			return fmt.Errorf("line %d: statement does not end with ';'", cur.Line)
		}
		cur.SQL = strings.TrimSuffix(sql, ";")
		out = append(out, cur)
		cur = Query{}
		return nil
	}
	for sc.Scan() {
		line++
		l := sc.Text()
		trimmed := strings.TrimSpace(l)
		switch {
		case trimmed == "":
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		case trimmed == "-- ordered":
			cur.Ordered = true
			continue
		case trimmed == "-- write":
			cur.Write = true
			continue
		case strings.HasPrefix(trimmed, "-- refused "):
			cur.Refused = strings.TrimSpace(strings.TrimPrefix(trimmed, "-- refused "))
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

// commentOnly reports whether every line of s is a -- comment.
func commentOnly(s string) bool {
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			return false
		}
	}
	return true
}
