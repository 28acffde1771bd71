package merge

import (
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func rows(rs ...[]any) [][]byte {
	out := make([][]byte, len(rs))
	for i, r := range rs {
		out[i] = row(r...)
	}
	return out
}

func r(vals ...any) []any { return vals }

var (
	cInt   = col{"i", oidInt4, 0}
	cInt8  = col{"n", oidInt8, 0}
	cText  = col{"t", oidText, 0}
	cNum   = col{"x", oidNumeric, 0}
	cFloat = col{"f", oidFloat8, 0}
	cBool  = col{"b", oidBool, 0}
	cJSON  = col{"j", 3802, 0}
)

func be32(v int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }

func TestMergeTable(t *testing.T) {
	all := int64(-1)
	tests := []struct {
		name    string
		cols    []col
		spec    Spec
		shards  [][][]byte
		want    [][]string
		wantErr error
	}{
		{
			name:   "concatenation in shard order",
			cols:   []col{cInt},
			spec:   Spec{Limit: all},
			shards: [][][]byte{rows(r("3"), r("1")), nil, rows(r("2"))},
			want:   [][]string{{"3"}, {"1"}, {"2"}},
		},
		{
			name:   "concatenation offset and limit across shards",
			cols:   []col{cInt},
			spec:   Spec{Offset: 1, Limit: 2},
			shards: [][][]byte{rows(r("3")), rows(r("1"), r("2"), r("4"))},
			want:   [][]string{{"1"}, {"2"}},
		},
		{
			name:   "limit 0",
			cols:   []col{cInt},
			spec:   Spec{Limit: 0},
			shards: [][][]byte{rows(r("3"))},
		},
		{
			name:   "k-way merge, ties in shard order",
			cols:   []col{cInt, cText},
			spec:   Spec{OrderBy: []SortKey{{Column: 0}}, Limit: all},
			shards: [][][]byte{rows(r("1", "s0a"), r("2", "s0b"), r("2", "s0c")), rows(r("-5", "s1a"), r("2", "s1b"), r("10", "s1c"))},
			want:   [][]string{{"-5", "s1a"}, {"1", "s0a"}, {"2", "s0b"}, {"2", "s0c"}, {"2", "s1b"}, {"10", "s1c"}},
		},
		{
			name:   "numbers compare numerically, not as text",
			cols:   []col{cInt8},
			spec:   Spec{OrderBy: []SortKey{{Column: 0}}, Limit: all},
			shards: [][][]byte{rows(r("9"), r("100")), rows(r("10"), r("11"))},
			want:   [][]string{{"9"}, {"10"}, {"11"}, {"100"}},
		},
		{
			name:   "ASC puts NULLs last, DESC first by default",
			cols:   []col{cInt},
			spec:   Spec{OrderBy: []SortKey{{Column: 0, Desc: true, NullsFirst: true}}, Limit: all},
			shards: [][][]byte{rows(r(nil), r("5"), r("1")), rows(r("3"))},
			want:   [][]string{{"NULL"}, {"5"}, {"3"}, {"1"}},
		},
		{
			name:   "NULLS LAST ascending and two keys",
			cols:   []col{cInt, cText},
			spec:   Spec{OrderBy: []SortKey{{Column: 0}, {Column: 1, Desc: true}}, Limit: all},
			shards: [][][]byte{rows(r("1", "b"), r(nil, "z")), rows(r("1", "c"), r("1", "a"), r(nil, "y"))},
			want:   [][]string{{"1", "c"}, {"1", "b"}, {"1", "a"}, {"NULL", "z"}, {"NULL", "y"}},
		},
		{
			name:   "text bytewise as COLLATE \"C\"",
			cols:   []col{cText},
			spec:   Spec{OrderBy: []SortKey{{Column: 0}}, Limit: all},
			shards: [][][]byte{rows(r("B"), r("a")), rows(r(""), r("Z"), r("ab"))},
			want:   [][]string{{""}, {"B"}, {"Z"}, {"a"}, {"ab"}},
		},
		{
			name:   "float NaN above Infinity; -0 equals 0",
			cols:   []col{cFloat, cText},
			spec:   Spec{OrderBy: []SortKey{{Column: 0}}, Limit: all},
			shards: [][][]byte{rows(r("-Infinity", "a"), r("0", "b"), r("NaN", "c")), rows(r("-0", "d"), r("1e+300", "e"), r("Infinity", "f"))},
			want:   [][]string{{"-Infinity", "a"}, {"0", "b"}, {"-0", "d"}, {"1e+300", "e"}, {"Infinity", "f"}, {"NaN", "c"}},
		},
		{
			name:   "numeric exact order with NaN and Infinity",
			cols:   []col{cNum},
			spec:   Spec{OrderBy: []SortKey{{Column: 0}}, Limit: all},
			shards: [][][]byte{rows(r("-Infinity"), r("0.10000000000000000001"), r("10"), r("NaN")), rows(r("-2.5"), r("0.1"), r("1.50"), r("Infinity"))},
			want:   [][]string{{"-Infinity"}, {"-2.5"}, {"0.1"}, {"0.10000000000000000001"}, {"1.50"}, {"10"}, {"Infinity"}, {"NaN"}},
		},
		{
			name:    "a shard out of order is an error, not a wrong answer",
			cols:    []col{cText},
			spec:    Spec{OrderBy: []SortKey{{Column: 0}}, Limit: all},
			shards:  [][][]byte{rows(r("a"), r("B"))},
			wantErr: ErrUnsorted,
		},
		{
			name:   "offset and limit after the merge; hidden sort column dropped",
			cols:   []col{cText, cInt},
			spec:   Spec{Final: []FinalColumn{{Source: 0}}, OrderBy: []SortKey{{Column: 0}}, Offset: 1, Limit: 2},
			shards: [][][]byte{rows(r("a", "1"), r("c", "2")), rows(r("b", "3"), r("d", "4"))},
			want:   [][]string{{"b"}, {"c"}},
		},
		{
			name:    "sorting an unsupported type is refused",
			cols:    []col{cJSON},
			spec:    Spec{OrderBy: []SortKey{{Column: 0}}, Limit: all},
			wantErr: ErrUnsupported,
		},
		{
			name:   "an unsupported type passes through",
			cols:   []col{cJSON, cInt},
			spec:   Spec{OrderBy: []SortKey{{Column: 1}}, Limit: all},
			shards: [][][]byte{rows(r(`{"a":1}`, "2")), rows(r(`[]`, "1"))},
			want:   [][]string{{`[]`, "1"}, {`{"a":1}`, "2"}},
		},
		{
			name:    "grouping by an unsupported type is refused",
			cols:    []col{cJSON, cInt8},
			spec:    Spec{Combine: []Combine{CombineNone, CombineCount}, Limit: all},
			wantErr: ErrUnsupported,
		},
		{
			name: "GROUP BY with every combiner; NULL keys group together",
			cols: []col{cInt, cInt8, cInt8, cNum, cText, cText, cBool, cBool},
			spec: Spec{
				Combine: []Combine{CombineNone, CombineCount, CombineSum, CombineSum, CombineMin, CombineMax, CombineBoolAnd, CombineBoolOr},
				Final: []FinalColumn{{Source: 0}, {Source: 1}, {Source: 2}, {Source: 3}, {Source: 4}, {Source: 5}, {Source: 6}, {Source: 7},
					{Kind: FinalAvg, Source: 3, CountSource: 1}, {Kind: FinalAvg, Source: 2, CountSource: 1}},
				OrderBy: []SortKey{{Column: 0}},
				Limit:   all,
			},
			shards: [][][]byte{
				rows(r("1", "2", "3", "1.5", "b", "b", "t", "f"), r(nil, "1", nil, nil, nil, nil, nil, nil)),
				rows(r("1", "1", "4", "2.25", "a", "a", "f", "f"), r("2", "3", "-9", "-0.10", "", "", "t", "t"), r(nil, "2", "7", "1", "x", "y", "t", nil)),
			},
			want: [][]string{
				{"1", "3", "7", "3.75", "a", "b", "f", "f", "1.25000000000000000000", "2.3333333333333333"},
				{"2", "3", "-9", "-0.10", "", "", "t", "t", "-0.03333333333333333333", "-3.0000000000000000"},
				{"NULL", "3", "7", "1", "x", "y", "t", "NULL", "0.33333333333333333333", "2.3333333333333333"},
			},
		},
		{
			name: "aggregate without GROUP BY over no rows gives one row",
			cols: []col{cInt8, cNum},
			spec: Spec{Combine: []Combine{CombineCount, CombineSum}, Final: []FinalColumn{{Source: 0}, {Source: 1}, {Kind: FinalAvg, Source: 1, CountSource: 0}}, Limit: all},
			want: [][]string{{"0", "NULL", "NULL"}},
		},
		{
			name:   "aggregate without GROUP BY over empty shards",
			cols:   []col{cInt8, cNum, cFloat},
			spec:   Spec{Combine: []Combine{CombineCount, CombineSum, CombineSum}, Final: []FinalColumn{{Source: 0}, {Source: 1}, {Kind: FinalAvg, Source: 2, CountSource: 0}}, Limit: all},
			shards: [][][]byte{rows(r("0", nil, nil)), rows(r("0", nil, nil))},
			want:   [][]string{{"0", "NULL", "NULL"}},
		},
		{
			name:   "float sum and avg",
			cols:   []col{cInt8, cFloat},
			spec:   Spec{Combine: []Combine{CombineCount, CombineSum}, Final: []FinalColumn{{Source: 1}, {Kind: FinalAvg, Source: 1, CountSource: 0}}, Limit: all},
			shards: [][][]byte{rows(r("2", "0.1")), rows(r("1", "0.2"))},
			want:   [][]string{{"0.30000000000000004", "0.10000000000000002"}},
		},
		{
			name:    "bigint sum overflow is an error",
			cols:    []col{cInt8},
			spec:    Spec{Combine: []Combine{CombineSum}, Limit: all},
			shards:  [][][]byte{rows(r("9223372036854775807")), rows(r("1"))},
			wantErr: ErrOutOfRange,
		},
		{
			name:    "numeric sum of NaN and infinities",
			cols:    []col{cNum, cNum, cNum},
			spec:    Spec{Combine: []Combine{CombineSum, CombineSum, CombineSum}, Limit: all},
			shards:  [][][]byte{rows(r("Infinity", "1", "NaN")), rows(r("-Infinity", "Infinity", "Infinity"))},
			want:    [][]string{{"NaN", "Infinity", "NaN"}},
			wantErr: nil,
		},
		{
			name:   "DISTINCT treats 1.0 and 1.00 as equal, keeps the first",
			cols:   []col{cNum, cText},
			spec:   Spec{Distinct: true, OrderBy: []SortKey{{Column: 0}}, Limit: all},
			shards: [][][]byte{rows(r("1.00", "a"), r("2", "a"), r(nil, "a")), rows(r("1.0", "a"), r("2", "b"), r(nil, "a"))},
			want:   [][]string{{"1.00", "a"}, {"2", "a"}, {"2", "b"}, {"NULL", "a"}},
		},
		{
			name:   "DISTINCT on float: -0 = 0, NaN = NaN",
			cols:   []col{cFloat},
			spec:   Spec{Distinct: true, Limit: all},
			shards: [][][]byte{rows(r("0"), r("NaN")), rows(r("-0"), r("NaN"), r("1"))},
			want:   [][]string{{"0"}, {"NaN"}, {"1"}},
		},
		{
			name:    "DISTINCT on an unsupported type is refused",
			cols:    []col{cJSON},
			spec:    Spec{Distinct: true, Limit: all},
			wantErr: ErrUnsupported,
		},
		{
			name:   "GROUP BY groups 1.0 with 1.00 and bpchar ignores trailing spaces",
			cols:   []col{cNum, {"c", oidBpchar, 0}, cInt8},
			spec:   Spec{Combine: []Combine{CombineNone, CombineNone, CombineCount}, Limit: all},
			shards: [][][]byte{rows(r("1.0", "a ", "1")), rows(r("1.00", "a", "2"), r("1", "b", "5"))},
			want:   [][]string{{"1.0", "a ", "3"}, {"1", "b", "5"}},
		},
		{
			name:   "ORDER BY and LIMIT on aggregates",
			cols:   []col{cText, cInt8},
			spec:   Spec{Combine: []Combine{CombineNone, CombineCount}, OrderBy: []SortKey{{Column: 1, Desc: true, NullsFirst: true}, {Column: 0}}, Offset: 1, Limit: 2},
			shards: [][][]byte{rows(r("a", "1"), r("b", "5"), r("c", "2")), rows(r("a", "3"), r("d", "4"))},
			want:   [][]string{{"a", "4"}, {"d", "4"}},
		},
		{
			name:   "dates and timestamps in ISO style, BC and infinity",
			cols:   []col{{"d", oidDate, 0}, {"ts", oidTimestamptz, 0}},
			spec:   Spec{OrderBy: []SortKey{{Column: 1}, {Column: 0}}, Limit: all},
			shards: [][][]byte{rows(r("0044-03-15 BC", "-infinity"), r("2024-01-02", "2024-01-02 03:04:05+02"), r("2024-01-01", "infinity")), rows(r("10000-01-01", "0001-01-01 00:00:00+00 BC"), r("1999-12-31", "2024-01-02 01:04:05.5+00"))},
			want:   [][]string{{"0044-03-15 BC", "-infinity"}, {"10000-01-01", "0001-01-01 00:00:00+00 BC"}, {"2024-01-02", "2024-01-02 03:04:05+02"}, {"1999-12-31", "2024-01-02 01:04:05.5+00"}, {"2024-01-01", "infinity"}},
		},
		{
			name:    "a non-ISO DateStyle is refused",
			cols:    []col{{"d", oidDate, 0}},
			spec:    Spec{OrderBy: []SortKey{{Column: 0}}, Limit: all},
			shards:  [][][]byte{rows(r("01/02/2024")), rows(r("01/03/2024"))},
			wantErr: errValue,
		},
		{
			name:   "bytea hex and escape; uuid",
			cols:   []col{{"b", oidBytea, 0}, {"u", oidUUID, 0}},
			spec:   Spec{Combine: []Combine{CombineMax, CombineMin}, Limit: all},
			shards: [][][]byte{rows(r(`\x00ff`, "b0000000-0000-0000-0000-000000000000")), rows(r(`\x0100`, "a0000000-0000-0000-0000-000000000001"), r(`\001\\`, "ffffffff-0000-0000-0000-000000000000"))},
			want:   [][]string{{`\001\\`, "a0000000-0000-0000-0000-000000000001"}},
		},
		{
			name: "binary int4 order and binary count",
			cols: []col{{"i", oidInt4, 1}, {"c", oidInt8, 1}},
			spec: Spec{Combine: []Combine{CombineNone, CombineCount}, OrderBy: []SortKey{{Column: 0, Desc: true, NullsFirst: true}}, Limit: all},
			shards: [][][]byte{
				rows(r(be32(-1), string(binary.BigEndian.AppendUint64(nil, 2))), r(be32(256), string(binary.BigEndian.AppendUint64(nil, 1)))),
				rows(r(be32(-1), string(binary.BigEndian.AppendUint64(nil, 5)))),
			},
			want: [][]string{{string(be32(256)), string(binary.BigEndian.AppendUint64(nil, 1))}, {string(be32(-1)), string(binary.BigEndian.AppendUint64(nil, 7))}},
		},
		{
			name:    "avg without a count column is an invalid spec",
			cols:    []col{cNum, cNum},
			spec:    Spec{Combine: []Combine{CombineSum, CombineSum}, Final: []FinalColumn{{Kind: FinalAvg, Source: 0, CountSource: 1}}, Limit: all},
			wantErr: ErrInvalidSpec,
		},
		{
			name:    "sum of text is refused",
			cols:    []col{cText},
			spec:    Spec{Combine: []Combine{CombineSum}, Limit: all},
			wantErr: ErrUnsupported,
		},
		{
			name:    "avg of real is refused (PostgreSQL averages it in double precision)",
			cols:    []col{cInt8, {"r", oidFloat4, 0}},
			spec:    Spec{Combine: []Combine{CombineCount, CombineSum}, Final: []FinalColumn{{Kind: FinalAvg, Source: 1, CountSource: 0}}, Limit: all},
			wantErr: ErrUnsupported,
		},
		{
			name:    "avg over double precision raises PostgreSQL's overflow when the shards' means are too far apart",
			cols:    []col{cInt8, cFloat},
			spec:    Spec{Combine: []Combine{CombineCount, CombineSum}, Final: []FinalColumn{{Kind: FinalAvg, Source: 1, CountSource: 0}}, Limit: all},
			shards:  [][][]byte{rows(r("2", "2e200")), rows(r("1", "-1e200"))},
			wantErr: ErrOutOfRange,
		},
		{
			name:   "avg over double precision with an infinite input does not overflow",
			cols:   []col{cInt8, cFloat},
			spec:   Spec{Combine: []Combine{CombineCount, CombineSum}, Final: []FinalColumn{{Kind: FinalAvg, Source: 1, CountSource: 0}}, Limit: all},
			shards: [][][]byte{rows(r("2", "Infinity")), rows(r("1", "-1e200")), rows(r("0", nil))},
			want:   [][]string{{"Infinity"}},
		},
		{
			name:   "avg over double precision of close means",
			cols:   []col{cInt8, cFloat},
			spec:   Spec{Combine: []Combine{CombineCount, CombineSum}, Final: []FinalColumn{{Kind: FinalAvg, Source: 1, CountSource: 0}}, Limit: all},
			shards: [][][]byte{rows(r("2", "2e200")), rows(r("1", "1e200")), rows(r("0", nil))},
			want:   [][]string{{"1e+200"}},
		},
		{
			name: "a check column is neither merged nor a group key",
			cols: []col{cText, cInt8, cFloat, cFloat},
			spec: Spec{Combine: []Combine{CombineNone, CombineCount, CombineSum, CombineCheck},
				Final: []FinalColumn{{Source: 0}, {Kind: FinalAvg, Source: 2, CountSource: 1}}, Limit: all},
			shards: [][][]byte{rows(r("a", "2", "3", "1.5")), rows(r("a", "1", "3", "3"))},
			want:   [][]string{{"a", "2"}},
		},
		{
			name: "float text follows extra_float_digits = 0 (%.15g, %.6g for real)",
			cols: []col{cInt8, cFloat, {"r", oidFloat4, 0}, {"efd", oidText, 0}},
			spec: Spec{Combine: []Combine{CombineCount, CombineSum, CombineSum, CombineFloatDigits},
				Final: []FinalColumn{{Source: 1}, {Kind: FinalAvg, Source: 1, CountSource: 0}, {Source: 2}}, Limit: all},
			shards: [][][]byte{rows(r("2", "0.1", "0.1", "0")), rows(r("1", "0.2", "1234567", "0"))},
			want:   [][]string{{"0.3", "0.1", "1.23457e+06"}},
		},
		{
			name: "float text follows extra_float_digits = -13",
			cols: []col{cInt8, cFloat, {"efd", oidText, 0}},
			spec: Spec{Combine: []Combine{CombineCount, CombineSum, CombineFloatDigits},
				Final: []FinalColumn{{Source: 1}, {Kind: FinalAvg, Source: 1, CountSource: 0}}, Limit: all},
			shards: [][][]byte{rows(r("2", "123.5", "-13")), rows(r("1", "0.0001", "-13"))},
			want:   [][]string{{"1.2e+02", "41"}},
		},
		{
			name: "float text follows extra_float_digits = 3 (shortest)",
			cols: []col{cInt8, cFloat, {"efd", oidText, 0}},
			spec: Spec{Combine: []Combine{CombineCount, CombineSum, CombineFloatDigits},
				Final: []FinalColumn{{Source: 1}}, Limit: all},
			shards: [][][]byte{rows(r("2", "0.1", "3")), rows(r("1", "0.2", "3"))},
			want:   [][]string{{"0.30000000000000004"}},
		},
		{
			name:    "a short DataRow is malformed",
			cols:    []col{cText, cText},
			spec:    Spec{OrderBy: []SortKey{{Column: 0}}, Limit: all},
			shards:  [][][]byte{rows(r("a"))},
			wantErr: ErrMalformed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := merge(t, &tt.spec, rowDesc(t, tt.cols...), tt.shards)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := texts(got); !reflect.DeepEqual(g, tt.want) && !(len(g) == 0 && len(tt.want) == 0) {
				t.Errorf("got  %q\nwant %q", g, tt.want)
			}
		})
	}
}

