package merge

import (
	"strconv"
	"testing"
)

// BenchmarkGroupBy merges the shape of the merged-read benchmark's GROUP
// BY with 10,000 groups: 4 shards, each with a partial row (int4 key,
// int8 count, numeric sum) for every group.
func BenchmarkGroupBy(b *testing.B) {
	const shards, groups = 4, 10000
	desc := rowDesc(b, col{"g", oidInt4, 0}, col{"count", oidInt8, 0}, col{"sum", oidNumeric, 0})
	srcRows := make([][][]byte, shards)
	for s := range shards {
		for g := range groups {
			srcRows[s] = append(srcRows[s], row(strconv.Itoa(g), "3", strconv.Itoa(g*7-s*1000)))
		}
	}
	spec := &Spec{Combine: []Combine{CombineNone, CombineCount, CombineSum}, Limit: -1}
	b.ReportAllocs()
	for b.Loop() {
		m, err := New(spec, desc)
		if err != nil {
			b.Fatal(err)
		}
		sources := make([]Source, shards)
		for s := range shards {
			sources[s] = &sliceSource{rows: srcRows[s]}
		}
		n, err := m.Merge(sources, func([]byte) error { return nil })
		if err != nil || n != groups {
			b.Fatalf("merged %d groups, %v", n, err)
		}
	}
}
