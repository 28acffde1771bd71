package sqllex

// Lexer walks the words of SQL text (keywords and identifiers),
// skipping white space and comments. S is the text and Pos the index of
// the next byte to read; the zero Pos starts at the beginning.
type Lexer struct {
	S   string
	Pos int
}

// Peek returns the byte at Pos, or 0 at the end.
func (l *Lexer) Peek() byte {
	if l.Pos < len(l.S) {
		return l.S[l.Pos]
	}
	return 0
}

// Skip moves past white space and comments.
func (l *Lexer) Skip() {
	for l.Pos < len(l.S) {
		c := l.S[l.Pos]
		switch {
		case IsSpace(c):
			l.Pos++
		case c == '-' && l.Pos+1 < len(l.S) && l.S[l.Pos+1] == '-':
			l.Pos = LineCommentEnd(l.S, l.Pos)
		case c == '/' && l.Pos+1 < len(l.S) && l.S[l.Pos+1] == '*':
			l.Pos, _ = BlockCommentEnd(l.S, l.Pos)
		default:
			return
		}
	}
}

// Word returns the next word: an identifier or keyword as written, the
// text inside the quotes of a quoted identifier (doubled quotes left
// doubled), or "" when the next token is no word (which it does not
// consume) or an unterminated quoted identifier (which ends the text).
func (l *Lexer) Word() string {
	l.Skip()
	if l.Pos < len(l.S) && l.S[l.Pos] == '"' {
		end, ok := QuotedEnd(l.S, l.Pos)
		if !ok {
			l.Pos = len(l.S)
			return ""
		}
		w := l.S[l.Pos+1 : end-1]
		l.Pos = end
		return w
	}
	start := l.Pos
	for l.Pos < len(l.S) && IsIdentByte(l.S[l.Pos]) {
		l.Pos++
	}
	return l.S[start:l.Pos]
}

// Ident returns the next word like Word, and whether it was a quoted
// identifier.
func (l *Lexer) Ident() (string, bool) {
	l.Skip()
	quoted := l.Pos < len(l.S) && l.S[l.Pos] == '"'
	return l.Word(), quoted
}

// Next returns the next unquoted word, skipping anything else
// (punctuation, constants, quoted identifiers, comments); "" at the end.
func (l *Lexer) Next() string {
	for {
		l.Skip()
		if l.Pos >= len(l.S) {
			return ""
		}
		c := l.S[l.Pos]
		switch {
		case c == '\'':
			l.Pos, _ = StringEnd(l.S, l.Pos)
		case c == '$':
			if end, ok := DollarQuoteEnd(l.S, l.Pos); ok {
				l.Pos = end
			} else {
				l.Pos++
			}
		case c == '"':
			l.Word() // a quoted identifier is never a keyword
		case IsIdentByte(c):
			return l.Word()
		default:
			l.Pos++
		}
	}
}
