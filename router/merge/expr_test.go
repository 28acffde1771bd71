package merge

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

// TestExprColumns: expressions over combined aggregates get PostgreSQL's
// values, types and errors.
func TestExprColumns(t *testing.T) {
	all := int64(-1)
	ref := func(c int) *Expr { return &Expr{Op: ExprColumn, Column: c} }
	cnst := func(s string) *Expr { return &Expr{Op: ExprConst, Text: s} }
	cast := func(to string, typmod int32, a *Expr) *Expr {
		return &Expr{Op: ExprCast, Type: to, Typmod: typmod, Args: []*Expr{a}}
	}
	op := func(o ExprOp, a ...*Expr) *Expr { return &Expr{Op: o, Args: a} }
	cI4 := col{"q", oidInt4, 0}
	tests := []struct {
		name    string
		cols    []col
		combine []Combine
		exprs   []*Expr // final columns 0..; the shard columns follow, hidden
		shards  [][][]byte
		want    []string
		oids    []uint32
		wantErr error
	}{
		{name: "count::int4, ::int2, ::text, ::numeric(8,2), + 1", cols: []col{cInt8}, combine: []Combine{CombineCount},
			exprs:  []*Expr{cast("int4", -1, ref(0)), cast("int2", -1, ref(0)), cast("text", -1, ref(0)), cast("numeric", (8<<16|2)+4, ref(0)), op(ExprAdd, ref(0), cnst("1"))},
			shards: [][][]byte{rows(r("3")), rows(r("4"))}, want: []string{"7", "7", "7", "7.00", "8"},
			oids: []uint32{oidInt4, oidInt2, oidText, oidNumeric, oidInt8}},
		{name: "round(avg) half away from zero, negative digits, float rint", cols: []col{cNum, cInt8, cFloat}, combine: []Combine{CombineSum, CombineSum, CombineMax},
			exprs: []*Expr{
				{Op: ExprRound, Args: []*Expr{ref(0), cnst("1")}}, {Op: ExprRound, Args: []*Expr{ref(0), cnst("-1")}},
				{Op: ExprRound, Args: []*Expr{ref(1), cnst("2")}}, {Op: ExprRound, Args: []*Expr{ref(2)}}, {Op: ExprRound, Args: []*Expr{ref(0)}}},
			shards: [][][]byte{rows(r("-2.20", "1", "2.5")), rows(r("-0.05", "2", "0.5"))},
			want:   []string{"-2.3", "0", "3.00", "2", "-2"}, oids: []uint32{oidNumeric, oidNumeric, oidNumeric, oidFloat8, oidNumeric}},
		{name: "max - min keeps the type; smallint stays smallint", cols: []col{cI4, cI4, {"s", oidInt2, 0}, {"s2", oidInt2, 0}},
			combine: []Combine{CombineMax, CombineMin, CombineMax, CombineMin},
			exprs:   []*Expr{op(ExprSub, ref(0), ref(1)), op(ExprSub, ref(2), ref(3)), op(ExprMul, ref(0), cnst("2.5"))},
			shards:  [][][]byte{rows(r("9", "1", "3", "-3")), rows(r("20", "-5", "1", "1"))},
			want:    []string{"25", "6", "50.0"}, oids: []uint32{oidInt4, oidInt2, oidNumeric}},
		{name: "NULL aggregate gives NULL", cols: []col{cNum, cInt8}, combine: []Combine{CombineSum, CombineCount},
			exprs: []*Expr{cast("int4", -1, ref(0)), op(ExprSub, ref(0), ref(1))}, shards: [][][]byte{rows(r(nil, "0"))},
			want: []string{"NULL", "NULL"}, oids: []uint32{oidInt4, oidNumeric}},
		{name: "int4 overflow", cols: []col{cInt8}, combine: []Combine{CombineCount},
			exprs: []*Expr{cast("int4", -1, op(ExprMul, ref(0), cnst("1000000000")))}, shards: [][][]byte{rows(r("3"))}, wantErr: ErrOutOfRange},
		{name: "bigint overflow", cols: []col{cInt8}, combine: []Combine{CombineMax},
			exprs: []*Expr{op(ExprMul, ref(0), cnst("4611686018427387904"))}, shards: [][][]byte{rows(r("3"))}, wantErr: ErrOutOfRange},
		{name: "numeric field overflow", cols: []col{cNum}, combine: []Combine{CombineSum},
			exprs: []*Expr{cast("numeric", (4<<16|1)+4, ref(0))}, shards: [][][]byte{rows(r("999.94")), rows(r("0.02"))}, want: []string{"999.96"}[:0], wantErr: ErrOutOfRange},
		{name: "float overflow", cols: []col{cFloat}, combine: []Combine{CombineMax},
			exprs: []*Expr{op(ExprMul, ref(0), ref(0))}, shards: [][][]byte{rows(r("1e300"))}, wantErr: ErrOutOfRange},
		{name: "division: integers truncate, numeric to PostgreSQL's scale, float", cols: []col{cInt8, cNum, cFloat}, combine: []Combine{CombineCount, CombineSum, CombineSum},
			exprs:  []*Expr{op(ExprDiv, ref(0), cnst("2")), op(ExprDiv, ref(1), ref(0)), op(ExprDiv, ref(2), ref(0)), op(ExprDiv, op(ExprSub, cnst("0"), ref(0)), cnst("2"))},
			shards: [][][]byte{rows(r("3", "10.00", "1")), rows(r("4", "0.50", "1"))},
			want:   []string{"3", "1.5000000000000000", "0.2857142857142857", "-3"}, oids: []uint32{oidInt8, oidNumeric, oidFloat8, oidInt8}},
		{name: "division by zero", cols: []col{cNum, cInt8}, combine: []Combine{CombineSum, CombineCount},
			exprs: []*Expr{op(ExprDiv, ref(0), ref(1))}, shards: [][][]byte{rows(r("1", "0"))}, wantErr: ErrDivisionByZero},
		{name: "integer division by zero", cols: []col{cInt8}, combine: []Combine{CombineCount},
			exprs: []*Expr{op(ExprDiv, cnst("1"), ref(0))}, shards: [][][]byte{rows(r("0"))}, wantErr: ErrDivisionByZero},
		{name: "unsupported: cast of float to numeric", cols: []col{cFloat}, combine: []Combine{CombineMax},
			exprs: []*Expr{cast("numeric", -1, ref(0))}, shards: [][][]byte{rows(r("1"))}, wantErr: ErrUnsupported},
		{name: "unsupported: text aggregate", cols: []col{cText}, combine: []Combine{CombineMax},
			exprs: []*Expr{cast("int4", -1, ref(0))}, shards: [][][]byte{rows(r("1"))}, wantErr: ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := Spec{Combine: tt.combine, Limit: all}
			n := len(tt.exprs)
			for _, e := range tt.exprs {
				shiftColumns(e, n)
				spec.Final = append(spec.Final, FinalColumn{Kind: FinalExpr, Expr: e})
			}
			for i := range tt.cols {
				spec.Final = append(spec.Final, FinalColumn{Source: i, Hidden: true})
			}
			desc := rowDesc(t, tt.cols...)
			got, err := merge(t, &spec, desc, tt.shards)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := texts(got); len(g) != 1 || !reflect.DeepEqual(g[0], tt.want) {
				t.Errorf("got %q, want %q", g, tt.want)
			}
			m, _ := New(&spec, desc)
			for i, oid := range tt.oids {
				if m.out[i].DataTypeOID != oid {
					t.Errorf("column %d: type %d, want %d", i, m.out[i].DataTypeOID, oid)
				}
			}
		})
	}
}

// TestExprBinary: an expression column in binary format is encoded as
// its type's binary form.
func TestExprBinary(t *testing.T) {
	spec := Spec{Combine: []Combine{CombineCount}, Limit: -1, Final: []FinalColumn{
		{Kind: FinalExpr, Source: 0, Expr: &Expr{Op: ExprCast, Type: "int4", Typmod: -1, Args: []*Expr{{Op: ExprColumn, Column: 1}}}},
		{Source: 0, Hidden: true}}}
	got, err := merge(t, &spec, rowDesc(t, col{"count", oidInt8, 1}), [][][]byte{rows(r(be64(5))), rows(r(be64(6)))})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !reflect.DeepEqual(got[0][0], be32(11)) {
		t.Errorf("got %v, want int4 11 in binary", got)
	}
}

func be64(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func shiftColumns(e *Expr, base int) {
	if e.Op == ExprColumn {
		e.Column += base
	}
	for _, a := range e.Args {
		shiftColumns(a, base)
	}
}
