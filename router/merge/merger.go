package merge

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"
)

// ErrUnsupported is matched (errors.Is) by every *UnsupportedError.
var ErrUnsupported = errors.New("merge: not supported")

// ErrInvalidSpec reports a Spec that does not fit the shards' columns: a
// planner bug, not a user error.
var ErrInvalidSpec = errors.New("merge: invalid spec")

// ErrTooLarge reports a result that needs more memory than
// Merger.MaxBufferedBytes allows.
var ErrTooLarge = errors.New("merge: result too large to merge in memory")

// UnsupportedError says that a column cannot be merged exactly: its type
// is one the merger cannot compare or combine. The proxy answers it with
// SQLSTATE 0A000 (feature_not_supported) and this message.
type UnsupportedError struct {
	Op     string // what was asked: "sort by", "group by", "DISTINCT on", "sum", ...
	Column string // the column's name
	Type   string // PostgreSQL's name of the column's type
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("cross-shard query: cannot %s column %q of type %s", e.Op, e.Column, e.Type)
}

// Is makes errors.Is(err, ErrUnsupported) true.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupported }

// DefaultMaxBufferedBytes bounds the memory of an aggregating or DISTINCT
// merge when Merger.MaxBufferedBytes is 0.
const DefaultMaxBufferedBytes = 256 << 20

// Merger merges the shards' results of one scatter-gather SELECT
// according to a Spec. Create one per statement execution with New; it is
// not safe for concurrent use.
type Merger struct {
	// MaxBufferedBytes bounds the bytes an aggregating or DISTINCT merge
	// keeps (groups, rows): 0 means DefaultMaxBufferedBytes, negative
	// means no limit. Streaming merges keep one row per shard.
	MaxBufferedBytes int64
	// Arrivals, when set, lets a merge that reads every row before it
	// emits one (aggregation, DISTINCT) read the sources in the order
	// their rows arrive, so that the shards that answer first are merged
	// while the others still work. Without it the sources are read one
	// after another.
	Arrivals Arrivals

	spec        Spec
	in          []pgproto3.FieldDescription // shard columns
	inKind      []kind
	final       []FinalColumn               // Spec.Final, or every shard column
	out         []pgproto3.FieldDescription // final columns, hidden ones included
	outKind     []kind
	visible     []int // indexes of the final columns sent to the client
	aggregating bool  // Spec.Group, or some Combine entry is not CombineNone
	// floatDigitsCol is the CombineFloatDigits column, or -1.
	floatDigitsCol int
	floatAvgs      []floatAvg // avg over double precision (overflow check)
	identity       bool       // final columns are the shard columns unchanged
	exprTypes      []xtype    // by final column: FinalExpr result types
}

// Arrivals says which sources have rows (see Merger.Arrivals).
type Arrivals interface {
	// Ready reports whether source i's Next would return without
	// waiting (a row, the end, or an error).
	Ready(i int) bool
	// Wait returns when a source may have become ready since the last
	// call (a source's failure is reported by its Next).
	Wait()
}

// Source yields one shard's rows in the order the shard sent them.
type Source interface {
	// Next returns the next DataRow frame (type byte, length and body),
	// or io.EOF after the last one. The frame need only stay valid until
	// the next call to Next.
	Next() (row []byte, err error)
}

