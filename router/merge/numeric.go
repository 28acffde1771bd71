package merge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strconv"
)

// decimal is an exact PostgreSQL numeric: coef × 10^-scale, where scale is
// the display scale (dscale) PostgreSQL carries with every value, so that
// 1.50 prints as 1.50. Special values are NaN and ±Infinity (PostgreSQL 14+).
type decimal struct {
	coef  big.Int
	scale int32 // >= 0 for every value PostgreSQL sends
	spec  numSpecial
}

type numSpecial uint8

const (
	numFinite numSpecial = iota
	numNegInf
	numPosInf
	numNaN
)

// Binary numeric header constants (src/backend/utils/adt/numeric.c).
const (
	numericPos    = 0x0000
	numericNeg    = 0x4000
	numericNaN    = 0xC000
	numericPInf   = 0xD000
	numericNInf   = 0xF000
	numericNBase  = 10000
	decDigits     = 4
	minSigDigits  = 16   // NUMERIC_MIN_SIG_DIGITS
	maxDispScale  = 1000 // NUMERIC_MAX_DISPLAY_SCALE
	maxScaleInput = 16383
)

var (
	bigTen    = big.NewInt(10)
	bigNBase  = big.NewInt(numericNBase)
	errNumber = errors.New("malformed numeric")
)

func pow10(n int32) *big.Int {
	return new(big.Int).Exp(bigTen, big.NewInt(int64(n)), nil)
}

// parseNumericText parses numeric_out's output: [-]digits[.digits], NaN,
// Infinity or -Infinity.
func (d *decimal) parseText(s []byte) error {
	switch string(s) {
	case "NaN":
		d.spec = numNaN
		return nil
	case "Infinity":
		d.spec = numPosInf
		return nil
	case "-Infinity":
		d.spec = numNegInf
		return nil
	}
	d.spec = numFinite
	d.scale = 0
	neg := false
	i := 0
	if len(s) > 0 && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		i++
	}
	// Up to 19 digits accumulate in a uint64 (no allocation: the big.Int
	// keeps its storage from one value to the next); longer ones go
	// through big.Int's parser.
	var small uint64
	ndigits := 0
	seenDot := false
	for j := i; j < len(s); j++ {
		c := s[j]
		switch {
		case c >= '0' && c <= '9':
			if ndigits < 19 {
				small = small*10 + uint64(c-'0')
			}
			ndigits++
			if seenDot {
				d.scale++
			}
		case c == '.' && !seenDot:
			seenDot = true
		default:
			return fmt.Errorf("%w: %q", errNumber, s)
		}
	}
	if ndigits == 0 || d.scale > maxScaleInput {
		return fmt.Errorf("%w: %q", errNumber, s)
	}
	if ndigits <= 19 {
		d.coef.SetUint64(small)
	} else {
		digits := make([]byte, 0, len(s))
		for _, c := range s[i:] {
			if c != '.' {
				digits = append(digits, c)
			}
		}
		if _, ok := d.coef.SetString(string(digits), 10); !ok {
			return fmt.Errorf("%w: %q", errNumber, s)
		}
	}
	if neg {
		d.coef.Neg(&d.coef)
	}
	return nil
}

// parseBinary decodes numeric_send's output.
func (d *decimal) parseBinary(b []byte) error {
	if len(b) < 8 {
		return fmt.Errorf("%w: binary value of %d bytes", errNumber, len(b))
	}
	ndigits := int(binary.BigEndian.Uint16(b[0:]))
	weight := int32(int16(binary.BigEndian.Uint16(b[2:])))
	sign := binary.BigEndian.Uint16(b[4:])
	dscale := int32(binary.BigEndian.Uint16(b[6:]))
	if len(b) != 8+2*ndigits {
		return fmt.Errorf("%w: binary value of %d bytes for %d digits", errNumber, len(b), ndigits)
	}
	d.spec = numFinite
	switch sign {
	case numericPos, numericNeg:
	case numericNaN:
		d.spec = numNaN
		return nil
	case numericPInf:
		d.spec = numPosInf
		return nil
	case numericNInf:
		d.spec = numNegInf
		return nil
	default:
		return fmt.Errorf("%w: sign 0x%04x", errNumber, sign)
	}
	if dscale > maxScaleInput {
		return fmt.Errorf("%w: scale %d", errNumber, dscale)
	}
	d.coef.SetInt64(0)
	var dig big.Int
	for i := 0; i < ndigits; i++ {
		v := binary.BigEndian.Uint16(b[8+2*i:])
		if v >= numericNBase {
			return fmt.Errorf("%w: digit %d", errNumber, v)
		}
		d.coef.Mul(&d.coef, bigNBase)
		d.coef.Add(&d.coef, dig.SetInt64(int64(v)))
	}
	// value = coef × 10000^(weight-ndigits+1); we want coef × 10^-dscale.
	e := decDigits*(weight-int32(ndigits)+1) + dscale
	switch {
	case e > 0:
		d.coef.Mul(&d.coef, pow10(e))
	case e < 0:
		var rem big.Int
		d.coef.QuoRem(&d.coef, pow10(-e), &rem)
		if rem.Sign() != 0 {
			return fmt.Errorf("%w: digits beyond the display scale", errNumber)
		}
	}
	if sign == numericNeg {
		d.coef.Neg(&d.coef)
	}
	d.scale = dscale
	return nil
}

