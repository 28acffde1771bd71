package merge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
)

// ErrOutOfRange reports a combined value outside its type's range, where
// PostgreSQL itself would have failed (SQLSTATE 22003).
var ErrOutOfRange = errors.New("value out of range")

// acc accumulates one combined column of one group. It is small (the
// merge of many groups touches every group's accumulators, so their size
// is memory traffic): a numeric sum and a min/max keep their state
// behind pointers, allocated on the first value from the merge's slabs.
type acc struct {
	seen bool // a non-NULL input was seen
	i    int64
	f    float64
	n    *decimal // numeric sum
	mm   *extreme // min/max
}

// extreme is a min/max accumulator's current extreme.
type extreme struct {
	v   value  // decoded
	raw []byte // as sent
}

type group struct {
	keys [][]byte   // by shard column: the group-by values as first seen
	accs []acc      // by shard column
	avgs []avgState // by Merger.floatAvgs
}

// floatAvg is an avg over double precision: its sum and count columns.
type floatAvg struct{ sum, count int }

// avgState combines the shards' (count, sum) of a double precision avg
// as PostgreSQL's float8_combine does, to raise its overflow error
// (22003) when the sum of squared differences between the shards' means
// overflows. (Each shard raises the error for its own rows: the planner
// asks it for avg too.)
type avgState struct {
	n, sx, sxx float64
}

func (s *avgState) combine(n2, sx2 float64) error {
	if n2 == 0 {
		return nil
	}
	if s.n == 0 {
		s.n, s.sx = n2, sx2
		return nil
	}
	if !math.IsInf(s.sx, 0) && !math.IsNaN(s.sx) && !math.IsInf(sx2, 0) && !math.IsNaN(sx2) {
		d := s.sx/s.n - sx2/n2
		sxx := s.sxx + s.n*n2*d*d/(s.n+n2)
		if math.IsInf(sxx, 0) && !math.IsInf(s.sxx, 0) {
			return fmt.Errorf("%w: overflow", ErrOutOfRange)
		}
		s.sxx = sxx
	} else {
		s.sxx = math.NaN() // an infinite input: PostgreSQL gives up on the sums of squares too
	}
	s.n += n2
	s.sx += sx2
	return nil
}

// finalRow is one row of the client's result, owned by the merger.
type finalRow struct {
	vals [][]byte
	keys []value // decoded ORDER BY keys
}

// budget tracks buffered bytes against MaxBufferedBytes.
type budget struct {
	left int64 // < 0: unlimited
}

func (b *budget) take(n int) error {
	if b.left < 0 {
		return nil
	}
	b.left -= int64(n)
	if b.left < 0 {
		b.left = 0
		return ErrTooLarge
	}
	return nil
}

func (m *Merger) newBudget() budget {
	switch {
	case m.MaxBufferedBytes == 0:
		return budget{left: DefaultMaxBufferedBytes}
	case m.MaxBufferedBytes < 0:
		return budget{left: -1}
	}
	return budget{left: m.MaxBufferedBytes}
}

func (m *Merger) aggregate(sources []Source, emit func([]byte) error) (int64, error) {
	mem := m.newBudget()
	var rows []*finalRow
	var err error
	if m.aggregating && !m.spec.Distinct && len(m.spec.OrderBy) == 0 {
		// Nothing to order or deduplicate: each group is encoded and
		// emitted as soon as its final values are computed.
		lim := newLimiter(&m.spec, emit)
		var buf []byte
		vis := make([][]byte, len(m.visible))
		_, err = m.groupRows(sources, &mem, func(out [][]byte) (bool, error) {
			for i, j := range m.visible {
				vis[i] = out[j]
			}
			buf = appendDataRow(buf[:0], vis)
			return lim.put(buf)
		})
		return lim.n, err
	}
	if m.aggregating {
		rows, err = m.groupRows(sources, &mem, nil)
	} else {
		rows, err = m.copyRows(sources, &mem)
	}
	if err != nil {
		return 0, err
	}
	if m.spec.Distinct {
		rows, err = m.distinct(rows)
		if err != nil {
			return 0, err
		}
	}
	if len(m.spec.OrderBy) > 0 {
		if err := m.sortRows(rows); err != nil {
			return 0, err
		}
	}
	lim := newLimiter(&m.spec, emit)
	var buf []byte
	vis := make([][]byte, len(m.visible))
	for _, r := range rows {
		if lim.skip > 0 {
			lim.skip--
			continue
		}
		for i, j := range m.visible {
			vis[i] = r.vals[j]
		}
		buf = appendDataRow(buf[:0], vis)
		if done, err := lim.put(buf); done || err != nil {
			return lim.n, err
		}
	}
	return lim.n, nil
}

