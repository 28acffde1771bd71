package difftest

import (
	"strings"
	"testing"
)

func TestParseCorpus(t *testing.T) {
	qs, err := ParseCorpus(strings.NewReader("-- c\nSELECT 1;\n\n-- ordered\nSELECT 2\nFROM x;\n\n-- refused 0A000\nSELECT 3;\n\n-- write\nDELETE FROM t;\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 4 || qs[0].SQL != "-- c\nSELECT 1" || !qs[1].Ordered || qs[1].SQL != "SELECT 2\nFROM x" ||
		qs[2].Refused != "0A000" || !qs[3].Write || qs[1].Line != 5 {
		t.Fatalf("%+v", qs)
	}
	if _, err := ParseCorpus(strings.NewReader("SELECT 1\n")); err == nil {
		t.Fatal("a statement without ';' must be an error")
	}
}

func TestDiff(t *testing.T) {
	a := Result{Columns: []string{"x"}, Rows: [][]string{{"1"}, {"2"}}}
	b := Result{Columns: []string{"x"}, Rows: [][]string{{"2"}, {"1"}}}
	if d := Diff(Query{}, a, b); d != "" {
		t.Errorf("unordered: %s", d)
	}
	if d := Diff(Query{Ordered: true}, a, b); d == "" {
		t.Error("ordered comparison missed a difference")
	}
	if d := Diff(Query{Refused: "0A000"}, a, Result{Code: "0A000"}); d != "" {
		t.Error(d)
	}
	if d := Diff(Query{Refused: "0A000"}, a, a); d == "" {
		t.Error("missing refusal not reported")
	}
	if d := Diff(Query{}, a, Result{Columns: []string{"x"}, Rows: [][]string{{"1"}, {null}}}); d == "" {
		t.Error("NULL vs value not reported")
	}
}
