package router_test

import (
	"testing"

	"github.com/pgshard/pgshard/router"
)

// FuzzClassify: Classify never panics, its Info is self-consistent, and
// white space or a comment before the statement changes nothing.
func FuzzClassify(f *testing.F) {
	for _, tt := range classifyTests {
		f.Add(tt.sql)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		got := router.Classify(sql)
		if got.Has(router.ClassPin) != (got.PinReason != "") {
			t.Fatalf("Classify(%q) = %+v: pin flag and reason disagree", sql, got)
		}
		if got.Class&(router.ClassSet|router.ClassReset|router.ClassDeallocate) != 0 {
			if got.Param == "" {
				t.Fatalf("Classify(%q) = %+v: no parameter or statement name", sql, got)
			}
		} else if got.Param != "" {
			t.Fatalf("Classify(%q) = %+v: a name without SET/RESET/DEALLOCATE", sql, got)
		}
		if got.Class == router.ClassMulti {
			t.Fatalf("Classify(%q) = %+v: ClassMulti alone", sql, got)
		}
		if again := router.Classify("\n/* pgshard */ " + sql); again != got {
			t.Fatalf("a leading comment changed Classify(%q) from %+v to %+v", sql, got, again)
		}
	})
}