// readAll calls f with the values of every row of every source: one
// source after another, or with m.Arrivals as the rows arrive.
func (m *Merger) readAll(sources []Source, f func(vals [][]byte) error) error {
	var vals [][]byte
	read := func(s int) (more bool, err error) {
		row, err := nextRow(sources[s])
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("shard %d: %w", s, err)
		}
		if vals, err = splitDataRow(row, len(m.in), vals); err != nil {
			return false, fmt.Errorf("shard %d: %w", s, err)
		}
		if err := f(vals); err != nil {
			return false, fmt.Errorf("shard %d: %w", s, err)
		}
		return true, nil
	}
	if m.Arrivals == nil {
		for s := range sources {
			for {
				more, err := read(s)
				if err != nil {
					return err
				}
				if !more {
					break
				}
			}
		}
		return nil
	}
	done := make([]bool, len(sources))
	for left := len(sources); left > 0; {
		progressed := false
		for s := range sources {
			for !done[s] && m.Arrivals.Ready(s) {
				more, err := read(s)
				if err != nil {
					return err
				}
				if !more {
					done[s] = true
					left--
				}
				progressed = true
			}
		}
		if !progressed {
			m.Arrivals.Wait()
		}
	}
	return nil
}

// copyRows reads the rows of a DISTINCT without aggregation.
func (m *Merger) copyRows(sources []Source, mem *budget) ([]*finalRow, error) {
	var rows []*finalRow
	var sl slab
	out := make([][]byte, len(m.final))
	err := m.readAll(sources, func(vals [][]byte) error {
		for j, fc := range m.final {
			out[j] = vals[fc.Source]
		}
		r, err := sl.row(out, mem)
		if err != nil {
			return err
		}
		rows = append(rows, r)
		return nil
	})
	return rows, err
}

