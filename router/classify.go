package router

import (
	"strings"

	"github.com/pgshard/pgshard/router/sqllex"
)

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
		end := sqllex.StatementEnd(sql, start)
		stmt := sql[start:end]
		start = end + 1
		l := sqllex.Lexer{S: stmt}
		l.Skip()
		if l.Pos == len(stmt) {
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
	l := sqllex.Lexer{S: sql}
	first := l.Word()
	var info Info
	switch {
	case eq(first, "set"):
		info = classifySet(&l)
	case eq(first, "reset"):
		w := l.Word()
		switch {
		case eq(w, "all"):
			info.Class = ClassResetAll
		case eq(w, "session") && eq(l.Word(), "authorization"):
			info = Info{Class: ClassReset, Param: "session_authorization"}
		case w != "":
			info.Class = ClassReset
			info.Param = paramName(w, &l)
		}
	case eq(first, "discard"):
		if eq(l.Word(), "all") {
			info.Class = ClassDiscardAll
		}
	case eq(first, "deallocate"):
		w, quoted := l.Ident()
		if eq(w, "prepare") && !quoted {
			w, quoted = l.Ident()
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
		if !eq(l.Word(), "transaction") {
			info = pin("SQL-level prepared statement")
		}
	case eq(first, "begin"):
		info.Class = ClassBegin
	case eq(first, "start"):
		if eq(l.Word(), "transaction") {
			info.Class = ClassBegin
		}
	case eq(first, "commit"), eq(first, "end"):
		if w := l.Word(); !eq(w, "prepared") {
			info.Class = ClassCommit
		}
	case eq(first, "rollback"), eq(first, "abort"):
		if w := l.Word(); !eq(w, "to") && !eq(w, "prepared") {
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
		w := l.Word()
		if eq(w, "or") { // CREATE OR REPLACE TEMP VIEW
			l.Word()
			w = l.Word()
		}
		if eq(w, "global") || eq(w, "local") {
			w = l.Word()
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
		end := sqllex.StatementEnd(body, start)
		l := sqllex.Lexer{S: body[start:end]}
		start = end + 1
		// A statement starts the piece or follows BEGIN, THEN, ELSE or
		// LOOP.
		lead := true
		for w := l.Next(); w != ""; w = l.Next() {
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
		if j := sqllex.Skip(sql, i); j > i {
			i = j - 1 // constants, quoted identifiers, comments
			continue
		}
		if !strings.EqualFold(sql[i:i+len(name)], name) || (i > 0 && sqllex.IsIdentByte(sql[i-1])) {
			continue
		}
		l := sqllex.Lexer{S: sql, Pos: i + len(name)}
		l.Skip()
		if l.Peek() != '(' {
			continue // not a call
		}
		if !thirdArgTrue(sql, l.Pos+1) {
			return false
		}
		i = l.Pos
	}
	return true
}

// thirdArgTrue reports whether the third argument of the call whose
// arguments start at i is the keyword true.
func thirdArgTrue(sql string, i int) bool {
	depth, arg, start := 0, 0, i
	for ; i < len(sql); i++ {
		if j := sqllex.Skip(sql, i); j > i {
			i = j - 1
			continue
		}
		switch c := sql[i]; c {
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
	l := sqllex.Lexer{S: sql}
	prev := ""
	for {
		w := l.Next()
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

func classifySet(l *sqllex.Lexer) Info {
	w := l.Word()
	switch {
	case eq(w, "local"), eq(w, "transaction"), eq(w, "constraints"):
		return Info{}
	case eq(w, "session"):
		w = l.Word()
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
func paramName(w string, l *sqllex.Lexer) string {
	switch {
	case eq(w, "time"):
		l.Word() // ZONE
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
		save := l.Pos
		l.Skip()
		if l.Peek() != '.' {
			l.Pos = save
			return name
		}
		l.Pos++
		name += "." + strings.ToLower(l.Word())
	}
}

func eq(a, b string) bool { return len(a) == len(b) && strings.EqualFold(a, b) }

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
