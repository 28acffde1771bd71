package pool

import (
	"net"
	"strings"
)

// quote quotes a value for a libpq keyword/value connection string.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func quoteHost(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return quote(addr)
	}
	return quote(h)
}

func quotePort(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "5432"
	}
	return quote(p)
}
