package proxy

import (
	"slices"
	"testing"
)

// TestReferencedParams: the parameters a statement uses, not counting
// $n inside constants, quoted identifiers, dollar quotes, comments or
// identifiers.
func TestReferencedParams(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		n    int
		want []bool
	}{
		{"INSERT INTO kv VALUES ($1, $2), ($5, $6)", 6, []bool{true, true, false, false, true, true}},
		{"SELECT '$1', \"$2\", $$ $3 $$, $t$ $4 $t$, $5", 5, []bool{false, false, false, false, true}},
		{"SELECT 1 -- $1\n, $2 /* $3 /* $4 */ $5 */", 5, []bool{false, true, false, false, false}},
		{"SELECT E'\\'$1', 'a''$2', $3", 3, []bool{false, false, true}},
		{"SELECT date'x\\', $1", 1, []bool{true}}, // a standard string: the backslash does not escape
		{"SELECT a$1, $10", 10, []bool{false, false, false, false, false, false, false, false, false, true}},
		{"SELECT $2, $9", 3, []bool{false, true, false}}, // out of range
		{"SELECT 1 -- $1\r$2", 2, []bool{false, true}},
	} {
		if got := referencedParams(tc.sql, tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("referencedParams(%q, %d) = %v, want %v", tc.sql, tc.n, got, tc.want)
		}
	}
}