// groupRows reads every row, groups by the CombineNone columns and
// returns one final row per group in order of first appearance; with
// direct, it passes each group's final values to direct instead (valid
// during the call; done stops it) and returns no rows.
func (m *Merger) groupRows(sources []Source, mem *budget, direct func(out [][]byte) (done bool, err error)) ([]*finalRow, error) {
	var keyCols, aggCols []int
	for c, how := range m.spec.Combine {
		if how == CombineNone {
			keyCols = append(keyCols, c)
		} else {
			aggCols = append(aggCols, c)
		}
	}
	index := newGroupIndex(len(keyCols) == 1 && intKeyed(m.inKind[keyCols[0]]))
	var groups []*group
	var key []byte
	var tmp value
	var sl slab
	keyVals := make([][]byte, len(m.in))
	err := m.readAll(sources, func(vals [][]byte) error {
		key = key[:0]
		for _, c := range keyCols {
			if err := decodeValue(m.inKind[c], m.in[c].Format, vals[c], &tmp); err != nil {
				return fmt.Errorf("column %q: %w", m.in[c].Name, err)
			}
			if !index.intKey {
				key = appendKey(key, m.inKind[c], &tmp)
			}
		}
		g := index.get(key, &tmp)
		if g == nil {
			for _, c := range keyCols {
				keyVals[c] = vals[c]
			}
			r, err := sl.row(keyVals, mem) // keeps the key columns' values
			if err != nil {
				return err
			}
			if err := mem.take(max(len(key), 9) + 200*len(aggCols)); err != nil {
				return err
			}
			g = sl.group(r.vals, len(m.in))
			if len(m.floatAvgs) > 0 {
				g.avgs = make([]avgState, len(m.floatAvgs))
			}
			index.put(key, &tmp, g)
			groups = append(groups, g)
		}
		for _, c := range aggCols {
			if err := m.accumulate(&g.accs[c], c, vals[c], &tmp, mem, &sl); err != nil {
				return fmt.Errorf("column %q: %w", m.in[c].Name, err)
			}
		}
		for k, fa := range m.floatAvgs {
			if vals[fa.sum] == nil {
				continue
			}
			var n value
			if err := decodeValue(m.inKind[fa.count], m.in[fa.count].Format, vals[fa.count], &n); err != nil {
				return fmt.Errorf("column %q: %w", m.in[fa.count].Name, err)
			}
			if err := decodeValue(m.inKind[fa.sum], m.in[fa.sum].Format, vals[fa.sum], &tmp); err != nil {
				return fmt.Errorf("column %q: %w", m.in[fa.sum].Name, err)
			}
			if err := g.avgs[k].combine(float64(n.i), tmp.f); err != nil {
				return fmt.Errorf("column %q: %w", m.in[fa.sum].Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(groups) == 0 && len(keyCols) == 0 {
		// An aggregate without GROUP BY has one row even over no rows.
		groups = append(groups, &group{keys: make([][]byte, len(m.in)), accs: make([]acc, len(m.in))})
	}
	rows := make([]*finalRow, 0, len(groups))
	out := make([][]byte, len(m.final))
	var buf []byte
	type span struct{ start, end int }
	spans := make([]span, len(m.final))
	var exprBuf []byte
	for _, g := range groups {
		buf = buf[:0]
		for j := range m.final {
			start := len(buf)
			var null bool
			if buf, null, err = m.finalValue(buf, j, g); err != nil {
				return nil, fmt.Errorf("column %q: %w", m.out[j].Name, err)
			}
			spans[j] = span{start, len(buf)}
			if null {
				spans[j].start = -1
			}
		}
		for j, fc := range m.final {
			switch {
			case m.computed(j):
				out[j] = nil
				if spans[j].start >= 0 {
					out[j] = buf[spans[j].start:spans[j].end]
				}
			case m.combine(fc.Source) == CombineNone:
				out[j] = g.keys[fc.Source]
			default: // min, max
				out[j] = nil
				if a := &g.accs[fc.Source]; a.seen {
					out[j] = a.mm.raw
				}
			}
		}
		if m.exprTypes != nil {
			if exprBuf, err = m.exprValues(exprBuf[:0], out, g); err != nil {
				return nil, err
			}
		}
		if direct != nil {
			if done, err := direct(out); done || err != nil {
				return nil, err
			}
			continue
		}
		r, err := sl.row(out, mem)
		if err != nil {
			return nil, err
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// intKeyed reports whether values of kind k are equal exactly when their
// decoded value.i is (appendKey's integer kinds).
func intKeyed(k kind) bool {
	switch k {
	case kindBool, kindInt, kindOID, kindDate, kindTimestamp:
		return true
	}
	return false
}

// groupIndex finds a group by its key: the appendKey bytes, or with
// intKey (one integer-like key column: GROUP BY an int, a date, a
// timestamp) the decoded value itself, without a key string per row.
type groupIndex struct {
	intKey bool
	bytes  map[string]*group
	ints   map[int64]*group
	null   *group // intKey: the NULL key's group
}

func newGroupIndex(intKey bool) *groupIndex {
	if intKey {
		return &groupIndex{intKey: true, ints: make(map[int64]*group)}
	}
	return &groupIndex{bytes: make(map[string]*group)}
}

// get returns the group of key (intKey: of the decoded value v), or nil.
func (x *groupIndex) get(key []byte, v *value) *group {
	switch {
	case !x.intKey:
		return x.bytes[string(key)]
	case v.null:
		return x.null
	}
	return x.ints[v.i]
}

// put records g as the group of key (intKey: of v).
func (x *groupIndex) put(key []byte, v *value, g *group) {
	switch {
	case !x.intKey:
		x.bytes[string(key)] = g
	case v.null:
		x.null = g
	default:
		x.ints[v.i] = g
	}
}

// exprValues computes the FinalExpr columns of a group's final row out
// from its other columns, appending their bytes to buf.
func (m *Merger) exprValues(buf []byte, out [][]byte, g *group) ([]byte, error) {
	col := func(c int, v *xval) error {
		if out[c] == nil {
			*v = xval{null: true}
			return nil
		}
		if err := decodeXval(m.outKind[c], xtypeOf(m.out[c].DataTypeOID), m.out[c].Format, out[c], v); err != nil {
			return fmt.Errorf("column %q: %w", m.out[c].Name, err)
		}
		return nil
	}
	type span struct{ j, start, end int }
	var spans []span
	for j, fc := range m.final {
		if fc.Kind != FinalExpr {
			continue
		}
		var v xval
		if err := evalExpr(fc.Expr, col, &v); err != nil {
			return buf, fmt.Errorf("column %q: %w", m.out[j].Name, err)
		}
		if v.null {
			out[j] = nil
			continue
		}
		start := len(buf)
		buf = appendXval(buf, &v, m.out[j].Format == 1, m.floatDigits(g))
		spans = append(spans, span{j, start, len(buf)})
	}
	for _, s := range spans {
		out[s.j] = buf[s.start:s.end:s.end]
	}
	return buf, nil
}

// computed reports whether final column j is encoded by finalValue (as
// opposed to passed through from a shard's bytes).
func (m *Merger) computed(j int) bool {
	fc := m.final[j]
	if fc.Kind == FinalAvg || fc.Kind == FinalExpr {
		return true
	}
	switch m.combine(fc.Source) {
	case CombineNone, CombineMin, CombineMax:
		return false
	}
	return true
}

// accumulate folds one shard value into a.
func (m *Merger) accumulate(a *acc, col int, raw []byte, tmp *value, mem *budget, sl *slab) error {
	how, k, format := m.spec.Combine[col], m.inKind[col], m.in[col].Format
	if how == CombineCheck {
		return nil
	}
	if raw == nil {
		if how == CombineCount {
			return fmt.Errorf("%w: NULL count", ErrMalformed)
		}
		return nil
	}
	if err := decodeValue(k, format, raw, tmp); err != nil {
		return err
	}
	first := !a.seen
	a.seen = true
	switch how {
	case CombineCount:
		return addInt(&a.i, tmp.i)
	case CombineSum:
		switch k {
		case kindInt:
			return addInt(&a.i, tmp.i)
		case kindNumeric:
			if first {
				a.n = sl.decimal()
				a.n.coef.Set(&tmp.n.coef)
				a.n.scale, a.n.spec = tmp.n.scale, tmp.n.spec
			} else {
				a.n.add(tmp.n)
			}
		default: // float4, float8
			s := a.f + tmp.f
			if math.IsInf(s, 0) && !math.IsInf(a.f, 0) && !math.IsInf(tmp.f, 0) {
				return fmt.Errorf("%w: overflow", ErrOutOfRange)
			}
			a.f = s
		}
	case CombineMin, CombineMax:
		if first {
			a.mm = sl.extreme()
		} else {
			c := compareValues(k, tmp, &a.mm.v)
			if how == CombineMin && c >= 0 || how == CombineMax && c <= 0 {
				return nil
			}
		}
		e := a.mm
		if err := mem.take(len(raw) - len(e.raw)); err != nil {
			return err
		}
		if e.raw == nil {
			e.raw = make([]byte, 0, len(raw)) // non-nil: an empty value is not NULL
		}
		e.raw = append(e.raw[:0], raw...)
		copyValue(&e.v, tmp)
	case CombineBoolAnd:
		if first {
			a.i = tmp.i
		} else {
			a.i &= tmp.i
		}
	case CombineBoolOr:
		a.i |= tmp.i
	case CombineFloatDigits:
		if first {
			n, err := strconv.Atoi(string(raw))
			if err != nil {
				return fmt.Errorf("%w: extra_float_digits %q", ErrMalformed, raw)
			}
			a.i = int64(n)
		}
	}
	return nil
}

func addInt(dst *int64, v int64) error {
	s := *dst + v
	if (s > *dst) != (v > 0) {
		return fmt.Errorf("bigint %w", ErrOutOfRange)
	}
	*dst = s
	return nil
}

// finalValue appends final column j's value for g when it is computed;
// null reports SQL NULL. Passed-through columns append nothing.
func (m *Merger) finalValue(dst []byte, j int, g *group) (_ []byte, null bool, err error) {
	if !m.computed(j) {
		return dst, true, nil
	}
	fc := m.final[j]
	if fc.Kind == FinalExpr {
		return dst, true, nil // see exprValues
	}
	binaryFmt := m.out[j].Format == 1
	a := &g.accs[fc.Source]
	if fc.Kind == FinalAvg {
		n := g.accs[fc.CountSource].i
		if !a.seen || n == 0 {
			return dst, true, nil
		}
		switch m.inKind[fc.Source] {
		case kindFloat4, kindFloat8:
			return appendFloat(dst, a.f/float64(n), 64, binaryFmt, m.floatDigits(g)), false, nil
		}
		var sum, cnt, q decimal
		if m.inKind[fc.Source] == kindInt {
			sum.coef.SetInt64(a.i)
		} else {
			sum.coef.Set(&a.n.coef)
			sum.scale, sum.spec = a.n.scale, a.n.spec // (seen: a.n is set)
		}
		cnt.coef.SetInt64(n)
		q.div(&sum, &cnt)
		return appendNumeric(dst, &q, binaryFmt), false, nil
	}
	switch how := m.combine(fc.Source); how {
	case CombineCount:
		return appendInt8(dst, a.i, binaryFmt), false, nil
	case CombineSum:
		if !a.seen {
			return dst, true, nil
		}
		switch m.inKind[fc.Source] {
		case kindInt:
			return appendInt8(dst, a.i, binaryFmt), false, nil
		case kindNumeric:
			return appendNumeric(dst, a.n, binaryFmt), false, nil
		case kindFloat4:
			f32 := float32(a.f)
			if math.IsInf(float64(f32), 0) && !math.IsInf(a.f, 0) {
				return dst, false, fmt.Errorf("%w: overflow", ErrOutOfRange)
			}
			return appendFloat(dst, float64(f32), 32, binaryFmt, m.floatDigits(g)), false, nil
		default:
			return appendFloat(dst, a.f, 64, binaryFmt, m.floatDigits(g)), false, nil
		}
	case CombineBoolAnd, CombineBoolOr:
		if !a.seen {
			return dst, true, nil
		}
		switch {
		case binaryFmt:
			return append(dst, byte(a.i)), false, nil
		case a.i != 0:
			return append(dst, 't'), false, nil
		default:
			return append(dst, 'f'), false, nil
		}
	}
	return dst, true, nil
}

// floatDigits is the session's extra_float_digits for group g, as the
// shards report it; 1 (PostgreSQL's default) when the plan does not ask.
func (m *Merger) floatDigits(g *group) int {
	if m.floatDigitsCol < 0 || !g.accs[m.floatDigitsCol].seen {
		return 1
	}
	return int(g.accs[m.floatDigitsCol].i)
}

func appendInt8(dst []byte, v int64, binaryFmt bool) []byte {
	if binaryFmt {
		return binary.BigEndian.AppendUint64(dst, uint64(v))
	}
	return strconv.AppendInt(dst, v, 10)
}

func appendNumeric(dst []byte, d *decimal, binaryFmt bool) []byte {
	if binaryFmt {
		return d.appendBinary(dst)
	}
	return d.appendText(dst)
}

func appendFloat(dst []byte, f float64, bitSize int, binaryFmt bool, floatDigits int) []byte {
	switch {
	case !binaryFmt:
		return appendFloatDigits(dst, f, bitSize, floatDigits)
	case bitSize == 32:
		return binary.BigEndian.AppendUint32(dst, math.Float32bits(float32(f)))
	}
	return binary.BigEndian.AppendUint64(dst, math.Float64bits(f))
}

// distinct keeps the first of each set of equal final rows.
func (m *Merger) distinct(rows []*finalRow) ([]*finalRow, error) {
	seen := make(map[string]struct{}, len(rows))
	var key []byte
	var tmp value
	out := rows[:0]
	for _, r := range rows {
		key = key[:0]
		for j, v := range r.vals {
			if err := decodeValue(m.outKind[j], m.out[j].Format, v, &tmp); err != nil {
				return nil, fmt.Errorf("column %q: %w", m.out[j].Name, err)
			}
			key = appendKey(key, m.outKind[j], &tmp)
		}
		if _, dup := seen[string(key)]; dup {
			continue
		}
		seen[string(key)] = struct{}{}
		out = append(out, r)
	}
	return out, nil
}

// sortRows sorts final rows by OrderBy, keeping equal rows in order.
func (m *Merger) sortRows(rows []*finalRow) error {
	keys := make([]sortKey, len(m.spec.OrderBy))
	for i, o := range m.spec.OrderBy {
		keys[i] = sortKey{col: o.Column, kind: m.outKind[o.Column], format: m.out[o.Column].Format, desc: o.Desc, nullsF: o.NullsFirst}
	}
	for _, r := range rows {
		r.keys = make([]value, len(keys))
		if err := decodeKeys(keys, r.vals, r.keys); err != nil {
			return err
		}
	}
	slices.SortStableFunc(rows, func(a, b *finalRow) int { return compareRows(keys, a.keys, b.keys) })
	return nil
}
