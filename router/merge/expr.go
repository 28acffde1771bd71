package merge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
)

// ExprOp is an operation of an Expr.
type ExprOp uint8

// Expression operations: the few PostgreSQL casts, operators and
// functions the merger evaluates over combined aggregates, with
// PostgreSQL's result types, rounding and overflow errors.
const (
	ExprColumn ExprOp = iota // the value of final column Column (an aggregate)
	ExprConst                // an integer (int4, else int8) or decimal (numeric) literal, Text
	ExprCast                 // Args[0]::Type (Type "int2", "int4", "int8", "numeric", "float8", "text"; Typmod for numeric(p,s))
	ExprRound                // round(Args[0]) or round(Args[0], Args[1] an integer constant)
	ExprAdd                  // Args[0] + Args[1]
	ExprSub                  // Args[0] - Args[1]
	ExprMul                  // Args[0] * Args[1]
	ExprDiv                  // Args[0] / Args[1]
)

// ErrDivisionByZero is PostgreSQL's division by zero (SQLSTATE 22012) in
// an expression the merger computes.
var ErrDivisionByZero = errors.New("division by zero")

// Expr is an expression over the final values of other (hidden) final
// columns, computed after the merge: count(*)::int, round(avg(x), 2),
// max(x) - min(x).
type Expr struct {
	Op     ExprOp
	Column int    // ExprColumn
	Text   string // ExprConst
	Type   string // ExprCast
	Typmod int32  // ExprCast to numeric: (precision << 16 | scale) + 4, else -1
	Args   []*Expr
}

// xtype is the type of an expression value.
type xtype uint8

const (
	xInvalid xtype = iota
	xInt2
	xInt4
	xInt8
	xNumeric
	xFloat8
	xText
)

var xtypeOIDs = [...]uint32{xInt2: oidInt2, xInt4: oidInt4, xInt8: oidInt8, xNumeric: oidNumeric, xFloat8: oidFloat8, xText: oidText}
var xtypeSizes = [...]int16{xInt2: 2, xInt4: 4, xInt8: 8, xNumeric: -1, xFloat8: 8, xText: -1}

func xtypeOf(oid uint32) xtype {
	switch oid {
	case oidInt2:
		return xInt2
	case oidInt4:
		return xInt4
	case oidInt8:
		return xInt8
	case oidNumeric:
		return xNumeric
	case oidFloat8:
		return xFloat8
	}
	return xInvalid
}

func isIntType(t xtype) bool { return t == xInt2 || t == xInt4 || t == xInt8 }

// xval is one expression value.
type xval struct {
	null bool
	t    xtype
	i    int64
	f    float64
	n    decimal
	s    []byte
}

// exprType returns the type PostgreSQL gives e, or an *UnsupportedError
// (with what) for what the merger does not evaluate. types gives final
// columns' types.
func exprType(e *Expr, types func(int) (xtype, bool), what string) (xtype, error) {
	unsupported := func(why string) (xtype, error) {
		return xInvalid, &UnsupportedError{Op: "compute", Column: what, Type: why}
	}
	switch e.Op {
	case ExprColumn:
		t, ok := types(e.Column)
		if !ok || t == xInvalid || t == xText {
			return unsupported("an expression over an aggregate of this type")
		}
		return t, nil
	case ExprConst:
		var v xval
		if err := constValue(e.Text, &v); err != nil {
			return unsupported("an expression with constant " + e.Text)
		}
		return v.t, nil
	case ExprCast:
		if len(e.Args) != 1 {
			return xInvalid, fmt.Errorf("%w: cast with %d arguments", ErrInvalidSpec, len(e.Args))
		}
		from, err := exprType(e.Args[0], types, what)
		if err != nil {
			return xInvalid, err
		}
		to := map[string]xtype{"int2": xInt2, "int4": xInt4, "int8": xInt8, "numeric": xNumeric, "float8": xFloat8, "text": xText}[e.Type]
		switch {
		case to == xInvalid:
			return unsupported("a cast to " + e.Type)
		case e.Typmod >= 0 && to != xNumeric:
			return unsupported("a cast with a type modifier")
		case from == xFloat8 && (to == xNumeric || to == xText):
			return unsupported("a cast of double precision to " + e.Type)
		}
		return to, nil
	case ExprRound:
		if len(e.Args) == 0 || len(e.Args) > 2 {
			return xInvalid, fmt.Errorf("%w: round with %d arguments", ErrInvalidSpec, len(e.Args))
		}
		t, err := exprType(e.Args[0], types, what)
		if err != nil {
			return xInvalid, err
		}
		if len(e.Args) == 2 {
			if e.Args[1].Op != ExprConst {
				return unsupported("round() to a computed number of digits")
			}
			if st, err := exprType(e.Args[1], types, what); err != nil || st != xInt4 {
				return unsupported("round() to " + e.Args[1].Text + " digits")
			}
			if t == xFloat8 {
				return unsupported("round(double precision, integer), which PostgreSQL does not have")
			}
			return xNumeric, nil
		}
		if isIntType(t) {
			return unsupported("round() of an integer")
		}
		return t, nil
	case ExprAdd, ExprSub, ExprMul, ExprDiv:
		if len(e.Args) != 2 {
			return xInvalid, fmt.Errorf("%w: operator with %d arguments", ErrInvalidSpec, len(e.Args))
		}
		a, err := exprType(e.Args[0], types, what)
		if err != nil {
			return xInvalid, err
		}
		b, err := exprType(e.Args[1], types, what)
		if err != nil {
			return xInvalid, err
		}
		return binaryType(a, b), nil
	}
	return xInvalid, fmt.Errorf("%w: unknown expression op %d", ErrInvalidSpec, e.Op)
}

