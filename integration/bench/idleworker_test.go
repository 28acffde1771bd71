package main

import (
	"sync/atomic"
	"testing"
)

func TestEachParallel(t *testing.T) {
	for _, c := range []struct{ n, par int }{{0, 4}, {1, 0}, {100, 1}, {100, 7}, {3, 16}} {
		calls := make([]atomic.Int32, c.n)
		eachParallel(c.n, c.par, func(i int) { calls[i].Add(1) })
		for i := range calls {
			if got := calls[i].Load(); got != 1 {
				t.Errorf("n %d, par %d: f(%d) called %d times, want once", c.n, c.par, i, got)
			}
		}
	}
}
