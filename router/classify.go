package router

import "strings"

// Class is a set of flags describing what a statement does to session
// state.
type Class uint8

// Class flags.
const (
	// ClassSet is a session-level SET (not SET LOCAL, not SET TRANSACTION).
	ClassSet Class = 1 << iota
	// ClassReset is RESET of one parameter.
	ClassReset
	// ClassResetAll is RESET ALL.
	ClassResetAll
	// ClassDiscardAll is DISCARD ALL.
	ClassDiscardAll
	// ClassDeallocateAll is DEALLOCATE [PREPARE] ALL.
	ClassDeallocateAll
	// ClassPin marks session state that cannot be replayed on another
	// backend; Info.PinReason says which.
	ClassPin
	// ClassMulti marks a query string holding more than one statement.
	ClassMulti
)

// Info is the result of Classify.
type Info struct {
	Class     Class
	Param     string // parameter name for ClassSet and ClassReset, lower case
	PinReason string // for ClassPin, e.g. "temporary table"
}

// Has reports whether all flags in c are set.
func (i Info) Has(c Class) bool { return i.Class&c == c }

// Classify looks at the leading keywords of sql. It never fails: what it
// does not recognise has no flags. It is lexical on purpose (a few hundred
// nanoseconds); the full parser runs elsewhere, on plan-cache misses.
func Classify(sql string) Info {
	l := lexer{s: sql}
	first := l.word()
	var info Info
	switch {
	case eq(first, "set"):
		info = classifySet(&l)
	case eq(first, "reset"):
		w := l.word()
		if eq(w, "all") {
			info.Class = ClassResetAll
		} else if w != "" {
			info.Class = ClassReset
			info.Param = paramName(w, &l)
		}
	case eq(first, "discard"):
		if eq(l.word(), "all") {
			info.Class = ClassDiscardAll
		}
	case eq(first, "deallocate"):
		w := l.word()
		if eq(w, "prepare") {
			w = l.word()
		}
		if eq(w, "all") {
			info.Class = ClassDeallocateAll
		} else {
			info = pin("SQL-level prepared statement")
		}
	case eq(first, "prepare"):
		if !eq(l.word(), "transaction") {
			info = pin("SQL-level prepared statement")
		}
	case eq(first, "listen"):
		info = pin("LISTEN")
	case eq(first, "load"):
		info = pin("LOAD")
	case eq(first, "declare"):
		if containsFold(sql, "with hold") {
			info = pin("WITH HOLD cursor")
		}
	case eq(first, "create"):
		w := l.word()
		if eq(w, "or") { // CREATE OR REPLACE TEMP VIEW
			l.word()
			w = l.word()
		}
		if eq(w, "global") || eq(w, "local") {
			w = l.word()
		}
		if eq(w, "temp") || eq(w, "temporary") {
			info = pin("temporary table")
		}
	}
	if info.Class == 0 && containsFold(sql, "advisory_lock") {
		info = pin("session advisory lock")
	}
	if info.Class == 0 && eq(first, "select") && containsFold(sql, "into temp") {
		info = pin("temporary table")
	}
	if info.Class&(ClassSet|ClassReset|ClassResetAll|ClassDiscardAll|ClassDeallocateAll) != 0 && multiStatement(sql) {
		info.Class |= ClassMulti
	}
	return info
}

func pin(reason string) Info { return Info{Class: ClassPin, PinReason: reason} }

func classifySet(l *lexer) Info {
	w := l.word()
	switch {
	case eq(w, "local"), eq(w, "transaction"), eq(w, "constraints"):
		return Info{}
	case eq(w, "session"):
		w = l.word()
		switch {
		case eq(w, "characteristics"):
			return Info{Class: ClassSet, Param: "default_transaction_characteristics"}
		case eq(w, "authorization"):
			return Info{Class: ClassSet, Param: "session_authorization"}
		}
	}
	if w == "" {
		return Info{}
	}
	return Info{Class: ClassSet, Param: paramName(w, l)}
}

