package merge

import (
	"errors"
	"reflect"
	"testing"
)

// TestHiddenTail: SELECT * ... ORDER BY sorts by hidden columns the shards
// append after the star's; the merge finds them from the end of the
// RowDescription and does not send them.
func TestHiddenTail(t *testing.T) {
	all := int64(-1)
	desc := rowDesc(t, cInt8, cText, col{"id", oidInt8, 0}, col{"name", oidText, 0})
	spec := Spec{HiddenTail: 2, OrderBy: []SortKey{{Column: 1, Tail: true, Desc: true, NullsFirst: true}, {Column: 0, Tail: true}}, Offset: 1, Limit: 3}
	shards := [][][]byte{
		// Each shard sorted by the hidden name DESC NULLS FIRST, then
		// the hidden id: the NULL name's row first (skipped by OFFSET
		// 1), then c, b, a(1).
		rows(r("2", "x", "2", nil), r("1", "a", "1", "a"), r("4", "a", "4", "a")),
		rows(r("3", "c", "3", "c"), r("5", "b", "5", "b")),
	}
	got, err := merge(t, &spec, desc, shards)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"3", "c"}, {"5", "b"}, {"1", "a"}}
	if g := texts(got); !reflect.DeepEqual(g, want) {
		t.Errorf("got %q, want %q", g, want)
	}
	m, err := New(&spec, desc)
	if err != nil {
		t.Fatal(err)
	}
	if rd := m.RowDescription(nil); !reflect.DeepEqual(rd, rowDesc(t, cInt8, cText)) {
		t.Errorf("RowDescription shows hidden columns: %q", rd)
	}
	if spec.OrderBy[0].Column != 1 || !spec.OrderBy[0].Tail {
		t.Errorf("New modified the caller's spec: %+v", spec.OrderBy)
	}
	// Without the hidden columns the merge would be unsorted: it says so.
	unsorted := [][][]byte{rows(r("1", "a", "b"), r("2", "b", "a"))}
	if _, err := merge(t, &Spec{HiddenTail: 1, OrderBy: []SortKey{{Column: 0, Tail: true}}, Limit: all}, rowDesc(t, cInt8, cText, cText), unsorted); !errors.Is(err, ErrUnsorted) {
		t.Errorf("unsorted hidden key: err = %v, want ErrUnsorted", err)
	}
	// A position among the client's columns sorts by it; one beyond them
	// (into the hidden ones) is refused.
	byPos := Spec{HiddenTail: 1, OrderBy: []SortKey{{Column: 1, Desc: true}}, Limit: all}
	got, err = merge(t, &byPos, rowDesc(t, cInt8, cText, cText), [][][]byte{rows(r("1", "b", "x"), r("2", "a", "y")), rows(r("3", "c", "z"))})
	if err != nil {
		t.Fatal(err)
	}
	if want := [][]string{{"3", "c"}, {"1", "b"}, {"2", "a"}}; !reflect.DeepEqual(texts(got), want) {
		t.Errorf("by position: got %q, want %q", texts(got), want)
	}
	for _, bad := range []Spec{
		{HiddenTail: 5, Limit: all},
		{HiddenTail: 1, OrderBy: []SortKey{{Column: 1, Tail: true}}, Limit: all},
		{HiddenTail: 1, OrderBy: []SortKey{{Column: 3}}, Limit: all},
	} {
		if _, err := New(&bad, desc); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%+v: err = %v, want ErrInvalidSpec", bad, err)
		}
	}
}