// binaryType is the result type of +, - and * between a and b, as
// PostgreSQL resolves the operators: smallint with smallint stays
// smallint, integers widen to the wider one (at least integer), numeric
// with an integer is numeric, and double precision wins over both.
func binaryType(a, b xtype) xtype {
	switch {
	case a == xFloat8 || b == xFloat8:
		return xFloat8
	case a == xNumeric || b == xNumeric:
		return xNumeric
	case a == xInt8 || b == xInt8:
		return xInt8
	case a == xInt2 && b == xInt2:
		return xInt2
	}
	return xInt4
}

func constValue(text string, v *xval) error {
	if i, err := strconv.ParseInt(text, 10, 64); err == nil {
		v.i = i
		v.t = xInt8
		if i >= math.MinInt32 && i <= math.MaxInt32 {
			v.t = xInt4
		}
		return nil
	}
	v.t = xNumeric
	return v.n.parseText([]byte(text))
}

// evalExpr computes e; col returns final column values.
func evalExpr(e *Expr, col func(int, *xval) error, dst *xval) error {
	switch e.Op {
	case ExprColumn:
		return col(e.Column, dst)
	case ExprConst:
		dst.null = false
		return constValue(e.Text, dst)
	case ExprCast:
		if err := evalExpr(e.Args[0], col, dst); err != nil || dst.null {
			return err
		}
		return castValue(dst, e.Type, e.Typmod)
	case ExprRound:
		if err := evalExpr(e.Args[0], col, dst); err != nil || dst.null {
			return err
		}
		if dst.t == xFloat8 {
			dst.f = math.RoundToEven(dst.f)
			return nil
		}
		digits := int64(0)
		if len(e.Args) == 2 {
			var d xval
			if err := constValue(e.Args[1].Text, &d); err != nil {
				return err
			}
			digits = d.i
		}
		toNumeric(dst)
		if dst.n.spec == numFinite {
			roundDecimal(&dst.n, int32(max(min(digits, 2000), -2000)))
		}
		return nil
	default:
		var b xval
		if err := evalExpr(e.Args[0], col, dst); err != nil {
			return err
		}
		if err := evalExpr(e.Args[1], col, &b); err != nil {
			return err
		}
		if dst.null || b.null {
			dst.null = true
			return nil
		}
		return arith(e.Op, dst, &b)
	}
}

// toNumeric converts an integer value to numeric.
func toNumeric(v *xval) {
	if isIntType(v.t) {
		v.n.spec, v.n.scale = numFinite, 0
		v.n.coef.SetInt64(v.i)
		v.t = xNumeric
	}
}

func toFloat(v *xval) error {
	switch {
	case isIntType(v.t):
		v.f = float64(v.i)
	case v.t == xNumeric:
		switch v.n.spec {
		case numNaN:
			v.f = math.NaN()
		case numPosInf:
			v.f = math.Inf(1)
		case numNegInf:
			v.f = math.Inf(-1)
		default:
			f, err := strconv.ParseFloat(string(v.n.appendText(nil)), 64)
			if err != nil {
				return fmt.Errorf("double precision %w", ErrOutOfRange)
			}
			v.f = f
		}
	}
	v.t = xFloat8
	return nil
}

func intRange(t xtype) (lo, hi int64, name string) {
	switch t {
	case xInt2:
		return math.MinInt16, math.MaxInt16, "smallint"
	case xInt4:
		return math.MinInt32, math.MaxInt32, "integer"
	}
	return math.MinInt64, math.MaxInt64, "bigint"
}

