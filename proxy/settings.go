package proxy

import (
	"sort"
	"strings"

	"github.com/pgshard/pgshard/router"
)

// unknownSettings marks a backend whose session parameters are not known
// (after RESET or DISCARD ALL ran on it); it matches no session's key.
const unknownSettings = "?"

// settings is an immutable snapshot of a client's session parameters:
// the ones from its startup packet and the SET statements it ran since.
// Sessions with equal keys can share a backend without any SET.
type settings struct {
	key     string
	startup [][2]string // name, value; sorted by name
	sets    []setStmt   // in execution order, one per parameter
}

type setStmt struct {
	param string
	sql   string
}

// settingChange is a completed statement that changes session parameters.
type settingChange struct {
	info router.Info
	sql  string
}

// resets reports whether the change resets parameters to server defaults,
// after which the backend's state is no longer any snapshot's.
func (c *settingChange) resets() bool {
	return c.info.Class&(router.ClassReset|router.ClassResetAll|router.ClassDiscardAll) != 0
}

// discardsStatements reports whether the change drops prepared statements.
func (c *settingChange) discardsStatements() bool {
	return c.info.Has(router.ClassDiscardAll)
}

// startupIgnored are startup parameters that are not session settings.
var startupIgnored = map[string]bool{
	"user": true, "database": true, "replication": true, "options": true,
}

// newSettings builds the snapshot for a client's startup parameters.
func newSettings(params map[string]string) *settings {
	st := &settings{}
	for k, v := range params {
		if startupIgnored[k] {
			continue
		}
		st.startup = append(st.startup, [2]string{k, v})
	}
	for k, v := range parseOptions(params["options"]) {
		if _, direct := params[k]; direct {
			continue // a parameter given directly wins over options, as in PostgreSQL
		}
		st.startup = append(st.startup, [2]string{k, v})
	}
	sort.Slice(st.startup, func(i, j int) bool { return st.startup[i][0] < st.startup[j][0] })
	st.key = st.makeKey()
	return st
}

// parseOptions reads "-c name=value" and "--name=value" switches from the
// startup "options" parameter (backslash escapes spaces).
func parseOptions(opts string) map[string]string {
	out := map[string]string{}
	var args []string
	var cur strings.Builder
	esc := false
	for _, r := range opts {
		switch {
		case esc:
			cur.WriteRune(r)
			esc = false
		case r == '\\':
			esc = true
		case r == ' ' || r == '\t':
			if cur.Len() > 0 {
				args = append(args, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		args = append(args, cur.String())
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-c" && i+1 < len(args):
			i++
			a = args[i]
		case strings.HasPrefix(a, "-c"):
			a = a[2:]
		case strings.HasPrefix(a, "--"):
			a = a[2:]
		default:
			continue
		}
		if k, v, ok := strings.Cut(a, "="); ok {
			out[strings.ReplaceAll(k, "-", "_")] = v
		}
	}
	return out
}

func (st *settings) makeKey() string {
	if len(st.startup) == 0 && len(st.sets) == 0 {
		return ""
	}
	var b strings.Builder
	for _, kv := range st.startup {
		b.WriteString(kv[0])
		b.WriteByte('=')
		b.WriteString(kv[1])
		b.WriteByte(0)
	}
	for _, s := range st.sets {
		b.WriteByte(1)
		b.WriteString(s.sql)
	}
	return b.String()
}

// with returns the snapshot after change c.
func (st *settings) with(c *settingChange) *settings {
	n := &settings{startup: st.startup}
	switch {
	case c.info.Has(router.ClassResetAll), c.info.Has(router.ClassDiscardAll):
		// back to the startup parameters only
	case c.info.Has(router.ClassReset):
		n.sets = without(st.sets, c.info.Param)
	case c.info.Has(router.ClassSet):
		n.sets = append(without(st.sets, c.info.Param), setStmt{param: c.info.Param, sql: c.sql})
	default:
		n.sets = st.sets
	}
	n.key = n.makeKey()
	return n
}

func without(sets []setStmt, param string) []setStmt {
	out := make([]setStmt, 0, len(sets)+1)
	for _, s := range sets {
		if s.param != param {
			out = append(out, s)
		}
	}
	return out
}

// applySQL returns a simple-protocol query that puts a backend into this
// snapshot's state; reset first returns the backend to server defaults.
func (st *settings) applySQL(reset bool) string {
	var b strings.Builder
	if reset {
		b.WriteString("RESET ALL;RESET ROLE;RESET SESSION AUTHORIZATION;")
	}
	if len(st.startup) > 0 {
		b.WriteString("SELECT ")
		for i, kv := range st.startup {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString("set_config(")
			b.WriteString(quoteLiteral(kv[0]))
			b.WriteByte(',')
			b.WriteString(quoteLiteral(kv[1]))
			b.WriteString(",false)")
		}
		b.WriteByte(';')
	}
	for _, s := range st.sets {
		b.WriteString(strings.TrimRight(strings.TrimSpace(s.sql), ";"))
		b.WriteString("\n;") // a trailing -- comment must not swallow the rest
	}
	return b.String()
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string {
	if strings.ContainsRune(s, '\\') {
		return "E'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// clientEncoding returns the session's client_encoding as far as the proxy
// can tell: the value of its last SET of it (the statement's last word,
// unquoted), else its startup value, else "UTF8".
func (st *settings) clientEncoding() string {
	for i := len(st.sets) - 1; i >= 0; i-- {
		if st.sets[i].param == "client_encoding" {
			f := strings.Fields(strings.TrimRight(st.sets[i].sql, "; \t\r\n"))
			if len(f) > 0 {
				return strings.Trim(f[len(f)-1], `'"`)
			}
		}
	}
	for _, kv := range st.startup {
		if kv[0] == "client_encoding" {
			return kv[1]
		}
	}
	return "UTF8"
}
