package merge

import (
	"errors"
	"fmt"
	"io"
)

// ErrUnsorted reports a shard whose rows are not in the order the merge
// needs. Merging them anyway would give a wrong order, so the merge stops.
var ErrUnsorted = errors.New("merge: shard rows are not in ORDER BY order")

// sortKey is an ORDER BY item resolved to a column of the rows compared.
type sortKey struct {
	col    int
	kind   kind
	format int16
	desc   bool
	nullsF bool
}

// compareRows compares two rows' decoded sort keys.
func compareRows(keys []sortKey, a, b []value) int {
	for i := range keys {
		k := &keys[i]
		va, vb := &a[i], &b[i]
		var c int
		switch {
		case va.null && vb.null:
			continue
		case va.null:
			c = 1
			if k.nullsF {
				c = -1
			}
			return c
		case vb.null:
			c = -1
			if k.nullsF {
				c = 1
			}
			return c
		}
		c = compareValues(k.kind, va, vb)
		if k.desc {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return 0
}

// decodeKeys decodes a row's sort keys into dst.
func decodeKeys(keys []sortKey, vals [][]byte, dst []value) error {
	for i := range keys {
		k := &keys[i]
		if err := decodeValue(k.kind, k.format, vals[k.col], &dst[i]); err != nil {
			return err
		}
	}
	return nil
}

// cursor is one shard's position in a k-way merge.
type cursor struct {
	src     Source
	shard   int
	row     []byte
	vals    [][]byte
	keys    []value
	prev    []value // copy of the previous row's keys, for the order check
	hasPrev bool
}

func (m *Merger) streamKeys() []sortKey {
	keys := make([]sortKey, len(m.spec.OrderBy))
	for i, o := range m.spec.OrderBy {
		src := m.final[o.Column].Source
		keys[i] = sortKey{col: src, kind: m.inKind[src], format: m.in[src].Format, desc: o.Desc, nullsF: o.NullsFirst}
	}
	return keys
}

// projector rewrites shard rows to the final columns.
type projector struct {
	m    *Merger
	vals [][]byte
	out  [][]byte
	buf  []byte
}

func (p *projector) project(row []byte, vals [][]byte) ([]byte, error) {
	if p.m.identity {
		if vals == nil {
			if _, err := frameBody(row, 'D'); err != nil {
				return nil, err
			}
		}
		return row, nil
	}
	if vals == nil {
		var err error
		if p.vals, err = splitDataRow(row, len(p.m.in), p.vals); err != nil {
			return nil, err
		}
		vals = p.vals
	}
	p.out = p.out[:0]
	for _, j := range p.m.visible {
		p.out = append(p.out, vals[p.m.final[j].Source])
	}
	p.buf = appendDataRow(p.buf[:0], p.out)
	return p.buf, nil
}

func (m *Merger) stream(sources []Source, emit func([]byte) error) (int64, error) {
	lim := newLimiter(&m.spec, emit)
	p := projector{m: m}
	if len(m.spec.OrderBy) == 0 {
		for s, src := range sources {
			for {
				row, err := nextRow(src)
				if err == io.EOF {
					break
				}
				if err != nil {
					return lim.n, fmt.Errorf("shard %d: %w", s, err)
				}
				if lim.skip > 0 {
					lim.skip--
					continue
				}
				out, err := p.project(row, nil)
				if err != nil {
					return lim.n, fmt.Errorf("shard %d: %w", s, err)
				}
				if done, err := lim.put(out); done || err != nil {
					return lim.n, err
				}
			}
		}
		return lim.n, nil
	}

	keys := m.streamKeys()
	h := cursorHeap{cs: make([]*cursor, 0, len(sources)), keys: keys}
	for s, src := range sources {
		c := &cursor{src: src, shard: s, keys: make([]value, len(keys)), prev: make([]value, len(keys))}
		ok, err := m.advance(c, keys)
		if err != nil {
			return 0, err
		}
		if ok {
			h.cs = append(h.cs, c)
		}
	}
	h.init()
	for len(h.cs) > 0 {
		c := h.cs[0]
		out, err := p.project(c.row, c.vals)
		if err != nil {
			return lim.n, fmt.Errorf("shard %d: %w", c.shard, err)
		}
		if done, err := lim.put(out); done || err != nil {
			return lim.n, err
		}
		ok, err := m.advance(c, keys)
		if err != nil {
			return lim.n, err
		}
		if ok {
			h.fix0()
		} else {
			h.pop0()
		}
	}
	return lim.n, nil
}

// advance moves c to its shard's next row; false at the end.
func (m *Merger) advance(c *cursor, keys []sortKey) (bool, error) {
	if c.row != nil {
		for i := range c.keys {
			copyValue(&c.prev[i], &c.keys[i])
		}
		c.hasPrev = true
	}
	row, err := nextRow(c.src)
	if err == io.EOF {
		c.row = nil
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("shard %d: %w", c.shard, err)
	}
	c.row = row
	if c.vals, err = splitDataRow(row, len(m.in), c.vals); err != nil {
		return false, fmt.Errorf("shard %d: %w", c.shard, err)
	}
	if err := decodeKeys(keys, c.vals, c.keys); err != nil {
		return false, fmt.Errorf("shard %d: %w", c.shard, err)
	}
	if c.hasPrev && compareRows(keys, c.keys, c.prev) < 0 {
		return false, fmt.Errorf("%w: shard %d (a text key sorted under a collation other than \"C\"?)", ErrUnsorted, c.shard)
	}
	return true, nil
}

// cursorHeap is a min-heap of cursors by their current row; ties go to
// the lower shard number, which keeps equal rows in shard order.
type cursorHeap struct {
	cs   []*cursor
	keys []sortKey
}

func (h *cursorHeap) less(i, j int) bool {
	a, b := h.cs[i], h.cs[j]
	if c := compareRows(h.keys, a.keys, b.keys); c != 0 {
		return c < 0
	}
	return a.shard < b.shard
}

func (h *cursorHeap) init() {
	for i := len(h.cs)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *cursorHeap) fix0() { h.down(0) }

func (h *cursorHeap) pop0() {
	n := len(h.cs) - 1
	h.cs[0] = h.cs[n]
	h.cs[n] = nil
	h.cs = h.cs[:n]
	if n > 0 {
		h.down(0)
	}
}

func (h *cursorHeap) down(i int) {
	n := len(h.cs)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		j := l
		if r := l + 1; r < n && h.less(r, l) {
			j = r
		}
		if !h.less(j, i) {
			return
		}
		h.cs[i], h.cs[j] = h.cs[j], h.cs[i]
		i = j
	}
}
