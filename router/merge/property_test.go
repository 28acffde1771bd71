package merge

import (
	"cmp"
	"math/big"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// prow is a generated row: g int4, n numeric, s text, i int4; nil = NULL.
type prow [4]*string

var propCols = []col{{"g", oidInt4, 0}, {"n", oidNumeric, 0}, {"s", oidText, 0}, {"i", oidInt4, 0}}

func genRows(rng *rand.Rand, n int) []prow {
	str := func(s string) *string { return &s }
	maybe := func(s string) *string {
		if rng.IntN(10) == 0 {
			return nil
		}
		return str(s)
	}
	out := make([]prow, n)
	for k := range out {
		scale := rng.IntN(4)
		num := new(big.Rat).SetFrac64(int64(rng.IntN(41)-20), 1)
		num.Quo(num, new(big.Rat).SetInt64(int64(rng.IntN(4)+1)))
		var sb strings.Builder
		for j := rng.IntN(3); j > 0; j-- {
			sb.WriteByte("aBc"[rng.IntN(3)])
		}
		out[k] = prow{maybe(strconv.Itoa(rng.IntN(4))), maybe(num.FloatString(scale)), maybe(sb.String()), maybe(strconv.Itoa(rng.IntN(2001) - 1000))}
	}
	return out
}

func ratOf(s string) *big.Rat {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		panic(s)
	}
	return r
}

func scaleOf(s string) int {
	if i := strings.IndexByte(s, '.'); i >= 0 {
		return len(s) - i - 1
	}
	return 0
}

// refCompare compares two text values of column c independently of the
// merger's code. Non-NULL only.
func refCompare(c int, a, b string) int {
	switch c {
	case 0, 3:
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return cmp.Compare(x, y)
	case 1:
		return ratOf(a).Cmp(ratOf(b))
	}
	return strings.Compare(a, b)
}

type refKey struct {
	col              int
	desc, nullsFirst bool
}

func refSort(rs [][]*string, keys []refKey, kinds []int) {
	slices.SortStableFunc(rs, func(a, b []*string) int {
		for _, k := range keys {
			x, y := a[k.col], b[k.col]
			var c int
			switch {
			case x == nil && y == nil:
				continue
			case x == nil || y == nil:
				c = 1
				if x != nil {
					c = -1
				}
				if k.nullsFirst {
					c = -c
				}
				return c
			}
			c = refCompare(kinds[k.col], *x, *y)
			if k.desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return 0
	})
}

func toFrames(rs [][]*string) [][]byte {
	out := make([][]byte, len(rs))
	for i, r := range rs {
		vals := make([]any, len(r))
		for j, v := range r {
			if v != nil {
				vals[j] = *v
			}
		}
		out[i] = row(vals...)
	}
	return out
}

func toStrings(rs [][]*string) [][]string {
	out := make([][]string, len(rs))
	for i, r := range rs {
		out[i] = make([]string, len(r))
		for j, v := range r {
			out[i][j] = "NULL"
			if v != nil {
				out[i][j] = *v
			}
		}
	}
	return out
}

func limitRows[T any](rs []T, off, lim int64) []T {
	if off >= int64(len(rs)) {
		return nil
	}
	rs = rs[off:]
	if lim >= 0 && lim < int64(len(rs)) {
		rs = rs[:lim]
	}
	return rs
}

// refAvg is numeric_div(sum, count) computed from first principles: the
// result scale gives 16 significant digits (by base-10000 weights as
// PostgreSQL estimates them), at least the sum's scale; rounded half away
// from zero.
func refAvg(sum *big.Rat, sumScale int, count int64) string {
	weightAndFirst := func(v *big.Rat) (int, int64) {
		a := new(big.Rat).Abs(v)
		if a.Sign() == 0 {
			return 0, 0
		}
		w := 0
		base := big.NewRat(10000, 1)
		for a.Cmp(base) >= 0 {
			a.Quo(a, base)
			w++
		}
		for a.Cmp(big.NewRat(1, 1)) < 0 {
			a.Mul(a, base)
			w--
		}
		f, _ := new(big.Int).Quo(a.Num(), a.Denom()), 0
		return w, f.Int64()
	}
	w1, f1 := weightAndFirst(sum)
	w2, f2 := weightAndFirst(new(big.Rat).SetInt64(count))
	q := w1 - w2
	if f1 <= f2 {
		q--
	}
	rscale := max(16-4*q, sumScale, 0)
	v := new(big.Rat).Quo(sum, new(big.Rat).SetInt64(count))
	// Round half away from zero at rscale.
	p := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(rscale)), nil)
	x := new(big.Rat).Mul(new(big.Rat).Abs(v), new(big.Rat).SetInt(p))
	x.Add(x, big.NewRat(1, 2))
	n := new(big.Int).Quo(x.Num(), x.Denom())
	res := new(big.Rat).SetFrac(n, p)
	if v.Sign() < 0 {
		res.Neg(res)
	}
	s := res.FloatString(rscale)
	if strings.Trim(s, "-0.") == "" {
		s = strings.TrimPrefix(s, "-")
	}
	return s
}