// appendText appends numeric_out's text for d.
func (d *decimal) appendText(dst []byte) []byte {
	switch d.spec {
	case numNaN:
		return append(dst, "NaN"...)
	case numPosInf:
		return append(dst, "Infinity"...)
	case numNegInf:
		return append(dst, "-Infinity"...)
	}
	if d.coef.Sign() < 0 {
		dst = append(dst, '-')
	}
	var s []byte
	var digits [20]byte
	switch {
	case d.coef.IsUint64(): // fits 64 bits (the common case): no big.Int conversion
		s = strconv.AppendUint(digits[:0], d.coef.Uint64(), 10)
	case d.coef.IsInt64(): // negative
		v := d.coef.Int64()
		s = strconv.AppendUint(digits[:0], uint64(-(v+1))+1, 10)
	default:
		var abs big.Int
		abs.Abs(&d.coef)
		s = abs.Append(digits[:0], 10)
	}
	sc := int(d.scale)
	if len(s) <= sc {
		dst = append(dst, '0')
		if sc > 0 {
			dst = append(dst, '.')
			for i := len(s); i < sc; i++ {
				dst = append(dst, '0')
			}
			dst = append(dst, s...)
		}
		return dst
	}
	dst = append(dst, s[:len(s)-sc]...)
	if sc > 0 {
		dst = append(dst, '.')
		dst = append(dst, s[len(s)-sc:]...)
	}
	return dst
}

// nbase returns the base-10000 digits of |d| (no leading or trailing zero
// digits) and the weight of the first one, as PostgreSQL stores them. Zero
// has no digits and weight 0.
func (d *decimal) nbase() (digits []int16, weight int32) {
	var abs big.Int
	abs.Abs(&d.coef)
	if abs.Sign() == 0 {
		return nil, 0
	}
	// Align the decimal point to a base-10000 digit boundary.
	pad := (decDigits - d.scale%decDigits) % decDigits
	if pad > 0 {
		abs.Mul(&abs, pow10(pad))
	}
	fracGroups := (d.scale + pad) / decDigits
	var rem big.Int
	for abs.Sign() != 0 {
		abs.QuoRem(&abs, bigNBase, &rem)
		digits = append(digits, int16(rem.Int64()))
	}
	// digits is little-endian; reverse.
	for i, j := 0, len(digits)-1; i < j; i, j = i+1, j-1 {
		digits[i], digits[j] = digits[j], digits[i]
	}
	weight = int32(len(digits)) - 1 - fracGroups
	for len(digits) > 0 && digits[len(digits)-1] == 0 {
		digits = digits[:len(digits)-1]
	}
	return digits, weight
}

// appendBinary appends numeric_send's bytes for d.
func (d *decimal) appendBinary(dst []byte) []byte {
	var sign uint16
	switch d.spec {
	case numNaN:
		sign = numericNaN
	case numPosInf:
		sign = numericPInf
	case numNegInf:
		sign = numericNInf
	}
	if d.spec != numFinite {
		dst = append(dst, 0, 0, 0, 0) // ndigits, weight
		dst = binary.BigEndian.AppendUint16(dst, sign)
		// numeric_send reads a special value's dscale from the short
		// header's dscale bits: 0 for NaN, 32 for ±Infinity.
		return binary.BigEndian.AppendUint16(dst, (sign&0x1F80)>>7)
	}
	digits, weight := d.nbase()
	if d.coef.Sign() < 0 {
		sign = numericNeg
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(digits)))
	dst = binary.BigEndian.AppendUint16(dst, uint16(int16(weight)))
	dst = binary.BigEndian.AppendUint16(dst, sign)
	dst = binary.BigEndian.AppendUint16(dst, uint16(d.scale))
	for _, g := range digits {
		dst = binary.BigEndian.AppendUint16(dst, uint16(g))
	}
	return dst
}

