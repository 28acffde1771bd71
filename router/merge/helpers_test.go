package merge

import (
	"io"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// col describes a test column.
type col struct {
	name   string
	oid    uint32
	format int16
}

func rowDesc(t testing.TB, cols ...col) []byte {
	t.Helper()
	rd := pgproto3.RowDescription{}
	for _, c := range cols {
		size := int16(-1)
		switch c.oid {
		case oidInt8, oidFloat8, oidTimestamp, oidTimestamptz:
			size = 8
		case oidInt4, oidFloat4, oidDate, oidOID:
			size = 4
		case oidInt2:
			size = 2
		case oidBool:
			size = 1
		}
		rd.Fields = append(rd.Fields, pgproto3.FieldDescription{
			Name: []byte(c.name), TableOID: 1234, TableAttributeNumber: 1,
			DataTypeOID: c.oid, DataTypeSize: size, TypeModifier: -1, Format: c.format,
		})
	}
	b, err := rd.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// row builds a DataRow frame; each value is a string (its bytes), a
// []byte, or nil (NULL).
func row(vals ...any) []byte {
	vs := make([][]byte, len(vals))
	for i, v := range vals {
		switch v := v.(type) {
		case nil:
		case string:
			vs[i] = []byte(v)
		case []byte:
			vs[i] = v
			if v == nil {
				vs[i] = []byte{}
			}
		default:
			panic("row: bad value")
		}
	}
	return appendDataRow(nil, vs)
}

// sliceSource serves rows from memory, clobbering the previous row's
// buffer on each call to catch use after Next.
type sliceSource struct {
	rows [][]byte
	i    int
	buf  []byte
}

func (s *sliceSource) Next() ([]byte, error) {
	for i := range s.buf {
		s.buf[i] = 0xEE
	}
	if s.i >= len(s.rows) {
		return nil, io.EOF
	}
	s.buf = append(s.buf[:0], s.rows[s.i]...)
	s.i++
	return s.buf, nil
}

func sources(shards [][][]byte) []Source {
	out := make([]Source, len(shards))
	for i, rows := range shards {
		out[i] = &sliceSource{rows: rows}
	}
	return out
}

// merge runs a merger and returns the emitted rows' values, NULL as nil.
func merge(t testing.TB, spec *Spec, desc []byte, shards [][][]byte) ([][][]byte, error) {
	t.Helper()
	m, err := New(spec, desc)
	if err != nil {
		return nil, err
	}
	var out [][][]byte
	n, err := m.Merge(sources(shards), func(r []byte) error {
		vals, err := splitDataRow(r, len(m.visible), nil)
		if err != nil {
			t.Fatalf("merger emitted a bad row: %v", err)
		}
		cp := make([][]byte, len(vals))
		for i, v := range vals {
			if v != nil {
				cp[i] = append([]byte{}, v...)
			}
		}
		out = append(out, cp)
		return nil
	})
	if err == nil && n != int64(len(out)) {
		t.Fatalf("Merge returned %d rows, emitted %d", n, len(out))
	}
	return out, err
}

// texts renders rows as strings, NULL as "NULL", for comparisons.
func texts(rows [][][]byte) [][]string {
	out := make([][]string, len(rows))
	for i, r := range rows {
		out[i] = make([]string, len(r))
		for j, v := range r {
			if v == nil {
				out[i][j] = "NULL"
			} else {
				out[i][j] = string(v)
			}
		}
	}
	return out
}

func sortStrings(s []string) { slices.Sort(s) }