// New returns a Merger for spec over results described by desc, one
// shard's RowDescription frame (type byte, length and body; see
// CheckRowDescriptions for checking that all shards agree). It returns an
// *UnsupportedError when the spec needs to compare or combine a column of
// a type the merger does not support, and an error wrapping ErrInvalidSpec
// when the spec does not fit the columns.
func New(spec *Spec, desc []byte) (*Merger, error) {
	in, err := decodeRowDescription(desc)
	if err != nil {
		return nil, err
	}
	m := &Merger{spec: *spec, in: in, inKind: make([]kind, len(in)), floatDigitsCol: -1}
	for i := range in {
		m.inKind[i] = kindOf(in[i].DataTypeOID)
	}
	if err := m.checkCombine(); err != nil {
		return nil, err
	}
	if err := m.buildFinal(); err != nil {
		return nil, err
	}
	if err := m.checkOrderDistinct(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Merger) unsupported(op string, f *pgproto3.FieldDescription) error {
	return &UnsupportedError{Op: op, Column: string(f.Name), Type: TypeName(f.DataTypeOID)}
}

func (m *Merger) checkCombine() error {
	c := m.spec.Combine
	if c != nil && len(c) != len(m.in) {
		return fmt.Errorf("%w: %d Combine entries for %d shard columns", ErrInvalidSpec, len(c), len(m.in))
	}
	m.aggregating = m.spec.Group
	for i, how := range c {
		if how != CombineNone {
			m.aggregating = true
		}
		f, k := &m.in[i], m.inKind[i]
		switch how {
		case CombineNone:
		case CombineCount:
			if k != kindInt {
				return fmt.Errorf("%w: count column %q has type %s", ErrInvalidSpec, f.Name, TypeName(f.DataTypeOID))
			}
		case CombineSum:
			switch k {
			case kindInt, kindNumeric, kindFloat4, kindFloat8:
			default:
				return m.unsupported("sum", f)
			}
		case CombineMin, CombineMax:
			if k == kindUnsupported {
				return m.unsupported("compute min/max of", f)
			}
		case CombineBoolAnd, CombineBoolOr:
			if k != kindBool {
				return fmt.Errorf("%w: bool_and/bool_or column %q has type %s", ErrInvalidSpec, f.Name, TypeName(f.DataTypeOID))
			}
		case CombineCheck:
		case CombineFloatDigits:
			if k != kindText {
				return fmt.Errorf("%w: extra_float_digits column %q has type %s", ErrInvalidSpec, f.Name, TypeName(f.DataTypeOID))
			}
			m.floatDigitsCol = i
		default:
			return fmt.Errorf("%w: unknown Combine %d", ErrInvalidSpec, how)
		}
	}
	if m.aggregating {
		for i, how := range c {
			if how == CombineNone && m.inKind[i] == kindUnsupported {
				return m.unsupported("group by", &m.in[i])
			}
		}
	}
	return nil
}

func (m *Merger) combine(col int) Combine {
	if m.spec.Combine == nil {
		return CombineNone
	}
	return m.spec.Combine[col]
}

// aggregateField describes a computed column as PostgreSQL does: no table,
// no type modifier.
func aggregateField(name []byte, oid uint32, size int16, format int16) pgproto3.FieldDescription {
	return pgproto3.FieldDescription{Name: name, DataTypeOID: oid, DataTypeSize: size, TypeModifier: -1, Format: format}
}

func (m *Merger) buildFinal() error {
	m.final = m.spec.Final
	if m.final == nil {
		tail := m.spec.HiddenTail
		if tail < 0 || tail > len(m.in) {
			return fmt.Errorf("%w: %d hidden columns of %d", ErrInvalidSpec, tail, len(m.in))
		}
		m.final = make([]FinalColumn, len(m.in))
		for i := range m.in {
			m.final[i] = FinalColumn{Kind: FinalColumnValue, Source: i, Hidden: i >= len(m.in)-tail}
		}
		if tail > 0 {
			order := make([]SortKey, len(m.spec.OrderBy))
			for i, k := range m.spec.OrderBy {
				if !k.Tail && k.Column >= len(m.in)-tail {
					// A position beyond the client's columns (PostgreSQL:
					// "ORDER BY position n is not in select list").
					return fmt.Errorf("%w: ORDER BY position %d is not in select list", ErrInvalidSpec, k.Column+1)
				}
				if k.Tail {
					if k.Column < 0 || k.Column >= tail {
						return fmt.Errorf("%w: ORDER BY hidden column %d of %d", ErrInvalidSpec, k.Column, tail)
					}
					k.Column += len(m.in) - tail
					k.Tail = false
				}
				order[i] = k
			}
			m.spec.OrderBy = order
		}
	}
	m.identity = len(m.final) == len(m.in)
	m.out = make([]pgproto3.FieldDescription, len(m.final))
	m.outKind = make([]kind, len(m.final))
	var exprs []int
	for j, fc := range m.final {
		if fc.Source < 0 || fc.Source >= len(m.in) {
			return fmt.Errorf("%w: final column %d reads shard column %d of %d", ErrInvalidSpec, j, fc.Source, len(m.in))
		}
		src := m.in[fc.Source]
		var f pgproto3.FieldDescription
		switch fc.Kind {
		case FinalColumnValue:
			f = src
			switch m.combine(fc.Source) {
			case CombineCount:
				f = aggregateField(src.Name, oidInt8, 8, src.Format)
			case CombineSum:
				if src.DataTypeOID == oidInt2 || src.DataTypeOID == oidInt4 {
					f = aggregateField(src.Name, oidInt8, 8, src.Format)
				}
			}
		case FinalAvg:
			if fc.CountSource < 0 || fc.CountSource >= len(m.in) {
				return fmt.Errorf("%w: avg column %d reads count column %d of %d", ErrInvalidSpec, j, fc.CountSource, len(m.in))
			}
			if m.combine(fc.Source) != CombineSum || m.combine(fc.CountSource) != CombineCount {
				return fmt.Errorf("%w: avg column %d needs a sum column and a count column", ErrInvalidSpec, j)
			}
			if k := m.inKind[fc.Source]; k == kindFloat4 {
				// PostgreSQL averages real values in double precision;
				// the shards' sums of real are rounded to real.
				return &UnsupportedError{Op: "average", Column: string(src.Name),
					Type: "real (PostgreSQL averages it in double precision: use avg(x::float8), which gives the same value)"}
			} else if k == kindFloat8 {
				f = aggregateField(src.Name, oidFloat8, 8, src.Format)
				m.floatAvgs = append(m.floatAvgs, floatAvg{sum: fc.Source, count: fc.CountSource})
			} else {
				f = aggregateField(src.Name, oidNumeric, -1, src.Format)
			}
		case FinalExpr:
			if fc.Expr == nil {
				return fmt.Errorf("%w: expression column %d without an expression", ErrInvalidSpec, j)
			}
			exprs = append(exprs, j)
			continue // typed below, once the columns it reads are
		default:
			return fmt.Errorf("%w: unknown FinalKind %d", ErrInvalidSpec, fc.Kind)
		}
		m.setOut(j, f)
	}
	if err := m.typeExprs(exprs); err != nil {
		return err
	}
	m.visible = m.visible[:0]
	for j, fc := range m.final {
		if fc.Kind != FinalColumnValue || fc.Source != j || fc.Name != "" || fc.Hidden {
			m.identity = false
		}
		if !fc.Hidden {
			m.visible = append(m.visible, j)
		} else if m.spec.Distinct {
			return fmt.Errorf("%w: hidden column %d with DISTINCT", ErrInvalidSpec, j)
		}
	}
	return nil
}

func (m *Merger) setOut(j int, f pgproto3.FieldDescription) {
	if name := m.final[j].Name; name != "" {
		f.Name = []byte(name)
	}
	m.out[j] = f
	m.outKind[j] = kindOf(f.DataTypeOID)
}

// typeExprs describes the FinalExpr columns exprs with PostgreSQL's types
// for their expressions.
func (m *Merger) typeExprs(exprs []int) error {
	if len(exprs) == 0 {
		return nil
	}
	m.exprTypes = make([]xtype, len(m.final))
	types := func(c int) (xtype, bool) {
		if c < 0 || c >= len(m.final) || m.final[c].Kind == FinalExpr {
			return xInvalid, false
		}
		return xtypeOf(m.out[c].DataTypeOID), true
	}
	for _, j := range exprs {
		fc := m.final[j]
		t, err := exprType(fc.Expr, types, fc.Name)
		if err != nil {
			return err
		}
		typmod := int32(-1)
		if fc.Expr.Op == ExprCast && t == xNumeric {
			typmod = fc.Expr.Typmod
		}
		f := aggregateField([]byte("?column?"), xtypeOIDs[t], xtypeSizes[t], m.in[fc.Source].Format)
		f.TypeModifier = typmod
		m.setOut(j, f)
		m.exprTypes[j] = t
	}
	return nil
}

func (m *Merger) checkOrderDistinct() error {
	for _, k := range m.spec.OrderBy {
		if k.Column < 0 || k.Column >= len(m.out) {
			return fmt.Errorf("%w: ORDER BY column %d of %d", ErrInvalidSpec, k.Column, len(m.out))
		}
		if m.outKind[k.Column] == kindUnsupported {
			return m.unsupported("sort by", &m.out[k.Column])
		}
	}
	if m.spec.Distinct {
		for j := range m.out {
			if m.outKind[j] == kindUnsupported {
				return m.unsupported("apply DISTINCT to", &m.out[j])
			}
		}
	}
	if m.spec.Offset < 0 {
		return fmt.Errorf("%w: negative offset", ErrInvalidSpec)
	}
	return nil
}

// Streaming reports whether Merge streams (no aggregation, no DISTINCT:
// rows are concatenated or k-way merged, holding one row per shard) rather
// than reading every row before emitting the first.
func (m *Merger) Streaming() bool { return !m.aggregating && !m.spec.Distinct }

// RowDescription appends the RowDescription frame the client gets: the
// final columns with their names (FinalColumn.Name when set) and the types
// PostgreSQL gives the aggregates. A combined count is bigint; a combined
// sum keeps the shards' sum type (bigint for sums of smallint or integer,
// numeric for bigint and numeric, real and double precision unchanged);
// avg is numeric, or double precision for real and double precision sums;
// min, max and plain columns keep the shard column's description.
func (m *Merger) RowDescription(dst []byte) []byte {
	rd := pgproto3.RowDescription{Fields: make([]pgproto3.FieldDescription, len(m.visible))}
	for i, j := range m.visible {
		rd.Fields[i] = m.out[j]
	}
	out, err := rd.Encode(dst)
	if err != nil {
		// Encode fails only for more than 65535 fields or a name with a
		// NUL, neither possible from a decoded RowDescription.
		panic(fmt.Sprintf("merge: encode RowDescription: %v", err))
	}
	return out
}

// Merge reads the shards' rows from sources (in shard order) and calls
// emit with each DataRow frame of the client's result, in order, after
// OFFSET and LIMIT. The frame passed to emit is valid only during the
// call. It returns the number of rows emitted, for AppendCommandComplete.
//
// When Streaming, rows are passed through (projected to the final columns
// when those differ) in shard order, or k-way merged by OrderBy with ties
// kept in shard order; once LIMIT rows are out it returns without reading
// the rest, and the caller must drain or cancel the shards. Each shard's
// rows must already be sorted by OrderBy: a row out of order (typically a
// non-"C" collation on a text key) is reported as an error rather than
// merged wrongly. Otherwise every row is read, combined and buffered
// (bounded by MaxBufferedBytes) before the first is emitted.
//
// An error from a source or from emit is returned as is; errors about
// values wrap ErrMalformed or name the value.
func (m *Merger) Merge(sources []Source, emit func(row []byte) error) (int64, error) {
	if m.spec.Limit == 0 {
		return 0, nil
	}
	if m.Streaming() {
		return m.stream(sources, emit)
	}
	return m.aggregate(sources, emit)
}

// limiter applies OFFSET and LIMIT to emitted rows.
type limiter struct {
	skip, left int64 // left < 0: no limit
	n          int64
	emit       func([]byte) error
}

func newLimiter(s *Spec, emit func([]byte) error) limiter {
	left := s.Limit
	if left < 0 {
		left = -1
	}
	return limiter{skip: s.Offset, left: left, emit: emit}
}

// put emits row unless it falls in the offset; done is true when the
// limit is reached.
func (l *limiter) put(row []byte) (done bool, err error) {
	if l.skip > 0 {
		l.skip--
		return false, nil
	}
	if err := l.emit(row); err != nil {
		return true, err
	}
	l.n++
	if l.left > 0 {
		l.left--
	}
	return l.left == 0, nil
}

// nextRow reads a source's next row, io.EOF at the end.
func nextRow(src Source) ([]byte, error) {
	row, err := src.Next()
	if err != nil {
		return nil, err
	}
	if len(row) == 0 {
		return nil, fmt.Errorf("%w: empty row", ErrMalformed)
	}
	return row, nil
}

// CheckTextOrder refuses (with an *UnsupportedError) a merge that sorts
// by a text column, or computes min/max of one, in an order other than
// bytes: the merge compares text
// bytewise, which is the database's order only when its collation is "C"
// (byteOrder true) or the key says COLLATE "C". bpchar and name sort
// as PostgreSQL's name/bpchar do under "C" too, so they are checked alike
// except name, which always sorts bytewise.
func (m *Merger) CheckTextOrder(byteOrder bool) error {
	if byteOrder {
		return nil
	}
	for _, k := range m.spec.OrderBy {
		f := &m.out[k.Column]
		if (m.outKind[k.Column] == kindText || m.outKind[k.Column] == kindBpchar) && f.DataTypeOID != oidName && !k.ByteOrder {
			return &UnsupportedError{Op: "sort by", Column: string(f.Name),
				Type: TypeName(f.DataTypeOID) + ` under the database's collation (not "C"; sort with COLLATE "C")`}
		}
	}
	for i, how := range m.spec.Combine {
		if how != CombineMin && how != CombineMax || i < len(m.spec.ByteOrder) && m.spec.ByteOrder[i] {
			continue
		}
		f := &m.in[i]
		if (m.inKind[i] == kindText || m.inKind[i] == kindBpchar) && f.DataTypeOID != oidName {
			return &UnsupportedError{Op: "compute min/max of", Column: string(f.Name),
				Type: TypeName(f.DataTypeOID) + ` under the database's collation (not "C"; use min(x COLLATE "C") for byte order)`}
		}
	}
	return nil
}