func TestRowDescriptionTypes(t *testing.T) {
	desc := rowDesc(t, col{"g", oidVarchar, 0}, col{"count", oidInt8, 0}, col{"sum", oidInt4, 1}, col{"sum", oidNumeric, 0}, col{"sum", oidFloat8, 0}, col{"min", oidText, 0})
	m, err := New(&Spec{
		Combine: []Combine{CombineNone, CombineCount, CombineSum, CombineSum, CombineSum, CombineMin},
		Final: []FinalColumn{{Source: 0, Name: "grp"}, {Source: 1}, {Source: 2}, {Kind: FinalAvg, Source: 3, CountSource: 1, Name: "avg"},
			{Kind: FinalAvg, Source: 4, CountSource: 1, Name: "avg"}, {Kind: FinalAvg, Source: 2, CountSource: 1, Name: "avg"}, {Source: 5}},
		Limit: -1,
	}, desc)
	if err != nil {
		t.Fatal(err)
	}
	frame := m.RowDescription([]byte("xx"))
	if string(frame[:2]) != "xx" {
		t.Fatal("RowDescription did not append")
	}
	var rd pgproto3.RowDescription
	if err := rd.Decode(frame[2+headerLen:]); err != nil {
		t.Fatal(err)
	}
	type f struct {
		name   string
		oid    uint32
		format int16
		table  uint32
	}
	var got []f
	for _, x := range rd.Fields {
		got = append(got, f{string(x.Name), x.DataTypeOID, x.Format, x.TableOID})
	}
	want := []f{{"grp", oidVarchar, 0, 1234}, {"count", oidInt8, 0, 0}, {"sum", oidInt8, 1, 0}, {"avg", oidNumeric, 0, 0}, {"avg", oidFloat8, 0, 0}, {"avg", oidNumeric, 1, 0}, {"min", oidText, 0, 1234}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if got := string(AppendCommandComplete(nil, 42)[headerLen:]); got != "SELECT 42\x00" {
		t.Errorf("CommandComplete body %q", got)
	}
}

func TestCheckRowDescriptions(t *testing.T) {
	base := rowDesc(t, cInt, cText)
	tests := []struct {
		name  string
		other []byte
		msg   string
	}{
		{"same", rowDesc(t, cInt, cText), ""},
		{"column count", rowDesc(t, cInt), "shard 0 returns 2 columns, shard 1 returns 1"},
		{"name", rowDesc(t, cInt, col{"u", oidText, 0}), `column 2 is "t" on shard 0 but "u" on shard 1`},
		{"type", rowDesc(t, col{"i", oidInt8, 0}, cText), `column "i" has type integer on shard 0 but bigint on shard 1`},
		{"format", rowDesc(t, cInt, col{"t", oidText, 1}), `column "t" has format 0 on shard 0 but 1 on shard 1`},
		{"garbage", []byte("T\x00\x00\x00\x05x"), "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckRowDescriptions([][]byte{base, tt.other})
			if tt.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.msg)
			}
		})
	}
}

