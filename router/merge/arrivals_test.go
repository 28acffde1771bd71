package merge

import (
	"bytes"
	"io"
	"reflect"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
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

// chanSource serves rows sent on a channel (closed: the end).
type chanSource struct {
	rows chan []byte
	read atomic.Int64
}

func (s *chanSource) Next() ([]byte, error) {
	r, ok := <-s.rows
	if !ok {
		return nil, io.EOF
	}
	s.read.Add(1)
	return r, nil
}

// chanArrivals is merge.Arrivals over chanSources: a source is ready when
// it has a row queued or is closed (closed[i]).
type chanArrivals struct {
	srcs   []*chanSource
	closed []atomic.Bool
	wake   chan struct{}
}

func (a *chanArrivals) Ready(i int) bool { return len(a.srcs[i].rows) > 0 || a.closed[i].Load() }
func (a *chanArrivals) Wait()            { <-a.wake }

// TestArrivalsReadsReadySourcesFirst: with Arrivals, an aggregation reads
// the source that has rows while another has none yet (reading in source
// order would wait on the first forever), and merges both once the
// second arrives.
func TestArrivalsReadsReadySourcesFirst(t *testing.T) {
	desc := rowDesc(t, col{"g", oidInt4, 0}, col{"count", oidInt8, 0})
	srcs := []*chanSource{{rows: make(chan []byte, 8)}, {rows: make(chan []byte, 8)}}
	a := &chanArrivals{srcs: srcs, closed: make([]atomic.Bool, 2), wake: make(chan struct{}, 1)}
	srcs[1].rows <- row("1", "2")
	srcs[1].rows <- row("2", "5")
	close(srcs[1].rows)
	a.closed[1].Store(true)
	m, err := New(&Spec{Combine: []Combine{CombineNone, CombineCount}, Limit: -1}, desc)
	if err != nil {
		t.Fatal(err)
	}
	m.Arrivals = a
	type result struct {
		rows [][][]byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var rows [][][]byte
		_, err := m.Merge([]Source{srcs[0], srcs[1]}, func(r []byte) error {
			vals, err := splitDataRow(r, 2, nil)
			for i := range vals {
				vals[i] = bytes.Clone(vals[i])
			}
			rows = append(rows, vals)
			return err
		})
		done <- result{rows, err}
	}()
	for deadline := time.Now().Add(5 * time.Second); srcs[1].read.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the merge did not read the source that had rows while the other had none")
		}
	}
	srcs[0].rows <- row("1", "10")
	close(srcs[0].rows)
	a.closed[0].Store(true)
	a.wake <- struct{}{}
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the merge did not end once every source had ended")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	got := texts(r.rows)
	sort.Slice(got, func(i, j int) bool { return got[i][0] < got[j][0] })
	if want := [][]string{{"1", "12"}, {"2", "5"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("merged %q, want %q", got, want)
	}
}
