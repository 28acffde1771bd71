package pgadmin

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// conninfo is a libpq connection string as an ordered list of settings.
// Order is kept so that rewriting one setting leaves the rest of a
// server's primary_conninfo as it was.
type conninfo []setting

// setting is one keyword=value pair of a conninfo.
type setting struct {
	key, value string
}

// maskedPassword replaces password values in conninfo text meant for
// people (errors, logs).
const maskedPassword = "********"

// parseConninfo parses a libpq connection string: keyword/value form
// ("host=a port=5432 application_name='my app'") exactly as libpq's
// conninfo_parse reads it, or a postgres:// or postgresql:// URI, which it
// turns into the equivalent settings. An empty string is an empty conninfo.
// Errors never quote the input, which may hold a password.
func parseConninfo(s string) (conninfo, error) {
	if strings.HasPrefix(s, "postgresql://") || strings.HasPrefix(s, "postgres://") {
		return parseConninfoURI(s)
	}
	var ci conninfo
	i := 0
	for i < len(s) {
		if isConninfoSpace(s[i]) {
			i++
			continue
		}
		// The keyword runs to '=' or to blanks, which must be followed by '='.
		start := i
		for i < len(s) && s[i] != '=' && !isConninfoSpace(s[i]) {
			i++
		}
		key := s[start:i]
		for i < len(s) && isConninfoSpace(s[i]) {
			i++
		}
		if i >= len(s) || s[i] != '=' {
			return nil, fmt.Errorf("conninfo: missing \"=\" after keyword %q", key)
		}
		if key == "" {
			return nil, fmt.Errorf("conninfo: empty keyword before \"=\" at offset %d", i)
		}
		i++ // '='
		for i < len(s) && isConninfoSpace(s[i]) {
			i++
		}
		var v strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' {
					if i+1 < len(s) {
						v.WriteByte(s[i+1])
					}
					i += 2
					continue
				}
				i++
				if c == '\'' {
					closed = true
					break
				}
				v.WriteByte(c)
			}
			if !closed {
				return nil, fmt.Errorf("conninfo: unterminated quoted value of %q", key)
			}
		} else {
			// Unquoted: up to the next blank; a backslash escapes the next byte.
			for i < len(s) && !isConninfoSpace(s[i]) {
				if s[i] == '\\' {
					if i+1 < len(s) {
						v.WriteByte(s[i+1])
					}
					i += 2
					continue
				}
				v.WriteByte(s[i])
				i++
			}
		}
		ci = append(ci, setting{key, v.String()})
	}
	return ci, nil
}

// isConninfoSpace is C isspace in the C locale, which libpq uses to
// separate settings.
func isConninfoSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// parseConninfoURI turns a postgres:// URI into settings:
// postgresql://[user[:password]@][host][:port][,...][/dbname][?key=value&...].
func parseConninfoURI(s string) (conninfo, error) {
	rest := s[strings.Index(s, "://")+3:]
	query := ""
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest, query = rest[:i], rest[i+1:]
	}
	dbname, hasDB := "", false
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest, dbname, hasDB = rest[:i], rest[i+1:], true
	}
	var ci conninfo
	add := func(key, raw string) error {
		v, err := url.PathUnescape(raw)
		if err != nil {
			return fmt.Errorf("conninfo: bad percent-encoding in URI %s", key)
		}
		ci = append(ci, setting{key, v})
		return nil
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		userinfo := rest[:i]
		rest = rest[i+1:]
		user, password, hasPassword := strings.Cut(userinfo, ":")
		if user != "" {
			if err := add("user", user); err != nil {
				return nil, err
			}
		}
		if hasPassword {
			if err := add("password", password); err != nil {
				return nil, err
			}
		}
	}
	if rest != "" {
		var hosts, ports []string
		anyPort := false
		for _, hp := range strings.Split(rest, ",") {
			host, port := hp, ""
			if strings.HasPrefix(hp, "[") { // [IPv6]:port
				end := strings.IndexByte(hp, ']')
				if end < 0 {
					return nil, fmt.Errorf("conninfo: unterminated IPv6 address in URI")
				}
				host = hp[1:end]
				if strings.HasPrefix(hp[end+1:], ":") {
					port = hp[end+2:]
				}
			} else if i := strings.LastIndexByte(hp, ':'); i >= 0 {
				host, port = hp[:i], hp[i+1:]
			}
			h, err := url.PathUnescape(host)
			if err != nil {
				return nil, fmt.Errorf("conninfo: bad percent-encoding in URI host")
			}
			hosts, ports = append(hosts, h), append(ports, port)
			anyPort = anyPort || port != ""
		}
		ci = append(ci, setting{"host", strings.Join(hosts, ",")})
		if anyPort {
			ci = append(ci, setting{"port", strings.Join(ports, ",")})
		}
	}
	if hasDB && dbname != "" {
		if err := add("dbname", dbname); err != nil {
			return nil, err
		}
	}
	if query != "" {
		for _, kv := range strings.Split(query, "&") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("conninfo: URI query parameter without \"=\"")
			}
			key, err := url.PathUnescape(k)
			if err != nil {
				return nil, fmt.Errorf("conninfo: bad percent-encoding in URI query")
			}
			if !isKeyword(key) {
				return nil, fmt.Errorf("conninfo: invalid URI query keyword")
			}
			if key == "ssl" && v == "true" { // libpq's alias
				key, v = "sslmode", "require"
			}
			if err := add(key, v); err != nil {
				return nil, err
			}
		}
	}
	return ci, nil
}

// isKeyword reports whether k looks like a libpq keyword (lower-case
// letters, digits and underscores).
func isKeyword(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// String formats ci in keyword/value form, quoting values that need it,
// so that parseConninfo (and libpq) read back the same settings.
func (ci conninfo) String() string { return ci.format(false) }

// Masked is String with password values replaced, for errors and logs.
func (ci conninfo) Masked() string { return ci.format(true) }

func (ci conninfo) format(mask bool) string {
	var b strings.Builder
	for i, s := range ci {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s.key)
		b.WriteByte('=')
		v := s.value
		if mask && s.key == "password" {
			v = maskedPassword
		}
		b.WriteString(quoteConninfoValue(v))
	}
	return b.String()
}

// quoteConninfoValue quotes a value when it is empty or holds a blank, a
// quote or a backslash; inside quotes, quotes and backslashes are escaped
// with a backslash.
func quoteConninfoValue(v string) string {
	needs := v == ""
	for i := 0; i < len(v) && !needs; i++ {
		needs = isConninfoSpace(v[i]) || v[i] == '\'' || v[i] == '\\'
	}
	if !needs {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// withAddr returns a copy of ci that connects to addr ("host:port"): one
// host and one port setting, in place of the first host (or appended), and
// no hostaddr, which libpq would use instead of host. Everything else is
// kept in order.
func (ci conninfo) withAddr(addr string) (conninfo, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	out := make(conninfo, 0, len(ci)+2)
	placed := false
	for _, s := range ci {
		switch s.key {
		case "host", "hostaddr", "port":
			if !placed && s.key == "host" {
				out = append(out, setting{"host", host}, setting{"port", port})
				placed = true
			}
		default:
			out = append(out, s)
		}
	}
	if !placed {
		out = append(out, setting{"host", host}, setting{"port", port})
	}
	return out, nil
}

// equal reports whether ci and other have the same settings in the same
// order.
func (ci conninfo) equal(other conninfo) bool {
	if len(ci) != len(other) {
		return false
	}
	for i := range ci {
		if ci[i] != other[i] {
			return false
		}
	}
	return true
}
