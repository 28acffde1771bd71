package health

import (
	"fmt"
	"strconv"
	"strings"
)

// LSN is a PostgreSQL WAL position (pg_lsn): a byte offset into the WAL.
// The zero LSN means no position (PostgreSQL's InvalidXLogRecPtr).
type LSN uint64

// ParseLSN parses the text form of a pg_lsn, "X/Y", where X and Y are the
// high and low 32 bits in hexadecimal (upper or lower case, 1 to 8 digits),
// e.g. "16/B374D848".
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("health: parse LSN %q: no '/'", s)
	}
	h, err := parseHalf(hi)
	if err != nil {
		return 0, fmt.Errorf("health: parse LSN %q: high part: %w", s, err)
	}
	l, err := parseHalf(lo)
	if err != nil {
		return 0, fmt.Errorf("health: parse LSN %q: low part: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// parseHalf parses 1 to 8 hexadecimal digits, without sign or prefix.
func parseHalf(s string) (uint64, error) {
	if len(s) == 0 || len(s) > 8 || strings.ContainsAny(s, "+-xX_") {
		return 0, fmt.Errorf("want 1 to 8 hexadecimal digits, got %q", s)
	}
	return strconv.ParseUint(s, 16, 32)
}

// String formats l like PostgreSQL does: "%X/%X".
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xFFFFFFFF) }

// lagBytes returns how many bytes of WAL a replica that replayed up to
// replica still has to replay to reach primary; 0 when it is not behind.
func lagBytes(primary, replica LSN) uint64 {
	if replica >= primary {
		return 0
	}
	return uint64(primary - replica)
}