// TestCheckTextOrderMinMax: min/max of text compare bytes, which is the
// database's order only under "C", unless the argument is COLLATE "C".
func TestCheckTextOrderMinMax(t *testing.T) {
	desc := rowDesc(t, cText, cText, cInt8)
	spec := &Spec{Combine: []Combine{CombineMin, CombineMax, CombineMax}, Limit: -1}
	m, err := New(spec, desc)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CheckTextOrder(true); err != nil {
		t.Fatalf("byte order database: %v", err)
	}
	var ue *UnsupportedError
	if err := m.CheckTextOrder(false); !errors.As(err, &ue) || ue.Op != "compute min/max of" {
		t.Fatalf("other collation: err = %v", err)
	}
	spec.ByteOrder = []bool{true, true, false}
	if m, err = New(spec, desc); err != nil {
		t.Fatal(err)
	}
	if err := m.CheckTextOrder(false); err != nil {
		t.Fatalf("COLLATE \"C\" arguments: %v", err)
	}
	if !spec.Compares() || (&Spec{Combine: []Combine{CombineSum}}).Compares() {
		t.Error("Compares: min/max compare, sum does not")
	}
}

func TestFloatDigits(t *testing.T) {
	tests := []struct {
		f    float64
		bits int
		efd  int
		want string
	}{
		{0.30000000000000004, 64, 1, "0.30000000000000004"}, {0.30000000000000004, 64, 0, "0.3"}, {1e15, 64, 0, "1e+15"},
		{123456789012345, 64, 0, "123456789012345"}, {1234567890123456, 64, 0, "1.23456789012346e+15"},
		{0.0001, 64, 0, "0.0001"}, {0.00001234, 64, 0, "1.234e-05"}, {2.5, 64, -15, "2"}, {3.5, 64, -14, "4"},
		{float64(float32(0.1)), 32, 0, "0.1"}, {1234567, 32, 0, "1.23457e+06"}, {123456, 32, 0, "123456"},
		{math.Inf(1), 64, 0, "Infinity"}, {math.NaN(), 32, -3, "NaN"}, {math.Copysign(0, -1), 64, 0, "-0"},
		{1e300 * 10, 64, -2, "1e+301"}, {-1.5e-300, 64, 0, "-1.5e-300"},
	}
	for _, tt := range tests {
		if got := string(appendFloatDigits(nil, tt.f, tt.bits, tt.efd)); got != tt.want {
			t.Errorf("appendFloatDigits(%v, %d, %d) = %q, want %q", tt.f, tt.bits, tt.efd, got, tt.want)
		}
	}
}

