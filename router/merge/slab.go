package merge

import "math/big"

// slab hands out what an aggregating or DISTINCT merge keeps to its end —
// rows with their value slices and bytes, groups with their
// accumulators, the accumulators' numeric and min/max state — from
// chunks, so that merging many groups costs a few allocations per chunk
// rather than several per group. Everything it hands out lives as long as
// the longest-lived thing of its chunk.
type slab struct {
	rows   []finalRow
	vals   [][]byte
	bytes  []byte
	groups []group
	accs   []acc
	decs   []decimal
	words  []big.Word
	exts   []extreme
}

// slabRows is how many things of a kind a chunk holds.
const slabRows = 256

// decimalWords is the storage a numeric sum gets from the slab: 128 bits
// hold every sum of values that fit 64 bits; a larger one allocates its
// own.
const decimalWords = 2

// one takes one element from chunk, refilled with slabRows when empty.
func one[T any](chunk *[]T) *T {
	if len(*chunk) == 0 {
		*chunk = make([]T, slabRows)
	}
	p := &(*chunk)[0]
	*chunk = (*chunk)[1:]
	return p
}

// some takes n elements from chunk (capacity n: appending to them never
// reaches the next ones), refilled for slabRows of them when short.
func some[T any](chunk *[]T, n int) []T {
	if len(*chunk) < n {
		*chunk = make([]T, max(n, n*slabRows))
	}
	s := (*chunk)[:n:n]
	*chunk = (*chunk)[n:]
	return s
}

// row copies vals into the slab.
func (sl *slab) row(vals [][]byte, mem *budget) (*finalRow, error) {
	n := 0
	for _, v := range vals {
		n += len(v)
	}
	if err := mem.take(n + 24*len(vals) + 64); err != nil {
		return nil, err
	}
	r := one(&sl.rows)
	r.vals = some(&sl.vals, len(vals))
	if sl.bytes == nil || cap(sl.bytes)-len(sl.bytes) < n {
		// (never nil: an empty value's slice must not read as NULL)
		sl.bytes = make([]byte, 0, max(n, 16<<10))
	}
	for i, v := range vals {
		if v != nil {
			start := len(sl.bytes)
			sl.bytes = append(sl.bytes, v...)
			r.vals[i] = sl.bytes[start:len(sl.bytes):len(sl.bytes)]
		}
	}
	return r, nil
}

// group returns a new group with keys and nAccs accumulators.
func (sl *slab) group(keys [][]byte, nAccs int) *group {
	g := one(&sl.groups)
	g.keys = keys
	g.accs = some(&sl.accs, nAccs)
	return g
}

// decimal returns a zero numeric on slab storage.
func (sl *slab) decimal() *decimal {
	d := one(&sl.decs)
	d.coef.SetBits(some(&sl.words, decimalWords)[:0])
	return d
}

// extreme returns an empty min/max state.
func (sl *slab) extreme() *extreme { return one(&sl.exts) }
