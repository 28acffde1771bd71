// Package sqllex holds pgshard's one reading of SQL text below the
// parser: where the comment, string constant, quoted identifier or
// dollar-quoted string that starts at an index ends, which bytes make
// an identifier, and a keyword scanner (Lexer) built on them. The rules
// are PostgreSQL's (scan.l) with standard_conforming_strings on: --
// comments end at a newline (\n or \r), /* */ comments nest, a quote
// inside a quoted token is doubled, E'...' strings also escape with a
// backslash, a dollar quote's tag is an identifier not starting with a
// digit, and a '$' that continues an identifier opens none.
//
// The classifier (router), the normalizer and statement rewriters
// (router/plan) and the proxy's parameter scan use it; nothing here
// allocates. Functions take the text and an index and return indexes
// into it; an unterminated token ends at len(s).
package sqllex

import "strings"

// IsSpace reports whether c is white space between tokens.
func IsSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// IsDigit reports whether c is an ASCII digit.
func IsDigit(c byte) bool { return '0' <= c && c <= '9' }

// IsIdentByte reports whether c may continue an identifier: a letter,
// digit, '_', '$' or a byte of a non-ASCII character.
func IsIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 || 'a' <= c|0x20 && c|0x20 <= 'z' || '0' <= c && c <= '9'
}

// LineCommentEnd returns the index of the newline that ends the --
// comment at i, or len(s).
func LineCommentEnd(s string, i int) int {
	for i < len(s) && s[i] != '\n' && s[i] != '\r' {
		i++
	}
	return i
}

// BlockCommentEnd returns the index after the (nested) /* */ comment at
// i, and whether it is closed.
func BlockCommentEnd(s string, i int) (int, bool) {
	depth := 0
	for i+1 < len(s) {
		switch {
		case s[i] == '/' && s[i+1] == '*':
			depth++
			i += 2
		case s[i] == '*' && s[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i, true
			}
		default:
			i++
		}
	}
	return len(s), false
}

// QuotedEnd returns the index after the token quoted by s[i] (' or ")
// that opens at i, a doubled quote standing for one, and whether it is
// closed.
func QuotedEnd(s string, i int) (int, bool) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		if s[j] == q {
			if j+1 < len(s) && s[j+1] == q {
				j++
				continue
			}
			return j + 1, true
		}
	}
	return len(s), false
}

// EStringEnd returns the index after the E'...' string whose quote is at
// i (a backslash escapes the next byte), and whether it is closed.
func EStringEnd(s string, i int) (int, bool) {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '\'':
			if j+1 < len(s) && s[j+1] == '\'' {
				j++
				continue
			}
			return j + 1, true
		}
	}
	return len(s), false
}

// IsEString reports whether the quote at i opens an E'...' string: it
// follows an E that does not continue an identifier.
func IsEString(s string, i int) bool {
	return i > 0 && s[i-1]|0x20 == 'e' && (i == 1 || !IsIdentByte(s[i-2]))
}

// StringEnd returns the index after the string constant whose quote is
// at i (an E'...' string when IsEString), and whether it is closed.
func StringEnd(s string, i int) (int, bool) {
	if IsEString(s, i) {
		return EStringEnd(s, i)
	}
	return QuotedEnd(s, i)
}

// DollarQuoteEnd reports whether a dollar-quoted string ($tag$ ...
// $tag$) opens at the '$' at i, and returns the index after it (len(s)
// when unterminated); it returns i, false for a '$' that opens none (a
// parameter such as $1, or a '$' of an identifier). A '$' right after
// a letter, digit, '_' or '$' opens none, also after a number, where
// PostgreSQL's scanner would open one (1$$a$$ is no valid SQL).
func DollarQuoteEnd(s string, i int) (int, bool) {
	if i > 0 && IsIdentByte(s[i-1]) {
		return i, false
	}
	j := i + 1
	if j < len(s) && IsDigit(s[j]) {
		return i, false
	}
	for j < len(s) && s[j] != '$' && IsIdentByte(s[j]) {
		j++
	}
	if j >= len(s) || s[j] != '$' {
		return i, false
	}
	tag := s[i : j+1]
	k := strings.Index(s[j+1:], tag)
	if k < 0 {
		return len(s), true
	}
	return j + 1 + k + len(tag), true
}

// Skip returns the index after the comment, string constant, quoted
// identifier or dollar-quoted string that starts at i, or i when none
// does.
func Skip(s string, i int) int {
	switch c := s[i]; {
	case c == '\'':
		end, _ := StringEnd(s, i)
		return end
	case c == '"':
		end, _ := QuotedEnd(s, i)
		return end
	case c == '$':
		end, _ := DollarQuoteEnd(s, i)
		return end
	case c == '-' && i+1 < len(s) && s[i+1] == '-':
		return LineCommentEnd(s, i)
	case c == '/' && i+1 < len(s) && s[i+1] == '*':
		end, _ := BlockCommentEnd(s, i)
		return end
	}
	return i
}

// StatementEnd returns the index of the ';' that ends the statement
// starting at start (outside comments, constants and quoted
// identifiers), or len(s).
func StatementEnd(s string, start int) int {
	for i := start; i < len(s); i++ {
		switch s[i] {
		case ';':
			return i
		case '\'', '"', '$', '-', '/':
			if j := Skip(s, i); j > i {
				i = j - 1
			}
		}
	}
	return len(s)
}