func TestUnsupportedErrorMessage(t *testing.T) {
	_, err := New(&Spec{OrderBy: []SortKey{{Column: 0}}, Limit: -1}, rowDesc(t, col{"doc", 3802, 0}))
	var ue *UnsupportedError
	if !errors.As(err, &ue) || err.Error() != `cross-shard query: cannot sort by column "doc" of type jsonb` {
		t.Fatalf("err = %v", err)
	}
}

func TestStreamStopsAtLimit(t *testing.T) {
	m, err := New(&Spec{OrderBy: []SortKey{{Column: 0}}, Limit: 1}, rowDesc(t, cInt))
	if err != nil {
		t.Fatal(err)
	}
	a := &sliceSource{rows: rows(r("1"), r("3"), r("5"))}
	b := &sliceSource{rows: rows(r("2"), r("4"))}
	n, err := m.Merge([]Source{a, b}, func([]byte) error { return nil })
	if err != nil || n != 1 {
		t.Fatalf("n=%d err=%v", n, err)
	}
	if a.i != 1 || b.i != 1 {
		t.Errorf("read %d and %d rows, want only the first of each", a.i, b.i)
	}
}

func TestFloatText(t *testing.T) {
	tests := []struct {
		f    float64
		bits int
		want string
	}{
		{1e20, 64, "1e+20"}, {1e15, 64, "1e+15"}, {1e14, 64, "100000000000000"},
		{123456789012345678, 64, "1.2345678901234568e+17"}, {0.0001, 64, "0.0001"}, {0.00001, 64, "1e-05"},
		{1234567, 32, "1.234567e+06"}, {123456, 32, "123456"}, {float64(float32(1e-5)), 32, "1e-05"},
		{float64(float32(0.1)), 32, "0.1"}, {math.Copysign(0, -1), 64, "-0"}, {math.NaN(), 64, "NaN"},
		{math.Inf(-1), 32, "-Infinity"}, {3.75, 32, "3.75"},
	}
	for _, tt := range tests {
		if got := string(appendFloatText(nil, tt.f, tt.bits)); got != tt.want {
			t.Errorf("appendFloatText(%v, %d) = %q, want %q", tt.f, tt.bits, got, tt.want)
		}
	}
}

func TestMaxBufferedBytes(t *testing.T) {
	m, err := New(&Spec{Distinct: true, Limit: -1}, rowDesc(t, cText))
	if err != nil {
		t.Fatal(err)
	}
	m.MaxBufferedBytes = 1000
	var big [][]byte
	for i := 0; i < 100; i++ {
		big = append(big, row(strings.Repeat("x", 50)))
	}
	if _, err := m.Merge(sources([][][]byte{big}), func([]byte) error { return nil }); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}
