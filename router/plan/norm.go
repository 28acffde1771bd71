package plan

import (
	"strings"
	"unicode/utf8"

	"github.com/pgshard/pgshard/router/sqllex"
)

// The normalizer turns a statement into its cache key in one pass without
// parsing: whitespace runs and comments become one space, and each
// numeric or single-quoted string literal becomes a placeholder byte
// (NUL, which cannot appear in a PostgreSQL query string, and a class
// byte), its position
// in the original text recorded in order. Statements that differ only in
// literal values share one key, hence one cached template; the template
// says which literal (by index) holds the key, and the executor reads it
// from the recorded position.
//
// Dollar-quoted strings, quoted identifiers and U&'' strings are kept
// verbatim (part of the key). A leading /* pgshard: ... */ comment is a
// hint and is left out of the key.

const placeholder = 0

// span is a byte range [start, end) of the original text.
type span struct{ start, end int32 }

// normalized is the normalizer's output; its buffers are reused.
type normalized struct {
	key  []byte
	lits []span
	// litNorm[i] is the offset of literal i's placeholder in key.
	litNorm []int32
	hint    string // the text of a leading pgshard hint comment, inside /* */
}

func (n *normalized) reset() {
	n.key = n.key[:0]
	n.lits = n.lits[:0]
	n.litNorm = n.litNorm[:0]
	n.hint = ""
}

// text returns literal i's text in sql.
func (n *normalized) text(sql string, i int) string {
	s := n.lits[i]
	return sql[s.start:s.end]
}

// normalize fills n from sql.
func normalize(sql string, n *normalized) {
	n.reset()
	i := 0
	// A leading hint comment.
	for i < len(sql) && sqllex.IsSpace(sql[i]) {
		i++
	}
	if end, ok := sqllex.BlockCommentEnd(sql, i); ok && strings.HasPrefix(sql[i:], "/*") {
		body := strings.TrimSpace(sql[i+2 : max(i+2, end-2)])
		if len(body) > 8 && strings.EqualFold(body[:8], "pgshard:") {
			n.hint = body[8:]
			i = end
		}
	}
	space := false // a space is pending
	emit := func(c byte) {
		if space {
			if len(n.key) > 0 {
				n.key = append(n.key, ' ')
			}
			space = false
		}
		n.key = append(n.key, c)
	}
	// A placeholder is NUL and a class byte: 'n' for a number, 's' for a
	// string (they are not interchangeable everywhere in the grammar).
	addLit := func(start, end int) {
		emit(placeholder)
		n.litNorm = append(n.litNorm, int32(len(n.key)-1))
		class := byte('n')
		if sql[start] == '\'' {
			class = 's'
		}
		n.key = append(n.key, class)
		n.lits = append(n.lits, span{int32(start), int32(end)})
	}
	// An unterminated string is a syntax error: keep it verbatim, so that
	// it never shares a key with a valid statement.
	copyRest := func(rest string) {
		for j := 0; j < len(rest); j++ {
			emit(rest[j])
		}
	}
	for i < len(sql) {
		c := sql[i]
		switch {
		case sqllex.IsSpace(c):
			space = true
			i++
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			i = sqllex.LineCommentEnd(sql, i)
			space = true
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			end, ok := sqllex.BlockCommentEnd(sql, i)
			if !ok {
				copyRest(sql[i:])
				i = len(sql)
				continue
			}
			i = end
			space = true
		case c == '\'':
			end, ok := sqllex.QuotedEnd(sql, i)
			if !ok {
				copyRest(sql[i:])
				i = len(sql)
				continue
			}
			if !utf8.ValidString(sql[i:end]) {
				// The parser refuses invalid UTF-8: keep it in the key.
				copyRest(sql[i:end])
				i = end
				continue
			}
			addLit(i, end)
			i = end
		case (c|0x20 == 'e' || c|0x20 == 'b' || c|0x20 == 'x' || c|0x20 == 'u' || c|0x20 == 'n') && i+1 < len(sql) && (sql[i+1] == '\'' || sql[i+1] == '&') && (i == 0 || !sqllex.IsIdentByte(sql[i-1])):
			// E'', B'', X'', N'' and U&'' strings are kept verbatim: their
			// contents can be invalid, and a key must never be shared by
			// a valid and an invalid statement.
			j := i + 1
			if sql[j] == '&' {
				j++
				if j >= len(sql) || sql[j] != '\'' {
					emit(c)
					i++
					continue
				}
			}
			end, _ := sqllex.QuotedEnd(sql, j)
			if c|0x20 == 'e' {
				end, _ = sqllex.EStringEnd(sql, j)
			}
			copyRest(sql[i:end])
			i = end
		case c == '"':
			end, _ := sqllex.QuotedEnd(sql, i)
			for _, b := range []byte(sql[i:end]) {
				emit(b)
			}
			i = end
		case c == '$' && (i == 0 || !sqllex.IsIdentByte(sql[i-1])) && i+1 < len(sql) && !sqllex.IsDigit(sql[i+1]):
			end, ok := sqllex.DollarQuoteEnd(sql, i)
			if !ok {
				end = i + 1
			}
			for j := i; j < end; j++ {
				emit(sql[j])
			}
			i = end
		case sqllex.IsDigit(c) || c == '.' && i+1 < len(sql) && sqllex.IsDigit(sql[i+1]):
			if i > 0 && sqllex.IsIdentByte(sql[i-1]) {
				emit(c) // part of an identifier or $n
				i++
				continue
			}
			end, ok := numberEnd(sql, i)
			if !ok {
				copyRest(sql[i:end])
				i = end
				continue
			}
			addLit(i, end)
			i = end
		case c == '-' && i+1 < len(sql) && (sqllex.IsDigit(sql[i+1]) || sql[i+1] == '.' && i+2 < len(sql) && sqllex.IsDigit(sql[i+2])) && unaryContext(n.key, space):
			end, ok := numberEnd(sql, i+1)
			if !ok {
				emit(c)
				i++
				continue
			}
			addLit(i, end)
			i = end
		default:
			emit(c)
			i++
		}
	}
}