// partials computes what each shard returns for
// SELECT g, count(*), sum(i), sum(n), count(n), min(s), max(s) GROUP BY g.
func partials(rs []prow, grouped bool) [][]*string {
	type agg struct {
		g          *string
		cnt, cntN  int64
		sumI       int64
		hasI       bool
		sumN       *big.Rat
		scaleN     int
		minS, maxS *string
	}
	var order []*agg
	idx := map[string]*agg{}
	for _, r := range rs {
		key := "NULL"
		if grouped && r[0] != nil {
			key = *r[0]
		}
		a := idx[key]
		if a == nil {
			a = &agg{}
			if grouped {
				a.g = r[0]
			}
			idx[key] = a
			order = append(order, a)
		}
		a.cnt++
		if r[3] != nil {
			v, _ := strconv.ParseInt(*r[3], 10, 64)
			a.sumI += v
			a.hasI = true
		}
		if r[1] != nil {
			if a.sumN == nil {
				a.sumN = new(big.Rat)
			}
			a.sumN.Add(a.sumN, ratOf(*r[1]))
			a.scaleN = max(a.scaleN, scaleOf(*r[1]))
			a.cntN++
		}
		if r[2] != nil {
			if a.minS == nil || *r[2] < *a.minS {
				a.minS = r[2]
			}
			if a.maxS == nil || *r[2] > *a.maxS {
				a.maxS = r[2]
			}
		}
	}
	if !grouped && len(order) == 0 {
		order = append(order, &agg{})
	}
	var out [][]*string
	for _, a := range order {
		str := func(s string) *string { return &s }
		r := []*string{a.g, str(strconv.FormatInt(a.cnt, 10)), nil, nil, str(strconv.FormatInt(a.cntN, 10)), a.minS, a.maxS, nil}
		if a.hasI {
			r[2] = str(strconv.FormatInt(a.sumI, 10))
		}
		if a.sumN != nil {
			r[3] = str(a.sumN.FloatString(a.scaleN))
			r[7] = str(refAvg(a.sumN, a.scaleN, a.cntN))
		}
		out = append(out, r)
	}
	return out
}

var aggCols = []col{{"g", oidInt4, 0}, {"count", oidInt8, 0}, {"sum", oidInt8, 0}, {"sum", oidNumeric, 0}, {"count", oidInt8, 0}, {"min", oidText, 0}, {"max", oidText, 0}}

func TestProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 1500; iter++ {
		all := genRows(rng, rng.IntN(40))
		nshards := 1 + rng.IntN(4)
		split := make([][]prow, nshards)
		for _, r := range all {
			s := rng.IntN(nshards)
			split[s] = append(split[s], r)
		}
		off := int64(0)
		lim := int64(-1)
		if rng.IntN(2) == 0 {
			off, lim = int64(rng.IntN(5)), int64(rng.IntN(12))
		}
		var spec Spec
		var shardRows [][][]*string
		var want [][]*string
		var desc []byte
		mode := rng.IntN(3)
		switch mode {
		case 0: // streaming merge
			var keys []refKey
			for k := 1 + rng.IntN(2); k > 0; k-- {
				desc := rng.IntN(2) == 0
				keys = append(keys, refKey{col: rng.IntN(4), desc: desc, nullsFirst: desc != (rng.IntN(4) == 0)})
			}
			for _, k := range keys {
				spec.OrderBy = append(spec.OrderBy, SortKey{Column: k.col, Desc: k.desc, NullsFirst: k.nullsFirst})
			}
			for _, sh := range split {
				rs := rowsOf(sh)
				refSort(rs, keys, []int{0, 1, 2, 3})
				shardRows = append(shardRows, rs)
				want = append(want, rs...)
			}
			refSort(want, keys, []int{0, 1, 2, 3})
			desc = rowDesc(t, propCols...)
		case 1: // GROUP BY g (or no GROUP BY)
			grouped := rng.IntN(4) > 0
			for _, sh := range split {
				p := partials(sh, grouped)
				for j := range p {
					p[j] = p[j][:7] // the shards send no avg
				}
				if !grouped {
					for _, r := range p {
						r[0] = nil
					}
				}
				shardRows = append(shardRows, p)
			}
			want = partials(all, grouped)
			// Final: g, count, sum(i), sum(n), min(s), max(s), avg(n).
			spec.Combine = []Combine{CombineNone, CombineCount, CombineSum, CombineSum, CombineCount, CombineMin, CombineMax}
			cols := aggCols
			if !grouped {
				spec.Combine = spec.Combine[1:]
				cols = cols[1:]
				for i := range shardRows {
					for j := range shardRows[i] {
						shardRows[i][j] = shardRows[i][j][1:]
					}
				}
				for j := range want {
					want[j] = want[j][1:]
				}
			}
			base := len(cols) - 6 // 1 when grouped
			for c := 0; c < base; c++ {
				spec.Final = append(spec.Final, FinalColumn{Source: c})
			}
			spec.Final = append(spec.Final, FinalColumn{Source: base}, FinalColumn{Source: base + 1}, FinalColumn{Source: base + 2},
				FinalColumn{Source: base + 4}, FinalColumn{Source: base + 5}, FinalColumn{Kind: FinalAvg, Source: base + 2, CountSource: base + 3})
			for j, r := range want { // drop count(n), as Final does
				want[j] = append(append([]*string{}, r[:base+3]...), r[base+4:]...)
			}
			if grouped {
				spec.OrderBy = []SortKey{{Column: 0, Desc: rng.IntN(2) == 0, NullsFirst: rng.IntN(2) == 0}}
				if rng.IntN(2) == 0 { // count desc, then g
					spec.OrderBy = append([]SortKey{{Column: 1, Desc: true}}, spec.OrderBy...)
				}
				var keys []refKey
				for _, k := range spec.OrderBy {
					keys = append(keys, refKey{col: k.Column, desc: k.Desc, nullsFirst: k.NullsFirst})
				}
				refSort(want, keys, []int{0, 3, 0, 1, 2, 2, 1})
			} else {
				off, lim = 0, -1
			}
			desc = rowDesc(t, cols...)
		case 2: // DISTINCT n, s ORDER BY both
			spec.Distinct = true
			spec.Final = []FinalColumn{{Source: 1}, {Source: 2}}
			keys := []refKey{{col: 0, desc: rng.IntN(2) == 0}, {col: 1, nullsFirst: true}}
			spec.OrderBy = []SortKey{{Column: 0, Desc: keys[0].desc, NullsFirst: keys[0].desc}, {Column: 1, NullsFirst: true}}
			keys[0].nullsFirst = keys[0].desc
			var seen []([2]*string)
			for _, sh := range split {
				rs := rowsOf(sh)
				shardRows = append(shardRows, rs)
				for _, r := range rs {
					dup := false
					for _, o := range seen {
						if eqNum(o[0], r[1]) && eqStr(o[1], r[2]) {
							dup = true
							break
						}
					}
					if !dup {
						seen = append(seen, [2]*string{r[1], r[2]})
						want = append(want, []*string{r[1], r[2]})
					}
				}
			}
			refSort(want, keys, []int{1, 2})
			desc = rowDesc(t, propCols...)
		}
		spec.Offset, spec.Limit = off, lim
		want = limitRows(want, off, lim)
		frames := make([][][]byte, len(shardRows))
		for i, rs := range shardRows {
			frames[i] = toFrames(rs)
		}
		got, err := merge(t, &spec, desc, frames)
		if err != nil {
			t.Fatalf("iter %d mode %d: %v\nspec %+v", iter, mode, err, spec)
		}
		g, w := texts(got), toStrings(want)
		if len(g) == 0 && len(w) == 0 {
			continue
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("iter %d mode %d, %d shards, spec %+v\n got  %q\n want %q", iter, mode, nshards, spec, g, w)
		}
	}
}

func rowsOf(ps []prow) [][]*string {
	out := make([][]*string, len(ps))
	for i := range ps {
		out[i] = ps[i][:]
	}
	return out
}

func eqNum(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return ratOf(*a).Cmp(ratOf(*b)) == 0
}

func eqStr(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
