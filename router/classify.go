package router

import "strings"

// Class is a set of flags describing what a statement does to session
// state.
type Class uint16

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
	// ClassBegin is BEGIN or START TRANSACTION.
	ClassBegin
	// ClassCommit is COMMIT or END (not COMMIT PREPARED).
	ClassCommit
	// ClassDeallocate is DEALLOCATE [PREPARE] name: Param is the name,
	// folded to lower case unless it was quoted. It drops a prepared
	// statement of the session, SQL-level or protocol-level alike.
	ClassDeallocate
	// ClassRollback is ROLLBACK or ABORT (not ROLLBACK TO SAVEPOINT or
	// ROLLBACK PREPARED).
	ClassRollback
)

// Info is the result of Classify.
type Info struct {
	Class     Class
	Param     string // parameter name for ClassSet and ClassReset, lower case; statement name for ClassDeallocate
	PinReason string // for ClassPin, e.g. "temporary table"
}

// Has reports whether all flags in c are set.
func (i Info) Has(c Class) bool { return i.Class&c == c }

// Classify looks at the leading keywords of each statement in sql. It
// never fails: what it does not recognise has no flags. It is lexical on
// purpose (a few hundred nanoseconds); the full parser runs elsewhere, on
// plan-cache misses. In a query string with several statements the flags
// of all of them are merged, and ClassMulti is added when any of them
// changes session state.
// Info.Param may share memory with sql.
func Classify(sql string) Info {
	if strings.IndexByte(sql, ';') < 0 {
		return classifyOne(sql) // one statement: the common case, no split
	}
	var out Info
	n := 0
	for start := 0; start < len(sql); {
		end := statementEnd(sql, start)
		stmt := sql[start:end]
		start = end + 1
		l := lexer{s: stmt}
		l.skip()
		if l.pos == len(stmt) {
			continue // empty statement
		}
		n++
		info := classifyOne(stmt)
		out.Class |= info.Class
		if out.Param == "" {
			out.Param = info.Param
		}
		if out.PinReason == "" {
			out.PinReason = info.PinReason
		}
	}
	if n > 1 && out.Class&sessionState != 0 {
		out.Class |= ClassMulti
	}
	return out
}

// sessionState are the flags of statements that change session state.
const sessionState = ClassSet | ClassReset | ClassResetAll | ClassDiscardAll | ClassDeallocateAll | ClassDeallocate | ClassPin