// cmp orders numerics as PostgreSQL does: -Infinity < finite values <
// Infinity < NaN, and NaN equals NaN.
func (d *decimal) cmp(o *decimal) int {
	if d.spec != numFinite || o.spec != numFinite {
		return cmpInt(specialRank(d.spec), specialRank(o.spec))
	}
	if d.scale == o.scale {
		return d.coef.Cmp(&o.coef)
	}
	if s1, s2 := d.coef.Sign(), o.coef.Sign(); s1 != s2 {
		return cmpInt(s1, s2)
	}
	var a, b big.Int
	a.Set(&d.coef)
	b.Set(&o.coef)
	if d.scale < o.scale {
		a.Mul(&a, pow10(o.scale-d.scale))
	} else {
		b.Mul(&b, pow10(d.scale-o.scale))
	}
	return a.Cmp(&b)
}

func specialRank(s numSpecial) int {
	switch s {
	case numNegInf:
		return -1
	case numFinite:
		return 0
	case numPosInf:
		return 1
	}
	return 2
}

// add sets d = d + o with PostgreSQL's rules: the result's display scale
// is the larger one; NaN absorbs; Infinity + -Infinity is NaN.
func (d *decimal) add(o *decimal) {
	if d.spec != numFinite || o.spec != numFinite {
		switch {
		case d.spec == numNaN || o.spec == numNaN:
			d.spec = numNaN
		case d.spec == numFinite:
			d.spec = o.spec
		case o.spec == numFinite || o.spec == d.spec:
			// d keeps its infinity
		default:
			d.spec = numNaN
		}
		return
	}
	switch {
	case d.scale == o.scale:
		d.coef.Add(&d.coef, &o.coef)
	case d.scale < o.scale:
		d.coef.Mul(&d.coef, pow10(o.scale-d.scale))
		d.coef.Add(&d.coef, &o.coef)
		d.scale = o.scale
	default:
		var b big.Int
		b.Mul(&o.coef, pow10(d.scale-o.scale))
		d.coef.Add(&d.coef, &b)
	}
}

// normalized returns a key that is equal for numerically equal values
// (1.0 and 1.00), as PostgreSQL's numeric equality and hashing treat them.
func (d *decimal) appendKey(dst []byte) []byte {
	switch d.spec {
	case numNaN:
		return append(dst, 'N')
	case numPosInf:
		return append(dst, 'I')
	case numNegInf:
		return append(dst, 'i')
	}
	if d.coef.Sign() == 0 {
		return append(dst, '0')
	}
	s := d.coef.Text(10)
	sc := int(d.scale)
	for len(s) > 1 && s[len(s)-1] == '0' {
		s = s[:len(s)-1]
		sc--
	}
	dst = append(dst, s...)
	dst = append(dst, 'e')
	return fmt.Appendf(dst, "%d", sc)
}

// divScale is select_div_scale from PostgreSQL's numeric.c: enough digits
// for NUMERIC_MIN_SIG_DIGITS significant digits, and at least either
// input's display scale.
func divScale(num, den *decimal) int32 {
	w1, f1 := firstDigit(num)
	w2, f2 := firstDigit(den)
	qweight := w1 - w2
	if f1 <= f2 {
		qweight--
	}
	rscale := minSigDigits - qweight*decDigits
	rscale = max(rscale, num.scale, den.scale, 0)
	return min(rscale, maxDispScale)
}

func firstDigit(d *decimal) (weight int32, first int16) {
	digits, w := d.nbase()
	if len(digits) == 0 {
		return 0, 0
	}
	return w, digits[0]
}

// div sets d = num / den as PostgreSQL's numeric_div does: the exact
// quotient rounded half away from zero to divScale digits. den must be a
// finite, non-zero value.
func (d *decimal) div(num, den *decimal) {
	if num.spec != numFinite {
		// NaN stays NaN; ±Infinity / positive count keeps its sign.
		d.spec = num.spec
		if den.coef.Sign() < 0 {
			switch num.spec {
			case numPosInf:
				d.spec = numNegInf
			case numNegInf:
				d.spec = numPosInf
			}
		}
		return
	}
	rscale := divScale(num, den)
	// num/den = (n / 10^ns) / (m / 10^ms); result coef = round(n × 10^(rscale+ms-ns) / m).
	var n, m big.Int
	n.Set(&num.coef)
	m.Set(&den.coef)
	if e := rscale + den.scale - num.scale; e >= 0 {
		n.Mul(&n, pow10(e))
	} else {
		m.Mul(&m, pow10(-e))
	}
	var q, r big.Int
	q.QuoRem(&n, &m, &r) // truncates toward zero
	r.Abs(&r)
	r.Lsh(&r, 1)
	var am big.Int
	am.Abs(&m)
	if r.Cmp(&am) >= 0 {
		if n.Sign()*m.Sign() < 0 {
			q.Sub(&q, big.NewInt(1))
		} else {
			q.Add(&q, big.NewInt(1))
		}
	}
	d.spec = numFinite
	d.coef.Set(&q)
	d.scale = rscale
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
