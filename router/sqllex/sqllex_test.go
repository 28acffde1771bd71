package sqllex_test

import (
	"strings"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgshard/pgshard/router/sqllex"
)

func TestSkip(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		at   int
		want int // index after the token; at when none starts there
	}{
		{"'abc' x", 0, 5},
		{"'it''s' x", 0, 7},
		{"'a\\' x", 0, 4},              // standard string: the backslash is a character
		{"E'a\\'b' x", 1, 7},           // E'' string: it escapes
		{"e'a\\\\' x", 1, 6},           // an escaped backslash
		{"x E'a\\'b' y", 3, 9},         // E after a space
		{"date'a\\' x", 4, 8},          // an E ending a word is no E prefix
		{"'unterminated", 0, 13},       // ends the text
		{`"a""b" x`, 0, 6},             // doubled quote in an identifier
		{`"abc`, 0, 4},                 // unterminated identifier
		{"$$a'b$$ x", 0, 7},            // dollar quote
		{"$fn$ $$ $fn$ x", 0, 12},      // with a tag; another tag inside
		{"$1 x", 0, 0},                 // a parameter
		{"a$b$ x", 1, 1},               // '$' inside an identifier
		{"$a", 0, 0},                   // no closing '$' of the tag
		{"$x$ never", 0, 9},            // unterminated dollar quote
		{"$1a$ x $1a$", 0, 0},          // a tag does not start with a digit
		{"-- c\nx", 0, 4},              // line comment ends at the newline
		{"-- c\rx", 0, 4},              // or a carriage return
		{"-- c", 0, 4},                 // or the text
		{"/* a /* b */ c */ x", 0, 17}, // nested
		{"/* a", 0, 4},                 // unterminated
		{"/*/ x", 0, 5},                // "/*/" does not close
		{"- x", 0, 0},
		{"/ x", 0, 0},
		{"x", 0, 0},
	} {
		if got := sqllex.Skip(tc.sql, tc.at); got != tc.want {
			t.Errorf("Skip(%q, %d) = %d, want %d", tc.sql, tc.at, got, tc.want)
		}
	}
}

func TestStatementEnd(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want int
	}{
		{"select 1; select 2", 8},
		{"select ';'; x", 10},
		{`select ";"; x`, 10},
		{"select $$;$$; x", 12},
		{"select 1 -- ;\n; x", 14},
		{"select 1 /* ; */; x", 16},
		{"select 1", 8},
		{"select 'a;", 10},
	} {
		if got := sqllex.StatementEnd(tc.sql, 0); got != tc.want {
			t.Errorf("StatementEnd(%q) = %d, want %d", tc.sql, got, tc.want)
		}
	}
}

func TestLexer(t *testing.T) {
	l := sqllex.Lexer{S: `SET /* c */ "Search""Path" -- x
	TO 'a b', $$d$$, e'\'' , my$var;`}
	var words []string
	for w := l.Next(); w != ""; w = l.Next() {
		words = append(words, w)
	}
	// The E of an E'' string reads as a word, as it always did.
	if got := strings.Join(words, "|"); got != "SET|TO|e|my$var" {
		t.Fatalf("words %q", got)
	}
	l = sqllex.Lexer{S: ` /* c */ "Search""Path" x`}
	if w, quoted := l.Ident(); w != `Search""Path` || !quoted {
		t.Fatalf("Ident = %q %v", w, quoted)
	}
	if w := l.Word(); w != "x" || l.Peek() != 0 {
		t.Fatalf("Word = %q, Peek = %q", w, l.Peek())
	}
	l = sqllex.Lexer{S: `"open`}
	if w := l.Word(); w != "" || l.Pos != 5 {
		t.Fatalf("unterminated: %q at %d", w, l.Pos)
	}
	l = sqllex.Lexer{S: "(x"}
	if w := l.Word(); w != "" || l.Pos != 0 || l.Peek() != '(' {
		t.Fatalf("at punctuation: %q at %d", w, l.Pos)
	}
}

// FuzzSkip compares Skip with PostgreSQL's own scanner (pg_query.Scan)
// on text it accepts: each comment, string constant and quoted
// identifier ends where PostgreSQL ends it, and no other token starts
// one.
func FuzzSkip(f *testing.F) {
	for _, s := range []string{
		"select 'a''b', E'c\\'d', $$x$$, $t$ $ $t$, \"q\"\"i\" -- c\n/* a /* b */ */ 1",
		"select $1, a$b, x--y\r1",
		"select date'2020-01-01', U&'d\\0061t\\+000061', B'101', X'1F', N'n'",
		"select 'a'\n'b'",
		"do $body$ begin perform 1; end $body$",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		if strings.IndexByte(sql, 0) >= 0 {
			return // query text never holds NUL; the scanner stops there
		}
		res, err := pg.Scan(sql)
		if err != nil {
			return
		}
		for _, tok := range res.Tokens {
			start, end := int(tok.Start), int(tok.End)
			if start < 0 || end > len(sql) || start >= end {
				continue
			}
			switch tok.Token {
			case pg.Token_SQL_COMMENT, pg.Token_C_COMMENT:
				if got := sqllex.Skip(sql, start); got != end {
					t.Fatalf("%q: comment %q: Skip = %d, want %d", sql, sql[start:end], got, end)
				}
			case pg.Token_SCONST, pg.Token_USCONST, pg.Token_BCONST, pg.Token_XCONST:
				if sql[start] == '$' {
					if start > 0 && sqllex.IsIdentByte(sql[start-1]) {
						continue // after a number: see DollarQuoteEnd
					}
					if got := sqllex.Skip(sql, start); got != end {
						t.Fatalf("%q: dollar quote %q: Skip = %d, want %d", sql, sql[start:end], got, end)
					}
					continue
				}
				q := start + strings.IndexByte(sql[start:end], '\'')
				if q < start {
					continue
				}
				// (A lone '$' before the E is no identifier to
				// PostgreSQL; IsEString takes it for part of one.)
				if e := sql[start]|0x20 == 'e' && q == start+1; sqllex.IsEString(sql, q) != e && (start == 0 || sql[start-1] != '$') {
					t.Fatalf("%q: %q: IsEString = %v", sql, sql[start:end], !e)
				}
				if (tok.Token == pg.Token_BCONST || tok.Token == pg.Token_XCONST) && end < len(sql) && sql[end] == '\'' {
					continue // no doubled quotes in B'' and X'' (nor valid SQL after them)
				}
				// Constants separated by white space with a newline are
				// one constant to PostgreSQL; Skip ends at the first.
				if got := sqllex.Skip(sql, q); got != end && (got > end || !sqllex.IsSpace(sql[got])) {
					t.Fatalf("%q: constant %q: Skip = %d, want %d", sql, sql[start:end], got, end)
				}
			case pg.Token_IDENT, pg.Token_UIDENT:
				if sql[start] == '"' {
					if got := sqllex.Skip(sql, start); got != end {
						t.Fatalf("%q: identifier %q: Skip = %d, want %d", sql, sql[start:end], got, end)
					}
					continue
				}
				if got := sqllex.Skip(sql, start); got != start {
					t.Fatalf("%q: identifier %q: Skip = %d", sql, sql[start:end], got)
				}
			default:
				if got := sqllex.Skip(sql, start); got != start {
					t.Fatalf("%q: token %v %q: Skip = %d", sql, tok.Token, sql[start:end], got)
				}
			}
		}
	})
}