// classifyOne classifies a single statement.
func classifyOne(sql string) Info {
	l := lexer{s: sql}
	first := l.word()
	var info Info
	switch {
	case eq(first, "set"):
		info = classifySet(&l)
	case eq(first, "reset"):
		w := l.word()
		switch {
		case eq(w, "all"):
			info.Class = ClassResetAll
		case eq(w, "session") && eq(l.word(), "authorization"):
			info = Info{Class: ClassReset, Param: "session_authorization"}
		case w != "":
			info.Class = ClassReset
			info.Param = paramName(w, &l)
		}
	case eq(first, "discard"):
		if eq(l.word(), "all") {
			info.Class = ClassDiscardAll
		}
	case eq(first, "deallocate"):
		w, quoted := l.ident()
		if eq(w, "prepare") && !quoted {
			w, quoted = l.ident()
		}
		switch {
		case eq(w, "all") && !quoted:
			info.Class = ClassDeallocateAll
		case w == "":
			info = pin("SQL-level prepared statement")
		case quoted:
			info = Info{Class: ClassDeallocate, Param: w}
		default:
			info = Info{Class: ClassDeallocate, Param: strings.ToLower(w)}
		}
	case eq(first, "prepare"):
		if !eq(l.word(), "transaction") {
			info = pin("SQL-level prepared statement")
		}
	case eq(first, "begin"):
		info.Class = ClassBegin
	case eq(first, "start"):
		if eq(l.word(), "transaction") {
			info.Class = ClassBegin
		}
	case eq(first, "commit"), eq(first, "end"):
		if w := l.word(); !eq(w, "prepared") {
			info.Class = ClassCommit
		}
	case eq(first, "rollback"), eq(first, "abort"):
		if w := l.word(); !eq(w, "to") && !eq(w, "prepared") {
			info.Class = ClassRollback
		}
	case eq(first, "listen"):
		info = pin("LISTEN")
	case eq(first, "do"):
		if doSessionState(sql) {
			info = pin("DO block changing session state")
		}
	case eq(first, "load"):
		info = pin("LOAD")
	case eq(first, "declare"):
		if containsFold(sql, "hold") && wordPair(sql, "with", "hold", "for") {
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
		if eq(w, "temp") || eq(w, "temporary") || containsFold(sql, "pg_temp") {
			info = pin("temporary table")
		}
	}
	if info.Class == 0 && containsFold(sql, "advisory_lock") {
		info = pin("session advisory lock")
	}
	if info.Class == 0 && containsFold(sql, "set_config") && !setConfigLocal(sql) {
		// set_config(name, value, false) changes a setting for the rest
		// of the session, behind the proxy's back.
		info = pin("set_config")
	}
	if info.Class == 0 && containsFold(sql, "into") && (wordPair(sql, "into", "temp", "") || wordPair(sql, "into", "temporary", "")) {
		info = pin("temporary table")
	}
	return info
}

// doSessionState reports whether the code of a DO block may leave
// session state: a statement of it starts with SET, RESET, PREPARE,
// LISTEN, LOAD or DISCARD, or it mentions temporary objects, set_config,
// WITH HOLD cursors or session advisory locks. Lexical and cautious: a
// false alarm only pins the session.
func doSessionState(sql string) bool {
	for _, w := range []string{"temp", "set_config", "advisory_lock", "hold"} {
		if containsFold(sql, w) {
			return true
		}
	}
	// The code is a string constant (usually dollar-quoted): look at the
	// statements inside.
	body := sql
	if i := strings.IndexAny(sql, "$'"); i >= 0 {
		body = sql[i:]
		if body[0] == '$' {
			if end := strings.IndexByte(body[1:], '$'); end >= 0 {
				body = body[end+2:]
			}
		} else {
			body = body[1:]
		}
	}
	for start := 0; start < len(body); {
		end := statementEnd(body, start)
		l := lexer{s: body[start:end]}
		start = end + 1
		// A statement starts the piece or follows BEGIN, THEN, ELSE or
		// LOOP.
		lead := true
		for w := l.next(); w != ""; w = l.next() {
			if lead && (eq(w, "set") || eq(w, "reset") || eq(w, "prepare") || eq(w, "listen") || eq(w, "load") || eq(w, "discard")) {
				return true
			}
			lead = eq(w, "begin") || eq(w, "then") || eq(w, "else") || eq(w, "loop")
		}
	}
	return false
}

// setConfigLocal reports whether every set_config call in sql passes the
// literal true as its third argument (is_local: the change ends with the
// transaction).
func setConfigLocal(sql string) bool {
	const name = "set_config"
	for i := 0; i+len(name) <= len(sql); i++ {
		switch sql[i] {
		case '\'':
			i = skipString(sql, i)
			continue
		case '$':
			i = skipDollar(sql, i)
			continue
		case '"':
			j := strings.IndexByte(sql[i+1:], '"')
			if j < 0 {
				return true
			}
			i += j + 1
			continue
		}
		if !strings.EqualFold(sql[i:i+len(name)], name) || (i > 0 && isWordByte(sql[i-1])) {
			continue
		}
		l := lexer{s: sql, pos: i + len(name)}
		l.skip()
		if l.peek() != '(' {
			continue // not a call
		}
		if !thirdArgTrue(sql, l.pos+1) {
			return false
		}
		i = l.pos
	}
	return true
}

// thirdArgTrue reports whether the third argument of the call whose
// arguments start at i is the keyword true.
func thirdArgTrue(sql string, i int) bool {
	depth, arg, start := 0, 0, i
	for ; i < len(sql); i++ {
		switch c := sql[i]; c {
		case '\'':
			i = skipString(sql, i)
		case '$':
			i = skipDollar(sql, i)
		case '(', '[':
			depth++
		case ')', ']':
			if depth > 0 {
				depth--
				continue
			}
			return arg == 2 && strings.EqualFold(strings.TrimSpace(sql[start:i]), "true")
		case ',':
			if depth == 0 {
				arg++
				start = i + 1
			}
		}
	}
	return false
}

// wordPair reports whether keyword a is directly followed by keyword b
// among the words of sql (skipping literals and comments), looking only
// before the keyword stop when it is not empty.
func wordPair(sql, a, b, stop string) bool {
	l := lexer{s: sql}
	prev := ""
	for {
		w := l.next()
		if w == "" {
			return false
		}
		if stop != "" && eq(w, stop) {
			return false
		}
		if eq(prev, a) && eq(w, b) {
			return true
		}
		prev = w
	}
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
	// Dotted custom parameters (white space around the dot is allowed):
	// the lexer stops at '.', so glue the parts.
	for {
		save := l.pos
		l.skip()
		if l.peek() != '.' {
			l.pos = save
			return name
		}
		l.pos++
		name += "." + strings.ToLower(l.word())
	}
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
// ident returns the next word like word, and whether it was a quoted
// identifier.
func (l *lexer) ident() (string, bool) {
	l.skip()
	quoted := l.pos < len(l.s) && l.s[l.pos] == '"'
	return l.word(), quoted
}

func (l *lexer) word() string {
	l.skip()
	if l.pos < len(l.s) && l.s[l.pos] == '"' {
		end := strings.IndexByte(l.s[l.pos+1:], '"')
		if end < 0 {
			l.pos = len(l.s) // unterminated: nothing follows
			return ""
		}
		w := l.s[l.pos+1 : l.pos+1+end]
		l.pos += end + 2
		return w
	}
	start := l.pos
	for l.pos < len(l.s) {
		c := l.s[l.pos]
		if isWordByte(c) {
			l.pos++
			continue
		}
		break
	}
	return l.s[start:l.pos]
}

// next returns the next word, skipping anything else (punctuation,
// literals, quoted identifiers, comments); "" at the end.
func (l *lexer) next() string {
	for {
		l.skip()
		if l.pos >= len(l.s) {
			return ""
		}
		c := l.s[l.pos]
		switch {
		case c == '\'':
			l.pos = skipString(l.s, l.pos) + 1
		case c == '$':
			end := skipDollar(l.s, l.pos)
			l.pos = end + 1
		case c == '"':
			l.word() // a quoted identifier is never a keyword
		case isWordByte(c):
			return l.word()
		default:
			l.pos++
		}
	}
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

// statementEnd returns the index of the ';' that ends the statement
// starting at start (outside literals, quoted identifiers and comments),
// or len(sql).
func statementEnd(sql string, start int) int {
	for i := start; i < len(sql); i++ {
		switch c := sql[i]; c {
		case '\'':
			i = skipString(sql, i)
		case '"':
			j := strings.IndexByte(sql[i+1:], '"')
			if j < 0 {
				return len(sql)
			}
			i += j + 1
		case '$':
			i = skipDollar(sql, i)
		case '-':
			if i+1 < len(sql) && sql[i+1] == '-' {
				k := strings.IndexByte(sql[i:], '\n')
				if k < 0 {
					return len(sql)
				}
				i += k
			}
		case '/':
			if i+1 < len(sql) && sql[i+1] == '*' {
				i = skipBlockComment(sql, i) - 1
			}
		case ';':
			return i
		}
	}
	return len(sql)
}

// skipString returns the index of the quote that closes the string
// literal opening at i (len(sql)-1 when unterminated). In E” strings a
// backslash escapes the next byte.
func skipString(sql string, i int) int {
	escapes := i > 0 && sql[i-1]|0x20 == 'e' && (i == 1 || !isWordByte(sql[i-2]))
	for j := i + 1; j < len(sql); j++ {
		switch sql[j] {
		case '\\':
			if escapes {
				j++
			}
		case '\'':
			return j
		}
	}
	return len(sql) - 1
}

// skipDollar returns the index of the last '$' of the dollar-quoted
// string opening at i, or i when the '$' opens none (a parameter such as
// $1, or a '$' inside an identifier).
func skipDollar(sql string, i int) int {
	if i > 0 && (isWordByte(sql[i-1]) || sql[i-1] == '$') {
		return i
	}
	j := i + 1
	if j < len(sql) && sql[j] >= '0' && sql[j] <= '9' {
		return i
	}
	for j < len(sql) && isWordByte(sql[j]) {
		j++
	}
	if j >= len(sql) || sql[j] != '$' {
		return i
	}
	tag := sql[i : j+1]
	k := strings.Index(sql[j+1:], tag)
	if k < 0 {
		return len(sql) - 1
	}
	return j + k + len(tag)
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z' || c >= 0x80
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