// unaryContext reports whether a '-' following the normalized text so
// far is a unary minus: after an operator or punctuation, not after an
// operand (identifier, literal, closing bracket).
func unaryContext(key []byte, space bool) bool {
	if len(key) == 0 {
		return true
	}
	c := key[len(key)-1]
	if c == placeholder || c == ')' || c == ']' || c == '"' || sqllex.IsIdentByte(c) {
		return false
	}
	if c == '-' || c == '+' || c == '*' || c == '/' || c == '<' || c == '>' || c == '=' ||
		c == '~' || c == '!' || c == '@' || c == '#' || c == '%' || c == '^' || c == '&' || c == '|' || c == '`' || c == '?' {
		// After an operator character with no space, "-" would be part of
		// a longer operator such as "=-"? PostgreSQL splits "=-5" as "=" and
		// "-5" only in some cases; keep it simple and require a space or a
		// plain comparison.
		return space || c == '=' || c == '>' || c == '<'
	}
	return true // ( , [ :
}

// numberEnd returns the end of the number starting at i and whether it
// is a plain decimal literal (digits, fraction, exponent) not followed by
// identifier characters. Others (0x1F, 1_000, 12abc) are kept verbatim:
// only plain numbers, which always lex the same way, become placeholders.
func numberEnd(sql string, i int) (int, bool) {
	ok := true
	for i < len(sql) && sqllex.IsDigit(sql[i]) {
		i++
	}
	if i < len(sql) && sql[i] == '.' && !(i+1 < len(sql) && sql[i+1] == '.') {
		i++
		for i < len(sql) && sqllex.IsDigit(sql[i]) {
			i++
		}
	}
	if i < len(sql) && sql[i]|0x20 == 'e' {
		j := i + 1
		if j < len(sql) && (sql[j] == '+' || sql[j] == '-') {
			j++
		}
		if j < len(sql) && sqllex.IsDigit(sql[j]) {
			for j < len(sql) && sqllex.IsDigit(sql[j]) {
				j++
			}
			i = j
		}
	}
	for i < len(sql) && (sqllex.IsIdentByte(sql[i]) || sql[i] == '.' && i+1 < len(sql) && sqllex.IsDigit(sql[i+1])) {
		ok = false
		i++
	}
	return i, ok
}
