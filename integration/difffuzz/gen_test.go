package difffuzz

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgshard/pgshard/integration/difftest"
)

// TestGenerateParses checks that generated statements are valid SQL,
// reproducible from their seed, varied, and cover the grammar's
// features.
func TestGenerateParses(t *testing.T) {
	const n = 3000
	seen := make(map[string]bool, n)
	features := map[string]int{}
	want := []string{" JOIN ", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN", "LATERAL", "EXISTS", " IN (SELECT", "count(*)",
		"sum(", "avg(", "min(", "max(", "GROUP BY", "HAVING", "DISTINCT ", "DISTINCT ON", "ORDER BY", "LIMIT", "OFFSET",
		"UNION", "INTERSECT", "EXCEPT", " OVER (", "::", "NULL", "WITH ", "WITH RECURSIVE", "VALUES", "generate_series",
		"9223372036854775807", "FILTER", "SELECT *", "ROLLUP", "WITH TIES", "now()", "tableoid", "und-x-icu", "::real", "count(DISTINCT", "round(avg(", ") - min("}
	ordered, params := 0, 0
	for seed := uint64(0); seed < n; seed++ {
		s := Generate(seed)
		if again := Generate(seed); !reflect.DeepEqual(again, s) {
			t.Fatalf("seed %d: generated %q, then %q", seed, s.SQL, again.SQL)
		}
		if strings.Contains(s.SQL, "$1") != (len(s.Args) > 0) || strings.Contains(s.SQL, fmt.Sprintf("$%d", len(s.Args)+1)) {
			t.Fatalf("seed %d: %d arguments for %s", seed, len(s.Args), s.SQL)
		}
		if len(s.Args) > 0 {
			params++
		}
		if _, err := pg_query.Parse(s.SQL); err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, s.SQL)
		}
		if strings.Contains(s.SQL, "LIMIT") && !s.Ordered && !strings.Contains(s.SQL, "LATERAL") {
			t.Errorf("seed %d: LIMIT in an unordered statement: %s", seed, s.SQL)
		}
		if s.Ordered {
			ordered++
		}
		seen[s.SQL] = true
		for _, f := range want {
			if strings.Contains(s.SQL, f) {
				features[f]++
			}
		}
	}
	if len(seen) < n*95/100 {
		t.Errorf("only %d distinct statements of %d", len(seen), n)
	}
	for _, f := range want {
		if features[f] < 5 {
			t.Errorf("feature %q in only %d statements of %d", f, features[f], n)
		}
	}
	if params < n/20 {
		t.Errorf("only %d of %d statements with parameters", params, n)
	}
	if ordered < n/4 || ordered > n*3/4 {
		t.Errorf("%d of %d statements ordered", ordered, n)
	}
}

// TestDatasetHasNoZeroWeight: the edge rows' -0 weight must be the only
// zero, as -0 and 0 sort as ties yet print differently.
func TestDatasetHasNoZeroWeight(t *testing.T) {
	_, orders := difftest.Rows(Size, DataSeed)
	for _, o := range orders {
		if w, ok := o[4].(float64); ok && w == 0 {
			t.Fatalf("order %v has weight 0", o[0])
		}
	}
}

// TestPairsShareShapes: seeds 2k and 2k+1 give the same statement up to
// its constants most of the time (so that cached plans are reused).
func TestPairsShareShapes(t *testing.T) {
	shape := regexp.MustCompile(`'[^']*'|-?[0-9]+(\.[0-9]+)?`)
	same, differentConstants := 0, 0
	const pairs = 1000
	for s := uint64(0); s < 2*pairs; s += 2 {
		a, b := Generate(s), Generate(s+1)
		if Mode(s) != Mode(s+1) {
			t.Fatalf("seeds %d and %d run in different modes", s, s+1)
		}
		if shape.ReplaceAllString(a.SQL, "?") == shape.ReplaceAllString(b.SQL, "?") {
			same++
			if a.SQL != b.SQL || !reflect.DeepEqual(a.Args, b.Args) {
				differentConstants++
			}
		}
	}
	if same < pairs*8/10 || differentConstants < pairs*6/10 {
		t.Errorf("%d of %d pairs share a shape, %d with other constants", same, pairs, differentConstants)
	}
}
