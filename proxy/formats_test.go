package proxy

import (
	"slices"
	"testing"

	"github.com/pgshard/pgshard/router/merge"
)

// TestShardResultFormatsHiddenTail: hidden sort columns after SELECT *'s
// are asked in text, the client's columns in its formats.
func TestShardResultFormatsHiddenTail(t *testing.T) {
	spec := &merge.Spec{HiddenTail: 2, Limit: -1}
	client := []int16{1, 0, 1}
	got, err := shardResultFormats(spec, client)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int16{1, 0, 1, 0, 0}; !slices.Equal(got, want) {
		t.Errorf("formats = %v, want %v", got, want)
	}
	if !slices.Equal(client, []int16{1, 0, 1}) {
		t.Errorf("the client's formats were modified: %v", client)
	}
	for _, c := range [][]int16{nil, {1}} {
		if got, _ := shardResultFormats(spec, c); !slices.Equal(got, c) {
			t.Errorf("%v: got %v, want them unchanged (one format applies to all)", c, got)
		}
	}
}