func castValue(v *xval, to string, typmod int32) error {
	switch to {
	case "int2", "int4", "int8":
		t := map[string]xtype{"int2": xInt2, "int4": xInt4, "int8": xInt8}[to]
		lo, hi, name := intRange(t)
		switch v.t {
		case xNumeric:
			if v.n.spec != numFinite {
				return &UnsupportedError{Op: "convert", Column: string(v.n.appendText(nil)), Type: name}
			}
			var d decimal
			d.coef.Set(&v.n.coef)
			d.scale = v.n.scale
			roundDecimal(&d, 0)
			if !d.coef.IsInt64() {
				return fmt.Errorf("%s %w", name, ErrOutOfRange)
			}
			v.i = d.coef.Int64()
		case xFloat8:
			f := math.RoundToEven(v.f)
			if math.IsNaN(f) || f < float64(lo) || f >= -float64(lo) {
				return fmt.Errorf("%s %w", name, ErrOutOfRange)
			}
			v.i = int64(f)
		}
		if v.i < lo || v.i > hi {
			return fmt.Errorf("%s %w", name, ErrOutOfRange)
		}
		v.t = t
	case "numeric":
		toNumeric(v)
		if typmod >= 4 {
			return applyTypmod(&v.n, typmod)
		}
	case "float8":
		return toFloat(v)
	case "text":
		var s []byte
		switch {
		case isIntType(v.t):
			s = strconv.AppendInt(nil, v.i, 10)
		case v.t == xNumeric:
			s = v.n.appendText(nil)
		}
		v.s, v.t = s, xText
	}
	return nil
}

// applyTypmod rounds d to numeric(p, s) as PostgreSQL's apply_typmod:
// half away from zero to s digits, an error when the integer part has
// more than p - s digits or d is infinite.
func applyTypmod(d *decimal, typmod int32) error {
	p, s := (typmod-4)>>16&0xffff, (typmod-4)&0x7ff
	if s&0x400 != 0 { // a negative scale (PostgreSQL 15+): 11 bits, signed
		s -= 0x800
	}
	switch d.spec {
	case numNaN:
		return nil
	case numPosInf, numNegInf:
		return fmt.Errorf("numeric field overflow: %w", ErrOutOfRange)
	}
	roundDecimal(d, s)
	var abs big.Int
	abs.Abs(&d.coef)
	intDigits := len(abs.Text(10)) - int(d.scale)
	if abs.Sign() != 0 && intDigits > int(p-s) {
		return fmt.Errorf("numeric field overflow: %w", ErrOutOfRange)
	}
	return nil
}

// roundDecimal rounds d half away from zero to s decimal digits (s < 0:
// to tens, hundreds, ...) and sets its display scale to max(s, 0).
func roundDecimal(d *decimal, s int32) {
	if s >= d.scale {
		d.coef.Mul(&d.coef, pow10(s-d.scale))
		d.scale = s
		return
	}
	div := pow10(d.scale - s)
	var q, r big.Int
	q.QuoRem(&d.coef, div, &r)
	r.Abs(&r)
	r.Lsh(&r, 1)
	if r.Cmp(div) >= 0 {
		if d.coef.Sign() < 0 {
			q.Sub(&q, big.NewInt(1))
		} else {
			q.Add(&q, big.NewInt(1))
		}
	}
	d.coef.Set(&q)
	d.scale = s
	if s < 0 {
		d.coef.Mul(&d.coef, pow10(-s))
		d.scale = 0
	}
}

