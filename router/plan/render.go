package plan

import (
	"strings"

	"github.com/pgshard/pgshard/router/merge"
)

// segment is a piece of a rewritten statement: text, then literal lit of
// the execution (when lit >= 0).
type segment struct {
	text string
	lit  int32
	gate int32 // 1 + the UNION ALL part whose LIMIT follows ("ALL" or "0"); 0: none
}

func renderSegments(segs []segment, in *execInput) string { return renderGated(segs, in, nil) }

// renderGated renders segments with the UNION ALL parts open[i] true
// unlimited and the others LIMIT 0.
func renderGated(segs []segment, in *execInput, open []bool) string {
	n := 0
	for _, s := range segs {
		n += len(s.text)
		if s.lit >= 0 && int(s.lit) < len(in.norm.lits) {
			l := in.norm.lits[s.lit]
			n += int(l.end - l.start)
		}
	}
	var b strings.Builder
	b.Grow(n + 2)
	for i, s := range segs {
		b.WriteString(s.text)
		if s.lit >= 0 && int(s.lit) < len(in.norm.lits) {
			lit := in.norm.text(in.sql, int(s.lit))
			// A negative number the deparser put before a cast, a
			// subscript or a field, which bind tighter than unary minus:
			// (-3)::text or CAST(-3 AS text) become (-3)::text, not
			// -3::text. Written -3::text in the statement itself it means
			// -(3::text), and stays so.
			if strings.HasPrefix(lit, "-") && i+1 < len(segs) && bindsTighter(segs[i+1].text) &&
				!bindsTighter(strings.TrimLeft(in.sql[in.norm.lits[s.lit].end:], " \t\r\n")) {
				lit = "(" + lit + ")"
			}
			b.WriteString(lit)
		}
		if s.gate > 0 {
			if open != nil && open[s.gate-1] {
				b.WriteString("ALL")
			} else {
				b.WriteString("0")
			}
		}
	}
	return b.String()
}

// bindsTighter reports whether text starts with an operator that binds
// tighter than unary minus.
func bindsTighter(text string) bool {
	return strings.HasPrefix(text, "::") || strings.HasPrefix(text, "[") || strings.HasPrefix(text, ".")
}

// limitSrc says where a scatter's LIMIT and OFFSET come from.
type limitSrc struct {
	count, offset valueSrc
	hasCount      bool
	hasOffset     bool
}

func (l *limitSrc) fill(spec *merge.Spec, in *execInput) (*merge.Spec, error) {
	s := *spec
	if l.hasCount {
		v, bin, err := l.count.raw(in)
		if err != nil {
			return nil, err
		}
		if s.Limit, err = intValue(v, bin); err != nil {
			return nil, err
		}
	}
	if l.hasOffset {
		v, bin, err := l.offset.raw(in)
		if err != nil {
			return nil, err
		}
		if s.Offset, err = intValue(v, bin); err != nil {
			return nil, err
		}
	}
	return &s, nil
}

func intValue(v string, bin bool) (int64, error) {
	if bin {
		switch len(v) {
		case 8:
			return int64(uint64(v[0])<<56 | uint64(v[1])<<48 | uint64(v[2])<<40 | uint64(v[3])<<32 | uint64(v[4])<<24 | uint64(v[5])<<16 | uint64(v[6])<<8 | uint64(v[7])), nil
		case 4:
			return int64(int32(uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3]))), nil
		}
	}
	return parseInt(v)
}