// paramName maps SET's special forms to the parameter they set.
func paramName(w string, l *lexer) string {
	switch {
	case eq(w, "time"):
		l.word() // ZONE
		return "timezone"
	case eq(w, "names"):
		return "client_encoding"
	case eq(w, "schema"):
		return "search_path"
	case eq(w, "xml"):
		return "xmloption"
	case eq(w, "role"):
		return "role"
	}
	name := strings.ToLower(w)
	// Dotted custom parameters: the lexer stops at '.', so glue the parts.
	for l.peek() == '.' {
		l.pos++
		name += "." + strings.ToLower(l.word())
	}
	return name
}

func eq(a, b string) bool { return len(a) == len(b) && strings.EqualFold(a, b) }

// lexer walks keywords, skipping white space and comments.
type lexer struct {
	s   string
	pos int
}

func (l *lexer) peek() byte {
	if l.pos < len(l.s) {
		return l.s[l.pos]
	}
	return 0
}

func (l *lexer) skip() {
	for l.pos < len(l.s) {
		c := l.s[l.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			l.pos++
		case c == '-' && l.pos+1 < len(l.s) && l.s[l.pos+1] == '-':
			for l.pos < len(l.s) && l.s[l.pos] != '\n' {
				l.pos++
			}
		case c == '/' && l.pos+1 < len(l.s) && l.s[l.pos+1] == '*':
			l.pos = skipBlockComment(l.s, l.pos)
		default:
			return
		}
	}
}

// word returns the next identifier-like token ("" at a non-word).
func (l *lexer) word() string {
	l.skip()
	if l.pos < len(l.s) && l.s[l.pos] == '"' {
		end := strings.IndexByte(l.s[l.pos+1:], '"')
		if end < 0 {
			return ""
		}
		w := l.s[l.pos+1 : l.pos+1+end]
		l.pos += end + 2
		return w
	}
	start := l.pos
	for l.pos < len(l.s) {
		c := l.s[l.pos]
		if c == '_' || c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z' || c >= 0x80 {
			l.pos++
			continue
		}
		break
	}
	return l.s[start:l.pos]
}

// skipBlockComment returns the index after the (nested) comment at i.
func skipBlockComment(s string, i int) int {
	depth := 0
	for i < len(s) {
		switch {
		case i+1 < len(s) && s[i] == '/' && s[i+1] == '*':
			depth++
			i += 2
		case i+1 < len(s) && s[i] == '*' && s[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return i
}

// multiStatement reports whether sql has a ';' outside literals, quoted
// identifiers and comments that is followed by anything but white space
// and comments.
func multiStatement(sql string) bool {
	for i := 0; i < len(sql); i++ {
		switch c := sql[i]; c {
		case '\'', '"':
			j := strings.IndexByte(sql[i+1:], c)
			if j < 0 {
				return false
			}
			i += j + 1
		case '$': // dollar quoting: $tag$ ... $tag$
			j := i + 1
			for j < len(sql) && (sql[j] == '_' || sql[j]|0x20 >= 'a' && sql[j]|0x20 <= 'z' || sql[j] >= '0' && sql[j] <= '9') {
				j++
			}
			if j < len(sql) && sql[j] == '$' {
				tag := sql[i : j+1]
				k := strings.Index(sql[j+1:], tag)
				if k < 0 {
					return false
				}
				i = j + k + len(tag)
			}
		case '-':
			if i+1 < len(sql) && sql[i+1] == '-' {
				k := strings.IndexByte(sql[i:], '\n')
				if k < 0 {
					return false
				}
				i += k
			}
		case '/':
			if i+1 < len(sql) && sql[i+1] == '*' {
				i = skipBlockComment(sql, i) - 1
			}
		case ';':
			l := lexer{s: sql, pos: i + 1}
			l.skip()
			for l.pos < len(sql) && sql[l.pos] == ';' {
				l.pos++
				l.skip()
			}
			if l.pos < len(sql) {
				return true
			}
			return false
		}
	}
	return false
}

// containsFold reports whether s contains sub (ASCII lower case) ignoring
// ASCII case, without allocating.
func containsFold(s, sub string) bool {
	n := len(sub)
	if n == 0 {
		return true
	}
	first := sub[0]
	for i := 0; i+n <= len(s); i++ {
		if s[i]|0x20 != first {
			continue
		}
		if strings.EqualFold(s[i:i+n], sub) {
			return true
		}
	}
	return false
}