func arith(op ExprOp, a, b *xval) error {
	t := binaryType(a.t, b.t)
	switch t {
	case xFloat8:
		if err := toFloat(a); err != nil {
			return err
		}
		if err := toFloat(b); err != nil {
			return err
		}
		var r float64
		switch op {
		case ExprAdd:
			r = a.f + b.f
		case ExprSub:
			r = a.f - b.f
		case ExprDiv:
			if b.f == 0 && !math.IsNaN(a.f) {
				return ErrDivisionByZero
			}
			r = a.f / b.f
			if r == 0 && a.f != 0 && !math.IsInf(b.f, 0) {
				return fmt.Errorf("%w: underflow", ErrOutOfRange)
			}
		default:
			r = a.f * b.f
			if r == 0 && a.f != 0 && b.f != 0 {
				return fmt.Errorf("%w: underflow", ErrOutOfRange)
			}
		}
		if math.IsInf(r, 0) && !math.IsInf(a.f, 0) && !math.IsInf(b.f, 0) {
			return fmt.Errorf("%w: overflow", ErrOutOfRange)
		}
		a.f = r
	case xNumeric:
		toNumeric(a)
		toNumeric(b)
		switch op {
		case ExprAdd:
			a.n.add(&b.n)
		case ExprSub:
			neg := b.n
			neg.coef.Neg(&b.n.coef)
			switch b.n.spec {
			case numPosInf:
				neg.spec = numNegInf
			case numNegInf:
				neg.spec = numPosInf
			}
			a.n.add(&neg)
		case ExprDiv:
			if err := divDecimal(&a.n, &b.n); err != nil {
				return err
			}
		default:
			mulDecimal(&a.n, &b.n)
		}
	default:
		lo, hi, name := intRange(t)
		var r int64
		overflow := false
		switch op {
		case ExprAdd:
			r = a.i + b.i
			overflow = (r > a.i) != (b.i > 0)
		case ExprSub:
			r = a.i - b.i
			overflow = (r < a.i) != (b.i > 0)
		case ExprDiv:
			if b.i == 0 {
				return ErrDivisionByZero
			}
			if b.i == -1 {
				r, overflow = -a.i, a.i == math.MinInt64
			} else {
				r = a.i / b.i // truncates toward zero, as PostgreSQL's
			}
		default:
			r = a.i * b.i
			overflow = a.i != 0 && (r/a.i != b.i || a.i == -1 && b.i == math.MinInt64)
		}
		if overflow || r < lo || r > hi {
			return fmt.Errorf("%s %w", name, ErrOutOfRange)
		}
		a.i = r
	}
	a.t = t
	return nil
}

// divDecimal sets d = d / o as PostgreSQL's numeric_div: NaN absorbs,
// ±Infinity divided by a finite value keeps the quotient's sign, a finite
// value divided by ±Infinity is 0, division by zero is an error.
func divDecimal(d, o *decimal) error {
	if o.spec == numFinite && o.coef.Sign() == 0 && d.spec != numNaN {
		return ErrDivisionByZero
	}
	if d.spec != numFinite || o.spec != numFinite {
		switch {
		case d.spec == numNaN || o.spec == numNaN:
			d.spec = numNaN
		case d.spec == numFinite: // finite / ±Infinity
			d.spec, d.scale = numFinite, 0
			d.coef.SetInt64(0)
		case o.spec != numFinite: // ±Infinity / ±Infinity
			d.spec = numNaN
		case o.coef.Sign() < 0:
			if d.spec == numPosInf {
				d.spec = numNegInf
			} else {
				d.spec = numPosInf
			}
		}
		return nil
	}
	var num decimal
	num.coef.Set(&d.coef)
	num.scale = d.scale
	d.div(&num, o)
	return nil
}

// mulDecimal sets d = d × o; the display scale is the sum of both, as in
// PostgreSQL's numeric_mul.
func mulDecimal(d, o *decimal) {
	if d.spec != numFinite || o.spec != numFinite {
		sign := func(x *decimal) int {
			switch x.spec {
			case numPosInf:
				return 1
			case numNegInf:
				return -1
			}
			return x.coef.Sign()
		}
		s := sign(d) * sign(o)
		switch {
		case d.spec == numNaN || o.spec == numNaN || s == 0:
			d.spec = numNaN
		case s > 0:
			d.spec = numPosInf
		default:
			d.spec = numNegInf
		}
		return
	}
	d.coef.Mul(&d.coef, &o.coef)
	d.scale += o.scale
}

// appendXval encodes v as type v.t in the given format.
func appendXval(dst []byte, v *xval, binaryFmt bool, floatDigits int) []byte {
	switch v.t {
	case xInt2:
		if binaryFmt {
			return binary.BigEndian.AppendUint16(dst, uint16(v.i))
		}
	case xInt4:
		if binaryFmt {
			return binary.BigEndian.AppendUint32(dst, uint32(v.i))
		}
	case xInt8:
		return appendInt8(dst, v.i, binaryFmt)
	case xNumeric:
		return appendNumeric(dst, &v.n, binaryFmt)
	case xFloat8:
		return appendFloat(dst, v.f, 64, binaryFmt, floatDigits)
	case xText:
		return append(dst, v.s...)
	}
	return strconv.AppendInt(dst, v.i, 10)
}

// decodeXval reads a final column's value.
func decodeXval(k kind, t xtype, format int16, raw []byte, v *xval) error {
	var tmp value
	if err := decodeValue(k, format, raw, &tmp); err != nil {
		return err
	}
	*v = xval{null: tmp.null, t: t, i: tmp.i, f: tmp.f}
	if tmp.n != nil {
		v.n.coef.Set(&tmp.n.coef)
		v.n.scale, v.n.spec = tmp.n.scale, tmp.n.spec
	}
	return nil
}
